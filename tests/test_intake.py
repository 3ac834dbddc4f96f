"""Intake on a shared drive, as real processes: network-share stability, two daemons, re-drops,
`retry`, tidying, and the `kill -9` fault-injection suite (exactly once, nothing lost)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from xnat_drop.service.failpoints import ENV as FAILPOINT_ENV
from xnat_drop.service.failpoints import NAMES
from xnat_standin import Emulator
from xnat_standin.demo.samples import SeriesSpec, write_nifti, write_session

import conftest
from conftest import (
    PROJECT,
    Drop,
    daemon_env,
    digest,
    run_daemon,
    start_daemon,
    stop_daemon,
    wait_until,
)

REL = (PROJECT, "S01", "S01_MR1")
SCANS = [SeriesSpec(1, "localizer", images=2), SeriesSpec(2, "T1_MPRAGE", images=4)]


def drop_session(
    drop: Drop, relpath: tuple[str, ...] = REL, scans: list[SeriesSpec] = SCANS
) -> Path:
    return conftest.drop_session(drop, relpath, scans)


def stop(proc: subprocess.Popen[str]) -> str:
    return stop_daemon(proc)[1]


def cli(drop: Drop, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "xnat_drop", args[0], "--config", str(drop.config), *args[1:]]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


# -- kill -9 at every stage --------------------------------------------------------------------


# The resources step's own points need a session with resources: test_resources_delivery.py;
# the inbox's and C-STORE's, their transports: test_inbox_delivery.py, test_cstore_delivery.py.
FAILPOINTS = [n for n in NAMES if not any(w in n for w in ("resource", "inbox", "cstore"))]


@pytest.mark.parametrize("failpoint", FAILPOINTS)
def test_kill_9_at_any_stage_then_restart_delivers_exactly_once(
    drop: Drop, emulator: Emulator, failpoint: str
) -> None:
    drop.write_config(emulator.url, xnat='destination = "archive"')
    folder = drop_session(drop)
    dropped = digest(folder)
    killed = run_daemon(drop, env=daemon_env(**{FAILPOINT_ENV: failpoint}))
    assert killed.returncode == -signal.SIGKILL, f"{failpoint} was never reached:\n{killed.stderr}"

    again = run_daemon(drop)
    assert again.returncode == 0, again.stderr
    done = drop.done.joinpath(*REL)
    assert digest(done) == dropped  # every file, unchanged, exactly once
    assert sorted(p.name for p in done.parent.iterdir()) == [
        "S01_MR1",
        "S01_MR1.report.json",
        "S01_MR1.report.txt",
    ]
    assert not any(drop.failed.iterdir()) and list(drop.work.glob("[!.]*")) == []
    [archived] = emulator.archive()  # exactly one complete session in XNAT
    assert {scan: len(files) for scan, files in archived.scans.items()} == {"1": 2, "2": 4}
    assert emulator.prearchive() == []  # no partial leftovers
    report = json.loads(done.with_name("S01_MR1.report.json").read_text())
    assert report["outcome"] == "done" and report["xnat"]["uris"] == [archived.uri]


# -- two daemons, one tree ---------------------------------------------------------------------


def test_two_daemons_on_one_tree_never_take_the_same_session(
    drop: Drop, emulator: Emulator, tmp_path: Path
) -> None:
    second = Drop(drop.root, tmp_path / "second.toml", drop.secret, tmp_path / "state2")
    second.write_config(emulator.url)
    procs = [start_daemon(drop), start_daemon(second)]
    relpaths = [(PROJECT, f"S{n:02d}", f"S{n:02d}_MR1") for n in range(1, 9)]
    try:
        for relpath in relpaths:
            drop_session(drop, relpath, SCANS[:1])
        wait_until(
            lambda: all(drop.done.joinpath(*r).is_dir() for r in relpaths), "all sessions in done/"
        )
    finally:
        logs = [stop(p) for p in procs]
    assert sorted((s.subject, s.file_count) for s in emulator.prearchive()) == [
        (r[1], 2) for r in relpaths
    ]
    imports = [r for r in emulator.requests() if r.path == "/data/services/import"]
    assert len(imports) == len(relpaths)  # each session uploaded once, by one daemon
    claimed = [line for log in logs for line in log.splitlines() if "claimed as" in line]
    assert len(claimed) == len(relpaths)
    assert not any(p.name.endswith("__2") for p in drop.done.rglob("*"))


def test_a_killed_daemons_claim_waits_for_it_never_for_the_other(
    drop: Drop, emulator: Emulator, tmp_path: Path
) -> None:
    drop_session(drop)
    killed = run_daemon(drop, env=daemon_env(**{FAILPOINT_ENV: "after-judge"}))
    assert killed.returncode == -signal.SIGKILL
    second = Drop(drop.root, tmp_path / "second.toml", drop.secret, tmp_path / "state2")
    second.write_config(emulator.url)
    result = run_daemon(second)  # another daemon, with its own state (another host's)
    assert result.returncode == 0, result.stderr
    assert "recovered from the work folder" not in result.stderr
    assert "which is not running" in result.stderr  # its lock is free; still not adopted
    assert [p.name for p in drop.work.glob("*/S01_MR1")] == ["S01_MR1"]
    assert emulator.prearchive() == []
    again = run_daemon(drop)  # the killed daemon, started again: its ledger resumes it
    assert again.returncode == 0, again.stderr
    assert "recovered from the work folder" in again.stderr
    assert drop.done.joinpath(*REL).is_dir() and len(emulator.prearchive()) == 1


# -- network shares ----------------------------------------------------------------------------


@pytest.fixture
def share(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A bindfs mount: writes to the backing folder reach the mount without inotify events,
    like files written by another machine to an NFS or SMB share."""
    backing, mount = tmp_path / "backing", tmp_path / "share"
    backing.mkdir()
    mount.mkdir()
    if shutil.which("bindfs") is None:
        pytest.skip("bindfs is not installed: cannot imitate a network share here")
    mounted = subprocess.run(
        ["bindfs", "--no-allow-other", str(backing), str(mount)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"bindfs cannot mount here: {mounted.stderr.decode().strip()}")
    try:
        yield backing, mount
    finally:
        subprocess.run(["fusermount", "-u", str(mount)], capture_output=True, check=False)


@pytest.mark.parametrize("observer", ["inotify", "polling"])
def test_only_polling_sees_files_written_behind_the_mount(
    share: tuple[Path, Path], drop: Drop, emulator: Emulator, observer: str
) -> None:
    backing, mount = share
    on_share = Drop(mount, drop.config, drop.secret, drop.state)
    (mount / "incoming").mkdir()
    on_share.write_config(emulator.url, rescan=3600, extra='[log]\nlevel = "info"\n')
    text = on_share.config.read_text().replace(
        "[watch]\n", f'[watch]\nobserver = "{observer}"\npoll_interval_seconds = 0.5\n'
    )
    on_share.config.write_text(text)
    proc = start_daemon(on_share)
    try:
        wait_until((mount / ".work").is_dir, "the daemon to start", proc)
        time.sleep(1)
        staging = backing / "staging"
        write_session(staging, SCANS[:1], patient_id="S01")
        (backing / "incoming" / PROJECT / "S01").mkdir(parents=True)
        os.rename(staging, backing / "incoming" / PROJECT / "S01" / "S01_MR1")  # "remote" write
        if observer == "polling":
            wait_until(
                (mount / "done" / PROJECT / "S01" / "S01_MR1").is_dir,
                "polling to find it",
                proc,
            )
        else:
            time.sleep(4)  # many settle periods: inotify hears nothing, the hourly rescan is far
            assert (mount / "incoming" / PROJECT / "S01" / "S01_MR1").is_dir()
            assert emulator.prearchive() == []
    finally:
        stop(proc)


# -- re-drops, retry, tidying ----------------------------------------------------------------------


def test_a_redrop_is_recognised_and_retry_force_sends_it_again(
    drop: Drop, emulator: Emulator
) -> None:
    drop_session(drop)
    assert run_daemon(drop).returncode == 0
    first_uri = f"/data{emulator.prearchive()[0].uri}"
    shutil.copytree(drop.done.joinpath(*REL), drop.incoming.joinpath(*REL))  # dropped once more
    assert run_daemon(drop).returncode == 0
    redropped = drop.failed.joinpath(*REL)
    report = redropped.with_name("S01_MR1.report.txt").read_text()
    assert "[already-delivered]" in report and first_uri in report
    assert len([r for r in emulator.requests() if r.path == "/data/services/import"]) == 1

    # The operator insists: XNAT's own policy still decides (here: append to what is there).
    drop.write_config(emulator.url, xnat='on_existing = "append"')
    result = cli(drop, "retry", "--force", str(redropped))
    assert result.returncode == 0, result.stderr
    assert drop.incoming.joinpath(*REL).is_dir() and not redropped.exists()
    history = drop.failed / ".history" / PROJECT / "S01" / "S01_MR1"
    assert sorted(p.suffix for p in history.iterdir()) == [".json", ".txt"]
    assert run_daemon(drop).returncode == 0
    assert len([r for r in emulator.requests() if r.path == "/data/services/import"]) == 2
    assert drop.done.joinpath(PROJECT, "S01", "S01_MR1__2").is_dir()


def test_retry_sends_a_fixed_session_back_and_keeps_its_reports(
    drop: Drop, emulator: Emulator
) -> None:
    folder = drop_session(drop)
    write_nifti(folder / "T1w.nii.gz")
    other = drop_session(drop, (PROJECT, "S02", "S02_MR1"))
    (other / "notes.pdf").write_bytes(b"%PDF-1.7\n")
    assert run_daemon(drop).returncode == 0
    failed = drop.failed.joinpath(*REL)
    (failed / "T1w.nii.gz").unlink()  # the lab member fixes it in failed/
    assert cli(drop, "retry").returncode == 2  # a path or --all is needed
    result = cli(drop, "retry", str(failed))
    assert result.returncode == 0, result.stderr
    assert "reports kept in" in result.stdout
    assert run_daemon(drop).returncode == 0
    assert drop.done.joinpath(*REL).is_dir()
    assert drop.failed.joinpath(PROJECT, "S02", "S02_MR1").is_dir()  # not asked for: stays
    assert cli(drop, "retry", "--all").returncode == 0
    assert drop.incoming.joinpath(PROJECT, "S02", "S02_MR1").is_dir()


def test_retry_refuses_paths_outside_failed(drop: Drop) -> None:
    folder = drop_session(drop)
    result = cli(drop, "retry", str(folder))
    assert result.returncode == 2 and "is not a session folder in" in result.stderr
    assert folder.is_dir()


def test_empty_parents_are_removed_after_the_claim_but_never_incoming(
    drop: Drop, emulator: Emulator
) -> None:
    drop_session(drop)
    proc = start_daemon(drop)
    try:
        wait_until(drop.done.joinpath(*REL).is_dir, "the session in done/", proc)
        wait_until(
            lambda: not (drop.incoming / PROJECT).exists(),
            "the empty P1/S01 to go",
            proc,
            timeout=10,
        )
    finally:
        stop(proc)
    assert drop.incoming.is_dir() and list(drop.incoming.iterdir()) == []


def test_status_explains_what_waits_and_why(drop: Drop, emulator: Emulator) -> None:
    drop.write_config(emulator.url, settle=0.5)
    copying = drop_session(drop, (PROJECT, "S03", "S03_MR1"))
    (copying / "01_localizer" / "IM0003.dcm.part").write_bytes(b"half")
    (drop.incoming / PROJECT / "S04" / "S04_MR1").mkdir(parents=True)
    proc = start_daemon(drop)
    try:
        time.sleep(2)
        result = cli(drop, "status", "--json")
    finally:
        stop(proc)
    data = json.loads(result.stdout)
    settling = {s["session"]: s for s in data["snapshot"]["settling"]}
    assert "copy in progress" in settling["P1/S03/S03_MR1"]["state"]
    assert settling["P1/S04/S04_MR1"]["state"] == "empty folder"
    assert settling["P1/S03/S03_MR1"]["files"] == 7
    assert data["snapshot"]["xnat"]["state"] == "ok"


def test_marker_mode_waits_for_the_ready_file_which_is_never_uploaded(
    drop: Drop, emulator: Emulator
) -> None:
    drop.config.write_text(
        drop.config.read_text().replace("[watch]\n", '[watch]\nready_marker = "READY"\n')
    )
    folder = drop_session(drop)
    proc = start_daemon(drop)
    try:
        time.sleep(3)  # six settle periods without the marker: not taken
        assert folder.is_dir() and emulator.prearchive() == []
        (folder / "READY").touch()
        wait_until(drop.done.joinpath(*REL).is_dir, "the session in done/", proc)
    finally:
        stop(proc)
    [session] = emulator.prearchive()
    assert session.file_count == 6  # the DICOM files only
    report = json.loads(drop.done.joinpath(PROJECT, "S01", "S01_MR1.report.json").read_text())
    assert report["ignored"] == ["READY"] and report["violations"] == []


# -- bad inputs and bad storage ----------------------------------------------------------------


def mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount here (needs root): {result.stderr.strip()}")


def immutable(folder: Path, on: bool) -> None:
    """chattr +i: nothing can be created in the folder, not even by root (as tests run here)."""
    result = subprocess.run(
        ["chattr", "+i" if on else "-i", str(folder)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.skip(f"cannot make a folder read-only here: {result.stderr.strip()}")


def test_a_read_only_failed_folder_keeps_the_session_safe_until_it_is_writable(
    drop: Drop, emulator: Emulator
) -> None:
    proc = start_daemon(drop)
    try:
        wait_until((drop.state / "status.json").exists, "the daemon to start", proc)
        immutable(drop.failed, True)  # failed/ turns read-only while the daemon runs
        folder = drop_session(drop)
        write_nifti(folder / "T1w.nii.gz")
        dropped = digest(folder)
        wait_until(lambda: not folder.exists(), "the claim", proc)
        time.sleep(2)  # it tries, fails, waits: the session must stay whole in .work/
        [waiting] = [p for claim in drop.work.glob("[!.]*") for p in claim.iterdir() if p.is_dir()]
        assert digest(waiting) == dropped
        immutable(drop.failed, False)
        wait_until(drop.failed.joinpath(*REL).is_dir, "the session in failed/", proc)
    finally:
        subprocess.run(["chattr", "-i", str(drop.failed)], capture_output=True, check=False)
        stderr = stop(proc)
    assert "cannot put it into failed/" in stderr and "Operation not permitted" in stderr
    assert digest(drop.failed.joinpath(*REL)) == dropped


def test_a_read_only_tree_at_start_is_a_configuration_error(drop: Drop, emulator: Emulator) -> None:
    drop.failed.mkdir()
    immutable(drop.failed, True)
    try:
        refused = run_daemon(drop)
    finally:
        immutable(drop.failed, False)
    assert refused.returncode == 78
    assert "failed" in refused.stderr and "ReadWritePaths=" in refused.stderr


def test_a_full_disk_leaves_the_session_in_incoming_until_there_is_room(
    drop: Drop, emulator: Emulator, tmp_path: Path
) -> None:
    small = tmp_path / "small"
    small.mkdir()
    mount("-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(small))
    try:
        on_tmpfs = Drop(small, drop.config, drop.secret, drop.state)
        (small / "incoming").mkdir()
        on_tmpfs.write_config(emulator.url)
        staging = small / "staging"
        write_session(staging, SCANS[:1])
        folder = on_tmpfs.incoming.joinpath(*REL)
        folder.parent.mkdir(parents=True)
        os.rename(staging, folder)
        dropped = digest(folder)
        with (small / "filler").open("wb") as filler:  # the disk fills up
            try:
                while True:
                    filler.write(b"\0" * 65536)
                    filler.flush()
            except OSError:
                pass
        stuck = run_daemon(on_tmpfs, timeout=10)
        assert stuck.returncode == 75, stuck.stderr
        assert (
            "cannot take it into the work folder" in stuck.stderr
            and "No space left" in stuck.stderr
        )
        assert digest(folder) == dropped and not any((small / ".work").iterdir())
        (small / "filler").unlink()
        fixed = run_daemon(on_tmpfs)
        assert fixed.returncode == 0, fixed.stderr
        assert digest(small / "done" / "/".join(REL)) == dropped
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_deep_nesting_and_unicode_names_are_delivered_whole(drop: Drop, emulator: Emulator) -> None:
    folder = drop_session(drop)
    deep = folder.joinpath(*[f"niveau_{n}_ü" for n in range(40)])
    deep.mkdir(parents=True)
    os.rename(folder / "01_localizer" / "IM0001.dcm", deep / "Bild_ß_图像.dcm")
    dropped = digest(folder)
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    assert digest(drop.done.joinpath(*REL)) == dropped
    assert emulator.prearchive()[0].file_count == 6
