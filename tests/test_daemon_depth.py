"""Sessions dropped at the wrong folder level (issue 13, point 3): the real daemon process
against the stand-in. Parts of one session side by side are rejected together, a date folder
taken for the session is rejected when the DICOM files name another session, and ordinary
sessions side by side are not touched."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from xnat_standin import Emulator
from xnat_standin.demo.samples import SeriesSpec, write_session

from conftest import PROJECT, Drop, digest, run_daemon, start_daemon, stop_daemon, wait_until

SERIES = [
    SeriesSpec(1, "localizer", images=2),
    SeriesSpec(2, "t1", images=2),
    SeriesSpec(3, "rest", images=2),
]


def place(drop: Drop, relpath: tuple[str, ...], series: list[SeriesSpec], study: str) -> Path:
    """Write one study's series below incoming/`relpath`, each in `<NN>_<description>/`,
    staged elsewhere and moved in whole (a finished copy)."""
    staging = drop.root.parent / "staging" / "/".join(relpath)
    write_session(staging, series, patient_id="SUBJ15", study_uid=study)
    target = drop.incoming.joinpath(*relpath)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(staging, target)
    return target


def report(root: Path, relpath: tuple[str, ...]) -> tuple[str, dict[str, object]]:
    folder = root.joinpath(*relpath)
    text = folder.with_name(folder.name + ".report.txt").read_text()
    data = json.loads(folder.with_name(folder.name + ".report.json").read_text())
    return text, data


def rules(data: dict[str, object]) -> list[str]:
    return [v["rule"] for v in data["violations"]]  # type: ignore[attr-defined,index]


def no_uploads(emulator: Emulator) -> bool:
    return not any(r.path == "/data/services/import" for r in emulator.requests())


def test_series_dropped_one_level_too_high_all_land_in_failed(
    drop: Drop, emulator: Emulator
) -> None:
    study = generate_uid()
    dropped = place(drop, (PROJECT, "SUBJ15_MR1"), SERIES, study)
    before = digest(dropped)
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    names = ["01_localizer", "02_t1", "03_rest"]
    for name in names:
        text, data = report(drop.failed, (PROJECT, "SUBJ15_MR1", name))
        assert rules(data) == ["wrong-depth"], text
        assert "[wrong-depth] Dropped at the wrong folder level" in text
        flat = " ".join(text.split())
        assert (
            "The folders “01_localizer”, “02_t1” and “03_rest” in incoming/P1/SUBJ15_MR1/ hold "
            "different series of one scanning session" in flat
        )
        assert "probably dropped one level too high" in flat
        assert "e.g. incoming/P1/<subject>/SUBJ15_MR1/," in flat
        assert "move the folder back to" not in flat  # the generic advice would undo the fix
        assert study not in text and study not in json.dumps(data)
    after = digest(drop.failed / PROJECT / "SUBJ15_MR1")
    assert {k: v for k, v in after.items() if ".report." not in k} == before  # untouched
    assert emulator.prearchive() == [] and no_uploads(emulator)


def test_a_series_beside_a_delivered_part_of_its_study_is_rejected(
    drop: Drop, emulator: Emulator
) -> None:
    study = generate_uid()
    place(drop, (PROJECT, "SUBJ18_MR1", "01_localizer"), SERIES[:1], study)
    assert run_daemon(drop).returncode == 0  # alone, it cannot be told from a session
    assert drop.done.joinpath(PROJECT, "SUBJ18_MR1", "01_localizer").is_dir()
    place(drop, (PROJECT, "SUBJ18_MR1", "02_t1"), SERIES[1:2], study)
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    text, data = report(drop.failed, (PROJECT, "SUBJ18_MR1", "02_t1"))
    assert rules(data) == ["wrong-depth"]
    flat = " ".join(text.split())
    assert "“01_localizer” was already delivered to XNAT" in flat
    assert "ask the data manager to delete it there" in flat
    assert len(emulator.prearchive()) == 1  # only the first part, from the first run


def test_a_series_whose_sibling_is_still_being_copied_is_not_delivered(
    drop: Drop, emulator: Emulator
) -> None:
    study = generate_uid()
    place(drop, (PROJECT, "SUBJ19_MR1", "01_localizer"), SERIES[:1], study)
    copying = place(drop, (PROJECT, "SUBJ19_MR1", "02_t1"), SERIES[1:2], study)
    (copying / "02_t1" / "IM0003.dcm.part").write_bytes(b"half a file")  # never settles
    proc = start_daemon(drop)
    try:
        failed = drop.failed.joinpath(PROJECT, "SUBJ19_MR1", "01_localizer.report.json")
        wait_until(failed.exists, "the settled series in failed/", proc)
    finally:
        stop_daemon(proc)
    assert rules(json.loads(failed.read_text())) == ["wrong-depth"]
    assert copying.is_dir() and no_uploads(emulator)


def test_a_date_folder_taken_for_the_session_is_rejected_when_dicom_names_another(
    drop: Drop, emulator: Emulator
) -> None:
    drop.write_config(emulator.url, extra='[routing]\norder = ["layout", "dicom"]\n')
    relpath = (PROJECT, "SUBJ15_MR1", "20240131")
    dropped = place(drop, relpath, SERIES[:2], generate_uid())
    for path in sorted(dropped.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.PatientComments = "Project: P1 Subject: SUBJ15 Session: VISIT_A7"
        ds.save_as(path)
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    text, data = report(drop.failed, relpath)
    assert rules(data) == ["wrong-depth"]
    flat = " ".join(text.split())
    assert "The folder “20240131” looks like a date folder inside the session folder" in flat
    assert "probably dropped one level too deep" in flat
    assert "e.g. incoming/<project>/<subject>/<session>/20240131/" in flat
    assert "VISIT_A7" not in text and "VISIT_A7" not in json.dumps(data)  # a header value
    assert no_uploads(emulator)


def test_sessions_of_other_studies_side_by_side_and_a_date_label_are_delivered(
    drop: Drop, emulator: Emulator
) -> None:
    first = (PROJECT, "SUBJ16", "SUBJ16_MR1")
    second = (PROJECT, "SUBJ16", "SUBJ16_MR2")
    dated = (PROJECT, "SUBJ17", "20240131")
    for relpath in (first, second, dated):
        place(drop, relpath, SERIES[:2], generate_uid())
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    for relpath in (first, second, dated):
        assert drop.done.joinpath(*relpath).is_dir(), list(drop.failed.rglob("*.txt"))
    assert sorted(s.name for s in emulator.prearchive()) == ["20240131", "SUBJ16_MR1", "SUBJ16_MR2"]
    text, _ = report(drop.done, dated)
    assert "session label “20240131” looks like a date" in " ".join(text.split())
    text, _ = report(drop.done, first)
    assert "looks like" not in text
