"""HTTP plumbing: a threading HTTP/1.1 server, request parsing, faults, the request log.

Each response is written with a single ``send`` (status line, headers and body together), so
keep-alive clients never wait on Nagle's algorithm. Request bodies are read as streams by the
resources; whatever they leave unread is drained before answering, so that a client still
sending its upload always gets to read the answer.
"""

from __future__ import annotations

import contextlib
import email.utils
import ipaddress
import logging
import socket
import struct
import threading
import time
import urllib.parse
import weakref
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Protocol

from . import pages
from .call import Call
from .faults import Fault, FaultBook
from .httpbody import BadBodyError, ClientGone, ConnectionDropped, ReceiveRate, RequestBody
from .pages import Reply
from .records import RequestRecord
from .resources import DataApi

log = logging.getLogger("xnat_standin")
CONTROL_PREFIX = "/_emulator"
_MAX_CONTROL_BODY = 1 << 20


class Site(Protocol):
    """What the HTTP layer needs from the emulator."""

    api: DataApi
    faults: FaultBook
    link: ReceiveRate | None  # the receive-rate limit on request bodies, if any
    context_path: str  # "" or e.g. "/xnat": what the site is served below

    def record(self, record: RequestRecord) -> None: ...

    def control(self, method: str, path: str, body: bytes) -> Reply: ...

    def new_temp_file(self) -> Path: ...


