"""Named points where a test can kill or pause the daemon, to prove crash safety (`kill -9`
anywhere) and to make a race deterministic (a file rewritten between judging and sending).

Set `XNAT_DROP_FAILPOINT=<name>` in the daemon's environment and it sends itself SIGKILL when it
reaches that point: no cleanup, no flush, exactly like a power cut or the OOM killer. Set
`XNAT_DROP_PAUSEPOINT=<name>=<seconds>` and it sleeps there, the first time only, after logging
"pausepoint <name>". Unset (as in production) every call is two dictionary lookups.
"""

from __future__ import annotations

import logging
import os
import signal
import time

ENV = "XNAT_DROP_FAILPOINT"
PAUSE_ENV = "XNAT_DROP_PAUSEPOINT"
NAMES = (
    "after-claim",  # the folder is in .work, nothing judged yet
    "after-inspect",  # every file read, the verdict not yet trusted (see service._judge)
    "after-judge",  # judged, nothing sent
    "after-filter",  # XNAT's series filter read and the plan recorded, nothing sent
    "mid-upload",  # half of the zip is on the wire
    "mid-cstore",  # half of the objects taken by XNAT's DICOM receiver, their count recorded
    "after-inbox-post",  # XNAT queued the inbox import; its request id not yet in the ledger
    "after-upload",  # XNAT answered the import, nothing verified
    "after-verify",  # prearchive counts verified, not committed
    "after-commit",  # archived, not verified again
    "before-resources",  # images verified, no resource file sent
    "between-resource-files",  # the first resource file sent, the others not
    "after-resources",  # every resource file sent, none verified
    "after-reports",  # reports written beside the destination, not recorded in the ledger
    "before-move",  # decision recorded in the ledger, folder not yet moved
)
# On the notifications' sender thread (sender.py), apart: a delivery never reaches them.
NOTIFY_NAMES = ("notify-accepted",)  # the mail server took a message, not yet marked sent
_paused: set[str] = set()


def hit(name: str) -> None:
    """Die here, at once, if this failpoint is armed; pause here if a pausepoint is."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
    pause = os.environ.get(PAUSE_ENV)
    if pause and pause.partition("=")[0] == name and name not in _paused:
        _paused.add(name)
        logging.getLogger(__name__).warning("pausepoint %s", name)
        time.sleep(float(pause.partition("=")[2] or 1))
