"""``POST /data/services/import``: how the upload is sent (in the body, as a multipart part,
or not at all), which handler takes it, and its answer. The handlers are ``importer``'s; the
``inbox`` handler is ``inbox``'s."""

from __future__ import annotations

import itertools
import logging
from email.message import Message
from pathlib import Path

from . import pages
from .call import (
    SUPPORTED_UPLOAD_TYPES,
    Call,
    form_parts,
    media_type,
    no_length_message,
    read_form,
)
from .filterconfig import SeriesFilters
from .httpbody import FormPart, TeeBody
from .importer import (
    HANDLERS,
    IMPLEMENTED_HANDLERS,
    run_dicom_zip,
    run_gradual_dicom,
    run_session_importer,
)
from .importjob import ImportJob, ImportRefusedError
from .inbox import Inbox
from .pages import Reply
from .store import Store
from .versions import XnatVersion

log = logging.getLogger("xnat_standin")

_UPLOAD_EXTENSIONS = {
    "application/zip": ".zip",
    "application/x-gtar": ".tar.gz",
    "application/x-tar": ".tar",
    "application/dicom": ".dcm",
    "application/x-gzip": ".gzip",
    "application/octet-stream": "",
}
_DICOM_TYPES = frozenset({"application/dicom", "application/x-mirc", "application/x-mirc-dicom"})


class ImportService:
    """Reads an import request's upload and parameters and runs its handler."""

    def __init__(
        self,
        store: Store,
        version: XnatVersion,
        filters: SeriesFilters,
        inbox: Inbox,
        *,
        keep_uploads: Path | None = None,
        fast: bool = False,
        headers_only: bool = False,
    ) -> None:
        self.store = store
        self.version = version
        self.filters = filters
        self.inbox = inbox
        self.keep_uploads = keep_uploads  # tests read the exact bytes a client sent
        self.fast = fast  # benchmark-only DICOM-zip shortcut (fastpath.py)
        self.headers_only = headers_only
        self._kept = itertools.count(1)

    def handle(self, call: Call, remainder: list[str]) -> Reply:
        if call.method != "POST":
            return Reply(
                405, pages.status_page(405).body, "text/html;charset=UTF-8", (("Allow", "POST"),)
            )
        media, exact = media_type(call.headers.get("Content-Type"))
        inbody_param = call.query.get("inbody")
        in_body = (inbody_param is not None and inbody_param not in ("false", "0")) or (
            exact in SUPPORTED_UPLOAD_TYPES
        )
        form: dict[str, str] = {}
        files: list[FormPart] = []
        file_name = ""
        try:
            if in_body:
                if media.startswith("multipart/"):
                    return pages.status_page(500)  # the 406 path dereferences a null list
                length = _content_length(call.headers)
                size = -1 if length is None else length
                if size < 1 and not (
                    self.version.accepts_chunked_zip and exact == "application/zip"
                ):
                    return pages.status_page(400, no_length_message(size))
                file_name = "/".join(remainder) or "upload" + _UPLOAD_EXTENSIONS.get(
                    exact, ".unsupported"
                )
            elif media.startswith("multipart/"):
                refused, form, files = self._read_multipart(call)
                if refused is not None:
                    return refused
            elif media == "application/x-www-form-urlencoded":
                form = read_form(call)
            params = {**form, **call.query}
            return self._run_import(call, params, in_body, files, file_name)
        finally:
            for part in files:
                if part.path is not None:
                    part.path.unlink(missing_ok=True)

    def _read_multipart(self, call: Call) -> tuple[Reply | None, dict[str, str], list[FormPart]]:
        parts = form_parts(call)
        if isinstance(parts, Reply):
            return parts, {}, []
        form = {part.name: part.value for part in parts if part.filename is None}
        files = [part for part in parts if part.filename is not None]
        if "reference" in form:
            return (
                pages.status_page(
                    400, "multi-part form posts may not be used to upload files via reference."
                ),
                form,
                files,
            )
        if any(not part.filename for part in files):
            return (
                pages.status_page(
                    400, "multi-part form posts must contain the file name of the uploaded file."
                ),
                form,
                files,
            )
        if len(files) > 1:
            return (
                pages.status_page(400, "Importer is limited to one uploaded resource at a time."),
                form,
                files,
            )
        return None, form, files

    def _run_import(
        self,
        call: Call,
        params: dict[str, str],
        in_body: bool,
        files: list[FormPart],
        file_name: str,
    ) -> Reply:
        response_format = params.get("format")

        def failure(status: int, message: str | None = None) -> Reply:
            if response_format == "html":
                return pages.text(
                    200,
                    f"<html><body><p>{message or ''}</p></body></html>",
                    "text/html;charset=UTF-8",
                )
            return pages.status_page(status, message)

        if "http-session-listener" in params and not params["http-session-listener"]:
            return failure(400, "'transaction' is required when requesting 'http-session-listener'")
        if params.get("prearchive_code") == "1" and params.get("overwrite"):
            return failure(
                400, "Overwrite flag was not set to a valid option. ('append' or 'delete')"
            )
        media, _ = media_type(call.headers.get("Content-Type"))
        handler = params.get("import-handler")
        explicit = handler is not None
        if handler is None:
            handler = "gradual-DICOM" if media in _DICOM_TYPES else self.version.default_handler
        if handler not in HANDLERS:
            return failure(404, f"Unknown importer implementation specified: {handler}")
        if handler == "inbox":  # inbox.py: allowCallsWithoutFiles, any upload is ignored
            try:
                return pages.uri_list(
                    self.inbox.post(call.user or "", dict(params)), response_format
                )
            except ImportRefusedError as error:
                log.info("inbox import refused (%s): %s", error.status, error.message)
                return failure(error.status, error.message)
        has_file = in_body or bool(files)
        if not has_file:
            if params.get("src"):
                return failure(404, "Unknown src file.")
            return (
                failure(400, "Unable to identify upload format.")
                if explicit
                else failure(500, "Index: 0, Size: 0")
            )
        if handler not in IMPLEMENTED_HANDLERS:
            return failure(501, f"The XNAT stand-in does not implement the {handler} importer.")
        if files:
            file_name = files[0].filename or ""
        job = ImportJob(
            self.store,
            self.version,
            dict(params),
            file_name,
            fast=self.fast,
            headers_only=self.headers_only,
            filters=self.filters,
        )
        run = {
            "DICOM-zip": run_dicom_zip,
            "gradual-DICOM": run_gradual_dicom,
            "SI": run_session_importer,
        }[handler]
        try:
            if files and files[0].path is not None:
                with files[0].path.open("rb") as stream:
                    uris = run(job, stream)
            elif self.keep_uploads is not None:
                copy = self.keep_uploads / f"upload-{next(self._kept):03d}.bin"
                tee = TeeBody(call.body, copy)
                try:
                    uris = run(job, tee)
                finally:
                    tee.close()
            else:
                uris = run(job, call.body)
        except ImportRefusedError as error:
            log.info("import refused (%s): %s", error.status, error.message)
            if error.uncaught:  # escaped the Importer: no format=html page for it
                return pages.status_page(error.status, error.message)
            return failure(error.status, error.message)
        return pages.uri_list(uris, response_format)


def _content_length(headers: Message) -> int | None:
    if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
        return None
    value = headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
