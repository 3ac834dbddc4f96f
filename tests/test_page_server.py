"""The status page's listener in this process, over real loopback HTTP: what each path answers,
its headers, what it refuses, its limits; and the monitor that feeds it (a port in use)."""

from __future__ import annotations

import http.client
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from xnat_drop.adapters.page import PageServer, Snapshot, policy
from xnat_drop.adapters.page import server as page_server
from xnat_drop.core.config import Config, parse
from xnat_drop.core.statusview import style_hash
from xnat_drop.service.monitor import Monitor
from xnat_drop.service.state import Clock

SNAPSHOT = Snapshot(
    html=b"<!DOCTYPE html><title>t</title><p>page",
    status_json=b'{"running": true}',
    metrics=b"# TYPE x gauge\nx 1.0\n",
    metrics_type="text/plain; version=1.0.0; charset=utf-8",
    problem=None,
    style_source=style_hash(),
    at=0.0,
)


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime()


@pytest.fixture
def page(clock: FakeTime) -> Iterator[PageServer]:
    server = PageServer("127.0.0.1", 0, stale_after=30.0, monotonic=clock)
    server.start()
    yield server
    server.close()


def request(
    page: PageServer, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    host, port = page.address
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        answer = conn.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        conn.close()


def raw(page: PageServer, data: bytes) -> bytes:
    """Send bytes as they are; whatever comes back until the server closes."""
    with socket.create_connection(page.address, timeout=5) as sock:
        sock.sendall(data)
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
        return got


def test_before_the_first_report_everything_but_404_is_503(page: PageServer) -> None:
    for path in ("/", "/status.json", "/metrics", "/healthz"):
        status, _, body = request(page, "GET", path)
        assert (status, body) == (503, b"the daemon has not reported yet\n"), path
    assert request(page, "GET", "/nope")[0] == 404


def test_each_path_serves_its_part_of_the_snapshot(page: PageServer, clock: FakeTime) -> None:
    page.publish(replace(SNAPSHOT, at=clock.now))
    expected = {
        "/": ("text/html; charset=utf-8", SNAPSHOT.html),
        "/status.json": ("application/json", SNAPSHOT.status_json),
        "/metrics": (SNAPSHOT.metrics_type, SNAPSHOT.metrics),
        "/healthz": ("text/plain; charset=utf-8", b"ok\n"),
    }
    for path, (kind, content) in expected.items():
        status, headers, body = request(page, "GET", path)
        assert (status, headers["content-type"], body) == (200, kind, content), path
        assert headers["content-length"] == str(len(content))
        assert headers["content-security-policy"] == (
            f"default-src 'none'; style-src {style_hash()}; img-src 'self'; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'"
        )
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["cache-control"] == "no-store"
        assert headers["server"] == "xnat-drop"  # no Python version given away
        head_status, head_headers, head_body = request(page, "HEAD", path)
        assert (head_status, head_body) == (200, b"")
        assert head_headers["content-length"] == str(len(content))


def test_a_query_string_changes_nothing_and_nothing_else_is_served(page: PageServer) -> None:
    page.publish(replace(SNAPSHOT, at=1000.0))
    assert request(page, "GET", "/?refresh=0&x=<script>")[2] == SNAPSHOT.html
    assert request(page, "GET", "/metrics?name[]=x")[2] == SNAPSHOT.metrics
    for path in ("/index.html", "/status.json/", "/../../etc/passwd", "/%2e%2e/", "/static/"):
        status, headers, body = request(page, "GET", path)
        assert status == 404, path
        assert headers["content-type"] == "text/plain; charset=utf-8"
        assert b"passwd" not in body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "BREW"])
def test_only_get_and_head_are_allowed(page: PageServer, method: str) -> None:
    page.publish(replace(SNAPSHOT, at=1000.0))
    status, headers, body = request(page, method, "/")
    assert status == 405
    assert headers["allow"] == "GET, HEAD"
    assert body == b"405 Method Not Allowed\n"
    assert "content-security-policy" in headers


def test_healthz_is_503_with_the_reason(page: PageServer, clock: FakeTime) -> None:
    page.publish(replace(SNAPSHOT, problem="XNAT unreachable since 10:02: refused", at=clock.now))
    status, headers, body = request(page, "GET", "/healthz")
    assert (status, body) == (503, b"XNAT unreachable since 10:02: refused\n")
    assert headers["content-type"] == "text/plain; charset=utf-8"


