"""STATUS.txt on the share, written by the real daemon process against the stand-in: a session
settling, then delivered; one rejected; XNAT down; one file per project."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from test_daemon import CLEAN, drop_session
from xnat_standin import Emulator, Fault
from xnat_standin.demo.samples import write_nifti

from conftest import PROJECT, Drop, daemon_env, start_daemon, stop_daemon, wait_until

BOM = "\ufeff"
REJECTED = (PROJECT, "S02", "S02_MR1")
TIME = r"(\d\d:\d\d|\d{1,2} [A-Z][a-z]{2} \d\d:\d\d)"


def status(path: Path) -> str:
    """The file as a lab member's editor reads it ("" while there is none)."""
    try:
        data = path.read_bytes().decode()
    except FileNotFoundError:
        return ""
    assert data.startswith(BOM)
    return data[len(BOM) :]


def has(path: Path, *parts: str) -> bool:
    text = status(path)
    return all(part in text for part in parts)


def assert_crlf(text: str) -> None:
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")


def configure(drop: Drop, emulator: Emulator, status_table: str, settle: float = 0.5) -> None:
    drop.write_config(
        emulator.url,
        settle=settle,
        extra=f'[status]\ninterval_seconds = 1\n{status_table}\n[report]\ntime_zone = "UTC"\n',
    )


def test_status_txt_follows_a_session_from_the_copy_to_done_and_failed(
    drop: Drop, emulator: Emulator
) -> None:
    configure(drop, emulator, "html = true", settle=3.0)
    status_file, page = drop.root / "STATUS.txt", drop.root / "STATUS.html"
    proc = start_daemon(drop)
    try:
        wait_until(
            lambda: has(status_file, "Nothing waiting or in progress."), "a first file", proc
        )
        drop_session(drop, CLEAN)
        wait_until(
            lambda: has(status_file, "P1/S01/S01_MR1\r\n      still being copied (5 files"),
            "the session shown as still being copied",
            proc,
        )
        text = status(status_file)
        assert re.search(
            r"still being copied \(5 files, [\d.]+ KB so far\); taken at \d\d:\d\d", text
        )
        write_nifti(drop_session(drop, REJECTED) / "T1w.nii.gz")
        wait_until(
            lambda: has(status_file, "LAST DELIVERED:", "LAST FAILED:"), "both outcomes", proc, 60
        )
        [session] = emulator.prearchive()
        text = status(status_file)
        assert re.search(
            rf"LAST DELIVERED:\r\n  {TIME}  P1/S01/S01_MR1\r\n"
            rf"      in XNAT: {re.escape(emulator.url)}/data{re.escape(session.uri)}\r\n"
            r"      report: done/P1/S01/S01_MR1\.report\.txt\r\n",
            text,
        ), text
        assert re.search(
            rf"LAST FAILED:\r\n  {TIME}  P1/S02/S02_MR1\r\n      not uploaded: nifti\r\n"
            r"      report: failed/P1/S02/S02_MR1\.report\.txt\r\n",
            text,
        ), text
        assert (drop.root / "done/P1/S01/S01_MR1.report.txt").is_file()
        assert (drop.root / "failed/P1/S02/S02_MR1.report.txt").is_file()
        assert "Today: 1 delivered, 1 failed" in text
        assert_crlf(text)
        wait_until(lambda: "P1/S02/S02_MR1" in page.read_text(), "the HTML too", proc)
        assert page.read_text().startswith("<!DOCTYPE html>") and "<script" not in page.read_text()
        assert status_file.stat().st_mode & 0o777 == 0o644
    finally:
        code, stderr = stop_daemon(proc)
    assert code == 0, stderr
    assert "xnat-drop: NOT running" in status(status_file)
    assert "STATUS" not in stderr  # never taken for a session or a stray file
    assert not list(drop.incoming.rglob("STATUS*"))


def test_per_project_files_say_xnat_is_down_and_then_deliver(
    drop: Drop, emulator: Emulator
) -> None:
    configure(drop, emulator, 'share = "per-project"')
    emulator.inject(Fault(method="*", path="/", status=503, times=0))
    (drop.incoming / "P2").mkdir()
    mine, other = drop.root / "STATUS-P1.txt", drop.root / "STATUS-P2.txt"
    proc = start_daemon(drop)
    try:
        drop_session(drop, CLEAN)
        wait_until(
            lambda: has(mine, "P1/S01/S01_MR1\r\n      waiting for XNAT (down since"),
            "the session waiting for XNAT",
            proc,
            60,
        )
        text = status(mine)
        assert re.search(r"waiting for XNAT \(down since \d\d:\d\d\)\r\n", text)
        assert re.search(r"XNAT: down since \d\d:\d\d; uploads wait and resume by themselves", text)
        assert_crlf(text)
        assert has(other, "project P2", "Nothing waiting or in progress.")
        assert not (drop.root / "STATUS.txt").exists()

        emulator.clear_faults()
        wait_until(lambda: has(mine, "LAST DELIVERED:", "P1/S01/S01_MR1"), "delivered", proc, 60)
        assert "XNAT: up" in status(mine)
        assert "LAST DELIVERED" not in status(other)  # P1's session is not P2's
    finally:
        code, stderr = stop_daemon(proc)
    assert code == 0, stderr
    # The files beside incoming/ trouble no start-up check.
    assert sorted(p.name for p in drop.root.glob("STATUS*")) == ["STATUS-P1.txt", "STATUS-P2.txt"]
    check = subprocess.run(
        [
            sys.executable,
            "-m",
            "xnat_drop",
            "check-config",
            "--offline",
            "--config",
            str(drop.config),
        ],
        capture_output=True,
        text=True,
        env=daemon_env(),
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
