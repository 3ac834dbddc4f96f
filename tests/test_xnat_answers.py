"""Answers that are not XNAT's (login pages, redirects, empty bodies) and the TLS trust store.

A proxy or single sign-on in front of XNAT must pause the queue, never fail a session: every
such answer is XnatUnexpectedAnswerError, an XnatTransientError. Over real loopback HTTP with
the stand-in's fault injection; the TLS part against a real HTTPS server with a test CA.
"""

from __future__ import annotations

import logging
import shutil
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import certifi
import pytest

from xnat_drop.adapters.credentials import Credentials
from xnat_drop.adapters.fs.zipstream import BundleEntry, ZipStream
from xnat_drop.adapters.xnat import connection as xnat_mod
from xnat_drop.adapters.xnat.client import XnatClient
from xnat_drop.adapters.xnat.connection import trust_store
from xnat_drop.core.config import parse
from xnat_drop.core.errors import (
    ConfigError,
    XnatRejectedError,
    XnatTransientError,
    XnatUnexpectedAnswerError,
)
from xnat_drop.core.model import Target
from xnat_drop.core.xnatconfig import CERTIFI, XnatConfig
from xnat_standin import Emulator, Fault
from xnat_standin.demo.samples import SeriesSpec, write_session

from conftest import PASSWORD, PROJECT, USER

TARGET = Target(PROJECT, "S01", "S01_MR1")
IMPORT = "/data/services/import"
HTML = "text/html;charset=UTF-8"
LOGIN_PAGE = (
    "<!DOCTYPE html><html><head><title>Sign in</title>"
    "<style>body { font-family: sans-serif }</style>"
    "<script>var relay = 'do-not-show-this-script';</script></head>"
    "<body><h1>Example University single sign-on</h1><p>Please sign in to continue.</p>"
    '<form method="post" action="/idp/login"><label>Username</label><input name="u">'
    '<label>Password</label><input type="password" name="p"></form>'
    + "<p>Need help? Call the service desk.</p>" * 20
    + "</body></html>"
)


def client_for(url: str, **config: Any) -> XnatClient:
    cfg = XnatConfig(url, None, True, None, connect_timeout=2, read_timeout=10)
    return XnatClient(replace(cfg, **config), Credentials(USER, PASSWORD, "test"))


@pytest.fixture
def client(emulator: Emulator) -> Iterator[XnatClient]:
    made = client_for(emulator.url)
    yield made
    made.close()


@pytest.fixture
def entries(tmp_path: Path) -> list[BundleEntry]:
    files = write_session(tmp_path / "s", [SeriesSpec(1, "T1", images=2)])
    return [BundleEntry(f, str(f.relative_to(tmp_path / "s")), f.stat().st_size) for f in files]


def upload(client: XnatClient, entries: list[BundleEntry]) -> tuple[str, ...]:
    return client.upload(lambda: ZipStream(entries), TARGET)


def unexpected(call: Callable[[], object]) -> str:
    """Run `call`; it must raise XnatUnexpectedAnswerError. Returns the message."""
    with pytest.raises(XnatUnexpectedAnswerError) as caught:
        call()
    assert isinstance(caught.value, XnatTransientError)  # the loop pauses, never failed/
    message = str(caught.value)
    assert PASSWORD not in message
    assert "Check xnat.url" in message
    return message


def excerpt(message: str) -> str:
    return message.split('says: "', 1)[1].rsplit('"', 1)[0]


# -- login pages (200 text/html) where data is due ----------------------------------------


def test_the_new_error_pauses_like_an_outage() -> None:
    assert issubclass(XnatUnexpectedAnswerError, XnatTransientError)
    assert not issubclass(XnatUnexpectedAnswerError, XnatRejectedError)


