"""A session that failed, was fixed and moved back by hand, then delivered: its old "NOT
uploaded" reports go to failed/.history/, the folder is untouched, and the receipt says so.
The real daemon process against the stand-in, with the lab's time zone from TZ."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from xnat_standin import Emulator
from xnat_standin.demo.samples import SeriesSpec, write_nifti

import conftest
from conftest import PROJECT, Drop, daemon_env, digest, run_daemon

RELPATH = (PROJECT, "S07", "S07_MR1")
SUFFIXES = (".report.txt", ".report.json")
SCANS = [SeriesSpec(1, "localizer", images=2), SeriesSpec(2, "T1_MPRAGE", images=3)]


def beside(root: Path, suffix: str) -> Path:
    folder = root.joinpath(*RELPATH)
    return folder.with_name(folder.name + suffix)


def fail_then_fix(drop: Drop) -> Path:
    """Drop the session with a NIfTI file, let the daemon fail it, delete the NIfTI file in
    failed/ and return the fixed folder (still in failed/)."""
    write_nifti(conftest.drop_session(drop, RELPATH, SCANS) / "T1w.nii.gz")
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    failed = drop.failed.joinpath(*RELPATH)
    assert "NOT uploaded" in beside(drop.failed, ".report.txt").read_text()
    (failed / "T1w.nii.gz").unlink()
    return failed


@pytest.mark.parametrize("carried", [False, True], ids=["left-in-failed", "carried-along"])
def test_old_failure_reports_go_to_the_history_once_the_session_is_delivered(
    drop: Drop, emulator: Emulator, carried: bool
) -> None:
    failed = fail_then_fix(drop)
    old = {s: beside(drop.failed, s).read_bytes() for s in SUFFIXES}
    before = digest(failed)
    back = drop.incoming.joinpath(*RELPATH)
    os.rename(failed, back)  # a lab member's `mv`, reports left behind...
    if carried:  # ...or taken along beside the folder
        for suffix in SUFFIXES:
            os.rename(beside(drop.failed, suffix), beside(drop.incoming, suffix))

    result = run_daemon(drop, env=daemon_env(TZ="Europe/Berlin"))
    assert result.returncode == 0, result.stderr

    assert digest(drop.done.joinpath(*RELPATH)) == before  # the folder itself: untouched
    for root in (drop.failed, drop.incoming):
        assert not any(beside(root, s).exists() for s in SUFFIXES), root
    history = drop.failed.joinpath(".history", *RELPATH)
    kept = sorted(p.name for p in history.iterdir())
    assert len(kept) == 2 and kept[0].endswith(".report.json") and kept[1].endswith(".report.txt")
    for name in kept:
        assert (history / name).read_bytes() == old[name[name.index(".report") :]]

    text = beside(drop.done, ".report.txt").read_text()
    assert "DELIVERED to XNAT" in text
    unwrapped = " ".join(text.split())
    assert "the earlier “NOT uploaded” report of this session is out of date" in unwrapped
    assert f"failed/.history/{'/'.join(RELPATH)}/{kept[1]}" in unwrapped
    assert re.search(r"Decided: +\d{4}-\d\d-\d\d \d\d:\d\d CES?T\n", text), text
    [session] = emulator.prearchive()
    assert f"In XNAT:   {emulator.url}/data{session.uri}\n" in text
    assert "not yet archived: someone with the project's owner or member role" in unwrapped
    data = json.loads(beside(drop.done, ".report.json").read_text())
    assert data["decided_at"].endswith("Z") and data["outcome"] == "done"


def test_a_report_that_is_not_the_daemons_stays(drop: Drop, emulator: Emulator) -> None:
    failed = fail_then_fix(drop)
    os.rename(failed, drop.incoming.joinpath(*RELPATH))
    # Someone's own notes under a report's name: not a failure report of the daemon's.
    beside(drop.failed, ".report.json").write_text('{"note": "checked by Anna"}\n')
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    assert drop.done.joinpath(*RELPATH).is_dir()
    assert beside(drop.failed, ".report.json").read_text() == '{"note": "checked by Anna"}\n'
    assert beside(drop.failed, ".report.txt").exists()
    assert not drop.failed.joinpath(".history").exists()
