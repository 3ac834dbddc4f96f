"""The XNAT REST resources the emulator serves: authentication gate, routes and services.

Routing follows Restlet's: ``/data`` (or ``/REST``) prefix, archive routes also under
``/data/archive``, prefix matching with the remainder available to the resource (the import
service's file name). Project, archive and prearchive resources live in ``sessions``.
Everything answers with the bodies XNAT uses (``pages``).
"""

from __future__ import annotations

import itertools
import logging
import re
import urllib.parse
from collections.abc import Callable
from email.message import Message
from pathlib import Path
from typing import Any

from . import pages
from .auth import Auth, Outcome
from .call import (
    SUPPORTED_UPLOAD_TYPES,
    Call,
    flag,
    media_params,
    media_type,
    no_length_message,
    read_form,
)
from .catalog import ResourceCatalogs
from .configapi import ConfigResources
from .filterconfig import SeriesFilters
from .httpbody import BadBodyError, FormPart, TeeBody, parse_multipart
from .importer import (
    HANDLERS,
    IMPLEMENTED_HANDLERS,
    ImportJob,
    ImportRefusedError,
    parse_dest,
    run_dicom_zip,
    run_gradual_dicom,
    run_session_importer,
)
from .inbox import Inbox
from .inboxstate import InboxMap
from .pages import Reply
from .sessionres import ResourceRoutes
from .sessions import NO_EXPERIMENT, SessionResources, archive_request
from .store import (
    ArchiveError,
    ArchiveRequest,
    Store,
    UnknownSessionError,
)
from .versions import XnatVersion

log = logging.getLogger("xnat_standin")

BROWSER_AGENTS = re.compile(r".*MSIE.*|.*Mozilla.*|.*AppleWebKit.*|.*Opera.*", re.DOTALL)
LOGIN_FAILED = "Login attempt failed. Please try again."
NEEDS_AUTH = "Full authentication is required to access this resource"

_UPLOAD_EXTENSIONS = {
    "application/zip": ".zip",
    "application/x-gtar": ".tar.gz",
    "application/x-tar": ".tar",
    "application/dicom": ".dcm",
    "application/x-gzip": ".gzip",
    "application/octet-stream": "",
}
_DICOM_TYPES = frozenset({"application/dicom", "application/x-mirc", "application/x-mirc-dicom"})