def test_a_login_page_for_the_project_is_not_a_project(
    emulator: Emulator, client: XnatClient
) -> None:
    page = LOGIN_PAGE.replace("Please sign in", f"Last password tried: {PASSWORD}. Please sign in")
    emulator.inject(
        Fault(
            method="GET", path=f"/data/projects/{PROJECT}", status=200, body=page, content_type=HTML
        )
    )
    message = unexpected(lambda: client.project_exists(PROJECT))
    assert message.startswith(
        f"XNAT answered GET /data/projects/{PROJECT} with a web page (text/html) instead of data"
    )
    assert "proxy or single sign-on page" in message
    shown = excerpt(message)
    assert shown.startswith("Sign in Example University single sign-on Last password tried: ***")
    assert len(shown) <= 120
    assert "do-not-show-this-script" not in message and "<" not in shown
    # The fault is used up: the real answer is the project again.
    assert client.project_exists(PROJECT)


def test_a_page_labelled_plain_text_is_still_a_page(emulator: Emulator, client: XnatClient) -> None:
    emulator.inject(
        Fault(method="GET", path=f"/data/projects/{PROJECT}", status=200, body=LOGIN_PAGE)
    )
    message = unexpected(lambda: client.project_exists(PROJECT))
    assert "with a web page (text/plain)" in message


@pytest.mark.parametrize(
    ("body", "content_type", "said"),
    [
        ("", "application/json", "with an empty body (200, application/json)"),
        ("", None, "with an empty body"),
        ('{"items": []}', "application/json", "that is not XNAT's description of the project"),
        ('{"ResultSet": {"Result": []}}', "application/json", "that is not XNAT's description"),
        ("OK", "text/plain", "with text/plain (200)"),
    ],
)
def test_project_exists_only_for_the_project_json(
    emulator: Emulator, client: XnatClient, body: str, content_type: str | None, said: str
) -> None:
    emulator.inject(
        Fault(
            method="GET",
            path=f"/data/projects/{PROJECT}",
            status=200,
            body=body,
            content_type=content_type,
        )
    )
    message = unexpected(lambda: client.project_exists(PROJECT))
    assert f"GET /data/projects/{PROJECT}" in message and said in message


def test_project_exists_is_true_for_the_project_and_false_for_xnats_404(
    client: XnatClient,
) -> None:
    assert client.project_exists(PROJECT) is True
    assert client.project_exists("NOPE") is False


def test_a_redirect_to_a_login_page_is_followed_and_recognised(
    emulator: Emulator, client: XnatClient
) -> None:
    login = f"{emulator.url}/idp/login?SAMLRequest=fZJdT4MwFIb&RelayState=abc"
    emulator.inject(
        Fault(method="GET", path=f"/data/projects/{PROJECT}", status=302, location=login, body="")
    )
    emulator.inject(
        Fault(method="GET", path="/idp/login", status=200, body=LOGIN_PAGE, content_type=HTML)
    )
    message = unexpected(lambda: client.project_exists(PROJECT))
    assert f"with a web page (text/html) after a redirect to {emulator.url}/idp/login " in message
    assert "SAMLRequest" not in message  # single sign-on state stays out of the log


def test_a_redirect_loop_is_an_unexpected_answer(emulator: Emulator, client: XnatClient) -> None:
    path = f"/data/projects/{PROJECT}"
    emulator.inject(
        Fault(method="GET", path=path, status=302, location=emulator.url + path, times=0, body="")
    )
    message = unexpected(lambda: client.project_exists(PROJECT))
    assert "redirect after redirect" in message


# -- ResultSet calls ---------------------------------------------------------------------------


def _calls(client: XnatClient, uri: str) -> dict[str, tuple[str, Callable[[], object]]]:
    """The ResultSet calls: the path a fault must match, and the call."""
    return {
        "find_archived": (
            f"/data/projects/{PROJECT}/experiments",
            lambda: client.find_archived(PROJECT, "S01_MR1", "1.2.3"),
        ),
        "find_prearchive": (
            f"/data/prearchive/projects/{PROJECT}",
            lambda: client.find_prearchive(PROJECT, "1.2.3"),
        ),
        "scan_counts": (f"{uri}/scans", lambda: client.scan_counts(uri)),
    }


