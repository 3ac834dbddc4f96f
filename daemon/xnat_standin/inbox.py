"""The inbox import handler (``import-handler=inbox``, xnat-api-round2.md §4).

``POST /data/services/import?import-handler=inbox&path=...`` takes no body: the server imports a
folder it can see. This module is ``DicomInboxImporter``: the synchronous checks, in XNAT's order
and words, then a ``Queued`` request and the answer ``<siteUrl path>/xapi/dicom/<id>`` (not
``/data``-wrapped). The work itself is ``inboxworker``'s; ``DicomTransactionApi``
(``GET /xapi/dicom/...``) is here too, and so is ``inboxPath``, the one admin-only preference.
"""

from __future__ import annotations

import logging
import os
import posixpath
import tarfile
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any

from . import pages
from .call import Call
from .filterconfig import SeriesFilters
from .importjob import ImportRefusedError
from .inboxfaults import InboxFault, InboxFaultBook
from .inboxstate import FINISHED, InboxMap, InboxRequest, InboxRequests
from .pages import Reply
from .store import Store

log = logging.getLogger("xnat_standin")

GENERIC = (
    "You must specify a valid path to a file or directory. It must be under the main inbox "
    "directory within a subdirectory whose name matches the ID of a project you have edit "
    "access to."
)
NO_DESTINATION = "You do not have permission to edit the specified destination project."
EMPTY_FOLDER = "Specified directory does not contain any files."
LABEL_EXISTS = "Experiment with that label already exists in that project."
SESSION_EXISTS = "Session already exists in that project."
# DicomInboxImporter.ARCHIVE_EXTENSIONS, compared with endsWith on the lower-cased name. The
# trailing dot of ".tar.gz." is XNAT's: a .tar.gz file is refused.
ARCHIVE_EXTENSIONS = (".zip", ".tgz", ".tar", ".tar.gz.")
INBOX_PATH_PREFERENCE = "inboxPath"


def not_an_archive(name: str) -> str:
    """The 400 for a file without an archive extension (what a path-mapping canary expects)."""
    return (
        f"User inbox file {name} does not have an archive extension - "
        f"[{', '.join(ARCHIVE_EXTENSIONS)}].  It will be skipped. "
        "The path must be to either a directory or an archive file."
    )


class Inbox:
    """The handler, its requests and faults; the worker takes the requests from here."""

    def __init__(
        self,
        store: Store,
        filters: SeriesFilters,
        inbox_map: InboxMap,
        *,
        context_path: str = "",
    ) -> None:
        self.store = store
        self.filters = filters
        self.map = inbox_map
        self.context_path = context_path  # the path of siteUrl, e.g. "/xnat"
        self.requests = InboxRequests(store.lock)
        self.faults = InboxFaultBook(store.lock)

    # -- POST /data/services/import?import-handler=inbox ----------------------------------

    def post(self, user: str, params: dict[str, str]) -> list[str]:
        """``DicomInboxImporter.call``: check, queue, answer the request's URI.

        Raises ImportRefusedError (400, or 409 for an existing label) with XNAT's message.
        """
        if "path" not in params:
            raise ImportRefusedError(400, GENERIC)
        server_path = java_normalize(params["path"])
        inbox_path = self.map.inbox_path
        if not server_path.startswith(inbox_path):
            raise ImportRefusedError(400, GENERIC)
        local = self.map.local(server_path)
        if local is None or not os.path.exists(local) or self._hidden(server_path, local):
            raise ImportRefusedError(400, GENERIC)
        if not self._can_edit(user, _inbox_subdirectory(server_path[len(inbox_path) :])):
            raise ImportRefusedError(400, GENERIC)
        if not self._can_edit(user, params.get("PROJECT_ID") or ""):
            raise ImportRefusedError(400, NO_DESTINATION)
        cleanup = params.get("cleanupAfterImport", "true").lower() == "true"  # Boolean.valueOf
        if local.is_file():
            local, server_path = _extract_archive(local, server_path, cleanup)
        elif local.is_dir():
            try:
                empty = not os.listdir(local)
            except OSError:  # File.list() answers null: the same message
                empty = True
            if empty:
                raise ImportRefusedError(400, EMPTY_FOLDER)
        project = params.get("PROJECT_ID") or ""
        if "EXPT_LABEL" in params:
            params.pop("session", None)  # so that it does not rename the session at archiving
            if self.store.archive.experiment(params["EXPT_LABEL"], project) is not None:
                raise ImportRefusedError(409, LABEL_EXISTS)
        elif "session" in params:
            if self.store.archive.experiment(params["session"], project) is not None:
                raise ImportRefusedError(409, SESSION_EXISTS)
            params["EXPT_LABEL"] = params["session"]
        fault = self.faults.take(server_path)
        request = self.requests.create(
            user,
            server_path,
            local,
            params,
            cleanup,
            held=fault is not None and fault.stuck,
            fail=None if fault is None else fault.fail,
        )
        log.info("queued inbox import request %d for %s", request.id, server_path)
        return [f"{self.context_path}/xapi/dicom/{request.id}"]

    def _hidden(self, server_path: str, local: Path) -> bool:
        try:
            age = time.time() - local.stat().st_ctime
        except OSError:
            return False
        return self.faults.hides(server_path, age)

    def _can_edit(self, user: str, project_id: str) -> bool:
        """``getXnatProjectdatasById`` (an ID, never an alias) and ``canEditProject``: the
        stand-in's one permission, ``set_project_readers``."""
        project = self.store.project(project_id) if project_id else None
        return (
            project is not None
            and project.id == project_id
            and self.filters.can_read(user, project_id)
        )

    # -- GET /xapi/dicom/... (DicomTransactionApi) ----------------------------------------

    def xapi(self, call: Call, rest: list[str]) -> Reply:
        """``/xapi/dicom/{id}`` (the owner's or an admin's, else an empty 404) and
        ``/xapi/dicom/list/active|all`` (one's own; every request for an admin)."""
        if call.method != "GET":
            return pages.servlet_error_page(405, "Method Not Allowed")
        admin = self.filters.is_admin(call.user)
        if len(rest) == 2 and rest[0] == "list" and rest[1] in ("active", "all"):
            shown = [r for r in self.requests.all() if admin or r.username == call.user]
            if rest[1] == "active":
                shown = [r for r in shown if r.status not in FINISHED]
            return pages.json_reply([r.as_json() for r in shown])
        if len(rest) != 1:
            return pages.servlet_error_page(404, "Not Found")
        try:
            request_id = int(rest[0])
        except ValueError:  # Spring cannot convert the path variable to a Long [I]
            return pages.servlet_error_page(400, "Bad Request")
        request = self.requests.get(request_id)
        if request is None or not (admin or request.username == call.user):
            return pages.Reply(404, b"", "text/plain;charset=UTF-8")
        return pages.json_reply(request.as_json())

    # -- preferences, control API, state --------------------------------------------------

    def admin_preferences(self) -> dict[str, Any]:
        """Site preferences only admins may read (``site-config-access.yaml``)."""
        return {INBOX_PATH_PREFERENCE: self.map.inbox_path}

    def inject(self, fault: InboxFault) -> None:
        self.faults.add(fault)

    def clear_faults(self) -> None:
        """Remove every inbox fault; requests a ``stuck`` fault held go on."""
        self.faults.clear()
        self.requests.release()

    def control(self, method: str, data: object) -> Reply:
        """``POST /_emulator/inbox-faults`` (one fault) and ``DELETE`` (all of them)."""
        if method == "POST":
            self.inject(InboxFault.from_json(data))
        elif method == "DELETE":
            self.clear_faults()
        else:
            return pages.json_reply({"error": f"no control endpoint {method} inbox-faults"}, 404)
        return pages.json_reply({"inbox_faults": [f.as_json() for f in self.faults.pending()]})

    def state(self) -> dict[str, Any]:
        return {
            "inbox_path": self.map.inbox_path,
            "root": None if self.map.root is None else str(self.map.root),
            "requests": [_request_state(request) for request in self.requests.all()],
            "faults": [fault.as_json() for fault in self.faults.pending()],
        }


