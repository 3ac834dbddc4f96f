"""The inbox's path map and its import requests (``DicomInboxImportRequest``, round 2 §4).

A request is created ``Queued`` by the synchronous handler and moved on by the worker
(``inboxworker``): ``Accepted``, ``Importing``, then ``Processed`` or ``Failed``, and on
auto-archive projects ``Importing`` again and ``Completed`` or ``Failed``. XNAT also defines
``Trawling``, which nothing sets.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

INBOX_PATH = "/data/xnat/inbox"  # SiteConfigPreferences' default inboxPath
QUEUED = "Queued"
ACCEPTED = "Accepted"
IMPORTING = "Importing"
PROCESSED = "Processed"
FAILED = "Failed"
COMPLETED = "Completed"
FINISHED = frozenset({COMPLETED, FAILED})  # what list/active leaves out


@dataclass(frozen=True, slots=True)
class InboxMap:
    """Where the XNAT server's view of its inbox lies on this machine.

    ``inbox_path`` is the site preference ``inboxPath``; ``root``, if given, is the local folder
    the server sees as ``inbox_path`` (so a test can use one folder for both views). Without a
    root, server paths are local paths.
    """

    inbox_path: str = INBOX_PATH
    root: Path | None = None

    def local(self, server_path: str) -> Path | None:
        """The local path of a server path, or None when it is outside the mapped inbox."""
        if self.root is None:
            return Path(server_path)
        if not server_path.startswith(self.inbox_path):
            return None
        rest = server_path[len(self.inbox_path) :]
        if rest and not rest.startswith("/") and not self.inbox_path.endswith("/"):
            return None  # a sibling such as /data/xnat/inboxX: nothing of the inbox's
        rest = rest.strip("/")
        return self.root / rest if rest else self.root

    def below_inbox(self, server_path: str) -> bool:
        """Does a server path lie below ``inboxPath`` (the worker's condition to delete)?"""
        base = self.inbox_path.rstrip("/")
        return server_path.startswith(base + "/") and server_path != base + "/"


@dataclass(frozen=True, slots=True)
class InboxRequest:
    """One import request as it is now (tests read these; the JSON is ``as_json``)."""

    id: int
    username: str
    session_path: str  # the server's path (JSON ``sessionPath``)
    local_path: Path  # where the stand-in reads it
    parameters: dict[str, str] = field(hash=False)
    cleanup_after_import: bool
    status: str
    resolution: str | None
    created: float  # time.time()
    timestamp: float  # time.time() of the last change
    history: tuple[str, ...]  # every status it has had, in order (stand-in only)
    held: bool = False  # a ``stuck`` fault keeps it Queued
    fail: str | None = None  # a ``fail`` fault's resolution

    def as_json(self) -> dict[str, Any]:
        """Jackson's rendering of the entity (getters of ``DicomInboxImportRequest`` and
        ``AbstractHibernateEntity``); dates as epoch milliseconds, Jackson's default [U]."""
        return {
            "id": self.id,
            "status": self.status,
            "resolution": self.resolution,
            "sessionPath": self.session_path,
            "username": self.username,
            "parameters": dict(self.parameters),
            "cleanupAfterImport": self.cleanup_after_import,
            "created": int(self.created * 1000),
            "timestamp": int(self.timestamp * 1000),
            "enabled": True,
            "disabled": 0,
        }


class InboxRequests:
    """Every import request, by id (from 1), guarded by the emulator lock.

    ``wake`` is set when a request may be ready for the worker.
    """

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._requests: dict[int, InboxRequest] = {}
        self.wake = threading.Event()

    def create(
        self,
        username: str,
        session_path: str,
        local_path: Path,
        parameters: dict[str, str],
        cleanup: bool,
        *,
        held: bool = False,
        fail: str | None = None,
    ) -> InboxRequest:
        now = time.time()
        with self._lock:
            request = InboxRequest(
                id=len(self._requests) + 1,
                username=username,
                session_path=session_path,
                local_path=local_path,
                parameters=dict(parameters),
                cleanup_after_import=cleanup,
                status=QUEUED,
                resolution=None,
                created=now,
                timestamp=now,
                history=(QUEUED,),
                held=held,
                fail=fail,
            )
            self._requests[request.id] = request
        self.wake.set()
        return request

    def get(self, request_id: int) -> InboxRequest | None:
        with self._lock:
            return self._requests.get(request_id)

    def all(self) -> list[InboxRequest]:
        with self._lock:
            return [self._requests[key] for key in sorted(self._requests)]

    def set_status(self, request_id: int, status: str, resolution: str | None = None) -> None:
        """Move a request on; a resolution, if given, replaces the one it had."""
        with self._lock:
            request = self._requests[request_id]
            self._requests[request_id] = replace(
                request,
                status=status,
                resolution=request.resolution if resolution is None else resolution,
                timestamp=time.time(),
                history=(*request.history, status),
            )

    def next_queued(self) -> InboxRequest | None:
        """The oldest request the worker may take up (Queued, not held by a fault)."""
        with self._lock:
            for request in self.all():
                if request.status == QUEUED and not request.held:
                    return request
        return None

    def release(self) -> None:
        """Let the requests a ``stuck`` fault held go on (its fault was cleared)."""
        with self._lock:
            for key, request in self._requests.items():
                if request.held:
                    self._requests[key] = replace(request, held=False)
        self.wake.set()
