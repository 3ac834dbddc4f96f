"""The daemon as a real process against the stand-in over loopback HTTP: the acceptance paths."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import zlib
from datetime import datetime
from pathlib import Path

import pytest

from xnat_standin import Emulator, Fault
from xnat_standin.demo.samples import ORIGINAL, SeriesSpec, write_nifti, write_session

import conftest
from conftest import (
    PASSWORD,
    PROJECT,
    USER,
    Drop,
    digest,
    run_daemon,
    start_daemon,
    wait_until,
)
from zipcheck import java_read_zip, local_headers, requires_java

CLEAN = (PROJECT, "S01", "S01_MR1")
SCANS = [SeriesSpec(1, "localizer", images=2), SeriesSpec(2, "T1_MPRAGE", images=3)]


def drop_session(drop: Drop, relpath: tuple[str, ...], scans: list[SeriesSpec] = SCANS) -> Path:
    return conftest.drop_session(drop, relpath, scans)


def report(root: Path, relpath: tuple[str, ...]) -> tuple[str, dict[str, object]]:
    folder = root.joinpath(*relpath)
    text = folder.with_name(folder.name + ".report.txt").read_text()
    data = json.loads(folder.with_name(folder.name + ".report.json").read_text())
    return text, data


def work_sessions(drop: Drop) -> list[Path]:
    return (
        [p for claim in drop.work.glob("[!.]*") for p in claim.iterdir() if p.is_dir()]
        if drop.work.exists()
        else []
    )


def test_clean_session_reaches_done_and_the_prearchive(drop: Drop, emulator: Emulator) -> None:
    dropped = drop_session(drop, CLEAN)
    before = digest(dropped)
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    done = drop.done.joinpath(*CLEAN)
    assert digest(done) == before  # byte-identical: nothing added, changed or removed
    [session] = emulator.prearchive()
    assert (session.project, session.subject, session.name, session.file_count) == (
        PROJECT,
        "S01",
        "S01_MR1",
        5,
    )
    text, data = report(drop.done, CLEAN)
    assert "DELIVERED to XNAT" in text and f"/data{session.uri}" in text
    assert data["outcome"] == "done" and data["xnat"]["uris"] == [f"/data{session.uri}"]  # type: ignore[index]
    assert not drop.incoming.joinpath(*CLEAN).exists() and work_sessions(drop) == []
    assert PASSWORD not in result.stderr


def test_nifti_and_derived_sessions_fail_with_reasons(drop: Drop, emulator: Emulator) -> None:
    with_nifti = (PROJECT, "S02", "S02_MR1")
    write_nifti(drop_session(drop, with_nifti) / "T1w.nii.gz")
    with_derived = (PROJECT, "S03", "S03_MR1")
    moco = SeriesSpec(3, "MoCoSeries", (*ORIGINAL, "MOCO", "MOSAIC"), images=2)
    drop_session(drop, with_derived, [*SCANS, moco])
    drop_session(drop, CLEAN)
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr

    text, data = report(drop.failed, with_nifti)
    assert "[nifti]" in text and "T1w.nii.gz" in text and "NIfTI" in text
    assert [v["rule"] for v in data["violations"]] == ["nifti"]  # type: ignore[union-attr,index]

    text, data = report(drop.failed, with_derived)
    assert "[derived-series]" in text and "MoCo" in text
    assert "The series of 2 files under 03_MoCoSeries/ (first: 03_MoCoSeries/IM0001.dcm)" in text
    [violation] = data["violations"]  # type: ignore[misc]
    assert violation["files"] == ["03_MoCoSeries/IM0001.dcm", "03_MoCoSeries/IM0002.dcm"]

    assert [s.name for s in emulator.prearchive()] == ["S01_MR1"]  # only the clean one reached XNAT
    assert drop.done.joinpath(*CLEAN).is_dir()


def test_unknown_project_goes_to_failed_not_to_unassigned(drop: Drop, emulator: Emulator) -> None:
    relpath = ("NOSUCH", "S01", "S01_MR1")
    drop_session(drop, relpath)
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    text, data = report(drop.failed, relpath)
    assert "[unknown-project]" in text and "Unassigned" in text
    assert [v["rule"] for v in data["violations"]] == ["unknown-project"]  # type: ignore[union-attr,index]
    assert emulator.prearchive() == []
    assert not any(r.path == "/data/services/import" for r in emulator.requests())


def test_503_leaves_the_session_waiting_and_it_is_retried(drop: Drop, emulator: Emulator) -> None:
    emulator.inject(Fault(method="POST", path="/data/services/import", status=503, times=2))
    drop_session(drop, CLEAN)
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("XNAT unavailable") == 2
    imports = [r.status for r in emulator.requests() if r.path == "/data/services/import"]
    assert imports == [503, 503, 200]
    assert drop.done.joinpath(*CLEAN).is_dir()
    assert not any(drop.failed.iterdir())


def test_outage_keeps_the_session_in_work_across_restarts(drop: Drop, emulator: Emulator) -> None:
    emulator.inject(Fault(method="POST", path="/data/services/import", status=503, times=0))
    dropped = drop_session(drop, CLEAN)
    before = digest(dropped)
    result = run_daemon(drop, timeout=12)
    assert result.returncode == 75, result.stderr
    [waiting] = work_sessions(drop)
    assert digest(waiting) == before
    assert not any(drop.failed.iterdir())

    emulator.clear_faults()
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    assert "recovered from the work folder" in result.stderr
    assert digest(drop.done.joinpath(*CLEAN)) == before
    assert [s.file_count for s in emulator.prearchive()] == [5]


def test_401_never_moves_data_to_failed(drop: Drop, emulator: Emulator) -> None:
    drop.secret.write_text(f"{USER}:wrong-password\n")
    drop_session(drop, CLEAN)
    result = run_daemon(drop)
    assert result.returncode == 75, result.stderr
    assert "UPLOADS PAUSED" in result.stderr and "401" in result.stderr
    assert "wrong-password" not in result.stderr
    # The login at start is refused before the session is taken: it waits where it is.
    waiting = len(work_sessions(drop)) == 1 or drop.incoming.joinpath(*CLEAN).is_dir()
    assert waiting and not any(drop.failed.iterdir())
    assert len([r for r in emulator.requests() if r.status == 401]) == 1  # one try, no lockout loop

    drop.secret.write_text(f"{USER}:{PASSWORD}\n")
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    assert drop.done.joinpath(*CLEAN).is_dir()


def test_fixing_the_secret_resumes_uploads_without_a_restart(
    drop: Drop, emulator: Emulator
) -> None:
    drop.secret.write_text(f"{USER}:wrong-password\n")
    proc = start_daemon(drop)
    try:
        drop_session(drop, CLEAN)
        wait_until(
            lambda: any(r.status == 401 for r in emulator.requests()), "a login attempt", proc
        )
        drop.secret.write_text(f"{USER}:{PASSWORD}\n")
        wait_until(drop.done.joinpath(*CLEAN).is_dir, "uploads to resume", proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 0, stderr
    assert "uploads resume" in stderr


def test_a_folder_still_being_written_is_not_claimed_before_it_settles(
    drop: Drop, emulator: Emulator
) -> None:
    drop.write_config(emulator.url, settle=3.0)  # far above the 0.4 s between writes
    files = write_session(drop.root.parent / "source", [SeriesSpec(1, "T1", images=12)])
    target = drop.incoming.joinpath(*CLEAN) / "01_T1"
    target.mkdir(parents=True)
    proc = start_daemon(drop)
    last_write = 0.0

    def copy_slowly() -> None:
        nonlocal last_write
        for f in files:  # a slow copy: a file every 0.4 s, each written in two halves
            data = f.read_bytes()
            with (target / f.name).open("wb") as out:
                out.write(data[: len(data) // 2])
                out.flush()
                time.sleep(0.2)
                out.write(data[len(data) // 2 :])
            last_write = time.time()
            time.sleep(0.2)

    writer = threading.Thread(target=copy_slowly)
    writer.start()
    try:
        writer.join(timeout=30)
        wait_until(drop.done.joinpath(*CLEAN).is_dir, "the session in done/", proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
    [session] = emulator.prearchive()
    assert session.file_count == 12, stderr  # every file, each one whole
    _, data = report(drop.done, CLEAN)
    decided = datetime.fromisoformat(str(data["decided_at"]).replace("Z", "+00:00")).timestamp()
    assert decided >= last_write + 2.5  # taken only after a quiet settle period


def test_partial_copy_names_keep_a_folder_waiting(drop: Drop, emulator: Emulator) -> None:
    folder = drop_session(drop, CLEAN)
    partial = folder / "01_localizer" / "IM0003.dcm.part"
    partial.write_bytes(b"half a file")
    proc = start_daemon(drop)
    try:
        time.sleep(3)  # six settle periods: still not taken while the .part exists
        assert folder.is_dir() and emulator.prearchive() == []
        partial.unlink()
        wait_until(drop.done.joinpath(*CLEAN).is_dir, "the session in done/", proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)


def test_junk_is_never_uploaded_and_never_a_violation(drop: Drop, emulator: Emulator) -> None:
    folder = drop_session(drop, CLEAN)
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "Thumbs.db").write_bytes(b"thumbs")
    (folder / "01_localizer" / "._IM0001.dcm").write_bytes(b"\0\5\x16\7")
    (folder / "__MACOSX").mkdir()
    (folder / "__MACOSX" / "x").write_bytes(b"x")
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    [session] = emulator.prearchive()
    assert session.file_count == 5
    _, data = report(drop.done, CLEAN)
    assert len(data["ignored"]) == 4  # type: ignore[arg-type]
    assert (drop.done.joinpath(*CLEAN) / ".DS_Store").exists()  # left where the user put it


def test_bad_folder_name_fails_with_a_suggestion(drop: Drop, emulator: Emulator) -> None:
    relpath = (PROJECT, "S 01", "S01_MR1")
    drop_session(drop, relpath)
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    text, _ = report(drop.failed, relpath)
    assert "[bad-label]" in text and "“S_01”" in text
    assert emulator.prearchive() == []


def test_same_session_dropped_twice_is_never_overwritten(drop: Drop, emulator: Emulator) -> None:
    relpath = (PROJECT, "S02", "S02_MR1")
    for _ in range(2):
        write_nifti(drop_session(drop, relpath) / "x.nii")
        assert run_daemon(drop).returncode == 0
    names = sorted(p.name for p in drop.failed.joinpath(PROJECT, "S02").iterdir())
    assert names == [
        "S02_MR1",
        "S02_MR1.report.json",
        "S02_MR1.report.txt",
        "S02_MR1__2",
        "S02_MR1__2.report.json",
        "S02_MR1__2.report.txt",
    ]


def test_sigterm_stops_an_idle_daemon_cleanly(drop: Drop) -> None:
    proc = start_daemon(drop)
    wait_until(drop.work.exists, "the daemon to prepare the tree", proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    assert "received SIGTERM" in stderr


def test_missing_secret_is_a_config_error(drop: Drop) -> None:
    drop.secret.unlink()
    result = run_daemon(drop)
    assert result.returncode == 78
    assert "cannot open" in result.stderr


@requires_java
@pytest.mark.parametrize("compression", ["stored", "deflate", "auto"])
def test_the_zip_the_daemon_sent_is_read_completely_by_java(
    drop: Drop, tmp_path: Path, compression: str
) -> None:
    """The exact bytes on the wire, read by the JDK's ZipInputStream, as XNAT reads them."""
    uploads = tmp_path / "uploads"
    with Emulator(
        root=tmp_path / "xnat2", users={USER: PASSWORD}, projects=[PROJECT], keep_uploads=uploads
    ) as emu:
        drop.write_config(emu.url, extra=f'[zip]\ncompression = "{compression}"\n')
        folder = drop_session(drop, CLEAN, [*SCANS, SeriesSpec(3, "ünïcode_série", images=2)])
        (folder / ".DS_Store").write_bytes(b"junk")
        sources = {
            str(p.relative_to(folder)): zlib.crc32(p.read_bytes())
            for p in folder.rglob("*.dcm")
            if p.is_file()
        }
        result = run_daemon(drop)
        assert result.returncode == 0, result.stderr
    [sent] = sorted(uploads.iterdir())
    entries = java_read_zip(sent)
    assert {name: crc for name, _size, crc in entries} == sources  # every DICOM, nothing else
    headers = local_headers(sent.read_bytes())
    # STORED entries never carry a descriptor (Java refuses that); compressed ones always do.
    assert all(bool(h.flags & 0x08) == (h.method == 8) for h in headers)
    methods = {h.method for h in headers}
    assert methods == {"stored": {0}, "deflate": {8}, "auto": {0, 8}}[compression]
    report = json.loads(next(drop.done.rglob("*.report.json")).read_text())
    packing = report["xnat"]["packing"]
    expected = {"stored": "stored", "deflate": "deflate, ", "auto": "auto: "}[compression]
    assert packing.startswith(expected)  # auto compresses its first pieces: the probe


def test_names_that_are_not_utf8_reach_xnat_and_the_reports(drop: Drop, emulator: Emulator) -> None:
    """Latin-1 names from old Windows exports: uploaded under a safe name, reported readably."""
    folder = drop_session(drop, CLEAN)
    latin1 = os.fsdecode(b"caf\xe9.dcm")
    os.rename(folder / "01_localizer" / "IM0001.dcm", folder / "01_localizer" / latin1)
    rejected = (PROJECT, "S02", "S02_MR1")
    other = drop_session(drop, rejected)
    (other / os.fsdecode(b"r\xe9sum\xe9.txt")).write_text("notes\n")
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    assert drop.done.joinpath(*CLEAN).is_dir() and emulator.prearchive()[0].file_count == 5
    text, data = report(drop.failed, rejected)
    [violation] = data["violations"]  # type: ignore[misc]
    # Shown escaped, the same way in the text and the JSON report (valid UTF-8 for any reader).
    assert violation["files"] == ["r\\xe9sum\\xe9.txt"]
    assert "r\\xe9sum\\xe9.txt" in text
