"""Claims when several daemons share one drop tree, each with its own state directory (each on
its own host): only the daemon that made a claim adopts it again, alive or killed; filing is
done under one lock; the owner id lives in the state directory."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from test_sharestatus import Sink
from test_statusview import job, report
from xnat_drop.adapters.fs import claimrecord
from xnat_drop.adapters.fs import claims as store
from xnat_drop.core.config import PathsConfig

from conftest import OWNER

REL = ("P1", "S01", "S01_MR1")
OTHER = claimrecord.Owner("b" * 32, "lab-b")  # a daemon on another host, with its own state


def drop_session(paths: PathsConfig, rel: tuple[str, ...] = REL) -> Path:
    folder = paths.incoming.joinpath(*rel)
    (folder / "series").mkdir(parents=True)
    (folder / "series" / "IM1.dcm").write_bytes(b"data-1")
    return folder


def test_the_claim_record_names_its_owner(paths: PathsConfig, area: store.WorkArea) -> None:
    drop_session(paths)
    item = area.claim(REL, now=0.0)
    assert item is not None
    record = json.loads((item.dir / store.CLAIM_FILE).read_text())
    assert (record["owner"], record["host"]) == (OWNER.id, OWNER.host)


def test_another_hosts_claim_is_never_adopted_alive_or_killed(
    paths: PathsConfig, caplog: pytest.LogCaptureFixture
) -> None:
    drop_session(paths)
    mine = store.WorkArea(paths, OWNER)
    item = mine.claim(REL, now=0.0)
    assert item is not None
    other = store.WorkArea(paths, OTHER, look_again=0)
    try:
        with caplog.at_level(logging.INFO, logger=store.log.name):
            assert other.recover() == []  # alive: its lock holds
            assert "is being handled by the xnat-drop daemon on lab-a" in caplog.text
            mine.close()  # killed: the kernel drops the lock
            assert other.recover() == []  # still not adopted: the claim waits for its owner
            assert other.recover() == []
        warned = [r for r in caplog.records if "which is not running" in r.getMessage()]
        assert len(warned) == 1 and warned[0].levelno == logging.WARNING  # said once
        assert item.folder.is_dir() and (item.dir / claimrecord.LOCK_FILE).is_file()
        restarted = store.WorkArea(paths, OWNER)  # the owner starts again: it resumes
        try:
            assert [c.id for c in restarted.recover()] == [item.id]
            assert other.recover() == []  # and holds it again
        finally:
            restarted.close()
    finally:
        other.close()
        mine.close()


def test_a_claim_from_before_owners_is_adopted_by_whoever_gets_its_lock_and_kept(
    paths: PathsConfig, area: store.WorkArea
) -> None:
    old = paths.work / "20260101T000000-0badc0de"
    old.mkdir(mode=0o700)
    (old / store.CLAIM_FILE).write_text(json.dumps({"relpath": list(REL), "claimed_at": 1}))
    (old / REL[-1]).mkdir()
    assert [c.id for c in area.recover()] == [old.name]
    record = json.loads((old / store.CLAIM_FILE).read_text())  # ours from now on
    assert record == {"relpath": list(REL), "claimed_at": 1, "owner": OWNER.id, "host": "lab-a"}
    area.close()
    other = store.WorkArea(paths, OTHER)
    try:
        assert other.recover() == []  # another host never takes it over
    finally:
        other.close()


def test_another_hosts_claim_is_looked_at_again_only_now_and_then(
    paths: PathsConfig, caplog: pytest.LogCaptureFixture
) -> None:
    drop_session(paths)
    mine = store.WorkArea(paths, OWNER)
    item = mine.claim(REL, now=0.0)
    assert item is not None
    other = store.WorkArea(paths, OTHER, look_again=3600)
    try:
        assert other.recover() == []
        mine.close()
        with caplog.at_level(logging.WARNING, logger=store.log.name):
            assert other.recover() == []
        assert "which is not running" not in caplog.text  # not tried again yet
    finally:
        other.close()
        mine.close()


@pytest.mark.parametrize(
    "record",
    [
        {"relpath": list(REL), "claimed_at": 1, "owner": 7},
        {"relpath": list(REL), "claimed_at": 1, "owner": "x" * 65},
        {"relpath": list(REL), "claimed_at": 1, "host": ["lab-b"]},
    ],
)
def test_a_strange_owner_is_a_damaged_record(
    paths: PathsConfig, area: store.WorkArea, record: dict[str, object]
) -> None:
    planted = paths.work / "20260101T000000-0badf00d"
    planted.mkdir(mode=0o700)
    (planted / store.CLAIM_FILE).write_text(json.dumps(record))
    (planted / REL[-1]).mkdir()
    assert area.recover() == []
    assert (planted / REL[-1]).is_dir()  # left alone


def test_the_owner_id_is_made_once_and_kept(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    first = claimrecord.owner(state)
    assert len(first.id) == 32 and first.host
    assert claimrecord.owner(state) == first
    assert (state / claimrecord.OWNER_FILE).stat().st_mode & 0o777 == 0o600
    (state / claimrecord.OWNER_FILE).write_text("not an id\n")
    with pytest.raises(ValueError, match="is damaged"):
        claimrecord.owner(state)


_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_filing_waits_for_another_daemons_filing(paths: PathsConfig, area: store.WorkArea) -> None:
    with area.filing():
        pass  # makes the lock file
    lock = paths.work / store.FILING_LOCK
    assert lock.is_file() and area.recover() == []  # a dot-name: never taken for a claim
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(lock), "0.6"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        started = time.monotonic()
        with area.filing(wait=10):
            waited = time.monotonic() - started
        assert waited > 0.3  # it waited for the other process's filing to end
    finally:
        holder.communicate()


def test_filing_gives_up_after_its_wait(paths: PathsConfig, area: store.WorkArea) -> None:
    with area.filing():
        pass
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(paths.work / store.FILING_LOCK), "30"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(OSError, match="another daemon kept") as raised, area.filing(wait=0.2):
            pass
        assert raised.value.errno is not None
    finally:
        holder.kill()
        holder.communicate()


def test_the_filing_lock_serialises_two_threads_as_two_hosts(
    paths: PathsConfig, area: store.WorkArea
) -> None:
    other = store.WorkArea(paths, OTHER)  # its own open file: flock excludes it too
    inside: list[str] = []
    overlaps: list[bool] = []

    def file_as(work: store.WorkArea, name: str) -> None:
        for _ in range(20):
            with work.filing():
                overlaps.append(bool(inside))
                inside.append(name)
                time.sleep(0.001)
                inside.remove(name)

    try:
        threads = [
            threading.Thread(target=file_as, args=(w, n)) for w, n in ((area, "a"), (other, "b"))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        other.close()
    assert len(overlaps) == 40 and not any(overlaps)
    assert os.listdir(paths.work) == [store.FILING_LOCK]


def test_a_finished_claim_leaves_no_folder_on_a_network_share(tmp_path: Path) -> None:
    """NFS and FUSE keep a file removed while open under a hidden name (`.nfsXXXX`,
    `.fuse_hidden...`) until it is closed: the lock must be let go before its file goes, or
    every claim folder stays behind, empty, for good."""
    if shutil.which("bindfs") is None:
        pytest.skip("bindfs is not installed: cannot imitate a network share here")
    backing, mount = tmp_path / "backing", tmp_path / "share"
    backing.mkdir()
    mount.mkdir()
    mounted = subprocess.run(
        ["bindfs", "--no-allow-other", str(backing), str(mount)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"bindfs cannot mount here: {mounted.stderr.decode().strip()}")
    try:
        paths = PathsConfig(
            mount / "incoming", mount / "done", mount / "failed", mount / ".work", tmp_path
        )
        store.prepare(paths)
        area = store.WorkArea(paths, OWNER)
        try:
            drop_session(paths)
            item = area.claim(REL, now=0.0)
            assert item is not None
            with area.filing():
                area.complete(item, paths.done, REL)
        finally:
            area.close()
        assert os.listdir(backing / ".work") == [store.FILING_LOCK]
        assert paths.done.joinpath(*REL, "series", "IM1.dcm").is_file()
    finally:
        subprocess.run(["fusermount", "-u", str(mount)], capture_output=True, check=False)


# -- the status files: one host writes them ------------------------------------------------------


def test_a_second_writer_of_the_status_files_is_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    here, there = Sink(tmp_path / "drop"), Sink(tmp_path / "drop")  # two daemons, one share
    with caplog.at_level(logging.WARNING):
        here.files(report(work=[job("next")]), None)
        for _ in range(3):
            here.clock.now += 61
            here.files(report(work=[job("next")]), None)  # only its own writes: nothing said
        assert "replaced by someone else" not in caplog.text
        for _ in range(3):
            there.clock.now += 61
            there.files(report(), None)
            here.clock.now += 61
            here.files(report(work=[job("next")]), None)
    said = [r for r in caplog.records if "replaced by someone else" in r.getMessage()]
    assert len(said) == 2  # each daemon finds the other's file, once
    assert 'status.share = "off"' in said[0].getMessage()
