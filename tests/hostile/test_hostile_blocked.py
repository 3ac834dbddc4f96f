"""A folder the service may not take is *blocked*: it costs nothing (no file descriptor, no claim
folder left in .work/), stops nothing else, is said once in the log with its fix, shown in
`status` with its fix, explained in a note beside it, tried again only now and then, and taken
at once when a lab member fixes it. Files lying where folders belong are reported the same way.
On the real daemon, running as its own user, as lab members drop things with their own tools.

Before issue 13 a 0755 folder was tried at every settle period, logged as "not writable by
xnat-drop" with no command to fix it and no word to the lab member; a zip or a loose DICOM file
above the session level was ignored without a word for ever.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from xnat_standin import Emulator
from xnat_standin.demo.samples import write_session

from conftest import PROJECT
from hostile_lab import (
    LAB_GID,
    LAB_UID,
    SCANS,
    SERVICE_UID,
    Daemon,
    LabTree,
    cli,
    needs_root,
    no_traceback,
)

pytestmark = needs_root

NOTE = ".NOT-TAKEN.txt"
FOREIGN_GID = 64300  # a group the service is not in


def _fds(daemon: Daemon) -> int:
    """The daemon's open descriptors when idle: the fewest seen over a second, since a step
    in progress (a zip being read, a request on its way) holds a few for a moment."""
    seen = []
    for _ in range(10):
        seen.append(len(os.listdir(f"/proc/{daemon.proc.pid}/fd")))
        time.sleep(0.1)
    return min(seen)


def _status(lab: LabTree) -> dict[str, dict[str, object]]:
    result = cli(lab, "status", "--json")
    assert result.returncode == 0, result.stderr
    snapshot = json.loads(result.stdout)["snapshot"]
    return {item["path"]: item for item in snapshot["not_taken"]}


def _note(folder: Path) -> Path:
    return folder.with_name(folder.name + NOTE)


def _errors(daemon: Daemon, name: str) -> list[str]:
    return [line for line in daemon.lines if f"{name}: cannot be taken" in line]


def test_unmovable_folders_leak_nothing_and_stop_nothing(lab: LabTree, emulator: Emulator) -> None:
    """Six 0755 folders copied in with cp -r, tried again and again for 60 settle periods under
    a limit of 64 open files: the descriptors stay flat, .work/ stays empty, each folder is said
    once, and clean sessions dropped meanwhile are delivered."""
    blocked = [lab.lab_drop((PROJECT, f"S{n}", f"S{n}_MR1"), writable=False) for n in range(6)]
    toggled = blocked[0]
    with Daemon(lab, max_files=64) as daemon:
        for folder in blocked:
            daemon.wait_log(f"{folder.name}: cannot be taken", timeout=30)
        # One clean session first, so that what a delivery keeps open for good (XNAT's
        # connection) is counted in `start`, not taken for a leak.
        first = (PROJECT, "C01", "C01_MR_first")
        lab.lab_drop(first, SCANS[:1])
        daemon.until(lambda: lab.done.joinpath(*first).is_dir(), "the first clean session")
        start = _fds(daemon)
        delivered = []
        deadline = time.monotonic() + 30  # 60 settle periods of 0.5 s
        n = 0
        while time.monotonic() < deadline:
            # A change of mode is tried at once: toggling one between two modes that are both
            # refused makes the daemon try it again at every scan, not only every 5 s.
            toggled.chmod(0o754 if n % 2 else 0o755)
            if n % 10 == 0:
                # A subject folder of its own: the daemon removes C01 once it has stayed empty,
                # which may fall between a `mkdir -p` and the `cp -r` into it.
                session = (PROJECT, f"D{n:02d}", f"D{n:02d}_MR1")
                lab.lab_drop(session, SCANS[:1])
                delivered.append(session)
            n += 1
            time.sleep(0.3)
        daemon.until(
            lambda: all(lab.done.joinpath(*s).is_dir() for s in delivered),
            "the clean sessions in done/",
            timeout=60,
        )
        end = _fds(daemon)
        leftovers = list(lab.work.glob("[!.]*"))  # claims (not the filing lock)
        status = _status(lab)
        code = daemon.stop()
    assert code == 0, daemon.log
    assert end <= start + 2, (start, end)  # a leak of one per try would have hit the limit
    assert leftovers == []
    tried_again = [line for line in daemon.lines if "permissions changed; trying it again" in line]
    assert len(tried_again) >= 20, daemon.log  # the toggled folder was tried many times
    for folder in blocked:
        assert folder.is_dir()
        name = "/".join(folder.parts[-3:])
        assert len(_errors(daemon, name)) == 1, daemon.log
        assert "chmod -R g+w" in str(status[name]["fix"])
        assert _note(folder).is_file()
    assert "Too many open files" not in daemon.log
    no_traceback(daemon.log)


def test_a_blocked_folder_is_explained_and_taken_at_once_after_chmod(
    lab: LabTree, emulator: Emulator
) -> None:
    lab.write_config(settle=2.0)  # tried again every 20 s: "at once" must be much sooner
    folder = lab.lab_drop((PROJECT, "S01", "S01_MR1"), writable=False)
    with Daemon(lab) as daemon:
        daemon.wait_log("S01_MR1: cannot be taken", timeout=30)
        daemon.until(lambda: _note(folder).exists(), "the note beside the folder")
        item = _status(lab)["P1/S01/S01_MR1"]
        text = cli(lab, "status")
        note = _note(folder).read_bytes()
        time.sleep(6)  # three settle periods: not one more line about it
        repeated = _errors(daemon, "P1/S01/S01_MR1")
        lab.as_lab("chmod", "-R", "g+w", str(folder))
        fixed = time.monotonic()
        daemon.until(lambda: lab.done.joinpath(PROJECT, "S01", "S01_MR1").is_dir(), "delivered")
        taken_after = time.monotonic() - fixed
        gone = not _note(folder).exists()
        after = _status(lab)
        code = daemon.stop()
    assert code == 0
    path = str(folder)
    assert item["reason"] == "the folder is not group-writable (xnat-drop needs that to move it)"
    assert item["fix"] == f"chmod -R g+w '{path}'"
    assert item["note"] == "P1/S01/S01_MR1.NOT-TAKEN.txt"
    assert "not group-writable" in text.stdout and f"fix: chmod -R g+w '{path}'" in text.stdout
    # The note: plain text for Notepad (CRLF), what is wrong and exactly what to do, ours.
    assert note.startswith(b"xnat-drop did not take incoming/P1/S01/S01_MR1\r\n")
    assert b"\r\n" in note and b"\n" not in note.replace(b"\r\n", b"")
    assert f"What to do: chmod -R g+w '{path}'".encode() in note
    st = _note(folder).stat() if not gone else None
    assert st is None
    assert len(repeated) == 1 and "ERROR" in repeated[0], daemon.log
    assert taken_after < 8, taken_after  # at once (the next scan), not at the next try (20 s)
    assert gone and after == {}
    no_traceback(daemon.log)


def test_another_group_and_an_unreadable_file_are_named_with_their_fix(
    lab: LabTree, emulator: Emulator
) -> None:
    foreign = lab.lab_drop((PROJECT, "S01", "S01_MR1"))
    subprocess.run(["chgrp", "-R", str(FOREIGN_GID), str(foreign)], check=True)
    secret = lab.lab_drop((PROJECT, "S02", "S02_MR1"))
    private = next(secret.rglob("IM*"))
    private.chmod(0o600)  # the lab member's own export kept one file to itself
    searchless = lab.lab_drop((PROJECT, "S03", "S03_MR1"))
    series = next(p for p in searchless.iterdir() if p.is_dir())
    series.chmod(0o2744)  # its files can be listed, not looked at: once they went unseen
    with Daemon(lab) as daemon:
        for name in ("S01_MR1", "S02_MR1", "S03_MR1"):
            daemon.wait_log(f"{name}: cannot be taken", timeout=30)
        status = _status(lab)
        note = _note(secret).read_text()
        private.chmod(0o660)
        daemon.until(lambda: lab.done.joinpath(PROJECT, "S02", "S02_MR1").is_dir(), "S02 taken")
        daemon.until(lambda: not _note(secret).exists(), "its note gone")
        code = daemon.stop()
    assert code == 0
    group = status["P1/S01/S01_MR1"]
    assert f"belongs to the group {FOREIGN_GID}, which xnat-drop is not in" in str(group["reason"])
    assert str(group["fix"]).startswith(f"chgrp -R {LAB_GID} '{foreign}'")
    unreadable = status["P1/S02/S02_MR1"]
    inside = private.relative_to(secret)
    assert f"{inside} in it is not readable by xnat-drop" in str(unreadable["reason"])
    assert unreadable["fix"] == f"chmod -R g+rX '{secret}'"
    assert f"chmod -R g+rX '{secret}'" in note
    listed_only = status["P1/S03/S03_MR1"]
    assert f"{series.name} in it is not readable by xnat-drop" in str(listed_only["reason"])
    assert listed_only["fix"] == f"chmod -R g+rX '{searchless}'"
    assert foreign.is_dir()  # still blocked: nothing was taken half
    no_traceback(daemon.log)


def test_files_where_folders_belong_are_reported_once_with_a_note(
    lab: LabTree, emulator: Emulator
) -> None:
    subject = lab.incoming / PROJECT / "S24"
    lab.as_lab("mkdir", "-p", str(subject))
    export = lab.base / "exports" / "zip"
    write_session(export / "SUBJ24_MR1", SCANS[:1])
    archive = shutil.make_archive(str(lab.base / "exports" / "SUBJ24_MR1"), "zip", export)
    os.chmod(archive, 0o644)
    lab.as_lab("cp", archive, str(lab.incoming / PROJECT / "SUBJ24_MR1.zip"))
    dicom = next((export / "SUBJ24_MR1").rglob("IM*"))
    os.chmod(dicom, 0o644)
    lab.as_lab("cp", str(dicom), str(lab.incoming / PROJECT / "IM0001.dcm"))
    lab.as_lab("cp", str(dicom), str(subject / "IM0002.dcm"))
    for junk in (".DS_Store", "Thumbs.db", "desktop.ini", "._IM0001.dcm"):
        lab.as_lab("touch", str(subject / junk))
    lab.as_lab("touch", str(lab.incoming / "README.txt"))
    # A lab member's own file with a note's name: never ours to overwrite.
    lab.as_lab("sh", "-c", f"echo mine > '{lab.incoming / (PROJECT + '/IM0001.dcm' + NOTE)}'")
    session = (PROJECT, "S01", "S01_MR1")
    with Daemon(lab) as daemon:
        lab.lab_drop(session)
        daemon.until(lambda: lab.done.joinpath(*session).is_dir(), "a session delivered")
        daemon.until(lambda: len(_status(lab)) == 4, "four files reported")
        status = _status(lab)
        zip_note = (lab.incoming / PROJECT / f"SUBJ24_MR1.zip{NOTE}").read_bytes()
        os.unlink(lab.incoming / PROJECT / "SUBJ24_MR1.zip")
        daemon.until(
            lambda: not (lab.incoming / PROJECT / f"SUBJ24_MR1.zip{NOTE}").exists(),
            "the zip's note removed with the zip",
        )
        daemon.until(lambda: len(_status(lab)) == 3, "the zip gone from status")
        code = daemon.stop()
    assert code == 0
    incoming = str(lab.incoming)
    assert status["P1/SUBJ24_MR1.zip"]["reason"] == "a zip file where a subject folder is expected"
    assert status["P1/SUBJ24_MR1.zip"]["fix"] == (
        f"unpack it into '{incoming}/P1/<subject>/SUBJ24_MR1/', then delete the archive"
    )
    assert status["P1/IM0001.dcm"]["reason"] == "a DICOM file where a subject folder is expected"
    assert f"'{incoming}/P1/<subject>/<session>/'" in str(status["P1/IM0001.dcm"]["fix"])
    assert status["P1/S24/IM0002.dcm"]["reason"] == (
        "a DICOM file where a session folder is expected"
    )
    assert status["README.txt"]["reason"] == "a file where a project folder is expected"
    assert status["P1/IM0001.dcm"]["note"] is None  # the name is taken by the lab's own file
    assert (lab.incoming / PROJECT / f"IM0001.dcm{NOTE}").read_text() == "mine\n"
    assert zip_note.startswith(b"xnat-drop did not take incoming/P1/SUBJ24_MR1.zip\r\n")
    for name in ("SUBJ24_MR1.zip", "IM0001.dcm", "IM0002.dcm", "README.txt"):
        said = [line for line in daemon.lines if f"{name}: a " in line]
        assert len(said) == 1, daemon.log  # one line each, not one per scan
    assert not any(
        re.search(r"DS_Store|Thumbs|desktop\.ini|\._IM|NOT-TAKEN", line)
        for line in daemon.lines
        if "is not taken" in line
    )
    no_traceback(daemon.log)


def test_folders_made_by_the_service_and_by_root_are_like_the_level_above(
    lab: LabTree, emulator: Emulator
) -> None:
    """done/<project>/<subject> made by the service, and incoming/ and failed/.history folders
    made by `xnat-drop retry` run as root (with sudo): each has the group and mode of the
    folder it was made in, so lab members can still use it."""
    for top in (lab.done, lab.failed):
        top.mkdir()
        os.chown(top, SERVICE_UID, LAB_GID)
        top.chmod(0o2775)  # a mode of the lab's choosing, not the service's umask
    clean = (PROJECT, "S01", "S01_MR1")
    lab.lab_drop(clean)
    rejected = ("P2", "S02", "S02_MR1")
    folder = lab.lab_drop(rejected)
    (folder / "notes.nii").write_bytes(b"\0" * 400)  # not DICOM: rejected
    with Daemon(lab) as daemon:
        daemon.until(lambda: lab.done.joinpath(*clean).is_dir(), "delivered")
        daemon.until(lambda: lab.failed.joinpath(*rejected).is_dir(), "rejected")
        assert daemon.stop() == 0
    for made in (lab.done / PROJECT, lab.done / PROJECT / "S01", lab.failed / "P2" / "S02"):
        st = made.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (SERVICE_UID, LAB_GID, 0o2775)
    # retry as root, as a data manager would with sudo, into folders it has to make
    shutil.rmtree(lab.incoming / "P2", ignore_errors=True)
    lab.incoming.chmod(0o2775)
    result = cli(lab, "retry", str(lab.failed.joinpath(*rejected)))
    assert result.returncode == 0, result.stderr
    for made in (
        lab.incoming / "P2",
        lab.incoming / "P2" / "S02",
        lab.failed / ".history",
        lab.failed / ".history" / "P2" / "S02",
    ):
        st = made.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (SERVICE_UID, LAB_GID, 0o2775)
    assert lab.incoming.joinpath(*rejected).stat().st_uid == LAB_UID  # moved, untouched
