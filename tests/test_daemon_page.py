"""The status page and the metrics of the real daemon process, against the stand-in: /metrics
counters equal the ledger's totals, also after a restart; /status.json is `status --json`;
/healthz follows XNAT; a port in use; the textfile without a listener; a reload moves the page;
check-config warns of a page beyond loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from xnat_standin import Emulator, Fault
from xnat_standin.demo.samples import SeriesSpec, write_nifti

import conftest
from conftest import (
    PROJECT,
    Drop,
    run_daemon,
    start_daemon,
    stop_daemon,
    wait_until,
)
from emulator_helpers import PASSWORD, USER

SCANS = [SeriesSpec(1, "localizer", images=2), SeriesSpec(2, "T1_MPRAGE", images=3)]
LEDGER = "ledger.sqlite3"


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    """The stand-in with two projects (this module's own: metrics by project)."""
    with Emulator(root=tmp_path / "xnat", users={USER: PASSWORD}, projects=["P1", "P2"]) as emu:
        yield emu


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def configure(
    drop: Drop, emulator: Emulator, port: int | None, extra: str = "", check: float = 1
) -> str:
    """The page on 127.0.0.1:`port` (None: no page), XNAT checked every `check` seconds."""
    page = f'[page]\nlisten = "127.0.0.1:{port}"\nrefresh_seconds = 1\n' if port else ""
    drop.write_config(emulator.url, extra=page + extra, xnat=f"check_interval_seconds = {check}")
    return f"http://127.0.0.1:{port}"


def drop_session(drop: Drop, relpath: tuple[str, ...]) -> Path:
    return conftest.drop_session(drop, relpath, SCANS)


def get(url: str) -> requests.Response:
    return requests.get(url, timeout=5)


def answers(url: str) -> bool:
    try:
        get(url)
    except requests.ConnectionError:
        return False
    return True


def serves(url: str) -> bool:
    try:
        return get(url).status_code == 200
    except requests.ConnectionError:
        return False


def metrics(base: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The page's metrics by name and labels; none while it has no report yet (503)."""
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    answer = get(f"{base}/metrics")
    if answer.status_code == 503:
        return found
    assert answer.status_code == 200, answer.text
    for family in text_string_to_metric_families(answer.text):
        for s in family.samples:
            found.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return found


def counters(values: dict[str, dict[tuple[tuple[str, str], ...], float]]) -> dict[str, Any]:
    """What must survive a restart: every counter and the histogram."""
    kept = (
        "xnat_drop_delivered_total",
        "xnat_drop_failed_total",
        "xnat_drop_failed_by_rule_total",
        "xnat_drop_sent_bytes_total",
        "xnat_drop_upload_duration_seconds_bucket",
        "xnat_drop_upload_duration_seconds_count",
        "xnat_drop_upload_duration_seconds_sum",
        "xnat_drop_last_delivery_timestamp_seconds",
    )
    return {name: values.get(name, {}) for name in kept}


def ledger_totals(state: Path) -> dict[str, Any]:
    """The same totals read straight from the ledger's rows with sqlite3."""
    db = sqlite3.connect(f"file:{state / LEDGER}?mode=ro", uri=True)
    try:

        def by_project(outcome: str) -> dict[tuple[tuple[str, str], ...], float]:
            rows = db.execute(
                "SELECT project, COUNT(*) FROM sessions WHERE outcome = ? GROUP BY project",
                (outcome,),
            )
            return {(("project", p),): float(n) for p, n in rows}

        rules: dict[tuple[tuple[str, str], ...], float] = {}
        for (reason,) in db.execute("SELECT reason FROM sessions WHERE outcome = 'failed'"):
            for rule in {r.strip() for r in reason.split(",")} - {""}:
                rules[(("rule", rule),)] = rules.get((("rule", rule),), 0) + 1
        sent, seconds, timed, last = db.execute(
            "SELECT SUM(bytes_sent), SUM(upload_seconds), COUNT(upload_seconds), "
            "MAX(updated_at) FROM sessions WHERE outcome = 'done'"
        ).fetchone()
        return {
            "xnat_drop_delivered_total": by_project("done"),
            "xnat_drop_failed_total": by_project("failed"),
            "xnat_drop_failed_by_rule_total": rules,
            "xnat_drop_sent_bytes_total": {(): float(sent)},
            "xnat_drop_upload_duration_seconds_count": {(): float(timed)},
            "xnat_drop_upload_duration_seconds_sum": {(): seconds},
            "xnat_drop_last_delivery_timestamp_seconds": {(): last},
        }
    finally:
        db.close()


def status_json(drop: Drop) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "xnat_drop", "status", "--json", "--config", str(drop.config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_metrics_equal_the_ledger_and_survive_a_restart(drop: Drop, emulator: Emulator) -> None:
    # XNAT checked rarely: each check changes the snapshot, and /status.json is compared
    # with the command's output below.
    base = configure(drop, emulator, free_port(), check=900)
    delivered = [("P1", "S01", "S01_MR1"), ("P2", "S02", "S02_MR1"), ("P1", "S05", "S05_MR1")]
    for relpath in delivered:
        drop_session(drop, relpath)
    with_nifti = ("P1", "S03", "S03_MR1")
    write_nifti(drop_session(drop, with_nifti) / "T1w.nii.gz")
    unknown = ("NOSUCH", "S04", "S04_MR1")
    drop_session(drop, unknown)
    proc = start_daemon(drop)
    try:
        filed = [drop.done.joinpath(*r) for r in delivered]
        filed += [drop.failed.joinpath(*with_nifti), drop.failed.joinpath(*unknown)]
        wait_until(lambda: all(p.is_dir() for p in filed), "every session filed", proc)

        def reported() -> bool:
            values = metrics(base)
            done = sum(values.get("xnat_drop_delivered_total", {}).values())
            return done == 3 and sum(values.get("xnat_drop_failed_total", {}).values()) == 2

        wait_until(reported, "the metrics to count them", proc)
        before = metrics(base)
        from_ledger = ledger_totals(drop.state)
        for name, value in from_ledger.items():
            assert before[name] == pytest.approx(value), name
        assert before["xnat_drop_delivered_total"] == {
            (("project", "P1"),): 2,
            (("project", "P2"),): 1,
        }
        # The rule-broken and the unknown project failed before XNAT confirmed a project.
        assert before["xnat_drop_failed_total"] == {(("project", ""),): 2}
        assert before["xnat_drop_failed_by_rule_total"] == {
            (("rule", "nifti"),): 1,
            (("rule", "unknown-project"),): 1,
        }
        assert before["xnat_drop_sent_bytes_total"][()] > 3 * 5 * 1000  # three zips of 5 files
        assert before["xnat_drop_upload_duration_seconds_bucket"][(("le", "+Inf"),)] == 3
        assert before["xnat_drop_xnat_up"] == {(): 1} and before["xnat_drop_credentials_ok"] == {
            (): 1
        }
        assert before["xnat_drop_sessions"][(("state", "claimed"),)] == 0

        # /status.json is what `xnat-drop status --json` prints (but for the time of asking),
        # unless the daemon published a new status in between (every 10 s at least).
        for _ in range(5):
            page = get(f"{base}/status.json").json()
            command = status_json(drop)
            if {**page, "now": None} == {**command, "now": None}:
                break
        else:
            assert {**page, "now": None} == {**command, "now": None}
    finally:
        code, stderr = stop_daemon(proc)
    assert code == 0, stderr
    assert not answers(f"{base}/healthz"), "the page closes with the daemon"

    proc = start_daemon(drop)
    try:
        # (503 until the first report, a moment after it listens)
        wait_until(lambda: serves(f"{base}/metrics"), "the metrics again", proc)
        after = metrics(base)
    finally:
        code, stderr = stop_daemon(proc)
    assert code == 0, stderr
    assert counters(after) == counters(before)
    for name, value in ledger_totals(drop.state).items():
        assert after[name] == pytest.approx(value), name


def test_healthz_follows_xnat_and_the_credentials(drop: Drop, emulator: Emulator) -> None:
    base = configure(drop, emulator, free_port())
    proc = start_daemon(drop)
    try:
        wait_until(lambda: answers(f"{base}/healthz"), "the page", proc)
        wait_until(lambda: get(f"{base}/healthz").status_code == 200, "XNAT ok", proc)
        assert get(f"{base}/healthz").text == "ok\n"

        emulator.inject(Fault(method="*", path="/", status=503, times=0))
        wait_until(lambda: get(f"{base}/healthz").status_code == 503, "XNAT down", proc)
        answer = get(f"{base}/healthz")
        assert answer.text.startswith("XNAT unreachable since "), answer.text
        assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert metrics(base)["xnat_drop_xnat_up"] == {(): 0}

        emulator.clear_faults()
        wait_until(lambda: get(f"{base}/healthz").status_code == 200, "XNAT back", proc)

        drop.secret.write_text(f"{USER}:wrong-password\n")
        wait_until(lambda: get(f"{base}/healthz").status_code == 503, "credentials refused", proc)
        assert get(f"{base}/healthz").text.startswith("XNAT refused the credentials")
        assert metrics(base)["xnat_drop_credentials_ok"] == {(): 0}
        assert "wrong-password" not in get(f"{base}/healthz").text

        refused = requests.post(f"{base}/", data=b"x", timeout=5)
        assert refused.status_code == 405 and refused.headers["Allow"] == "GET, HEAD"
    finally:
        code, stderr = stop_daemon(proc)
    assert code == 0, stderr
    # Quiet: no line per request in the log (there were dozens).
    assert "GET /healthz" not in stderr and '"GET' not in stderr


def test_a_port_in_use_is_logged_and_the_daemon_delivers(drop: Drop, emulator: Emulator) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        configure(drop, emulator, port)
        drop_session(drop, (PROJECT, "S01", "S01_MR1"))
        result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    assert f"the status page cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "runs on without it" in result.stderr
    assert drop.done.joinpath(PROJECT, "S01", "S01_MR1").is_dir()


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on (its socket inodes in /proc/net/tcp and tcp6)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_the_textfile_without_any_listener(drop: Drop, emulator: Emulator, tmp_path: Path) -> None:
    prom = tmp_path / "collector" / "xnat-drop.prom"
    prom.parent.mkdir()
    configure(drop, emulator, None, extra=f'[metrics]\ntextfile = "{prom}"\n')
    drop_session(drop, (PROJECT, "S01", "S01_MR1"))
    proc = start_daemon(drop)
    try:

        def counted() -> bool:
            if not prom.exists():
                return False
            families = {f.name: f for f in text_string_to_metric_families(prom.read_text())}
            delivered = families.get("xnat_drop_delivered")
            return delivered is not None and sum(s.value for s in delivered.samples) == 1

        wait_until(counted, "the textfile to count the delivery", proc)
        assert listening_ports(proc.pid) == set(), "no listener at all"
        assert oct(prom.stat().st_mode & 0o777) == oct(0o644)
    finally:
        code, stderr = stop_daemon(proc)
    assert code == 0, stderr
    assert sorted(p.name for p in prom.parent.iterdir()) == ["xnat-drop.prom"]


def test_a_reload_moves_the_page(drop: Drop, emulator: Emulator) -> None:
    first = configure(drop, emulator, free_port())
    proc = start_daemon(drop)
    try:
        wait_until(lambda: answers(f"{first}/healthz"), "the page", proc)
        second = configure(drop, emulator, free_port())
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: answers(f"{second}/healthz"), "the page on its new port", proc)
        assert not answers(f"{first}/healthz")
        configure(drop, emulator, None)  # listen = "": no page
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: not answers(f"{second}/healthz"), "the page closed", proc)
    finally:
        code, stderr = stop_daemon(proc)
    assert code == 0, stderr


@pytest.mark.parametrize(
    ("listen", "warned"), [("127.0.0.1:8870", False), ("[::1]:8870", False), ("0.0.0.0:8870", True)]
)
def test_check_config_warns_of_a_page_beyond_loopback(
    drop: Drop, emulator: Emulator, listen: str, warned: bool
) -> None:
    drop.write_config(emulator.url, extra=f'[page]\nlisten = "{listen}"\n')
    command = ["check-config", "--offline", "--config", str(drop.config)]
    result = subprocess.run(
        [sys.executable, "-m", "xnat_drop", *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "  page      http://" in result.stdout
    assert ("has no login" in result.stderr) is warned, result.stderr