class DataApi:
    """Authenticates requests and routes them to XNAT's resources."""

    def __init__(
        self,
        store: Store,
        auth: Auth,
        version: XnatVersion,
        site_id: str,
        keep_uploads: Path | None = None,
        fast: bool = False,
        headers_only: bool = False,
        filters: SeriesFilters | None = None,
        inbox_map: InboxMap | None = None,
        context_path: str = "",
        preferences: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.keep_uploads = keep_uploads  # tests read the exact bytes a client sent
        self.fast = fast  # benchmark-only DICOM-zip shortcut (fastpath.py)
        self.headers_only = headers_only
        self._kept = itertools.count(1)
        self.store = store
        self.auth = auth
        self.version = version
        self.site_id = site_id
        self.filters = filters if filters is not None else SeriesFilters(store.lock)
        self.catalogs = ResourceCatalogs(store.lock)
        store.on_archive = self.catalogs.carry
        routes = ResourceRoutes(store, self.catalogs, version, self.filters)
        self.sessions = SessionResources(store, version, routes)
        self.inbox = Inbox(store, self.filters, inbox_map or InboxMap(), context_path=context_path)
        self.configs = ConfigResources(
            self.filters,
            store,
            lambda: {
                "checksums": self.catalogs.checksums,
                **(preferences() if preferences is not None else {}),
            },
            admin_preferences=self.inbox.admin_preferences,
        )
        self.dicomscp: Callable[[], list[dict[str, Any]]] = list  # the Emulator's receivers

    def handle(self, call: Call) -> Reply:
        segments = call.segments
        if segments[:1] == ["xapi"]:
            return call.with_headers(self._xapi(call))
        if segments[:1] not in (["data"], ["REST"]):
            refused = self._authenticate(call)
            return call.with_headers(refused or pages.servlet_error_page(404, "Not Found"))
        rest = segments[1:]
        if rest == ["services", "auth"]:
            return call.with_headers(self._services_auth(call))
        refused = self._authenticate(call)
        if refused is not None:
            return refused
        return call.with_headers(self._route(call, rest))

    # -- authentication -------------------------------------------------------------------

    def _authenticate(self, call: Call) -> Reply | None:
        cookie = _cookie(call.headers, "JSESSIONID")
        result = self.auth.authenticate(call.headers.get("Authorization"), cookie)
        if result.outcome is Outcome.MALFORMED:
            return pages.servlet_error_page(500, "Invalid basic authentication token")
        if result.outcome is Outcome.FAILED:
            return pages.servlet_error_page(401, LOGIN_FAILED)
        if result.outcome is Outcome.ANONYMOUS:
            if BROWSER_AGENTS.fullmatch(call.user_agent):
                host = call.headers.get("Host", "localhost")
                location = f"http://{host}/app/template/Login.vm"
                return Reply(302, b"", "text/html;charset=UTF-8", (("Location", location),))
            reply = pages.servlet_error_page(401, NEEDS_AUTH)
            challenge = ("WWW-Authenticate", f'Basic realm="{self.site_id}"')
            return Reply(reply.status, reply.body, reply.content_type, (challenge,))
        call.user = result.user
        call.session_id = result.session_id
        if result.new_session and result.session_id:
            call.response_headers.append(("Set-Cookie", _session_cookie(result.session_id)))
        return None

    def _services_auth(self, call: Call) -> Reply:
        if call.method not in ("PUT", "POST"):
            return pages.status_page(405)
        form = read_form(call)
        username = form.get("username") or form.get("j_username") or ""
        password = form.get("password") or form.get("j_password") or ""
        result = self.auth.login(username, password)
        if result.outcome is not Outcome.OK or not result.session_id:
            return pages.status_page(401, "Authentication failed.")
        call.user = result.user
        call.response_headers.append(("Set-Cookie", _session_cookie(result.session_id)))
        return pages.text(200, result.session_id)

    # -- /xapi --------------------------------------------------------------------------

    def _xapi(self, call: Call) -> Reply:
        rest = call.segments[1:]
        if rest[:1] == ["siteConfig"] and rest[1:] in (["buildInfo"], ["siteId"], ["siteUrl"]):
            if call.method != "GET":
                return pages.servlet_error_page(405, "Method Not Allowed")
            if rest[1] == "buildInfo":
                return pages.json_reply(
                    {
                        "version": self.version.text,
                        "buildNumber": "emulator",
                        "buildDate": "Thu Jan 01 00:00:00 UTC 1970",
                        "sha": "0000000",
                        "isDirty": "false",
                        "tag": self.version.text,
                    }
                )
            if rest[1] == "siteId":
                return pages.text(200, self.site_id)
            host = call.headers.get("Host", "localhost")
            return pages.text(200, f"http://{host}{self.inbox.context_path}")
        refused = self._authenticate(call)
        if refused is not None:
            return refused
        if rest[:1] == ["siteConfig"]:
            return self.configs.site_config(call, rest[1:])
        if rest[:1] == ["dicom"]:  # DicomTransactionApi: the inbox's requests (inbox.py)
            return self.inbox.xapi(call, rest[1:])
        if rest[:1] == ["dicomscp"]:
            return self._dicomscp(call, rest[1:])
        return pages.servlet_error_page(404, "Not Found")

    def _dicomscp(self, call: Call, rest: list[str]) -> Reply:
        """``DicomSCPApi``: the list for anyone signed in; one receiver (by id) admins only."""
        if call.method != "GET":
            return pages.servlet_error_page(405, "Method Not Allowed")
        receivers = self.dicomscp()
        if not rest:
            return pages.json_reply(receivers)
        if not self.filters.is_admin(call.user):
            return pages.servlet_error_page(403, "Forbidden")
        found = [r for r in receivers if len(rest) == 1 and str(r["id"]) == rest[0]]
        if not found:
            return pages.servlet_error_page(404, "Not Found")
        return pages.json_reply(found[0])

    # -- /data routing ------------------------------------------------------------------

    def _route(self, call: Call, rest: list[str]) -> Reply:
        if rest[:1] == ["archive"] and rest[1:2] in (["projects"], ["experiments"], ["subjects"]):
            rest = rest[1:]
        head = rest[:1]
        if rest == ["JSESSION"]:
            return self._jsession(call)
        if rest == ["auth"]:
            if call.method != "GET":
                return pages.status_page(405)
            csrf = (
                f"; XNAT_CSRF={self.auth.csrf_token(call.session_id or '')}"
                if flag(call.query.get("CSRF"))
                else ""
            )
            return pages.text(200, f"User '{call.user}' is logged in{csrf}")
        if rest[:2] == ["services", "import"]:
            return self._import(call, rest[2:])
        if rest == ["services", "archive"]:
            return self._services_archive(call)
        if rest[:2] == ["services", "tokens"]:
            return self._tokens(call, rest[2:])
        if head == ["config"]:
            return self.configs.site(call, rest[1:])
        if head == ["projects"] and rest[2:3] == ["config"]:
            return self.configs.project(call, rest[1], rest[3:])
        if head == ["projects"]:
            return self.sessions.projects(call, rest[1:])
        if rest == ["experiments"]:
            if call.method != "GET":
                return pages.status_page(405)
            return self.sessions.experiment_list(call, None, None)
        if head == ["experiments"] and len(rest) >= 2:
            experiment = self.store.experiment(rest[1])
            if experiment is None:
                return pages.status_page(404, NO_EXPERIMENT)
            return self.sessions.experiment(call, experiment, rest[2:])
        if head == ["prearchive"]:
            return self.sessions.prearchive(call, rest[1:])
        return pages.status_page(404)

    def _jsession(self, call: Call) -> Reply:
        session_id = call.session_id or ""
        if call.method == "DELETE":
            self.auth.invalidate_session(call.session_id)
            call.response_headers.clear()
            return pages.text(200, "")
        if call.method not in ("GET", "POST"):
            return pages.status_page(405)
        if not any(name == "Set-Cookie" for name, _ in call.response_headers):
            call.response_headers.append(("Set-Cookie", _session_cookie(session_id)))
        body = session_id
        if flag(call.query.get("CSRF")):
            body += f"; XNAT_CSRF={self.auth.csrf_token(session_id)}"
        return pages.text(200, body)

    def _tokens(self, call: Call, rest: list[str]) -> Reply:
        user = call.user or ""
        if rest[:1] == ["issue"]:
            target = user
            if rest[1:2] == ["user"] and len(rest) == 3:
                target = rest[2]
                if not self.auth.has_user(target):
                    return pages.status_page(404, f"Couldn't find user {target}")
            elif len(rest) != 1:
                return pages.status_page(404)
            return pages.json_reply(self.auth.issue_token(target).as_json())
        if rest[:1] == ["validate"] and len(rest) == 3:
            return pages.json_reply({"valid": self.auth.validate_token(rest[1], rest[2])})
        if rest[:1] == ["invalidate"] and len(rest) in (2, 3):
            if not self.auth.invalidate_token(rest[1]):
                return pages.status_page(404, f"Can't find an alias token with the alias {rest[1]}")
            return pages.json_reply({"result": "OK"})
        if rest == ["show"]:
            return pages.json_reply([token.as_json() for token in self.auth.tokens_of(user)])
        return pages.status_page(404)

    # -- POST /data/services/import -----------------------------------------------------

    def _import(self, call: Call, remainder: list[str]) -> Reply:
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
        boundary = media_params(call.headers.get("Content-Type")).get("boundary")
        if not boundary:
            return (
                pages.status_page(
                    400, "the request was rejected because no multipart boundary was found"
                ),
                {},
                [],
            )
        spooled: list[Path] = []

        def new_file() -> Path:
            spooled.append(call.new_file())
            return spooled[-1]

        try:
            parts = parse_multipart(call.body, boundary, new_file)
        except BaseException as error:  # also a dropped connection: no spooled file stays
            for path in spooled:
                path.unlink(missing_ok=True)
            if isinstance(error, BadBodyError):
                return pages.status_page(400, str(error)), {}, []
            raise
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

    # -- POST /data/services/archive ----------------------------------------------------

    def _services_archive(self, call: Call) -> Reply:
        if call.method != "POST":
            return pages.status_page(405)
        params = {**read_form(call), **call.query}
        source = (params.get("src") or "").removeprefix("/data")
        match = re.fullmatch(r"/prearchive/projects/([^/]+)/([^/]+)/([^/]+)/?", source)
        if match is None:
            return pages.status_page(400, "Invalid src parameter")
        request = archive_request(params)
        if params.get("dest"):
            try:
                dest = parse_dest(params["dest"])
            except ValueError:
                return pages.status_page(400, "Invalid dest parameter")
            request = ArchiveRequest(
                project=dest.project or request.project,
                subject=dest.subject or request.subject,
                label=dest.experiment or dest.experiment_id or request.label,
                override=request.override,
                overwrite_files=request.overwrite_files,
            )
        key = tuple(urllib.parse.unquote(part) for part in match.groups())
        try:
            uri = self.store.archive(key[0], key[1], key[2], request)
        except UnknownSessionError:
            return pages.status_page(404, f"Unable to locate prearchive session {source}")
        except ArchiveError as error:
            return pages.status_page(409 if error.conflict else 400, error.message)
        return pages.uri_list(["/data" + uri], None)


def _session_cookie(session_id: str) -> str:
    return f"JSESSIONID={session_id}; Path=/; HttpOnly"


def _cookie(headers: Message, name: str) -> str | None:
    for header in headers.get_all("Cookie") or []:
        for part in str(header).split(";"):
            key, _, value = part.strip().partition("=")
            if key == name and value:
                return value
    return None


def _content_length(headers: Message) -> int | None:
    if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
        return None
    value = headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