def _request_state(request: InboxRequest) -> dict[str, Any]:
    return {**request.as_json(), "history": list(request.history), "held": request.held}


def java_normalize(path: str) -> str:
    """``Paths.get(path).normalize().toString()`` for the paths that matter here."""
    if not path:
        return ""
    normal = posixpath.normpath(path)
    if normal.startswith("//"):  # POSIX keeps a leading "//"; Java's UnixPath does not
        normal = "/" + normal.lstrip("/")
    return "" if normal == "." else normal


def _inbox_subdirectory(rest: str) -> str:
    """The first component below ``inboxPath``, cut as XNAT cuts it: one leading "\\" then
    one leading "/" removed; up to a "\\" only when one comes before a "/"."""
    rest = rest.removeprefix("\\").removeprefix("/")
    backslash, slash = rest.find("\\"), rest.find("/")
    cut = backslash if -1 < backslash < slash else slash
    return rest[:cut] if cut > -1 else rest


def _extract_archive(path: Path, server_path: str, cleanup: bool) -> tuple[Path, str]:
    """``handleInboxArchiveFile``: a file with an archive extension is extracted into a new
    sibling folder named up to its first "." (``_1`` added while taken) and, with cleanup,
    deleted. Returns the folder, locally and as the server sees it."""
    name = path.name
    lower = name.lower()
    if not lower.endswith(ARCHIVE_EXTENSIONS):
        raise ImportRefusedError(400, not_an_archive(name))
    folder_name = name.split(".")[0]
    while (path.parent / folder_name).exists():
        folder_name += "_1"
    folder = path.parent / folder_name
    server_folder = posixpath.join(posixpath.dirname(server_path), folder_name)
    try:
        folder.mkdir()
    except OSError:
        raise ImportRefusedError(
            400, f"Couldn't create subdirectory for archive file - {server_folder}"
        ) from None
    try:
        if lower.endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                archive.extractall(folder)  # noqa: S202 - zipfile makes every name safe
        else:  # ".tgz" ends with "gz", the rest with "tar"
            with tarfile.open(path, "r:gz" if lower.endswith("gz") else "r:") as archive:
                archive.extractall(folder, filter="data")
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile, tarfile.TarError) as error:
        log.warning("inbox archive %s could not be extracted: %s", path, error)
        raise ImportRefusedError(400, f"Couldn't unzip archive file - {name}") from None
    if cleanup:
        path.unlink(missing_ok=True)
    return folder, server_folder