class EmulatorHTTPServer(ThreadingHTTPServer):
    """Tracks open connections so that ``stop()`` can close idle keep-alive ones too."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], site: Site) -> None:
        self.site = site
        self._connections: set[socket.socket] = set()
        self._dropped: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._connections_lock = threading.Lock()
        super().__init__(address, RequestHandler)

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: object
    ) -> None:
        if isinstance(request, socket.socket):
            with self._connections_lock:
                self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        if isinstance(request, socket.socket):
            with self._connections_lock:
                self._connections.discard(request)
                dropped = request in self._dropped
            if dropped:  # no FIN first: SO_LINGER 0 makes close() send a reset
                request.close()
                return
        super().shutdown_request(request)

    def handle_error(self, request: object, client_address: object) -> None:
        # The default prints a traceback to stderr (e.g. for a client that reset mid-request).
        log.debug("error on a connection from %s", client_address, exc_info=True)

    def mark_dropped(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._dropped.add(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        """Stop serving now, close every connection (idle keep-alive ones too) and the socket."""
        stopper = threading.Thread(target=self.shutdown, name="xnat-emulator-stop")
        stopper.start()
        # Wake the accept loop's select() now rather than after its poll interval.
        address = (str(self.server_address[0]), self.server_address[1])  # reaches 0.0.0.0 too
        while stopper.is_alive():
            with contextlib.suppress(OSError):
                socket.create_connection(address, timeout=0.5).close()
            stopper.join(0.01)
        self.close_connections()
        self.server_close()


class RequestHandler(BaseHTTPRequestHandler):
    """One connection; ``_serve`` handles each request on it."""

    protocol_version = "HTTP/1.1"
    server_version = "Apache-Coyote/1.1"
    sys_version = ""
    timeout = 120.0  # idle keep-alive connections and stalled uploads end after this
    server: EmulatorHTTPServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        site = self.server.site
        split = urllib.parse.urlsplit(self.path)
        raw_segments = [part for part in split.path.split("/") if part]
        context = [part for part in site.context_path.split("/") if part]
        outside_context = bool(context) and raw_segments[: len(context)] != context
        if context and not outside_context:  # Tomcat hands the webapp the path below it
            raw_segments = raw_segments[len(context) :]
        segments = [urllib.parse.unquote(part) for part in raw_segments]
        path = "/" + "/".join(segments)
        query: dict[str, str] = {}
        for key, value in urllib.parse.parse_qsl(split.query, keep_blank_values=True):
            query.setdefault(key, value)
        method = "GET" if self.command == "HEAD" else self.command
        if path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/"):
            self._control(site, method, path)  # inside the context path or not
            return
        if outside_context:
            self.close_connection = True
            self._send(pages.servlet_error_page(404, "Not Found"))
            return
        fault = site.faults.take(method, path)
        try:
            body = self._body(fault)
        except ValueError:
            self.close_connection = True
            self._send(pages.status_page(400, "Bad Content-Length"))
            return
        call = Call(method, segments, query, self.headers, body, site.new_temp_file)
        call.raw_segments = raw_segments
        reply: Reply | None = None
        try:
            reply = self._answer(site, call, fault)
            try:
                body.drain()
            except BadBodyError as error:
                self.close_connection = True
                reply = pages.status_page(400, str(error))
            if fault is not None and fault.drop_after_bytes is not None:
                raise ConnectionDropped
        except ConnectionDropped:
            reply = None
            self._drop()
        except ClientGone:
            reply = None
            self.close_connection = True
        # Logged before answering, so a client that got its answer finds its request logged.
        site.record(
            RequestRecord(
                method,
                path,
                query,
                reply.status if reply is not None else None,
                call.user_agent,
                call.user,
                body.consumed,
            )
        )
        if reply is not None:
            if not body.finished:
                self.close_connection = True
            self._send(reply)

    def _answer(self, site: Site, call: Call, fault: Fault | None) -> Reply:
        if fault is not None and fault.status is not None:
            time.sleep(fault.delay)
            call.body.drain()
            if fault.body is not None:
                reply = pages.text(fault.status, fault.body)
            else:
                reply = pages.status_page(fault.status)
        else:
            try:
                reply = site.api.handle(call)
            except BadBodyError as error:
                self.close_connection = True
                reply = pages.status_page(400, str(error))
            except (ConnectionDropped, ClientGone):
                raise
            except Exception:
                log.exception("internal error on %s %s", call.method, self.path)
                self.close_connection = True
                reply = pages.status_page(500)
            if fault is not None:
                time.sleep(fault.delay)
        if fault is not None:
            extra = (
                [("Retry-After", str(fault.retry_after))] if fault.retry_after is not None else []
            )
            if fault.location is not None:
                extra.append(("Location", fault.location))
            reply = Reply(
                reply.status,
                reply.body,
                fault.content_type if fault.content_type is not None else reply.content_type,
                (*reply.headers, *extra),
            )
        return reply

    def _body(self, fault: Fault | None) -> RequestBody:
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        length_text = self.headers.get("Content-Length")
        length = None if chunked or length_text is None else int(length_text)
        if length is not None and length < 0:
            raise ValueError(length_text)
        return RequestBody(
            self.rfile,
            length=length,
            chunked=chunked,
            drop_after=fault.drop_after_bytes if fault is not None else None,
            read_delay=fault.read_delay if fault is not None else 0.0,
            receive_rate=self.server.site.link,
        )

    def _control(self, site: Site, method: str, path: str) -> None:
        host = self.client_address[0] if isinstance(self.client_address, tuple) else ""
        try:
            local = ipaddress.ip_address(str(host)).is_loopback
        except ValueError:
            local = False
        try:
            body = self._body(None)
            data = b""
            while len(data) <= _MAX_CONTROL_BODY and (chunk := body.read(1 << 16)):
                data += chunk
            body.drain()
        except (ValueError, BadBodyError, ClientGone):
            self.close_connection = True
            return
        if not local:
            self._send(pages.json_reply({"error": "control API is loopback-only"}, 403))
            return
        self._send(site.control(method, path, data))

    def _send(self, reply: Reply) -> None:
        status = reply.status
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [
            f"HTTP/1.1 {status} {reason}",
            f"Date: {email.utils.formatdate(usegmt=True)}",
            f"Content-Type: {reply.content_type}",
            f"Content-Length: {len(reply.body)}",
        ]
        lines += [f"{name}: {value}" for name, value in reply.headers]
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        payload = head if self.command == "HEAD" else head + reply.body
        try:
            self.wfile.write(payload)
            self.wfile.flush()
        except OSError:  # the client went away (e.g. its read timeout)
            self.close_connection = True

    def _drop(self) -> None:
        """Reset the connection without an answer (SO_LINGER 0: close() sends RST)."""
        self.close_connection = True
        linger = struct.pack("ii", 1, 0)
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        self.server.mark_dropped(self.connection)
