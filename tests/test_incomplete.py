"""Issue 13 point 4, on the real daemon process against the stand-in: a paused copy is held
until its series is whole and delivered as one session; a series that stays short fails as
incomplete-series with the numbers; the rest of a copy that arrives after its session was
delivered is told as late files, with the append route and no advice to relabel."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pydicom

from xnat_standin import Emulator
from xnat_standin.demo.samples import SeriesSpec, write_session

from conftest import PROJECT, Drop, run_daemon, start_daemon, stop_daemon, wait_until

SESSION = (PROJECT, "S01", "S01_MR1")
BOLD = SeriesSpec(5, "bold", images=8)


def staged(drop: Drop, *, announced: int | None = 8) -> list[Path]:
    """Series 5 written outside the drop tree, each header announcing `announced` images
    (ImagesInAcquisition, as GE writes it); returns the files in copy order."""
    staging = drop.root.parent / "staging"
    files = write_session(staging, [BOLD], patient_id="S01")
    if announced is not None:
        for path in files:
            ds = pydicom.dcmread(path)
            ds.ImagesInAcquisition = announced
            ds.save_as(path)
    return sorted(files)


def copy(files: list[Path], into: Path) -> None:
    """What a copy tool does: the series folder, then one file after another."""
    for path in files:
        target = into / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def status_states(drop: Drop) -> list[str]:
    try:
        data = json.loads((drop.state / "status.json").read_text())
    except (OSError, ValueError):
        return []
    return [entry["state"] for entry in data.get("settling", [])]


def report(root: Path, relpath: tuple[str, ...]) -> tuple[str, dict[str, object]]:
    folder = root.joinpath(*relpath)
    text = folder.with_name(folder.name + ".report.txt").read_text()
    data = json.loads(folder.with_name(folder.name + ".report.json").read_text())
    return " ".join(text.split()), data


def rules_in(data: dict[str, object]) -> list[str]:
    return sorted({v["rule"] for v in data["violations"]})  # type: ignore[attr-defined,index]


def test_a_paused_copy_is_held_and_delivered_as_one_session(drop: Drop, emulator: Emulator) -> None:
    files = staged(drop)
    target = drop.incoming.joinpath(*SESSION)
    proc = start_daemon(drop)
    held = "the series of 4 files under 05_bold/ (first: 05_bold/IM0001.dcm): 4 of 8 images"
    try:
        wait_until((drop.state / "status.json").exists, "the daemon to start", proc)
        # The writer copies half the series, then pauses (a "replace or skip?" question) until
        # the daemon has settled, judged and held the half: far longer than settle_seconds.
        writer = threading.Thread(target=copy, args=(files[:4], target))
        writer.start()
        writer.join()
        wait_until(lambda: any(held in s for s in status_states(drop)), "the half to be held", proc)
        assert not drop.done.exists() or not any(drop.done.iterdir())
        assert emulator.prearchive() == []  # nothing sent
        writer = threading.Thread(target=copy, args=(files[4:], target))
        writer.start()
        writer.join()
        wait_until(drop.done.joinpath(*SESSION).is_dir, "the whole session in done/", proc)
    finally:
        code, stderr = stop_daemon(proc)
    assert code == 0, stderr
    [session] = emulator.prearchive()
    assert (session.name, session.file_count) == ("S01_MR1", 8)
    assert sorted(p.name for p in drop.done.joinpath(*SESSION, "05_bold").iterdir()) == [
        p.name for p in files
    ]
    assert not drop.failed.exists() or list(drop.failed.rglob("*")) == []
    assert f"looks incomplete ({held})" in stderr
    assert "bold" not in stderr.replace("05_bold", "")  # no SeriesDescription in the log
    assert "series 5" not in stderr  # nor its SeriesNumber


def test_a_series_still_short_after_max_settle_fails_as_incomplete_series(
    drop: Drop, emulator: Emulator
) -> None:
    drop.write_config(emulator.url, watch="max_settle_seconds = 2")
    copy(staged(drop)[:5], drop.incoming.joinpath(*SESSION))
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    text, data = report(drop.failed, SESSION)
    assert rules_in(data) == ["incomplete-series"]
    assert (
        "The series of 5 files under 05_bold/ (first: 05_bold/IM0001.dcm) holds 5 of 8 images"
    ) in text
    assert "ImagesInAcquisition (0020,1002) says 8" in text
    assert "interrupted or paused" in text and "Copy the missing files" in text
    assert emulator.prearchive() == []
    assert "put back into incoming/" in result.stderr  # held first, failed only at the end


def test_accept_delivers_an_incomplete_series_as_it_is(drop: Drop, emulator: Emulator) -> None:
    drop.write_config(emulator.url, extra='[rules]\nincomplete-series = "accept"')
    copy(staged(drop)[:5], drop.incoming.joinpath(*SESSION))
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    [session] = emulator.prearchive()
    assert session.file_count == 5
    assert drop.done.joinpath(*SESSION).is_dir()


def test_files_arriving_after_delivery_are_reported_as_late_not_relabelled(
    drop: Drop, emulator: Emulator
) -> None:
    files = staged(drop, announced=None)  # no count in the headers: the first part looks whole
    target = drop.incoming.joinpath(*SESSION)
    copy(files[:4], target)
    assert run_daemon(drop).returncode == 0
    assert drop.done.joinpath(*SESSION).is_dir()
    copy(files[4:], target)  # the rest of the copy, into the same folder name
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    text, data = report(drop.failed, SESSION)
    assert rules_in(data) == ["late-files"]
    assert "These 4 files arrived " in text and " after the session was delivered" in text
    assert "the copy was probably still running" in text
    assert 'xnat.on_existing = "append"' in text
    assert "session-exists" not in text and "another label" not in text
    [session] = emulator.prearchive()
    assert session.file_count == 4  # nothing more was sent
