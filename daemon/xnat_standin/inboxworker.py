"""The inbox's asynchronous side: ``DicomInboxImportRequestListener`` and the rebuild after it.

One background thread takes the ``Queued`` requests in order (a JMS queue with one consumer):
``Accepted``, ``Importing``, then the folder is walked following symlinks and every file goes
through the per-object importer the DICOM-zip handler uses (``objectimporter.import_stored_file``:
series import filters, routing, prearchive grouping, silent drops). A file that fails or cannot
be read is only logged. Nothing imported: ``Failed``; else ``Processed``, the folder deleted
when ``cleanupAfterImport`` (default true) and it lies below the inbox, and each prearchive
session built; on an auto-archive project it is archived at once (``prevent_auto_commit`` does
not stop this), the request going ``Importing`` and then ``Completed`` or ``Failed``. On a
manual project the request stays ``Processed`` for good.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

from .archiving import ArchiveError, ArchiveRequest
from .importjob import EntryError, ImportJob, ImportRefusedError, upload_options
from .inbox import Inbox
from .inboxstate import (
    ACCEPTED,
    COMPLETED,
    FAILED,
    IMPORTING,
    PROCESSED,
    InboxRequest,
)
from .objectimporter import import_stored_file
from .seriesfilter import JavaError
from .versions import XnatVersion

log = logging.getLogger("xnat_standin")

NO_DICOM = "No valid DICOM files found for the specified session :{path}"


class InboxWorker:
    """Processes the inbox's requests on a thread of its own (``run``)."""

    def __init__(self, inbox: Inbox, version: XnatVersion) -> None:
        self.inbox = inbox
        self.version = version

    def run(self, stopping: threading.Event) -> None:
        """Take requests until ``stopping`` is set (a request under way is finished first)."""
        requests = self.inbox.requests
        while not stopping.is_set():
            request = requests.next_queued()
            if request is None:
                requests.wake.wait(0.1)
                requests.wake.clear()
                continue
            self.process(request)

    def process(self, request: InboxRequest) -> None:
        """``onRequest``: any exception fails the request with XNAT's words."""
        try:
            self._process(request)
        except Exception as error:
            log.exception("inbox import request %d failed", request.id)
            self._fail(request, _failure(request.session_path, type(error).__name__, str(error)))

    def _process(self, request: InboxRequest) -> None:
        requests = self.inbox.requests
        requests.set_status(request.id, ACCEPTED)
        requests.set_status(request.id, IMPORTING)
        if request.fail is not None:  # an InboxFault
            self._fail(request, request.fail)
            return
        job = ImportJob(
            self.inbox.store,
            self.version,
            dict(request.parameters),
            "",
            filters=self.inbox.filters,
        )
        timestamp = self.inbox.store.prearchive.new_timestamp()
        for path in walk(request.local_path):
            try:
                import_stored_file(job, path, timestamp)
            except ImportRefusedError as error:
                cause = error.__cause__
                if not isinstance(cause, JavaError):
                    raise
                # The site filter cannot be built: outside visitFile's catch, so it ends the walk.
                message = "null" if cause.message is None else cause.message  # Java's concat
                simple_name = cause.java_class.rsplit(".", 1)[-1]  # getSimpleName()
                self._fail(request, _failure(request.session_path, simple_name, message))
                return
            except (EntryError, OSError) as error:  # ClientException, visitFileFailed: skipped
                log.warning("inbox request %d: %s was not imported: %s", request.id, path, error)
        if not job.rows:
            self._fail(request, NO_DICOM.format(path=request.session_path))
            return
        requests.set_status(request.id, PROCESSED)
        if request.cleanup_after_import and self.inbox.map.below_inbox(request.session_path):
            shutil.rmtree(request.local_path, ignore_errors=True)  # deleteDirQuietly
        for key in job.rows:
            self._rebuild(request, key, job)

    def _rebuild(self, request: InboxRequest, key: tuple[str, str, str], job: ImportJob) -> None:
        """``PrearchiveRebuildHandler``: build; archive when the session auto-archives."""
        store = self.inbox.store
        row = store.prearchive.build(*key, upload_options(job))
        if not store.should_auto_archive(row):
            return
        requests = self.inbox.requests
        requests.set_status(request.id, IMPORTING)  # PrearchiveArchiveHandler's progress()
        archive = ArchiveRequest(override=store.overwrites_on_auto_archive(row))
        try:
            uri = store.commit(*key, archive)
        except ArchiveError as error:
            requests.set_status(
                request.id, FAILED, f"Unable to archive {row.folder}: {error.message}"
            )
            return
        requests.set_status(request.id, COMPLETED, "/data" + uri)

    def _fail(self, request: InboxRequest, resolution: str) -> None:
        log.info("inbox import request %d failed: %s", request.id, resolution)
        self.inbox.requests.set_status(request.id, FAILED, resolution)


def _failure(session_path: str, exception_type: str, message: str) -> str:
    return (
        f"The request to import data located at {session_path} failed due to an exception "
        f"of type {exception_type}:\n{message}"
    )


def walk(folder: Path) -> Iterator[Path]:
    """Every file below ``folder`` as ``Files.walkFileTree(..., FOLLOW_LINKS, ...)`` visits
    them: links are followed (to files and folders), a link back to a folder being walked (a
    loop) is passed over, and so is a folder that cannot be listed; names in sorted order,
    where Java takes the directory's. Links that lead nowhere are yielded: opening them fails,
    as the importer's does."""
    yield from _walk(folder, frozenset())


def _walk(folder: Path, ancestors: frozenset[tuple[int, int]]) -> Iterator[Path]:
    try:
        status = folder.stat()
        with os.scandir(folder) as found:
            entries = sorted(found, key=lambda entry: entry.name)
    except OSError as error:
        log.warning("inbox: cannot list %s: %s", folder, error)
        return
    identity = (status.st_dev, status.st_ino)
    if identity in ancestors:
        log.warning("inbox: %s loops back to a folder above it; passed over", folder)
        return
    inside = ancestors | {identity}
    for entry in entries:
        try:
            is_folder = entry.is_dir(follow_symlinks=True)
        except OSError:
            is_folder = False
        if is_folder:
            yield from _walk(Path(entry.path), inside)
        else:
            yield Path(entry.path)
