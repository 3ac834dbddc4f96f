"""No path is followed through a link, anywhere: claims, the work folder, done/ and failed/,
and `xnat-drop retry` run as root. On the real daemon, running as its own user.

Each test failed on the code before issue 11 (93eee20): a planted claim crashed it or made it
move its own private folder into the drop tree; a symlinked project folder made it take a
folder from outside incoming/; a link in failed/ made a rejected session loop for ever; and
`retry` wrote through a dangling link and moved reports and sessions out of the tree.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from xnat_standin import Emulator
from xnat_standin.demo.samples import write_nifti

from conftest import PROJECT
from hostile_lab import (
    LAB_GID,
    SERVICE_GID,
    SERVICE_UID,
    Daemon,
    LabTree,
    cli,
    needs_root,
    no_traceback,
    run_once,
)

pytestmark = needs_root

CLEAN = (PROJECT, "S01", "S01_MR1")


def _plant_claim(lab: LabTree, name: str, relpath: list[str], owner: int) -> Path:
    claim = lab.work / name
    claim.mkdir(parents=True)
    (claim / "claim.json").write_text(json.dumps({"relpath": relpath, "claimed_at": 1.0}))
    (claim / "lock").write_text("")
    (claim / "lock").chmod(0o600)
    for path in (claim, claim / "claim.json", claim / "lock"):
        os.chown(path, owner, owner)
    return claim


def test_a_group_writable_work_folder_or_root_is_refused_at_start(lab: LabTree) -> None:
    lab.work.mkdir()
    os.chown(lab.work, SERVICE_UID, LAB_GID)
    lab.work.chmod(0o2770)  # what the old README's set-up gave
    code, log = run_once(lab)
    assert code == 78, log
    assert ".work" in log and "writable by its group" in log and "chmod g-w,o-w" in log
    lab.work.chmod(0o700)
    lab.root.chmod(0o2770)
    code, log = run_once(lab)
    assert code == 78 and "the drop tree's root" in log, log
    check = cli(lab, "check-config")
    assert check.returncode == 78 and "chmod g-w,o-w" in check.stderr
    no_traceback(log)


def test_planted_claims_are_never_believed(lab: LabTree, emulator: Emulator) -> None:
    # The daemon's own private folder, next to the tree: it must never be moved into it.
    private = lab.base / "private"
    private.mkdir(mode=0o700)
    (private / "ledger-copy").write_text("secret")
    os.chown(private, SERVICE_UID, SERVICE_GID)
    lab.work.mkdir(mode=0o700)
    os.chown(lab.work, SERVICE_UID, SERVICE_GID)
    # A claim record walking out of the tree, made to look like the service's own.
    _plant_claim(lab, "20260101T000000-aaaaaaaa", ["..", "..", "private"], SERVICE_UID)
    _plant_claim(lab, "20260101T000000-bbbbbbbb", ["/", "etc"], SERVICE_UID)
    # One that is not the service's at all, with a lock file it cannot write.
    foreign = _plant_claim(lab, "20260101T000000-cccccccc", ["P9", "S9", "E9"], 0)
    (foreign / "lock").chmod(0o600)
    lab.lab_drop(CLEAN)
    code, log = run_once(lab)
    assert code == 0, log
    assert (private / "ledger-copy").read_text() == "secret"
    assert lab.done.joinpath(*CLEAN).is_dir()
    assert not list(lab.done.rglob("*private*")) and not list(lab.failed.rglob("*private*"))
    assert not (lab.base / "private.report.txt").exists()
    assert "ignoring 20260101T000000-cccccccc" in log
    no_traceback(log)


def test_a_project_folder_swapped_for_a_link_is_not_followed(
    lab: LabTree, emulator: Emulator
) -> None:
    outside = lab.base / "elsewhere" / PROJECT / "S01" / "S01_MR1"
    lab.write_config(settle=1.5, watch='observer = "polling"\npoll_interval_seconds = 30')
    lab.lab_drop(CLEAN)  # before the start: the first look finds it, the next is 30 s away
    with Daemon(lab) as daemon:
        daemon.wait_log("S01_MR1: new")
        # Within the settle time, after the one look that found it: P1 becomes a link to a
        # folder outside incoming/ holding a session of the same name.
        os.rename(lab.incoming / PROJECT, lab.base / "moved-away")
        outside.parent.mkdir(parents=True)
        os.rename(lab.base / "moved-away" / "S01" / "S01_MR1", outside)
        os.symlink(outside.parent.parent, lab.incoming / PROJECT)
        daemon.wait_log("symbolic link", timeout=20)
        assert outside.is_dir() and not any(lab.done.iterdir())
        assert emulator.prearchive() == []
        code = daemon.stop()
    assert code == 0
    no_traceback(daemon.log)


def test_links_planted_in_failed_redirect_nothing(lab: LabTree, emulator: Emulator) -> None:
    relpath = ("P2", "S01", "S01_MR1")
    lab.failed.mkdir(mode=0o2770)
    os.chown(lab.failed, SERVICE_UID, LAB_GID)
    lab.as_lab("mkdir", str(lab.incoming / "P2"))
    os.symlink(lab.incoming / "P2", lab.failed / "P2")  # failed/P2 -> incoming/P2: a loop
    outside = lab.base / "outside"
    outside.mkdir()
    (lab.failed / "P3").mkdir(mode=0o2770)  # as the daemon made it for an earlier session
    os.chown(lab.failed / "P3", SERVICE_UID, LAB_GID)
    os.symlink(outside, lab.failed / "P3" / "S01")  # reports would land outside the tree
    write_nifti(lab.lab_drop(relpath) / "T1w.nii")
    write_nifti(lab.lab_drop(("P3", "S01", "S01_MR1")) / "T1w.nii")
    code, log = run_once(lab)
    assert code == 0, log
    filed = lab.failed / "P2__2" / "S01" / "S01_MR1"
    assert filed.is_dir() and not lab.incoming.joinpath(*relpath).exists()
    text = filed.with_name("S01_MR1.report.txt").read_text()
    assert "[nifti]" in text and "is not a folder" in text and "P2__2" in text
    assert (lab.failed / "P3" / "S01__2" / "S01_MR1").is_dir()
    assert list(outside.iterdir()) == []
    assert log.count("not uploaded") == 2  # one decision each: no loop
    no_traceback(log)


def test_retry_as_root_follows_no_link(lab: LabTree, emulator: Emulator) -> None:
    folder = lab.lab_drop(CLEAN)
    write_nifti(folder / "T1w.nii")
    assert run_once(lab)[0] == 0
    failed = lab.failed.joinpath(*CLEAN)
    assert failed.is_dir()
    # A dangling link where --force puts its marker: root must not create its target.
    target = lab.base / "nologin"
    (lab.incoming / PROJECT / "S01").mkdir(parents=True, exist_ok=True)
    os.symlink(target, lab.incoming / PROJECT / "S01" / ".S01_MR1.xnat-drop-force")
    result = cli(lab, "retry", "--force", str(failed))
    assert result.returncode == 1 and "force marker" in result.stderr, result.stderr
    assert not target.exists() and failed.is_dir()
    os.unlink(lab.incoming / PROJECT / "S01" / ".S01_MR1.xnat-drop-force")
    # failed/.history as a link: the reports must not move out of the tree.
    outside = lab.base / "outside"
    outside.mkdir()
    shutil.rmtree(lab.failed / ".history", ignore_errors=True)  # (empty folders, if any)
    os.symlink(outside, lab.failed / ".history")
    result = cli(lab, "retry", str(failed))
    assert result.returncode == 1 and "symbolic link" in result.stderr
    assert list(outside.iterdir()) == [] and failed.is_dir()
    os.unlink(lab.failed / ".history")
    # incoming/P1 as a link out of the tree: the session must not follow it.
    os.rename(lab.incoming / PROJECT, lab.base / "old-P1")
    os.symlink(outside, lab.incoming / PROJECT)
    result = cli(lab, "retry", str(failed))
    assert result.returncode == 1 and "symbolic link" in result.stderr
    assert failed.is_dir() and list(outside.iterdir()) == []
    os.unlink(lab.incoming / PROJECT)
    # All clear: it goes back, into folders the lab can still write.
    result = cli(lab, "retry", str(failed))
    assert result.returncode == 0, result.stderr
    project = lab.incoming / PROJECT
    assert project.stat().st_gid == LAB_GID and project.stat().st_mode & 0o2070 == 0o2070
    assert lab.incoming.joinpath(*CLEAN).is_dir()
