"""Whether the configured transport can be used at all, checked by `run` and `check-config`
before anything starts: XNAT's inbox folder (issue 18), and where XNAT's DICOM receiver is
and whether xnat-drop may send there (issue 19), without pynetdicom (the cstore extra).

C-STORE is unencrypted (XNAT's receiver offers no TLS): only a loopback or private address
is taken to be the lab's own network, unless cstore.allow_remote_plain says otherwise.
"""

from __future__ import annotations

import importlib.util
import logging
import socket

from xnat_drop.adapters.fs.inboxstage import root_problems
from xnat_drop.core.config import Config
from xnat_drop.core.cstore import CStoreConfig, plain_problem
from xnat_drop.core.errors import ReceiverRefusedError, XnatTransientError

log = logging.getLogger("xnat_drop.service")

PAUSED = "Delivery is paused; the sessions wait in the work folder."


def addresses(config: CStoreConfig) -> tuple[str, ...]:
    """cstore.host's addresses. Raises XnatTransientError when DNS does not answer."""
    try:
        found = socket.getaddrinfo(config.host, config.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise XnatTransientError(f"cannot resolve cstore.host {config.host}: {exc}") from exc
    return tuple(dict.fromkeys(str(info[4][0]) for info in found))


def address(config: CStoreConfig) -> str:
    """The address to send to, checked again before each send (DNS may change). Raises
    ReceiverRefusedError (a pause: the setup's, never the session's) or XnatTransientError."""
    found = addresses(config)
    problem = plain_problem(config.host, found, config.allow_remote_plain)
    if problem is not None:
        raise ReceiverRefusedError(f"{problem}. {PAUSED}")
    return found[0]


def startup_problems(config: CStoreConfig | None) -> list[str]:
    """What stops the C-STORE transport before anything starts (exit 78): pynetdicom missing,
    or a host that resolves to a public address. A host DNS cannot resolve now is left to the
    first send, which waits for it like an outage."""
    if config is None:
        return []
    if importlib.util.find_spec("pynetdicom") is None:
        return [
            'xnat.transport: "cstore" needs pynetdicom, the cstore extra: install it with '
            "pip install 'xnat-drop[cstore]' (or use another transport)"
        ]
    try:
        found = addresses(config)
    except XnatTransientError as exc:
        log.warning("%s: checked again before the first C-STORE", exc)
        return []
    problem = plain_problem(config.host, found, config.allow_remote_plain)
    return [problem] if problem else []


def problems(config: Config, *, try_link: bool = True) -> list[str]:
    """What makes the configured transport unusable (exit 78). `try_link` makes a hard link
    in the inbox to prove it works (`run`; `check-config` changes nothing)."""
    found = []
    inbox = config.inbox
    if inbox is not None:
        found += root_problems(inbox.root, config.paths.work, inbox.link, try_link=try_link)
    return found + startup_problems(config.cstore)
