"""Real receivers for the notification tests: an SMTP server (aiosmtpd) on loopback, with
STARTTLS or SMTPS and a login if asked, and a webhook receiver (http.server); a test CA made
with the openssl command."""

from __future__ import annotations

import email
import email.policy
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Mailbox:
    """What an SMTP server received: each message with its envelope recipients."""

    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    refuse: str = ""  # e.g. "550 no such user": every DATA is answered so
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 - aiosmtpd's name
        if self.refuse:
            return self.refuse
        content = envelope.original_content or b""
        content = content.replace(b"\r\n", b"\n")
        msg = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        msg["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        with self.lock:
            self.messages.append(msg)
        return "250 OK"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append((data.login.decode(), data.password.decode()))
        ok = (data.login, data.password) == (b"mailer", b"p4ss-w0rd!")
        return AuthResult(success=ok, handled=False)  # refused: aiosmtpd answers 535

    def received(self) -> list[EmailMessage]:
        with self.lock:
            return list(self.messages)

    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for m in self.received()]

    def wait_for(self, count: int, timeout: float = 30, what: str = "mail") -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while len(self.received()) < count:
            assert time.monotonic() < deadline, f"{what}: {len(self.received())} of {count} came"
            time.sleep(0.1)
        return self.received()


@contextmanager
def smtp_server(
    port: int | None = None,
    *,
    starttls: ssl.SSLContext | None = None,
    smtps: ssl.SSLContext | None = None,
    login: bool = False,
) -> Iterator[Mailbox]:
    """An SMTP server on 127.0.0.1 (STARTTLS required with `starttls`, implicit TLS with
    `smtps`; a login required with `login`: user "mailer", password "p4ss-w0rd!")."""
    box = Mailbox(port or free_port())
    kwargs: dict[str, Any] = {}
    if starttls is not None:
        kwargs.update(tls_context=starttls, require_starttls=True)
    if login:
        kwargs.update(authenticator=box.authenticate, auth_required=True)
    controller = Controller(
        box, hostname=HOST, port=box.port, ssl_context=smtps, server_hostname=HOST, **kwargs
    )
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@dataclass
class LabCa:
    """A CA and a server certificate for 127.0.0.1 signed by it."""

    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_ca(folder: Path) -> LabCa:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test CA")
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(args: str) -> None:
        subprocess.run(
            ["openssl", *args.split()], cwd=folder, check=True, capture_output=True, timeout=60
        )

    key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    openssl(
        f"req -x509 {key} -keyout ca.key -out ca.pem -days 2 -subj /CN=xnat-drop-test-CA "
        "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
    )
    openssl(f"req {key} -keyout server.key -out server.csr -subj /CN=127.0.0.1")
    (folder / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    openssl(
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial 2 -days 2 "
        "-extfile ext.cnf -out server.pem"
    )
    return LabCa(folder / "ca.pem", folder / "server.pem", folder / "server.key")


@dataclass
class Posted:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class HookReceiver:
    """A webhook receiver: every POST's path, headers and JSON body; `status` answers."""

    url: str
    posts: list[Posted] = field(default_factory=list)
    status: int = 200
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self) -> list[Posted]:
        with self.lock:
            return list(self.posts)

    def wait_for(self, count: int, timeout: float = 30) -> list[Posted]:
        deadline = time.monotonic() + timeout
        while len(self.received()) < count:
            assert time.monotonic() < deadline, f"{len(self.received())} of {count} posts came"
            time.sleep(0.1)
        return self.received()


@contextmanager
def hook_receiver(secret_path: str = "/hooks/T000/B000/s3cr3t-t0ken") -> Iterator[HookReceiver]:
    holder: list[HookReceiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            data = json.loads(self.rfile.read(length) or b"{}")
            receiver = holder[0]
            with receiver.lock:
                receiver.posts.append(Posted(self.path, dict(self.headers.items()), data))
            self.send_response(receiver.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((HOST, 0), Handler)
    server.daemon_threads = True
    holder.append(HookReceiver(f"http://{HOST}:{server.server_address[1]}{secret_path}"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def private_file(path: Path, text: str) -> Path:
    """A secret file, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)
    return path


def notify_table(**keys: object) -> str:
    """A [notify] table for the config file."""
    lines = ["[notify]"]
    for name, value in keys.items():
        lines.append(
            f"{name} = {json.dumps(value) if not isinstance(value, bool) else str(value).lower()}"
        )
    return "\n".join(lines) + "\n"


def eventually(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(0.1)