@pytest.mark.parametrize("name", ["find_archived", "find_prearchive", "scan_counts"])
@pytest.mark.parametrize(
    ("body", "content_type", "said"),
    [
        (LOGIN_PAGE, HTML, "with a web page (text/html) instead of data"),
        ("", "application/json", "with an empty body (200, application/json) instead of XNAT's"),
        ('{"items": [{}]}', "application/json", "that is not XNAT's JSON table (ResultSet)"),
        ('{"ResultSet": {"Result": "none"}}', "application/json", "that is not XNAT's JSON"),
        ("Service temporarily moved", "text/plain", "that is not XNAT's JSON table"),
    ],
)
def test_resultset_calls_want_a_resultset(
    emulator: Emulator,
    client: XnatClient,
    entries: list[BundleEntry],
    name: str,
    body: str,
    content_type: str,
    said: str,
) -> None:
    [uri] = upload(client, entries)
    client.build(uri)
    path, call = _calls(client, uri)[name]
    call()  # the real answer is fine
    emulator.inject(
        Fault(method="GET", path=path, status=200, body=body, content_type=content_type)
    )
    message = unexpected(call)
    assert message.startswith(f"XNAT answered GET {path} with ")
    assert said in message


# -- /data/JSESSION: login and probe -----------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "status", "said"),
    [
        (LOGIN_PAGE, HTML, 200, "with a web page (text/html) instead of data"),
        ("", "text/plain", 200, "with an empty body (200, text/plain) instead of a session id"),
        (None, None, 404, "with 404 (not found), which XNAT never does"),
    ],
)
def test_login_and_probe_want_a_session_id(
    emulator: Emulator,
    client: XnatClient,
    body: str | None,
    content_type: str | None,
    status: int,
    said: str,
) -> None:
    fault = Fault(
        method="GET", path="/data/JSESSION", status=status, body=body, content_type=content_type
    )
    emulator.inject(fault)
    message = unexpected(client.login)
    assert message.startswith("XNAT answered GET /data/JSESSION with ") and said in message
    client.login()
    client.probe()
    emulator.inject(fault)
    assert said in unexpected(client.probe)
    # Whatever a probe saw, the real XNAT is usable again once it answers properly.
    assert client.project_exists(PROJECT)


# -- the import POST ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "said"),
    [
        (LOGIN_PAGE, HTML, "with a web page (text/html) instead of data"),
        ("", HTML, "with an empty body (200, text/html) instead of data"),
        ("", "application/json", "with an empty body (200, application/json) instead of the"),
        ("Upload complete", "text/plain", "that is not a list of XNAT URIs"),
        ("/data/prearchive/projects/P1/1/S\r\nthanks\r\n", "text/uri-list", "not a list of XNAT"),
    ],
)
def test_import_answers_must_be_xnat_uris(
    emulator: Emulator,
    client: XnatClient,
    entries: list[BundleEntry],
    body: str,
    content_type: str,
    said: str,
) -> None:
    emulator.inject(
        Fault(method="POST", path=IMPORT, status=200, body=body, content_type=content_type)
    )
    message = unexpected(lambda: upload(client, entries))
    assert message.startswith(f"XNAT answered POST {IMPORT} with ") and said in message
    assert emulator.prearchive() == []  # the proxy took the upload; XNAT never saw it


def test_an_empty_uri_list_is_still_xnats_nothing_imported(
    emulator: Emulator, client: XnatClient, entries: list[BundleEntry]
) -> None:
    emulator.inject(
        Fault(method="POST", path=IMPORT, status=200, body="", content_type="text/uri-list")
    )
    with pytest.raises(XnatRejectedError) as caught:
        upload(client, entries)
    assert not isinstance(caught.value, XnatTransientError)
    assert caught.value.rule == "xnat-empty-answer"


def test_a_302_to_a_login_page_for_the_upload_is_not_a_rejection(
    emulator: Emulator, client: XnatClient, entries: list[BundleEntry]
) -> None:
    login = f"https://{USER}:{PASSWORD}@sso.example.org/idp/login?RelayState={PASSWORD}&s=x"
    emulator.inject(
        Fault(
            method="POST",
            path=IMPORT,
            status=302,
            location=login,
            body="<html><body>Found</body></html>",
            content_type=HTML,
        )
    )
    message = unexpected(lambda: upload(client, entries))
    assert message.startswith(
        f"XNAT answered POST {IMPORT} with a redirect (302) to "
        "https://sso.example.org/idp/login instead of data"
    )
    assert "RelayState" not in message
    assert [r.path for r in emulator.requests()] == ["/data/JSESSION", IMPORT]  # not replayed


