"""filing.py, trust.py and the claim's defences, on real folders: done/ and failed/ as lab
members may leave them, a work folder someone planted things in, long names."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from xnat_drop.adapters.fs import claims as store
from xnat_drop.adapters.fs import filing, trust
from xnat_drop.adapters.fs.beneath import Dir, UnsafePathError
from xnat_drop.adapters.fs.tree import walk
from xnat_drop.core.config import PathsConfig
from xnat_drop.core.errors import SessionChangedError
from xnat_drop.core.stability import fingerprint

REL = ("P1", "S01", "S01_MR1")


def _drop(paths: PathsConfig, rel: tuple[str, ...] = REL) -> Path:
    folder = paths.incoming.joinpath(*rel)
    (folder / "series").mkdir(parents=True)
    (folder / "series" / "IM1.dcm").write_bytes(b"data-1")
    return folder


def _settled(folder: Path) -> object:
    return fingerprint((e.relpath, e.size, e.mtime_ns) for e in walk(folder))


# -- placing finished sessions ----------------------------------------------------------------


def test_a_link_planted_on_the_way_is_passed_by_under_a_free_name(
    paths: PathsConfig, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(paths.incoming, paths.failed / "P1")  # failed/P1 -> incoming/P1: a loop
    placement = filing.place(paths.failed, "claim-1", REL)
    assert placement.relpath == ("P1__2", "S01", "S01_MR1")
    assert "P1__2" in placement.notes[0] and "not a folder" in placement.notes[0]
    filing.write_reports(placement, {".report.txt": "r\n"})
    assert (paths.failed / "P1__2" / "S01" / "S01_MR1.report.txt").read_text() == "r\n"
    assert list(paths.incoming.iterdir()) == []


def test_a_name_too_long_for_its_reports_is_shortened_the_same_way_every_time(
    paths: PathsConfig,
) -> None:
    long = "S" * 250
    placement = filing.place(paths.done, "claim-1", ("P1", "S01", long))
    name = placement.relpath[-1]
    assert len(os.fsencode(name + "__9999.report.json")) <= 255
    assert name == filing.fitted(long) and name.startswith("SSS") and "~" in name
    assert filing.fitted(long + "x") != name  # two long names stay apart
    filing.write_reports(placement, {".report.json": "{}\n"})  # no ENAMETOOLONG


def test_a_crash_after_the_reports_reuses_the_name_they_chose(paths: PathsConfig) -> None:
    first = filing.place(paths.failed, "20260101T000000-aaaaaaaa", REL)
    report = json.dumps({"schema": 1, "claim": "20260101T000000-aaaaaaaa"})
    filing.write_reports(first, {".report.json": report})
    again = filing.place(paths.failed, "20260101T000000-aaaaaaaa", REL)
    other = filing.place(paths.failed, "20260101T000000-bbbbbbbb", REL)
    assert again.relpath == first.relpath == REL
    assert other.relpath[-1] == "S01_MR1__2"
    filing.discard_own_reports(paths.failed, "20260101T000000-aaaaaaaa", REL)
    assert not (paths.failed / "P1" / "S01" / "S01_MR1.report.json").exists()


def test_force_markers_fit_and_are_never_written_through_a_link(tmp_path: Path) -> None:
    long = "x" * 250
    assert len(filing.force_marker_name(long)) <= 255
    target = tmp_path / "target"
    os.symlink(target, tmp_path / filing.force_marker_name("S01_MR1"))
    with Dir.open(tmp_path) as folder:
        with pytest.raises(UnsafePathError, match="force marker"):
            filing.leave_force_marker(folder, "S01_MR1")
        filing.leave_force_marker(folder, long)
        filing.leave_force_marker(folder, long)  # already there: fine
    assert not target.exists()
    assert filing.take_force_marker(tmp_path.parent, (tmp_path.name, long))
    assert not filing.take_force_marker(tmp_path.parent, (tmp_path.name, "S01_MR1"))
    assert (tmp_path / filing.force_marker_name("S01_MR1")).is_symlink()  # not ours: kept


# -- claims -------------------------------------------------------------------------------------


def test_a_claim_that_changed_since_it_settled_goes_back(
    paths: PathsConfig, area: store.WorkArea
) -> None:
    folder = _drop(paths)
    settled = _settled(folder)
    (folder / "series" / "IM2.dcm").write_bytes(b"late")  # after the look that settled it
    with pytest.raises(SessionChangedError, match="changed after it was last seen"):
        area.claim(REL, 0.0, settled)  # type: ignore[arg-type]
    assert (folder / "series" / "IM2.dcm").exists()
    assert list(paths.work.iterdir()) == [] and area.held() == set()
    assert area.claim(REL, 0.0, _settled(folder)) is not None  # type: ignore[arg-type]


def test_a_claim_through_a_linked_project_folder_is_refused(
    paths: PathsConfig, area: store.WorkArea, tmp_path: Path
) -> None:
    outside = tmp_path / "outside" / "S01" / "S01_MR1"
    outside.mkdir(parents=True)
    os.symlink(tmp_path / "outside", paths.incoming / "P1")
    with pytest.raises(UnsafePathError, match="symbolic link"):
        area.claim(REL, 0.0)
    assert outside.is_dir() and list(paths.work.iterdir()) == []


def test_a_refused_rename_leaves_no_claim_folder_and_no_open_lock(
    paths: PathsConfig, area: store.WorkArea, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session folder that is not group-writable cannot be moved (EACCES): each try must
    clean up after itself, or one such folder exhausts the daemon's file descriptors."""
    _drop(paths)

    def refused(self: Dir, name: str, dest: Dir, dest_name: str) -> None:
        raise PermissionError(13, "Permission denied", name)

    monkeypatch.setattr(Dir, "move", refused)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        with pytest.raises(PermissionError):
            area.claim(REL, 0.0)
    assert len(os.listdir("/proc/self/fd")) == before
    assert list(paths.work.iterdir()) == [] and area.held() == set()