def test_healthz_is_503_once_the_loop_stops_reporting(page: PageServer, clock: FakeTime) -> None:
    page.publish(replace(SNAPSHOT, at=clock.now))
    clock.now += 29
    assert request(page, "GET", "/healthz")[0] == 200
    clock.now += 66
    status, _, body = request(page, "GET", "/healthz")
    assert status == 503
    assert body.startswith(b"the loop has not reported for 95 s")
    # The rest still shows the last report.
    assert request(page, "GET", "/")[0] == 200


def test_requests_beyond_the_limits_are_refused_without_echo(page: PageServer) -> None:
    page.publish(replace(SNAPSHOT, at=1000.0))
    long_line = raw(page, b"GET /" + b"a" * 9000 + b" HTTP/1.0\r\n\r\n")
    assert long_line.startswith(b"HTTP/1.0 414 ")
    assert b"aaaa" not in long_line
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(40))
    big_head = raw(page, b"GET / HTTP/1.0\r\n" + many + b"\r\n")
    assert big_head.startswith(b"HTTP/1.0 431 ")
    garbage = raw(page, b"<script>alert(1)</script>\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.0 400 ") and b"<script>" not in garbage
    assert request(page, "GET", "/")[0] == 200  # and it still serves


def test_a_silent_client_is_dropped_and_others_are_served(
    page: PageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    page.publish(replace(SNAPSHOT, at=1000.0))
    monkeypatch.setattr(page_server._Handler, "timeout", 0.5)
    with socket.create_connection(page.address, timeout=5) as idle:
        idle.sendall(b"GET / HT")  # and nothing more
        assert request(page, "GET", "/")[0] == 200
        started = time.monotonic()
        assert idle.recv(100) == b""  # closed by the server, unanswered
        assert time.monotonic() - started < 3


def test_at_most_a_few_requests_at_once(page: PageServer, monkeypatch: pytest.MonkeyPatch) -> None:
    page.publish(replace(SNAPSHOT, at=1000.0))
    monkeypatch.setattr(page_server._Handler, "timeout", 3.0)
    hogs = [socket.create_connection(page.address, timeout=5) for _ in range(page_server.SLOTS)]
    try:
        for hog in hogs:
            hog.sendall(b"GET / HT")  # each holds a slot
        time.sleep(0.3)
        with socket.create_connection(page.address, timeout=5) as extra:
            extra.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert extra.recv(100) == b""  # closed unanswered: no slot free
    finally:
        for hog in hogs:
            hog.close()
    deadline = time.monotonic() + 5
    while True:  # the slots come back as the hogs' threads end
        try:
            if request(page, "GET", "/")[0] == 200:
                break
        except (ConnectionError, http.client.RemoteDisconnected):
            pass
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_ipv6_loopback(clock: FakeTime) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    server = PageServer("::1", 0, stale_after=30.0, monotonic=clock)
    try:
        server.start()
    except OSError as exc:
        pytest.skip(f"cannot listen on ::1 here: {exc}")
    try:
        server.publish(replace(SNAPSHOT, at=clock.now))
        assert request(server, "GET", "/healthz")[:1] == (200,)
    finally:
        server.close()


def test_close_stops_listening(clock: FakeTime) -> None:
    server = PageServer("127.0.0.1", 0, stale_after=30.0, monotonic=clock)
    server.start()
    address = server.address
    server.close()
    server.close()  # idempotent
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=2).close()


def test_the_policy_allows_no_script() -> None:
    assert "script-src" not in policy("'sha256-x'")
    assert policy(None).startswith("default-src 'none'; img-src 'self'")


# --- the monitor: a port in use --------------------------------------------------------------


def config_with(tmp_path: Path, listen: str, textfile: str = "") -> Config:
    return parse(
        {
            "paths": {"root": str(tmp_path / "drop")},
            "xnat": {"url": "https://x.example", "secret_file": str(tmp_path / "s")},
            "page": {"listen": listen},
            "metrics": {"textfile": textfile},
        },
        base=tmp_path,
        env={},
    )


def test_a_port_in_use_is_logged_and_the_monitor_runs_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = config_with(tmp_path, f"127.0.0.1:{port}", str(tmp_path / "m.prom"))
        monitor = Monitor(config, {}, Clock())
        with caplog.at_level(logging.INFO, logger="xnat_drop"):
            monitor.start()
        assert monitor.page is None
        [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert f"cannot listen on 127.0.0.1:{port}" in record.getMessage()
        assert "runs on without it" in record.getMessage()
        report: dict[str, object] = {"running": True, "snapshot": None}
        monitor(report, None)  # the metrics still reach the textfile
        assert (tmp_path / "m.prom").read_bytes().startswith(b"# HELP xnat_drop_sessions")
        monitor.close()