# -- build, commit, delete ---------------------------------------------------------------------


def test_commit_still_takes_xnats_301_with_the_archive_uri(
    client: XnatClient, entries: list[BundleEntry]
) -> None:
    [uri] = upload(client, entries)
    client.build(uri)
    assert (
        client.commit(uri) == f"/data/archive/projects/{PROJECT}/subjects/S01/experiments/S01_MR1"
    )


@pytest.mark.parametrize(
    ("status", "location", "body", "content_type", "said"),
    [
        (200, None, LOGIN_PAGE, HTML, "with a web page (text/html) instead of data"),
        (302, "https://sso.example.org/login", "", None, "with a redirect (302) to https://sso"),
        (301, "https://xnat.example.org/data/x", "Moved", "text/plain", "a redirect (301) to"),
    ],
)
def test_commit_and_delete_refuse_pages_and_foreign_redirects(
    emulator: Emulator,
    client: XnatClient,
    entries: list[BundleEntry],
    status: int,
    location: str | None,
    body: str,
    content_type: str | None,
    said: str,
) -> None:
    [uri] = upload(client, entries)
    client.build(uri)
    fault = Fault(
        method="POST",
        path=uri,
        status=status,
        location=location,
        body=body,
        content_type=content_type,
    )
    emulator.inject(fault)
    message = unexpected(lambda: client.commit(uri))
    assert message.startswith(f"XNAT answered POST {uri} with ") and said in message
    emulator.inject(Fault(**{**fault.as_json(), "method": "DELETE"}))
    assert said in unexpected(lambda: client.delete_prearchive(uri))
    assert len(emulator.prearchive()) == 1  # nothing happened to the session


def test_server_version_stays_quiet_on_a_login_page(emulator: Emulator, client: XnatClient) -> None:
    emulator.inject(
        Fault(method="GET", path="/xapi", status=200, body=LOGIN_PAGE, content_type=HTML)
    )
    assert client.server_version() == ""
    assert client.server_version() == "1.8.10"


# -- TLS: which CA bundle ----------------------------------------------------------------------


def tls_config(
    ca_bundle: Path | Literal["certifi"] | None, url: str = "https://xnat.example.org"
) -> XnatConfig:
    return XnatConfig(url, None, True, ca_bundle, connect_timeout=2, read_timeout=10)


def test_empty_ca_bundle_is_the_operating_systems_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SSL_CERT_FILE is how OpenSSL itself is told where the system store is.
    store = tmp_path / "system-ca.pem"
    store.write_text("")
    monkeypatch.setenv("SSL_CERT_FILE", str(store))
    assert trust_store(tls_config(None)) == str(store)
    # An OpenSSL built without a default file: the distributions' well-known places.
    missing = str(tmp_path / "missing.pem")
    nowhere = ssl.DefaultVerifyPaths(missing, "", "SSL_CERT_FILE", missing, "SSL_CERT_DIR", "")
    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: nowhere)
    rhel = tmp_path / "ca-bundle.crt"
    rhel.write_text("")
    monkeypatch.setattr(xnat_mod, "SYSTEM_CA_FILES", (missing, str(rhel)))
    assert trust_store(tls_config(None)) == str(rhel)


def test_certifi_and_a_path_are_taken_as_said(tmp_path: Path) -> None:
    own = tmp_path / "lab-ca.pem"
    assert trust_store(tls_config(CERTIFI)) == certifi.where()
    assert trust_store(tls_config(own)) == str(own)