def test_planted_claims_are_never_believed(paths: PathsConfig, area: store.WorkArea) -> None:
    for claim_id, record in (
        ("20260101T000000-aaaaaaaa", {"relpath": ["..", "..", "x"], "claimed_at": 1}),
        ("20260101T000000-bbbbbbbb", {"relpath": ["/etc"], "claimed_at": 1}),
        ("20260101T000000-cccccccc", {"relpath": "P1/S01", "claimed_at": 1}),
        ("20260101T000000-dddddddd", {"relpath": ["P"] * 40, "claimed_at": 1}),
    ):
        (paths.work / claim_id).mkdir()
        (paths.work / claim_id / "claim.json").write_text(json.dumps(record))
    (paths.work / "20260101T000000-eeeeeeee").symlink_to("/etc")
    assert area.recover() == []
    assert sorted(p.name for p in paths.work.iterdir())[:4] == [
        "20260101T000000-aaaaaaaa",
        "20260101T000000-bbbbbbbb",
        "20260101T000000-cccccccc",
        "20260101T000000-dddddddd",
    ]  # left alone, never deleted or followed


# -- trust boundaries ---------------------------------------------------------------------------


def test_folders_the_lab_could_write_are_named_with_their_fix(paths: PathsConfig) -> None:
    assert trust.problems(paths) == []
    paths.work.chmod(0o2770)
    paths.incoming.parent.chmod(0o2775)
    found = trust.problems(paths)
    assert any(".work" in p and "chmod g-w,o-w" in p for p in found)
    assert any("root" in p and "writable by its group" in p for p in found)
    assert trust.problems(paths, uid=12345) != []  # owned by someone else than the service
    paths.work.chmod(0o700)
    paths.incoming.parent.chmod(0o755)


def test_a_configured_folder_that_is_a_link_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real-incoming"
    real.mkdir()
    os.symlink(real, tmp_path / "incoming")
    p = PathsConfig(
        tmp_path / "incoming", tmp_path / "done", tmp_path / "failed", tmp_path / "w", tmp_path
    )
    assert any("symbolic link" in problem for problem in trust.problems(p))
