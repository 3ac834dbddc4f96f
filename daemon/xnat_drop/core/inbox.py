"""[inbox]: delivering through XNAT's inbox import handler instead of sending a zip. Pure.

Where a lab's share is also mounted on the XNAT server, the daemon stages hard links of the
accepted files in a folder of the inbox and asks XNAT to import that folder in place
(`import-handler=inbox`, xnat-api-round2.md §4). This module holds the settings, the names the
daemon gives what it creates there, and what XNAT's answers mean; adapters/fs/inboxstage.py
makes the files, service/inbox.py drives the requests.
"""

from __future__ import annotations

import errno
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from xnat_drop.core.schema import Section

TransportName = Literal["import", "inbox", "cstore"]
LinkMode = Literal["hardlink", "copy"]
Phase = Literal["wait", "imported", "failed"]

# DicomInboxImportRequest.Status: Trawling is never set by XNAT, but it would mean "working".
WAITING = frozenset({"Queued", "Trawling", "Accepted", "Importing"})
IMPORTED = frozenset({"Processed", "Completed"})
FAILED = "Failed"
# Only a path XNAT found, below its inboxPath, in a project the account may edit, reaches the
# check of the file's extension: this 400 proves the mapping (round 2 §4, checks 1-6).
CANARY_PROOF = "does not have an archive extension"
# XNAT's resolution when the walk imported nothing; unreadable files are skipped silently.
NO_DICOM = "No valid DICOM files found"
STAGING_PREFIX = "xnat-drop-"
CANARY_PREFIX = "xnat-drop-canary-"  # no archive extension: XNAT refuses it before importing


@dataclass(frozen=True, slots=True)
class InboxConfig:
    """The inbox as two machines see it: `root` here, `server_path` on the XNAT server (a
    folder at or below XNAT's inboxPath); project folders lie directly below it."""

    root: Path
    server_path: str
    link: LinkMode = "hardlink"
    stall_seconds: float = 900.0  # a request waiting longer pauses the queue, loudly

    def server(self, project: str, name: str) -> str:
        """The server's path of `name` in the inbox folder of `project`."""
        return posixpath.join(self.server_path, project, name)


def parse_inbox(t: Section, transport: str, base: Path) -> InboxConfig | None:
    """The [inbox] table when xnat.transport is "inbox" (problems reported on `t`), else None."""
    root = t.path("root", base)
    server_path = t.text("server_path")
    if cast(TransportName, transport) != "inbox":
        return None
    if root is None:
        t.problem(
            "root",
            'required with xnat.transport = "inbox": the inbox folder as this machine sees '
            "it, e.g. /srv/xnat-inbox",
        )
        return None
    if not server_path.startswith("/") or posixpath.normpath(server_path) != server_path:
        t.problem(
            "server_path",
            'required with xnat.transport = "inbox": the same folder as the XNAT server sees '
            f"it, an absolute normalised path such as /data/xnat/inbox (got {server_path!r})",
        )
        return None
    return InboxConfig(
        root, server_path, cast(LinkMode, t.text("link")), t.seconds("stall_seconds")
    )


def staging_name(claim_id: str) -> str:
    """The staging folder of a claim in its project's inbox folder (what XNAT imports)."""
    return f"{STAGING_PREFIX}{claim_id}"


def building_name(claim_id: str) -> str:
    """The staging folder while it is built: hidden, and renamed only once complete, so XNAT
    never sees half of it."""
    return f".{STAGING_PREFIX}{claim_id}.tmp"


def phase(status: str) -> Phase:
    """What a request's status means for the daemon: wait, go on, or give up. A status XNAT
    does not define is waited out (the stall alarm ends that wait)."""
    if status in IMPORTED:
        return "imported"
    if status == FAILED:
        return "failed"
    return "wait"


def failed_sentence(resolution: str) -> str:
    """A Failed request's resolution for a report, with a hint when XNAT read no file."""
    sentence = f'XNAT\'s inbox import failed: "{resolution or "no reason given"}".'
    if NO_DICOM in resolution:
        sentence += (
            " XNAT skips files it cannot read without a word: the account the XNAT server runs "
            "as must be able to read the staged files, which are hard links with the dropped "
            "files' owner and mode. Ask the administrator to make them readable to it (a group "
            'both share), or to set inbox.link = "copy"; then drop the session again.'
        )
    return sentence


def canary_sentence(config: InboxConfig, project: str, answer: str) -> str:
    """Why inbox delivery pauses when the path check of `project` got `answer` instead of
    XNAT's refusal of a file without an archive extension."""
    return (
        f"XNAT cannot use its inbox as configured: a plain file xnat-drop made in "
        f"{config.root / project} (inbox.root), given to XNAT as "
        f"{posixpath.join(config.server_path, project)}/... (inbox.server_path), was answered "
        f'"{answer}". The XNAT server must mount inbox.root at inbox.server_path, below its '
        "inboxPath preference, and the account must be able to edit project "
        f"{project}. Inbox delivery is paused; the sessions wait in the work folder."
    )


def stalled_sentence(request: str, status: str, waited: float) -> str:
    return (
        f"XNAT's inbox import request {request} is still {status} after {waited:.0f} s: "
        "XNAT's import queue looks stalled (ask the XNAT administrator to check its JMS "
        "queue and logs). The session waits in the work folder and is watched again later."
    )


def staging_sentence(root: Path, link: str, error: int, detail: str) -> str:
    """Why the session could not be staged in the inbox (`error` an errno), and what fixes it.
    Inbox delivery pauses on it: each is the setup's, never the session's."""
    if link == "hardlink" and error == errno.EXDEV:
        return (
            f"inbox.root ({root}) is on another filesystem than the drop tree, and hard links "
            "cannot cross filesystems: put it on the drop tree's filesystem or set inbox.link "
            '= "copy". Inbox delivery is paused.'
        )
    if link == "hardlink" and error == errno.EPERM:
        # fs.protected_hardlinks = 1 (the default): only the owner of a file, or one who may
        # read and write it, may link it. Lab members own what they drop.
        return (
            "the kernel refuses xnat-drop hard links to files it does not own "
            "(fs.protected_hardlinks = 1, the usual default): lab members' files must be "
            'readable and writable by the service (a shared group), or set inbox.link = "copy". '
            "Inbox delivery is paused."
        )
    return f"cannot stage the session in inbox.root ({root}): {detail}. Inbox delivery is paused."
