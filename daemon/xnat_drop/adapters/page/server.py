"""The status page's HTTP listener (http.server): GET and HEAD of four fixed paths, answered
from the last Snapshot the loop handed over, on threads of its own.

The handler never touches the loop's state or the ledger: it reads one immutable Snapshot
through a single reference the loop replaces (an atomic assignment). What a request can do is
bounded: at most SLOTS at once (the unit's TasksMax= counts each thread), a request head of at
most HEAD_BUDGET bytes, TIMEOUT seconds per read or write, HTTP/1.0 (one request per
connection). Requests are not logged one by one; failures of the server itself are.
"""

from __future__ import annotations

import http.client
import logging
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

log = logging.getLogger("xnat_drop.page")

SLOTS = 8  # requests served at once; more are closed unanswered
TIMEOUT = 10.0  # seconds a client may take to send its request or read the answer
MAX_REQUEST_LINE = 8192  # bytes
HEAD_BUDGET = 32768  # bytes of request line and headers together
ALLOWED = "GET, HEAD"
PATHS = ("/", "/status.json", "/metrics", "/healthz")
HTML = "text/html; charset=utf-8"
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the page serves until the loop hands over the next one."""

    html: bytes  # "/"
    status_json: bytes  # "/status.json": what `xnat-drop status --json` prints
    metrics: bytes  # "/metrics"
    metrics_type: str  # its Content-Type
    problem: str | None  # why /healthz is 503 (None: healthy, if this snapshot is recent)
    style_source: str  # the CSP source that allows the page's one inline style
    at: float  # monotonic: when the loop handed it over


def policy(style_source: str | None) -> str:
    """The Content-Security-Policy: nothing but the page's own inline style; no script at all."""
    style = f"style-src {style_source}; " if style_source else ""
    return (
        f"default-src 'none'; {style}img-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


class PageServer:
    """The listener on `host`:`port`; `start` binds it, `publish` hands it a snapshot.

    /healthz answers 503 when the last snapshot is older than `stale_after` seconds (by
    `monotonic`): the loop hands one over at least every 10 s while it lives.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        stale_after: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host, self.port = host, port
        self.stale_after = stale_after
        self.monotonic = monotonic
        self.current: Snapshot | None = None  # replaced whole, never changed
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens (the port the system chose, for port 0)."""
        if self._server is None:
            return self.host, self.port
        return self.host, int(self._server.server_address[1])

    def start(self) -> None:
        """Bind and serve on a thread of its own. Raises OSError: the port is in use, the
        address is not this machine's, binding is not permitted, the name does not resolve."""
        try:
            found = socket.getaddrinfo(
                self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
        except socket.gaierror as exc:
            raise OSError(f"{self.host}: {exc.strerror}") from exc
        family, _, _, _, sockaddr = found[0]
        self._server = _Server(sockaddr, family, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name="status-page",
            daemon=True,  # never holds up the exit
        )
        self._thread.start()

    def publish(self, snapshot: Snapshot) -> None:
        self.current = snapshot

    def close(self) -> None:
        """Stop listening (requests under way finish on their daemon threads). Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def answer(self, path: str) -> tuple[int, str, bytes, Snapshot | None]:
        """(status, Content-Type, body, the snapshot it came from) for a GET of `path` (its
        query already cut off)."""
        snap, now = self.current, self.monotonic()  # one snapshot for the whole answer
        if path not in PATHS:
            body = b"not found: this page serves / /status.json /metrics /healthz\n"
            return 404, TEXT, body, snap
        if path == "/healthz":
            problem = _problem(snap, now, self.stale_after)
            if problem:
                return 503, TEXT, f"{problem}\n".encode(), snap
            return 200, TEXT, b"ok\n", snap
        if snap is None:
            return 503, TEXT, b"the daemon has not reported yet\n", snap
        if path == "/":
            return 200, HTML, snap.html, snap
        if path == "/status.json":
            return 200, JSON, snap.status_json, snap
        return 200, snap.metrics_type, snap.metrics, snap


def _problem(snap: Snapshot | None, now: float, stale_after: float) -> str | None:
    if snap is None:
        return "the daemon has not reported yet"
    silent = now - snap.at
    if silent > stale_after:
        return (
            f"the loop has not reported for {silent:.0f} s (hung, or its state directory "
            "cannot be written)"
        )
    return snap.problem


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 16

    def __init__(self, address: Any, family: socket.AddressFamily, page: PageServer) -> None:
        self.address_family = family
        self.page = page
        self._slots = threading.BoundedSemaphore(SLOTS)
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer's own looks the host up in DNS (getfqdn), which may hang; we need no name.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.page.host, int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # too many at once: closed unanswered
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):  # the client went away
            log.debug("status page: %s from %s", exc, client_address)
        else:
            log.exception("status page: a request failed")


class _HeadLimit:
    """The request's input, allowing HEAD_BUDGET bytes of request line and headers in all;
    beyond it, http.server answers 431 (it catches LineTooLong while reading headers)."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._left = HEAD_BUDGET

    def readline(self, limit: int = -1) -> bytes:
        if self._left <= 0:
            raise http.client.LineTooLong("request head")
        line = cast(bytes, self._raw.readline(self._left if limit < 0 else min(limit, self._left)))
        self._left -= len(line)
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def _path(target: str) -> str:
    """The request target without its query or fragment: those change nothing here."""
    return target.split("?", 1)[0].split("#", 1)[0]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    raw_requestline: bytes  # set by the base class before parse_request
    server_version = "xnat-drop"
    protocol_version = "HTTP/1.0"
    timeout = TIMEOUT

    def setup(self) -> None:
        super().setup()
        self.rfile = cast(Any, _HeadLimit(self.rfile))

    def parse_request(self) -> bool:
        if len(self.raw_requestline) > MAX_REQUEST_LINE:
            self.requestline, self.request_version, self.command = "", "", ""
            self.send_error(414)
            return False
        if not super().parse_request():
            return False
        if self.command not in ("GET", "HEAD"):
            self.send_error(405)
            return False
        return True

    def do_GET(self) -> None:
        self._respond(*self.server.page.answer(_path(self.path)), body=True)

    def do_HEAD(self) -> None:
        self._respond(*self.server.page.answer(_path(self.path)), body=False)

    def version_string(self) -> str:
        return self.server_version  # no Python version given away

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # The standard phrase only: nothing of the request is echoed back. Always a status
        # line, even to a request too broken to say its HTTP version.
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"
        phrase = self.responses.get(code, ("error",))[0]
        content = f"{code} {phrase}\n".encode()
        self._respond(code, TEXT, content, self.server.page.current, body=self.command != "HEAD")

    def _respond(
        self,
        status: int,
        content_type: str,
        content: bytes,
        snap: Snapshot | None,
        *,
        body: bool,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(content)))
        self.send_header("Content-Security-Policy", policy(snap.style_source if snap else None))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Frame-Options", "DENY")
        if status == 405:
            self.send_header("Allow", ALLOWED)
        self.end_headers()
        if body:
            self.wfile.write(content)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no line per request in the journal

    def log_error(self, format: str, *args: Any) -> None:
        log.debug("status page: " + format, *args)  # a client's mistake, not the daemon's
