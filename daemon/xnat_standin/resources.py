"""The XNAT REST resources the emulator serves: authentication gate, routes and services.

Routing follows Restlet's: ``/data`` (or ``/REST``) prefix, archive routes also under
``/data/archive``, prefix matching with the remainder available to the resource (the import
service's file name). Signing in is ``authgate``'s; the import service ``importservice``'s;
project and archive resources live in ``archiveroutes``, the prearchive's in
``prearchiveroutes``. Everything answers with the bodies XNAT uses (``pages``).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import pages
from .archiveroutes import NO_EXPERIMENT, ArchiveRoutes
from .archiving import ArchiveError, ArchiveRequest
from .auth import Auth
from .authgate import AuthGate
from .call import Call, read_form
from .catalog import ResourceCatalogs
from .configapi import ConfigResources
from .filterconfig import SeriesFilters
from .importjob import parse_dest
from .importservice import ImportService
from .inbox import Inbox
from .inboxstate import InboxMap
from .pages import Reply
from .prearchive import UnknownSessionError
from .prearchiveroutes import PrearchiveRoutes, archive_request
from .sessionres import ResourceRoutes
from .store import Store
from .versions import XnatVersion


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
        self.fast = fast  # benchmark-only DICOM-zip shortcut (fastpath.py)
        self.headers_only = headers_only
        self.store = store
        self.gate = AuthGate(auth, site_id)
        self.version = version
        self.site_id = site_id
        self.filters = filters if filters is not None else SeriesFilters(store.lock)
        self.catalogs = ResourceCatalogs(store.lock)
        store.on_archive = self.catalogs.carry
        routes = ResourceRoutes(store, self.catalogs, version, self.filters)
        self.archive = ArchiveRoutes(store, routes)
        self.prearchive = PrearchiveRoutes(store, version, routes)
        self.inbox = Inbox(store, self.filters, inbox_map or InboxMap(), context_path=context_path)
        self.imports = ImportService(
            store,
            version,
            self.filters,
            self.inbox,
            keep_uploads=keep_uploads,
            fast=fast,
            headers_only=headers_only,
        )
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
            refused = self.gate.authenticate(call)
            return call.with_headers(refused or pages.servlet_error_page(404, "Not Found"))
        rest = segments[1:]
        if rest == ["services", "auth"]:
            return call.with_headers(self.gate.services_auth(call))
        refused = self.gate.authenticate(call)
        if refused is not None:
            return refused
        return call.with_headers(self._route(call, rest))

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
        refused = self.gate.authenticate(call)
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
            return self.gate.jsession(call)
        if rest == ["auth"]:
            return self.gate.logged_in(call)
        if rest[:2] == ["services", "import"]:
            return self.imports.handle(call, rest[2:])
        if rest == ["services", "archive"]:
            return self._services_archive(call)
        if rest[:2] == ["services", "tokens"]:
            return self.gate.tokens(call, rest[2:])
        if head == ["config"]:
            return self.configs.site(call, rest[1:])
        if head == ["projects"] and rest[2:3] == ["config"]:
            return self.configs.project(call, rest[1], rest[3:])
        if head == ["projects"]:
            return self.archive.projects(call, rest[1:])
        if rest == ["experiments"]:
            if call.method != "GET":
                return pages.status_page(405)
            return self.archive.experiment_list(call, None, None)
        if head == ["experiments"] and len(rest) >= 2:
            experiment = self.store.archive.experiment(rest[1])
            if experiment is None:
                return pages.status_page(404, NO_EXPERIMENT)
            return self.archive.experiment(call, experiment, rest[2:])
        if head == ["prearchive"]:
            return self.prearchive.route(call, rest[1:])
        return pages.status_page(404)

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
            uri = self.store.commit(key[0], key[1], key[2], request)
        except UnknownSessionError:
            return pages.status_page(404, f"Unable to locate prearchive session {source}")
        except ArchiveError as error:
            return pages.status_page(409 if error.conflict else 400, error.message)
        return pages.uri_list(["/data" + uri], None)
