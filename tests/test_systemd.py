"""The daemon as systemd runs it: a real process, a real NOTIFY_SOCKET, WATCHDOG_USEC, signals."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from xnat_drop.adapters.systemd_api import Notifier, journal_handler
from xnat_standin import Emulator, Fault
from xnat_standin.demo.samples import SeriesSpec, write_session

from conftest import PROJECT, Drop, daemon_env, run_daemon, stop_daemon, wait_until

REL = (PROJECT, "S01", "S01_MR1")


class NotifySocket:
    """An AF_UNIX datagram socket standing in for systemd's notification socket.

    A thread reads it all the time, as systemd does: a full socket queue would block the
    daemon's sd_notify calls.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages += [(time.monotonic(), line) for line in data.decode().splitlines()]

    def drain(self) -> list[str]:
        with self._lock:
            return [m for _, m in self.messages]

    def wait_for(self, line: str, timeout: float = 20, after: int = 0) -> int:
        """Index of the first message equal to (or starting with) `line` at or after `after`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = [
                    index
                    for index, (_, message) in enumerate(self.messages[after:], start=after)
                    if message == line or message.startswith(line)
                ]
            if found:
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"no {line!r} within {timeout} s; got {self.drain()}")

    def close(self) -> None:
        self._closed.set()
        self._reader.join(timeout=2)
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def start(
    drop: Drop, notify: NotifySocket, watchdog_usec: int = 1_000_000
) -> subprocess.Popen[str]:
    env = daemon_env(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC=str(watchdog_usec))
    cmd = [sys.executable, "-m", "xnat_drop", "run", "--config", str(drop.config)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def drop_session(drop: Drop, images: int = 2) -> Path:
    staging = drop.root.parent / "staging"
    write_session(staging, [SeriesSpec(1, "T1", images=images)])
    target = drop.incoming.joinpath(*REL)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(staging, target)
    return target


def terminate(proc: subprocess.Popen[str]) -> tuple[int, str]:
    return stop_daemon(proc)


def test_ready_status_watchdog_and_a_clean_stop(
    drop: Drop, emulator: Emulator, notify: NotifySocket
) -> None:
    proc = start(drop, notify)
    try:
        ready = notify.wait_for("READY=1")
        notify.wait_for("STATUS=", after=ready)
        first = notify.wait_for("WATCHDOG=1", after=ready)
        notify.wait_for("WATCHDOG=1", after=first + 1)  # periodic, not once
        status = [m for m in notify.drain() if m.startswith("STATUS=")]
        assert "waiting" in status[0] and "done today" in status[0]
        # READY comes before the first turn, which is when XNAT is first asked.
        assert "XNAT not yet contacted" in status[0] and "XNAT ok" not in status[0]
        deadline = time.monotonic() + 20
        while not any("XNAT ok" in m for m in notify.drain() if m.startswith("STATUS=")):
            assert time.monotonic() < deadline, notify.drain()
            time.sleep(0.1)
    finally:
        code, stderr = terminate(proc)
    assert code == 0, stderr
    notify.wait_for("STOPPING=1")


def test_watchdog_keeps_coming_during_a_slow_upload(
    drop: Drop, emulator: Emulator, notify: NotifySocket
) -> None:
    emulator.inject(
        Fault(method="POST", path="/data/services/import", delay=4.0)
    )  # XNAT takes its time
    proc = start(drop, notify)
    try:
        notify.wait_for("READY=1")
        drop_session(drop)
        wait_until(
            lambda: any(r.path == "/data/services/import" for r in emulator.requests()),
            "the upload to reach XNAT",
            proc,
        )
        request_seen = time.monotonic()  # logged once XNAT answers, after its 4 s delay
        wait_until(drop.done.joinpath(*REL).is_dir, "the session in done/", proc)
    finally:
        code, stderr = terminate(proc)
    assert code == 0, stderr
    pings = [
        t
        for t, m in notify.messages
        if m == "WATCHDOG=1" and request_seen - 4.0 <= t <= request_seen
    ]
    assert len(pings) >= 5, pings  # every 0.5 s while the loop waited on XNAT
    assert any("uploading S01_MR1" in m for _, m in notify.messages if m.startswith("STATUS="))


def test_sighup_reloads_and_a_broken_config_keeps_the_old_one(
    drop: Drop, emulator: Emulator, notify: NotifySocket
) -> None:
    proc = start(drop, notify)
    try:
        first = notify.wait_for("READY=1")
        good = drop.config.read_text()
        drop.config.write_text(good.replace('level = "info"', "") + '\n[log]\nlevel = "debug"\n')
        proc.send_signal(signal.SIGHUP)
        reloading = notify.wait_for("RELOADING=1", after=first + 1)
        ready = notify.wait_for("READY=1", after=reloading)
        drop.config.write_text(
            good + "\n[watch]\nsettle = 3\n"
        )  # broken: unknown key, repeated table
        proc.send_signal(signal.SIGHUP)
        again = notify.wait_for("RELOADING=1", after=ready + 1)
        notify.wait_for("READY=1", after=again)
        drop.config.write_text(good)
        drop_session(drop)  # still working with the old configuration
        wait_until(drop.done.joinpath(*REL).is_dir, "the session in done/", proc, timeout=20)
    finally:
        code, stderr = terminate(proc)
    assert code == 0, stderr
    assert "reload: configuration reloaded" in stderr
    assert "reload: keeping the current configuration" in stderr


def test_sigterm_during_an_upload_abandons_it_and_the_next_start_resumes(
    drop: Drop, emulator: Emulator, notify: NotifySocket
) -> None:
    drop.config.write_text(drop.config.read_text() + "\n[service]\nstop_timeout_seconds = 2\n")
    emulator.inject(
        Fault(method="POST", path="/data/services/import", read_delay=30.0)
    )  # 30 s per MiB
    folder = drop_session(drop, images=40)
    assert sum(f.stat().st_size for f in folder.rglob("*.dcm")) > 300_000
    proc = start(drop, notify)
    notify.wait_for("READY=1")
    wait_until(
        lambda: any(m.startswith("STATUS=") and "uploading" in m for m in notify.drain()),
        "the upload to start",
        proc,
    )
    began = time.monotonic()
    code, stderr = terminate(proc)
    assert code == 0, stderr
    assert time.monotonic() - began < 10  # within the stop timeout (+ start-up slack), not 30 s
    notify.wait_for("STOPPING=1")
    assert "stays in the work folder" in stderr
    assert not drop.done.joinpath(*REL).exists() and not any(drop.failed.iterdir())

    emulator.clear_faults()
    again = run_daemon(drop, timeout=90)
    assert again.returncode == 0, again.stderr
    assert drop.done.joinpath(*REL).is_dir()
    [session] = emulator.prearchive()
    assert session.file_count == 40  # complete, the broken-off part replaced


def test_a_bad_config_exits_78(drop: Drop, notify: NotifySocket) -> None:
    drop.config.write_text(drop.config.read_text() + "\n[watch]\nsettle = 3\n")
    proc = start(drop, notify)
    _, _stderr = proc.communicate(timeout=30)
    assert proc.returncode == 78
    assert "READY=1" not in notify.drain()


def test_notifier_honours_watchdog_pid_and_interval() -> None:
    assert Notifier({}).watchdog_interval is None
    env = {"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "30000000"}
    assert Notifier(env).watchdog_interval == 15.0
    assert Notifier(env | {"WATCHDOG_PID": "1"}).watchdog_interval is None  # another process's
    assert Notifier(env | {"WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 15.0


def test_journal_lines_carry_session_and_project_fields() -> None:
    sent: list[tuple[str, dict[str, Any]]] = []

    def sender(text: str, /, **fields: Any) -> None:
        sent.append((text, fields))

    handler = journal_handler(sender)
    assert handler is not None
    logger = logging.getLogger("xnat_drop.test_journal")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(
            "S01_MR1: delivered",
            extra={"SESSION": "S01_MR1", "PROJECT": "P1", "XNAT_URI": "/data/x"},
        )
    finally:
        logger.removeHandler(handler)
    [(message, fields)] = sent
    assert message == "S01_MR1: delivered"
    assert fields["SYSLOG_IDENTIFIER"] == "xnat-drop"
    assert (fields["SESSION"], fields["PROJECT"], fields["XNAT_URI"]) == (
        "S01_MR1",
        "P1",
        "/data/x",
    )
