"""Only judged bytes leave: a file rewritten, or a folder swapped for a link, after inspection
through a handle a lab member opened before the claim. On the real daemon, as its own user.

A pausepoint (failpoints.py) holds the daemon for a moment right after judging (or right
after reading every file), which makes the race deterministic. Each test failed on the code
before issue 11 (93eee20): the rewritten file and the other patient's study were uploaded
and reported as verified, and the file written during inspection was filed as damaged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from xnat_standin import Emulator
from xnat_standin.demo.samples import SeriesSpec, write_session

from conftest import PROJECT, daemon_env
from hostile_lab import Daemon, LabTree, needs_root, no_traceback, run_once

pytestmark = needs_root

CLEAN = (PROJECT, "S01", "S01_MR1")


def _paused(point: str, seconds: float = 3.0) -> dict[str, str]:
    return daemon_env(XNAT_DROP_PAUSEPOINT=f"{point}={seconds}")


def _report(folder: Path) -> dict[str, object]:
    return json.loads(folder.with_name(folder.name + ".report.json").read_text())  # type: ignore[no-any-return]


def test_a_same_size_rewrite_after_inspection_is_never_uploaded(
    lab: LabTree, emulator: Emulator
) -> None:
    folder = lab.lab_drop(CLEAN)
    target = folder / "02_T1_MPRAGE" / "IM0002.dcm"
    data = target.read_bytes()
    offset = data.index(b"ORIGINAL\\PRIMARY")
    st = target.stat()
    handle = os.open(target, os.O_RDWR)  # opened before the claim, kept after it
    try:
        with Daemon(lab, "--once", env=_paused("after-judge")) as daemon:
            daemon.wait_log("pausepoint after-judge")
            os.pwrite(handle, b"DERIVED ", offset)  # same size: value 1 is now DERIVED
            os.utime(handle, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old mtime
            code = daemon.wait(60)
    finally:
        os.close(handle)
    assert code == 0, daemon.log
    filed = lab.failed.joinpath(*CLEAN)
    assert filed.is_dir(), daemon.log
    assert [v["rule"] for v in _report(filed)["violations"]] == ["derived-series"]  # type: ignore[index, union-attr]
    # Nothing of it stays in XNAT: a partial upload of ours is withdrawn.
    assert emulator.prearchive() == []
    no_traceback(daemon.log)


def test_a_series_folder_swapped_for_a_link_after_inspection_uploads_nothing_from_it(
    lab: LabTree, emulator: Emulator
) -> None:
    other = lab.base / "other-patient"
    # Another patient's series, file for file the same sizes as the one it replaces.
    write_session(other, [SeriesSpec(1, "localizer", images=2)], patient_id="S99")
    folder = lab.lab_drop(CLEAN)
    handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)  # a shell's cwd in the session
    try:
        with Daemon(lab, "--once", env=_paused("after-judge")) as daemon:
            daemon.wait_log("pausepoint after-judge")
            os.rename("01_localizer", "old", src_dir_fd=handle, dst_dir_fd=handle)
            os.symlink(other / "01_localizer", "01_localizer", dir_fd=handle)
            code = daemon.wait(60)
    finally:
        os.close(handle)
    assert code == 0, daemon.log
    filed = lab.failed.joinpath(*CLEAN)
    assert filed.is_dir(), daemon.log
    rules = {v["rule"] for v in _report(filed)["violations"]}  # type: ignore[union-attr]
    assert "unsafe-file" in rules
    assert emulator.prearchive() == []  # nothing of either patient went to XNAT
    no_traceback(daemon.log)


def test_a_file_written_while_it_was_inspected_is_checked_again(
    lab: LabTree, emulator: Emulator
) -> None:
    folder = lab.lab_drop(CLEAN)
    target = folder / "02_T1_MPRAGE" / "IM0003.dcm"
    whole = target.read_bytes()
    half = len(whole) // 2
    handle = os.open(target, os.O_RDWR)
    os.ftruncate(handle, half)  # the copy is not finished...
    try:
        with Daemon(lab, "--once", env=_paused("after-inspect", 2.0)) as daemon:
            daemon.wait_log("pausepoint after-inspect")
            os.pwrite(handle, whole[half:], half)  # ... and finishes while being inspected
            code = daemon.wait(60)
    finally:
        os.close(handle)
    assert code == 0, daemon.log
    assert lab.done.joinpath(*CLEAN).is_dir(), daemon.log  # judged again: complete, delivered
    assert "written while it was inspected" in daemon.log
    [session] = emulator.prearchive()
    assert session.file_count == 5
    no_traceback(daemon.log)


def test_a_once_timeout_is_honoured_in_the_middle_of_a_step(
    lab: LabTree, emulator: Emulator
) -> None:
    lab.lab_drop(CLEAN)
    code, log = run_once(lab, timeout=60)  # the session is delivered: all fine
    assert code == 0, log
    lab.lab_drop((PROJECT, "S02", "S02_MR1"))
    with Daemon(lab, "--once", "--timeout", "3", env=_paused("after-judge", 40)) as daemon:
        code = daemon.wait(20)  # the old code slept through its deadline: 40 s
    assert code == 75, daemon.log
    assert "timeout ran out" in daemon.log
    no_traceback(daemon.log)
