"""store.py on a real folder tree: claims by rename, recovery, finishing without overwriting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xnat_drop import store
from xnat_drop.config import PathsConfig

REL = ("P1", "S01", "S01_MR1")


@pytest.fixture
def paths(tmp_path: Path) -> PathsConfig:
    p = PathsConfig(
        tmp_path / "incoming",
        tmp_path / "done",
        tmp_path / "failed",
        tmp_path / ".work",
        tmp_path / "state",
    )
    store.prepare(p)
    return p


def drop_session(paths: PathsConfig, rel: tuple[str, ...] = REL) -> Path:
    folder = paths.incoming.joinpath(*rel)
    (folder / "series").mkdir(parents=True)
    (folder / "series" / "IM1.dcm").write_bytes(b"data-1")
    return folder


def test_prepare_refuses_a_missing_parent(tmp_path: Path) -> None:
    gone = tmp_path / "not-mounted"
    p = PathsConfig(gone / "incoming", gone / "done", gone / "failed", gone / ".work", tmp_path)
    with pytest.raises(FileNotFoundError, match="is the share mounted"):
        store.prepare(p)
    assert not gone.exists()


def test_claim_moves_the_folder_whole_and_records_where_it_came_from(paths: PathsConfig) -> None:
    drop_session(paths)
    item = store.claim(paths, REL, now=1_000_000.0)
    assert item is not None
    assert not paths.incoming.joinpath(*REL).exists()
    assert (item.folder / "series" / "IM1.dcm").read_bytes() == b"data-1"
    assert json.loads((item.dir / store.CLAIM_FILE).read_text())["relpath"] == list(REL)


def test_claim_of_a_vanished_folder_leaves_nothing_behind(paths: PathsConfig) -> None:
    assert store.claim(paths, REL, now=0.0) is None
    assert list(paths.work.iterdir()) == []


def test_claim_puts_back_a_folder_swapped_for_a_symlink(paths: PathsConfig, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = paths.incoming.joinpath(*REL)
    link.parent.mkdir(parents=True)
    link.symlink_to(elsewhere, target_is_directory=True)
    assert store.claim(paths, REL, now=0.0) is None
    assert link.is_symlink() and list(paths.work.iterdir()) == []


def test_recover_finds_claims_and_drops_empty_ones(paths: PathsConfig) -> None:
    drop_session(paths)
    item = store.claim(paths, REL, now=5.0)
    assert item is not None
    orphan = paths.work / "20260101T000000-deadbeef"  # crash between record and rename
    orphan.mkdir()
    (orphan / store.CLAIM_FILE).write_text(
        json.dumps({"relpath": ["P", "S", "E"], "claimed_at": 1})
    )
    stranger = paths.work / "not-ours"
    stranger.mkdir()
    (stranger / "file").write_text("x")
    recovered = store.recover(paths)
    assert [(c.id, c.relpath) for c in recovered] == [(item.id, REL)]
    assert not orphan.exists()
    assert (stranger / "file").exists()  # never delete what we did not create


def test_finish_writes_reports_then_moves_and_never_overwrites(paths: PathsConfig) -> None:
    destinations = []
    for n in range(3):
        drop_session(paths)
        item = store.claim(paths, REL, now=float(n))
        assert item is not None
        dest = store.destination(paths.failed, item)
        store.finish(item, dest, {".report.txt": f"report {n}\n", ".report.json": "{}\n"})
        destinations.append(dest)
    names = [d.name for d in destinations]
    assert names == ["S01_MR1", "S01_MR1__2", "S01_MR1__3"]
    for n, dest in enumerate(destinations):
        assert (dest / "series" / "IM1.dcm").read_bytes() == b"data-1"
        assert (dest.parent / f"{dest.name}.report.txt").read_text() == f"report {n}\n"
    assert list(paths.work.iterdir()) == []


def test_a_leftover_report_alone_also_blocks_the_name(paths: PathsConfig) -> None:
    (paths.done / "P1" / "S01").mkdir(parents=True)
    (paths.done / "P1" / "S01" / "S01_MR1.report.txt").write_text("older delivery\n")
    drop_session(paths)
    item = store.claim(paths, REL, now=0.0)
    assert item is not None
    assert store.destination(paths.done, item).name == "S01_MR1__2"


def test_write_atomic_replaces_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "r.txt"
    store.write_atomic(target, b"one")
    store.write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["r.txt"]