def test_without_a_system_store_certifi_is_used_and_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    missing = str(tmp_path / "missing.pem")
    nowhere = ssl.DefaultVerifyPaths(missing, "", "SSL_CERT_FILE", missing, "SSL_CERT_DIR", "")
    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: nowhere)
    monkeypatch.setattr(xnat_mod, "SYSTEM_CA_FILES", (missing,))
    with caplog.at_level(logging.WARNING, logger="xnat_drop.adapters.xnat.connection"):
        assert trust_store(tls_config(None)) == certifi.where()
    [record] = caplog.records
    assert "no CA bundle file of the operating system" in record.getMessage()
    assert "certifi" in record.getMessage()


def test_verify_tls_false_warns_at_every_client(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="xnat_drop.adapters.xnat.connection"):
        client_for("https://xnat.example.org").close()
        assert caplog.records == []
        for _ in range(2):  # start, then a reconnect
            client_for("https://xnat.example.org", verify_tls=False).close()
    assert len(caplog.records) == 2
    for record in caplog.records:
        assert record.levelno == logging.WARNING
        text = record.getMessage()
        assert "TLS verification is off" in text and "intercept the XNAT password" in text
        assert "xnat.example.org" in text and PASSWORD not in text


def test_config_reads_ca_bundle(tmp_path: Path) -> None:
    own = tmp_path / "lab-ca.pem"
    own.write_text("")

    def xnat(**keys: object) -> Any:
        data = {"paths": {"root": str(tmp_path)}, "xnat": {"url": "https://x.org", **keys}}
        return parse(data, base=tmp_path, env={}).xnat

    assert xnat().ca_bundle is None and xnat().verify_tls is True
    assert xnat(ca_bundle="").ca_bundle is None
    assert xnat(ca_bundle="certifi").ca_bundle == "certifi"
    assert xnat(ca_bundle="lab-ca.pem").ca_bundle == own
    with pytest.raises(ConfigError) as caught:
        xnat(ca_bundle="nope.pem", connect_timeout_seconds=-1)
    problems = sorted(caught.value.problems)  # collected, each with its key path
    assert [p.split(":")[0] for p in problems] == ["xnat.ca_bundle", "xnat.connect_timeout_seconds"]
    assert problems[0].startswith(f"xnat.ca_bundle: no such file: {tmp_path / 'nope.pem'} (")
    with pytest.raises(ConfigError, match=r"xnat\.ca_bundle: is ignored while verify_tls = false"):
        xnat(ca_bundle="certifi", verify_tls=False)


# -- TLS for real: a loopback HTTPS server whose certificate a test CA signed ------------------


class _SessionId(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"0123456789ABCDEF0123456789ABCDEF"
        self.send_response(200 if self.path == "/data/JSESSION" else 404)
        self.send_header("Content-Type", "text/plain;charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # refused handshakes are what the tests expect


def _openssl(args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args.split()], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture
def https_xnat(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTPS server on 127.0.0.1 answering /data/JSESSION, and its CA's PEM file."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test CA")
    key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    _openssl(
        f"req -x509 {key} -keyout ca.key -out ca.pem -days 2 -subj /CN=xnat-drop-test-CA "
        "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign",
        cwd=tmp_path,
    )
    _openssl(f"req {key} -keyout server.key -out server.csr -subj /CN=127.0.0.1", cwd=tmp_path)
    (tmp_path / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    _openssl(
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial 2 -days 2 "
        "-extfile ext.cnf -out server.pem",
        cwd=tmp_path,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    server = _QuietServer(("127.0.0.1", 0), _SessionId)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", tmp_path / "ca.pem"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _login(config: XnatConfig) -> None:
    client = XnatClient(config, Credentials(USER, PASSWORD, "test"))
    try:
        client.login()
    finally:
        client.close()


def test_the_chosen_bundle_is_what_verifies_xnat(https_xnat: tuple[str, Path]) -> None:
    url, lab_ca = https_xnat
    _login(tls_config(lab_ca, url=url))  # the lab's CA signed it: accepted
    others: tuple[Literal["certifi"] | None, ...] = (None, CERTIFI)
    for other in others:  # neither the system store nor certifi knows the lab CA
        with pytest.raises(XnatTransientError, match="TLS problem talking to") as caught:
            _login(tls_config(other, url=url))
        assert not isinstance(caught.value, XnatUnexpectedAnswerError)
