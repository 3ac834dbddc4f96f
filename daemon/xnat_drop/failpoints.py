"""Named points where a test can kill the daemon, to prove crash safety (`kill -9` anywhere).

Set `XNAT_DROP_FAILPOINT=<name>` in the daemon's environment and it sends itself SIGKILL when it
reaches that point: no cleanup, no flush, exactly like a power cut or the OOM killer. Unset (as
in production) every call is a dictionary lookup and nothing else.
"""

from __future__ import annotations

import os
import signal

ENV = "XNAT_DROP_FAILPOINT"
NAMES = (
    "after-claim",  # the folder is in .work, nothing judged yet
    "after-judge",  # judged, nothing sent
    "mid-upload",  # half of the zip is on the wire
    "after-upload",  # XNAT answered the import, nothing verified
    "after-verify",  # prearchive counts verified, not committed
    "after-commit",  # archived, not verified again
    "after-reports",  # reports written beside the destination, not recorded in the ledger
    "before-move",  # decision recorded in the ledger, folder not yet moved
)


def hit(name: str) -> None:
    """Die here, at once, if this failpoint is armed."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
