"""The ``Emulator``: one XNAT stand-in with its state, HTTP server and auto-builder thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from . import controlapi
from .auth import Auth
from .faults import Fault, FaultBook
from .filterconfig import SeriesFilters
from .httpbody import ReceiveRate
from .inboxfaults import InboxFault
from .inboxstate import INBOX_PATH, InboxMap, InboxRequest
from .inboxworker import InboxWorker
from .pages import Reply
from .records import ArchivedSession, PrearchiveSession, RequestRecord
from .resources import DataApi
from .scpconfig import DEFAULT_AE_TITLE, DicomReceiver
from .scprunner import ScpRunner
from .scpstate import AssociationRecord, ScpFault, ScpState, StoreRecord
from .server import EmulatorHTTPServer
from .store import Store, build_poll_seconds, rebuilder_preferences
from .versions import XnatVersion

log = logging.getLogger("xnat_standin")

TWO_DAYS = 2 * 24 * 3600.0
MAX_LOGGED_REQUESTS = 10_000


class Emulator:
    """A local XNAT stand-in over real HTTP on 127.0.0.1.

    ``root`` holds the prearchive and archive folders. The state (projects, sessions, users)
    lives in memory for the emulator's lifetime; ``stop()`` then ``start()`` keeps it and the
    port, which lets a test take the server down and bring it back.

    ``users`` maps names to passwords (default ``{"admin": "admin"}``); ``projects`` are
    created with prearchive code 0 (use ``add_project`` for 4/5); ``version`` selects the
    behaviour band (<= 1.8.2, 1.8.3-1.8.9, >= 1.8.10); ``idle_build_seconds`` is how long a
    receiving session waits before the auto-builder builds it; ``session_timeout`` ends idle
    HTTP sessions; ``max_failed_logins`` locks an account; ``port`` 0 picks a free port;
    ``keep_uploads``, a folder, keeps each in-body import's bytes as ``upload-NNN.bin`` (for
    tests that check exactly what a client sent).

    ``fast=True`` is for benchmarks only: DICOM-zip entries are then parsed from memory by a
    minimal header scanner and written straight into the prearchive (``fastpath``), so that a
    large upload measures the client rather than the stand-in. The zip is read and refused
    exactly as without it; off by default, and never for the tests of the importer itself.
    ``headers_only=True`` (with ``fast``) stores each object only up to its header.

    ``receive_rate`` (MB/s, 10^6 bytes/s) limits how fast every request body is read, all
    requests together, as a link of that speed would (``ReceiveRate``): ``12`` is about a
    100 Mbit/s link. None (the default): as fast as the client sends.

    The inbox import handler (``inbox``, ``inboxworker``): ``inbox_path`` is the site
    preference ``inboxPath``; ``inbox_root``, a local folder, is what the server sees as
    ``inbox_path`` (None: server paths are local paths). ``context_path`` (e.g. "/xnat") serves
    everything below it, as a Tomcat context would, and is in ``url`` and the inbox's answers.

    The DICOM receiver (``dicomscp``, needs the ``cstore`` extra): ``dicom_port`` (0: a free
    one; None, the default: no receiver) serves the receivers of ``dicom_receivers()``, at
    first one with ``dicom_ae_title``; ``idle_build_seconds`` is also its
    ``sessionXmlRebuilderInterval``.
    """

    def __init__(
        self,
        root: Path | str,
        *,
        users: Mapping[str, str] | None = None,
        projects: Iterable[str] = (),
        version: str = "1.8.10",
        idle_build_seconds: float = 300.0,
        session_timeout: float = 900.0,
        max_failed_logins: int = 20,
        token_lifetime: float = TWO_DAYS,
        host: str = "127.0.0.1",
        port: int = 0,
        site_id: str = "XNAT",
        keep_uploads: Path | str | None = None,
        fast: bool = False,
        headers_only: bool = False,
        receive_rate: float | None = None,
        inbox_path: str = INBOX_PATH,
        inbox_root: Path | str | None = None,
        context_path: str = "",
        dicom_port: int | None = None,
        dicom_ae_title: str = DEFAULT_AE_TITLE,
    ) -> None:
        if context_path and (not context_path.startswith("/") or context_path.endswith("/")):
            raise ValueError(f'context path must look like "/xnat", not {context_path!r}')
        self.context_path = context_path
        self.root = Path(root)
        self.link = None if receive_rate is None else ReceiveRate(receive_rate * 1e6)
        self.version = XnatVersion.parse(version)
        self.idle_build_seconds = idle_build_seconds
        self.host = host
        self._port = port
        self._lock = threading.RLock()  # the one lock all emulator state shares
        self.store = Store(self.root, self._lock)
        self.auth = Auth(
            dict(users) if users is not None else {"admin": "admin"},
            self._lock,
            session_timeout=session_timeout,
            max_failed_logins=max_failed_logins,
            token_lifetime=token_lifetime,
        )
        self.faults = FaultBook(self._lock)
        self.filters = SeriesFilters(self._lock)
        if keep_uploads is not None:
            Path(keep_uploads).mkdir(parents=True, exist_ok=True)
        self.api = DataApi(
            self.store,
            self.auth,
            self.version,
            site_id,
            None if keep_uploads is None else Path(keep_uploads),
            fast=fast,
            headers_only=fast and headers_only,
            filters=self.filters,
            inbox_map=InboxMap(inbox_path, None if inbox_root is None else Path(inbox_root)),
            context_path=context_path,
            preferences=lambda: rebuilder_preferences(self.idle_build_seconds),
        )
        self.inbox = self.api.inbox
        self.dicom = ScpState(self._lock, [DicomReceiver(dicom_ae_title)])
        self._scp = ScpRunner(self.store, self.filters, self.version, self.dicom, host, dicom_port)
        self.api.dicomscp = self._scp.receivers_json
        self._inbox_worker = InboxWorker(self.inbox, self.version)
        self.fast = fast
        self._requests: list[RequestRecord] = []
        self._server: EmulatorHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        for project in projects:
            self.store.add_project(project)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Emulator:
        """Bind and serve in background threads; returns self. Idempotent."""
        if self._server is not None:
            return self
        server = EmulatorHTTPServer((self.host, self._port), self)
        self._port = server.server_address[1]
        self._server = server
        self._stopping.clear()
        self._threads = [
            threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.1},
                name="xnat-emulator-http",
                daemon=True,
            ),
            threading.Thread(
                target=self._auto_build_loop, name="xnat-emulator-builder", daemon=True
            ),
            threading.Thread(  # the inbox's JMS listener; a request under way is finished
                target=self._inbox_worker.run,
                args=(self._stopping,),
                name="xnat-emulator-inbox",
                daemon=True,
            ),
        ]
        for thread in self._threads:
            thread.start()
        self._scp.start()
        log.info(
            "XNAT stand-in %s listening on %s%s",
            self.version.text,
            self.url,
            " (fast path for benchmarks: DICOM-zip entries are not fully parsed)"
            if self.fast
            else "",
        )
        return self

    def stop(self) -> None:
        """Stop serving and close every connection (the state and files stay)."""
        server = self._server
        if server is None:
            return
        self._stopping.set()
        self._scp.stop()
        server.stop()
        for thread in self._threads:
            thread.join(timeout=5)
        self._server = None
        self._threads = []

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port == 0:
            raise RuntimeError("the emulator has not been started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. "http://127.0.0.1:8080" (no trailing slash; with the context path)."""
        return f"http://{self.host}:{self.port}{self.context_path}"

    @property
    def dicom_port(self) -> int:
        """The DICOM receivers' port (once started with ``dicom_port``)."""
        return self._scp.port

    @property
    def ae_title(self) -> str:
        """The AE title of the first receiver (default "XNAT")."""
        return self.dicom.receivers()[0].ae_title

    def _auto_build_loop(self) -> None:
        interval = build_poll_seconds(self.idle_build_seconds)
        while not self._stopping.wait(interval):
            try:
                self.store.auto_build(self.idle_build_seconds)
            except Exception:
                log.exception("auto-build failed")

    # -- configuration --------------------------------------------------------------------

    def add_project(
        self, project_id: str, prearchive_code: int = 0, *, aliases: Iterable[str] = ()
    ) -> None:
        """Create (or redefine) a project; prearchive code 0 manual, 4/5 auto-archive."""
        self.store.add_project(project_id, prearchive_code, aliases)

    def add_user(self, name: str, password: str) -> None:
        self.auth.add_user(name, password)

    def unlock_user(self, name: str) -> None:
        """Clear a user's failed-login count (XNAT: an admin re-enables the account)."""
        self.auth.unlock(name)

    def issue_token(self, user: str) -> tuple[str, str]:
        """A new alias token for ``user``: (alias, secret), usable as Basic credentials."""
        token = self.auth.issue_token(user)
        return token.alias, token.secret

    def invalidate_token(self, alias: str) -> None:
        self.auth.invalidate_token(alias)

    def set_series_filter(
        self,
        project: str | None,
        *,
        mode: str = "blacklist",
        list_text: str = "localizer",
        status: str = "enabled",
        contents: str | None = None,
    ) -> None:
        """Store a series import filter: the site's (``project=None``) or a project's (by ID).

        As XNAT commits one, the contents are ``{"mode", "enabled", "projectId", "list"}``;
        ``contents`` replaces that string whole (broken or odd filters). The row's ``status``
        ("enabled"/"disabled") decides whether it filters, never the ``enabled`` key. The site
        preferences ``enableSitewideSeriesImportFilter``, ``sitewideSeriesImportFilterMode``
        and ``sitewideSeriesImportFilter`` follow the site filter.
        """
        if project is not None:
            found = self.store.project(project)
            if found is None or found.id != project:
                raise ValueError(f"no project with the ID {project!r}")
        self.filters.set(project, mode=mode, list_text=list_text, status=status, contents=contents)

    def clear_series_filter(self, project: str | None) -> None:
        """Remove the site's (``None``) or a project's series import filter."""
        self.filters.clear(project)

    def set_project_readers(self, project: str, users: Iterable[str] | None) -> None:
        """Only ``users`` (and admins) may read ``project`` (None: everyone). Checked by the
        project config resource only; other resources do not check permissions."""
        self.filters.set_readers(project, users)

    def set_site_config_admin_only(
        self, on: bool = True, *, admins: Iterable[str] | None = None
    ) -> None:
        """Make ``/data/config/...`` (site scope) answer 403 to non-admins (default admin:
        the user "admin"), the case XNAT's source leaves open; ``admins`` replaces the list."""
        self.filters.set_site_admin_only(on, admins)

    def set_checksums(self, on: bool) -> None:
        """The site preference ``checksums`` (default true): whether archive resource catalogs
        get MD5 digests as files are recorded (``/xapi/siteConfig/checksums`` answers it)."""
        self.api.catalogs.set_checksums(on)

    def session_resources(self, label: str) -> dict[str, dict[str, bytes]]:
        """The session resources of the archived session labelled ``label`` (else of the
        prearchive session in folder ``label``): resource label -> {relative path: bytes} of
        every file on disk, catalogued or not (a file cut off mid-upload is there, partial).
        Raises KeyError when there is no such session."""
        directory, _ = self.store.session_dir(label)
        return self.api.catalogs.files(directory)

    def put_resource_file(
        self, label: str, resource: str, relpath: str, data: bytes, *, catalogued: bool = True
    ) -> None:
        """Write a resource file of session ``label`` directly (the resource is created if
        missing), e.g. a different file where a client will upload; ``catalogued=False`` puts
        it on disk only, as a cut upload leaves one. Raises KeyError for an unknown session."""
        directory, archived = self.store.session_dir(label)
        self.api.catalogs.put_file(
            directory, resource, relpath, data, catalogued=catalogued, digests=archived
        )

    def inject(self, fault: Fault) -> None:
        self.faults.add(fault)

    def clear_faults(self) -> None:
        self.faults.clear()

    def inject_inbox(self, fault: InboxFault) -> None:
        """An inbox fault: a request stuck in Queued, Failed at once, a path seen late."""
        self.inbox.inject(fault)

    def clear_inbox_faults(self) -> None:
        """Remove the inbox faults; the requests a stuck fault held go on."""
        self.inbox.clear_faults()

    def set_dicom_receiver(self, receiver: DicomReceiver) -> None:
        """Add a receiver on the DICOM port, or replace the one with its AE title."""
        self.dicom.set_receiver(receiver)

    def dicom_receivers(self) -> list[DicomReceiver]:
        return self.dicom.receivers()

    def inject_dicom(self, fault: ScpFault) -> None:
        """A DICOM receiver fault: a refused association, a status, an abort, a stall."""
        self.dicom.add_fault(fault)

    def clear_dicom_faults(self) -> None:
        self.dicom.clear_faults()

    def dicom_associations(self) -> list[AssociationRecord]:
        return self.dicom.associations()

    def dicom_stores(self) -> list[StoreRecord]:
        """Every C-STORE the receiver answered (or aborted), oldest first."""
        return self.dicom.stores()

    def expire_sessions(self) -> None:
        """End every HTTP session, as if all had timed out (cookies stop working)."""
        self.auth.expire_sessions()

    # -- inspection -----------------------------------------------------------------------

    def prearchive(self) -> list[PrearchiveSession]:
        return self.store.prearchive.snapshot()

    def archive(self) -> list[ArchivedSession]:
        return self.store.archive.snapshot()

    def inbox_requests(self) -> list[InboxRequest]:
        """The inbox's import requests, oldest first, as they are now."""
        return self.inbox.requests.all()

    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # -- called by the HTTP layer ---------------------------------------------------------

    def record(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(record)
            del self._requests[:-MAX_LOGGED_REQUESTS]

    def new_temp_file(self) -> Path:
        return self.store.temp_path()

    def control(self, method: str, path: str, body: bytes) -> Reply:
        """The ``/_emulator/`` API (no authentication; loopback only): controlapi.py."""
        return controlapi.control(self, method, path, body)

    def state(self) -> dict[str, Any]:
        """Everything a test may want to look at, as JSON-ready data (controlapi.py)."""
        return controlapi.state(self)
