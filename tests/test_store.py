"""store.py on a real folder tree: claims by rename and lock, recovery, finishing, tidying."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from xnat_drop.adapters.fs import claims as store
from xnat_drop.adapters.fs import filing
from xnat_drop.adapters.fs.beneath import Dir, UnsafePathError
from xnat_drop.core.config import PathsConfig

from conftest import OWNER

REL = ("P1", "S01", "S01_MR1")


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


def test_prepare_refuses_folders_on_two_filesystems(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(other)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        p = PathsConfig(
            tmp_path / "incoming", tmp_path / "done", other / "failed", tmp_path / ".work", tmp_path
        )
        with pytest.raises(OSError, match="must be on one filesystem") as caught:
            store.prepare(p)
        assert f"failed {other / 'failed'}" in str(caught.value)
    finally:
        subprocess.run(["umount", str(other)], check=True)


def test_claim_moves_the_folder_whole_and_records_where_it_came_from(
    paths: PathsConfig, area: store.WorkArea
) -> None:
    drop_session(paths)
    item = area.claim(REL, now=1_000_000.0)
    assert item is not None
    assert not paths.incoming.joinpath(*REL).exists()
    assert (item.folder / "series" / "IM1.dcm").read_bytes() == b"data-1"
    assert json.loads((item.dir / store.CLAIM_FILE).read_text())["relpath"] == list(REL)
    assert area.held() == {item.id}


def test_claim_of_a_vanished_folder_leaves_nothing_behind(
    paths: PathsConfig, area: store.WorkArea
) -> None:
    assert area.claim(REL, now=0.0) is None
    assert list(paths.work.iterdir()) == [] and area.held() == set()


def test_claim_puts_back_a_folder_swapped_for_a_symlink(
    paths: PathsConfig, area: store.WorkArea, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = paths.incoming.joinpath(*REL)
    link.parent.mkdir(parents=True)
    link.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="not a folder"):
        area.claim(REL, now=0.0)
    assert link.is_symlink() and list(paths.work.iterdir()) == []


def test_recover_finds_claims_and_drops_empty_ones(paths: PathsConfig) -> None:
    drop_session(paths)
    first = store.WorkArea(paths, OWNER)
    item = first.claim(REL, now=5.0)
    assert item is not None
    first.close()  # the daemon stopped: its claim stays, unlocked
    orphan = paths.work / "20260101T000000-deadbeef"  # crash between record and rename
    orphan.mkdir()
    (orphan / store.CLAIM_FILE).write_text(
        json.dumps({"relpath": ["P", "S", "E"], "claimed_at": 1})
    )
    stranger = paths.work / "not-ours"
    stranger.mkdir()
    (stranger / "file").write_text("x")
    second = store.WorkArea(paths, OWNER)
    try:
        recovered = second.recover()
        assert [(c.id, c.relpath) for c in recovered] == [(item.id, REL)]
        assert not orphan.exists()
        assert (stranger / "file").exists()  # never delete what we did not create
    finally:
        second.close()


def test_a_claim_held_by_a_living_daemon_is_never_adopted(paths: PathsConfig) -> None:
    drop_session(paths)
    owner = store.WorkArea(paths, OWNER)
    item = owner.claim(REL, now=0.0)
    assert item is not None
    restarted = store.WorkArea(paths, OWNER)  # the same daemon (its state), started again
    try:
        assert restarted.recover() == []  # the owner's lock holds
        owner.close()  # as if the owner was killed: the kernel drops its lock
        assert [c.id for c in restarted.recover()] == [item.id]
    finally:
        restarted.close()


def test_finish_writes_reports_then_moves_and_never_overwrites(
    paths: PathsConfig, area: store.WorkArea
) -> None:
    destinations = []
    for n in range(3):
        drop_session(paths)
        item = area.claim(REL, now=float(n))
        assert item is not None
        placement = filing.place(paths.failed, item.id, item.relpath)
        filing.write_reports(placement, {".report.txt": f"report {n}\n", ".report.json": "{}\n"})
        destinations.append(area.complete(item, paths.failed, placement.relpath))
    names = [d.name for d in destinations]
    assert names == ["S01_MR1", "S01_MR1__2", "S01_MR1__3"]
    for n, dest in enumerate(destinations):
        assert (dest / "series" / "IM1.dcm").read_bytes() == b"data-1"
        assert (dest.parent / f"{dest.name}.report.txt").read_text() == f"report {n}\n"
    assert list(paths.work.iterdir()) == [] and area.held() == set()


def test_a_leftover_report_alone_also_blocks_the_name(
    paths: PathsConfig, area: store.WorkArea
) -> None:
    (paths.done / "P1" / "S01").mkdir(parents=True)
    (paths.done / "P1" / "S01" / "S01_MR1.report.txt").write_text("older delivery\n")
    drop_session(paths)
    item = area.claim(REL, now=0.0)
    assert item is not None
    assert filing.place(paths.done, item.id, item.relpath).relpath[-1] == "S01_MR1__2"


def test_empty_parents_are_removed_but_never_incoming_or_a_non_empty_one(
    paths: PathsConfig,
) -> None:
    (paths.incoming / "P1" / "S01").mkdir(parents=True)
    (paths.incoming / "P1" / "S02").mkdir()
    (paths.incoming / "P1" / "S02" / "notes.txt").write_text("keep me")
    (paths.incoming / "P2").mkdir()
    removed = filing.remove_empty_parents(paths.incoming, [("P1", "S01"), ("P2",)])
    assert sorted(removed) == [("P1", "S01"), ("P2",)]
    assert (paths.incoming / "P1" / "S02" / "notes.txt").exists() and paths.incoming.is_dir()
    shutil.rmtree(paths.incoming / "P1" / "S02")
    assert filing.remove_empty_parents(paths.incoming, [("P1",)]) == [("P1",)]
    assert paths.incoming.is_dir() and list(paths.incoming.iterdir()) == []


def test_write_atomic_replaces_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "r.txt"
    with Dir.open(tmp_path) as folder:
        folder.write_atomic("r.txt", b"one")
        folder.write_atomic("r.txt", b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["r.txt"]
    assert os.stat(target).st_size == 3


def test_prepare_refuses_a_read_only_drop_tree(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    p = PathsConfig(tree / "incoming", tree / "done", tree / "failed", tree / ".work", tmp_path)
    store.prepare(p)
    mounted = subprocess.run(
        ["mount", "--bind", str(tree), str(tree)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount here (needs root): {mounted.stderr.decode().strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(tree)], check=True)
        with pytest.raises(OSError, match="ReadWritePaths="):
            store.prepare(p)
    finally:
        subprocess.run(["umount", str(tree)], check=True)


def test_prepare_refuses_folders_split_by_a_bind_mount(tmp_path: Path) -> None:
    """Same device, different mounts: rename fails with EXDEV, so it is caught at start."""
    p = PathsConfig(
        tmp_path / "incoming", tmp_path / "done", tmp_path / "failed", tmp_path / ".work", tmp_path
    )
    store.prepare(p)
    mounted = subprocess.run(
        ["mount", "--bind", str(p.failed), str(p.failed)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount here (needs root): {mounted.stderr.decode().strip()}")
    try:
        with pytest.raises(OSError, match="under one mount"):
            store.prepare(p)
    finally:
        subprocess.run(["umount", str(p.failed)], check=True)
    assert [c.name for c in p.work.iterdir()] == []  # the probe is gone
