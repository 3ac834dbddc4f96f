"""Storage faults are not crashes: a state directory that is damaged, read-only or full gives
exit 78 with one paragraph at start, and a pause that loses nothing at run time.

Each test failed on the code before issue 11 (93eee20): exit 1 with a traceback (a restart
loop under systemd), `status` printing a traceback, and a crash at run time.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from xnat_standin import Emulator

from conftest import PROJECT
from hostile_lab import (
    SERVICE_GID,
    SERVICE_UID,
    Daemon,
    LabTree,
    cli,
    needs_root,
    no_traceback,
    run_once,
)

pytestmark = needs_root

CLEAN = (PROJECT, "S01", "S01_MR1")


def test_a_damaged_ledger_is_exit_78_with_the_fix_for_run_and_status(
    lab: LabTree, emulator: Emulator
) -> None:
    lab.lab_drop(CLEAN)
    assert run_once(lab)[0] == 0
    ledger = lab.state / "ledger.sqlite3"
    for name in ("ledger.sqlite3-wal", "ledger.sqlite3-shm"):
        with contextlib.suppress(FileNotFoundError):
            (lab.state / name).unlink()
    ledger.write_bytes(b"SQLite format 3\0" + os.urandom(8192))
    code, log = run_once(lab)
    assert code == 78, log
    assert "state_dir" in log and "move" in log and "aside" in log
    no_traceback(log)
    status = cli(lab, "status")
    assert status.returncode == 78, status.stderr
    assert "cannot read" in status.stderr
    no_traceback(status.stderr + status.stdout)


def test_a_read_only_state_directory_is_exit_78(lab: LabTree, emulator: Emulator) -> None:
    lab.state.chmod(0o500)
    code, log = run_once(lab)
    assert code == 78, log
    assert "state_dir" in log
    no_traceback(log)


@pytest.fixture
def small_state(lab: LabTree) -> Iterator[Path]:
    """The state directory on a 1 MiB tmpfs, so a test can fill it."""
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size=1m,uid={SERVICE_UID},gid={SERVICE_GID},mode=0700",
         "tmpfs", str(lab.state)],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield lab.state
    finally:
        subprocess.run(["umount", "-l", str(lab.state)], check=False)


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as fp:
        while True:
            fp.write(b"\0" * 4096)
            fp.flush()
    return filler


def test_a_full_state_directory_is_exit_78_at_start(
    lab: LabTree, emulator: Emulator, small_state: Path
) -> None:
    _fill(small_state)
    code, log = run_once(lab)
    assert code == 78, log
    assert "state_dir" in log and "full" in log
    no_traceback(log)


def test_a_state_directory_that_fills_up_pauses_all_work_and_loses_nothing(
    lab: LabTree, emulator: Emulator, small_state: Path
) -> None:
    with Daemon(lab) as daemon:
        daemon.wait_log("watching")
        filler = _fill(small_state)
        lab.lab_drop(CLEAN)
        daemon.wait_log("WORK PAUSED")
        assert daemon.proc.poll() is None
        assert not lab.done.joinpath(*CLEAN).exists()
        filler.unlink()  # the administrator frees space: work resumes by itself
        daemon.wait_log("works again")
        daemon.until(lambda: lab.done.joinpath(*CLEAN).is_dir(), "delivered after the pause", 60)
        code = daemon.stop()
    assert code == 0
    no_traceback(daemon.log)
