"""Blocked folders and stray files (issue 13): a refused claim leaks nothing whatever the error,
the words and fixes for each cause, the notes beside them, and the service's pace, driven by a
hand-moved clock. The real daemon as its own user: hostile/test_hostile_blocked.py."""

from __future__ import annotations

import errno
import logging
import os
import stat
import subprocess
from pathlib import Path

import pytest

from test_service import ManualClock, run_until_idle, start_service
from xnat_drop.adapters.fs import access, claims, notes
from xnat_drop.adapters.fs.beneath import Dir, UnsafePathError
from xnat_drop.core import blocked
from xnat_drop.core.blocked import Access, Me, Place, Problem
from xnat_drop.core.config import PathsConfig
from xnat_drop.service.loop import Service
from xnat_standin import Emulator
from xnat_standin.demo.samples import SeriesSpec, write_session

from conftest import Drop

REL = ("P1", "S01", "S01_MR1")
LAB, OTHER, ME = 64200, 64300, 64100


def _drop(paths: PathsConfig, rel: tuple[str, ...] = REL) -> Path:
    folder = paths.incoming.joinpath(*rel)
    (folder / "series").mkdir(parents=True)
    (folder / "series" / "IM1.dcm").write_bytes(b"data-1")
    return folder


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- a refused claim leaks nothing, whatever the error and wherever it happens ------------------

ERRORS = [
    errno.EACCES,
    errno.EPERM,
    errno.EXDEV,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.ENAMETOOLONG,
    errno.EBUSY,
    errno.EIO,
    errno.EMFILE,
    "unsafe",
]
STEPS = {  # where the claim fails: what is replaced by a function that raises
    "descend": (Dir, "descend"),
    "mkdir": (Dir, "mkdir"),
    "lock": (claims, "lock_claim"),
    "record": (Dir, "write_atomic"),
    "move": (Dir, "move"),
}


@pytest.mark.parametrize(
    "code", ERRORS, ids=lambda c: c if isinstance(c, str) else errno.errorcode[c]
)
@pytest.mark.parametrize("step", STEPS)
def test_a_refused_claim_leaves_nothing_open_and_nothing_in_the_work_folder(
    paths: PathsConfig,
    area: claims.WorkArea,
    monkeypatch: pytest.MonkeyPatch,
    step: str,
    code: int | str,
) -> None:
    folder = _drop(paths)

    def refuse(*args: object, **kwargs: object) -> None:
        if code == "unsafe":
            raise UnsafePathError("somewhere", "is a symbolic link, which xnat-drop never follows")
        assert isinstance(code, int)
        raise OSError(code, os.strerror(code), "somewhere")

    owner, name = STEPS[step]
    monkeypatch.setattr(owner, name, refuse)
    before = _fds()
    for _ in range(30):
        with pytest.raises(OSError):
            area.claim(REL, 0.0)
    assert _fds() == before
    assert list(paths.work.iterdir()) == [] and area.held() == set()
    assert (folder / "series" / "IM1.dcm").read_bytes() == b"data-1"


def test_a_folder_on_another_filesystem_is_refused_with_its_fix(
    paths: PathsConfig, area: claims.WorkArea
) -> None:
    """incoming/P1 is a tmpfs mounted into the drop tree: the rename says EXDEV."""
    mount = paths.incoming / "P1"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "tmpfs", str(mount)], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount here: {done.stderr.decode().strip()}")
    try:
        _drop(paths)
        before = _fds()
        with pytest.raises(OSError) as caught:
            area.claim(REL, 0.0)
        assert caught.value.errno == errno.EXDEV
        assert _fds() == before and list(paths.work.iterdir()) == []
        problem, gate = access.diagnose(paths.incoming, REL, caught.value)
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    assert "another filesystem mounted" in problem.reason and problem.lab
    assert "copy the data into a plain folder" in problem.fix
    assert None not in gate


# -- the words: each cause with its fix (pure) ---------------------------------------------------

SERVICE = Me(ME, frozenset({ME, LAB}), "mri-lab")
NAMES = {LAB: "mri-lab", OTHER: "physics"}
HOLDER = Place("/srv/in/P1/S01", Access(64101, LAB, 0o42770))
PATH = "/srv/in/P1/S01/S01_MR1"


def _refused(folder: Access, holder: Place = HOLDER, code: int = errno.EACCES) -> Problem:
    return blocked.refused(code, "Permission denied", SERVICE, holder, Place(PATH, folder), NAMES)


def test_a_folder_copied_without_group_write_gets_chmod() -> None:
    problem = _refused(Access(64101, LAB, 0o40755))
    assert problem.reason == "the folder is not group-writable (xnat-drop needs that to move it)"
    assert problem.fix == f"chmod -R g+w '{PATH}'" and problem.lab


def test_a_folder_of_another_group_gets_chgrp_and_chmod_only_if_needed() -> None:
    problem = _refused(Access(64101, OTHER, 0o40775))
    assert problem.reason.startswith("the folder belongs to the group physics, which xnat-drop")
    assert problem.fix == f"chgrp -R mri-lab '{PATH}'"
    problem = _refused(Access(64101, OTHER, 0o40755))
    assert problem.fix == f"chgrp -R mri-lab '{PATH}' && chmod -R g+w '{PATH}'"


def test_a_folder_holding_it_that_is_not_writable_is_fixed_from_there_down() -> None:
    holder = Place("/srv/in/P1/S01", Access(64101, LAB, 0o40755))
    problem = _refused(Access(64101, LAB, 0o40755), holder)
    assert problem.reason.startswith("the folder holding it is not group-writable")
    assert problem.fix == "chmod -R g+w '/srv/in/P1/S01'"  # -R: the session too


def test_a_sticky_folder_holding_it_gets_chmod_minus_t() -> None:
    holder = Place("/srv/in/P1/S01", Access(64101, LAB, 0o41770))
    problem = _refused(Access(64101, LAB, 0o40775), holder, errno.EPERM)
    assert "sticky bit" in problem.reason and problem.fix == "chmod -t '/srv/in/P1/S01'"


def test_when_the_modes_allow_it_the_administrator_is_asked_to_look_further() -> None:
    problem = _refused(Access(64101, LAB, 0o40775))
    assert "although the modes allow it" in problem.reason and not problem.lab
    assert "getfacl" in problem.fix


@pytest.mark.parametrize(
    ("code", "words", "lab"),
    [
        (errno.ENOSPC, "filesystem is full", False),
        (errno.EDQUOT, "over its quota", False),
        (errno.EROFS, "read-only", False),
        (errno.EXDEV, "another filesystem mounted", True),
        (errno.EBUSY, "another filesystem mounted", True),
        (errno.ENAMETOOLONG, "name is too long", True),
        (errno.ELOOP, "Permission denied", True),  # an UnsafePathError's own sentence
        (errno.EIO, "cannot take it into the work folder (Permission denied)", False),
    ],
)
def test_other_errors_are_named_with_whose_fix_it_is(code: int, words: str, lab: bool) -> None:
    problem = _refused(Access(64101, LAB, 0o40775), code=code)
    assert words in problem.reason and problem.lab is lab and problem.fix


def test_an_unreadable_file_inside_gets_chmod_or_chgrp() -> None:
    folder = Place(PATH, Access(64101, LAB, 0o42775))
    one = blocked.unreadable(SERVICE, folder, "s1/IM1.dcm", 1, Access(64101, LAB, 0o100600), NAMES)
    assert one.reason.startswith("s1/IM1.dcm in it is not readable by xnat-drop (its group")
    assert one.fix == f"chmod -R g+rX '{PATH}'"
    many = blocked.unreadable(SERVICE, folder, "s1", 3, Access(64101, OTHER, 0o40700), NAMES)
    assert "(the first: s1) are not readable" in many.reason and "physics" in many.reason
    assert many.fix == f"chgrp -R mri-lab '{PATH}' && chmod -R g+rX '{PATH}'"
    itself = blocked.unreadable(SERVICE, folder, ".", 1, None, NAMES)
    assert itself.reason.startswith("the folder is not readable")


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("SUBJ24_MR1.zip", "archive"),
        ("scan.tar.gz", "archive"),
        ("IM0001.dcm", "dicom"),
        ("IM_0001", "dicom"),
        ("00000042", "dicom"),
        ("1.3.12.2.1107.5.2.43.66012", "dicom"),
        ("README.txt", "file"),
        (".DS_Store", None),
        ("Thumbs.db", None),
        ("desktop.ini", None),
        ("._IM0001.dcm", None),
        ("IM0001.dcm.part", None),
        ("S01_MR1.NOT-TAKEN.txt", None),
        (".S01_MR1.xnat-drop-force", None),
    ],
)
def test_files_where_folders_belong_are_told_apart_by_name(name: str, kind: str | None) -> None:
    assert blocked.stray_kind(name) == kind


def test_a_stray_file_is_told_where_its_content_belongs() -> None:
    layout = ("project", "subject", "session")
    problem = blocked.stray(("P1", "SUBJ24_MR1.zip"), "archive", layout, "/srv/in")
    assert problem.reason == "a zip file where a subject folder is expected"
    assert (
        problem.fix == "unpack it into '/srv/in/P1/<subject>/SUBJ24_MR1/', then delete the archive"
    )
    problem = blocked.stray(("P1", "S24", "x.7z"), "archive", layout, "/srv/in")
    assert problem.reason == "an archive where a session folder is expected"
    assert "'/srv/in/P1/S24/x/'" in problem.fix
    problem = blocked.stray(("IM0001.dcm",), "dicom", layout, "/srv/in")
    assert problem.reason == "a DICOM file where a project folder is expected"
    assert "'/srv/in/<project>/<subject>/<session>/'" in problem.fix
    problem = blocked.stray(("P1", "notes.txt"), "file", ("project", "*", "session"), "/srv/in")
    assert problem.reason == "a file where a folder is expected"


def test_the_note_is_plain_text_with_crlf_and_no_time_in_it() -> None:
    problem = Problem("the folder is not group-writable", "chmod -R g+w '/x'")
    text = blocked.note_text(REL, problem, folder=True)
    assert text.startswith("xnat-drop did not take incoming/P1/S01/S01_MR1\r\n")
    assert "\n" not in text.replace("\r\n", "") and text.endswith("\r\n")
    assert "What to do: chmod -R g+w '/x'" in text
    assert text == blocked.note_text(REL, problem, folder=True)


def test_reminders_come_rarely_and_blocked_folders_are_tried_slowly() -> None:
    hour = 3600.0
    due = [blocked.next_reminder(n) / hour for n in range(6)]
    assert due == [1, 6, 24, 48, 72, 96]
    assert blocked.retry_pace(0.5) == 5.0 and blocked.retry_pace(60) == 600.0
    assert blocked.retry_pace(0.0) == 1.0 and blocked.retry_pace(3600) == 3600.0


# -- the notes on disk ---------------------------------------------------------------------------


def test_a_note_is_made_like_its_folder_updated_and_removed_only_when_ours(
    tmp_path: Path,
) -> None:
    incoming = tmp_path / "incoming"
    holder = incoming / "P1" / "S01"
    holder.mkdir(parents=True)
    os.chown(holder, 64101, LAB)
    holder.chmod(0o2770)
    (holder / "S01_MR1").mkdir()
    note = holder / "S01_MR1.NOT-TAKEN.txt"
    assert notes.put(incoming, REL, "xnat-drop did not take it\r\none\r\n")
    st = note.stat()
    assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (LAB, 0o640)
    assert notes.put(incoming, REL, "xnat-drop did not take it\r\ntwo\r\n")
    assert note.read_bytes() == b"xnat-drop did not take it\r\ntwo\r\n"
    notes.remove(incoming, REL)
    assert not note.exists()
    # Someone else's file with the note's name: never written, never removed.
    note.write_text("mine\n")
    os.chown(note, 64101, LAB)
    assert not notes.put(incoming, REL, "xnat-drop did not take it\r\n")
    notes.remove(incoming, REL)
    assert note.read_text() == "mine\n"
    note.unlink()
    # A link with the note's name: not followed, not replaced.
    target = tmp_path / "target"
    note.symlink_to(target)
    assert not notes.put(incoming, REL, "xnat-drop did not take it\r\n")
    assert not target.exists() and note.is_symlink()
    note.unlink()
    os.mkfifo(note)
    assert not notes.put(incoming, REL, "xnat-drop did not take it\r\n")  # never waits
    note.unlink()
    # A name too long for a suffix gets a shortened note name.
    long = ("P1", "S01", "S" * 250)
    assert notes.put(incoming, long, "xnat-drop did not take it\r\n")
    assert len(os.fsencode(notes.note_name("S" * 250))) <= 255
    assert (holder / notes.note_name("S" * 250)).is_file()


def test_folders_made_in_the_drop_tree_are_like_the_one_above(tmp_path: Path) -> None:
    top = tmp_path / "done"
    top.mkdir()
    os.chown(top, ME, LAB)
    top.chmod(0o2775)
    with Dir.open(top) as opened, opened.descend(("P1", "S01"), create=True):
        pass
    for made in (top / "P1", top / "P1" / "S01"):
        st = made.stat()  # as root: the owner too
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (ME, LAB, 0o2775)


# -- the service: said once, tried slowly, taken at once when fixed ------------------------------

SETTLE = 10.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def _blocked_service(
    drop: Drop,
    emulator: Emulator,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Service, Path, list[int]]:
    """A service whose claim of REL is refused (EACCES) while `refusing` says so."""
    drop.write_config(emulator.url, settle=SETTLE, rescan=60)
    folder = drop.incoming.joinpath(*REL)
    write_session(folder, [SeriesSpec(1, "T1", images=1)])
    tries: list[int] = []
    move = Dir.move

    def refused(self: Dir, name: str, dest: Dir, dest_name: str) -> None:
        if name == REL[-1] and dest.path.parent == drop.work and tries[-1:] != [-1]:
            tries.append(1)
            raise PermissionError(errno.EACCES, "Permission denied", name)
        move(self, name, dest, dest_name)

    monkeypatch.setattr(Dir, "move", refused)
    # Running as root, the modes allow everything: say what a lab member would be told.
    problem = Problem("the folder is not group-writable", f"chmod -R g+w '{folder}'")
    monkeypatch.setattr(access, "diagnose", lambda i, r, e: (problem, access._look(i, r)[1]))
    return start_service(drop, clock), folder, tries


def _turn(service: Service, clock: ManualClock, seconds: float) -> None:
    clock.now += seconds
    service.waker.wake()
    run_until_idle(service)


def test_a_blocked_folder_is_said_once_tried_slowly_and_taken_at_once_when_fixed(
    drop: Drop,
    emulator: Emulator,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="xnat_drop")
    service, folder, tries = _blocked_service(drop, emulator, clock, monkeypatch)
    try:
        _said_once_tried_slowly_taken_at_once(drop, service, clock, folder, tries, caplog)
    finally:
        service.close()


def _said_once_tried_slowly_taken_at_once(
    drop: Drop,
    service: Service,
    clock: ManualClock,
    folder: Path,
    tries: list[int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    note = folder.with_name("S01_MR1.NOT-TAKEN.txt")
    _turn(service, clock, 0)
    _turn(service, clock, SETTLE)
    assert len(tries) == 1 and note.is_file()
    [item] = service.snapshot()["not_taken"]
    assert item["reason"] == "the folder is not group-writable" and "chmod -R g+w" in item["fix"]
    assert item["note"] == "P1/S01/S01_MR1.NOT-TAKEN.txt"
    assert service.snapshot()["settling"] == []  # listed once, with its fix
    assert "1 cannot be taken" in service.status_line()
    for _ in range(9):  # nine settle periods: not tried, not said again
        _turn(service, clock, SETTLE)
    assert len(tries) == 1
    _turn(service, clock, SETTLE)  # ten: tried again, quietly
    assert len(tries) == 2
    errors = [r for r in caplog.records if "cannot be taken" in r.getMessage()]
    assert len(errors) == 1 and errors[0].levelno == logging.ERROR
    # An hour later a reminder, then not again for hours.
    for _ in range(40):
        _turn(service, clock, 100)
    reminders = [r for r in caplog.records if "still cannot be taken after" in r.getMessage()]
    assert len(reminders) == 1 and reminders[0].levelno == logging.WARNING
    # A lab member fixes it: taken at the next scan, not at the next slow try.
    tries.append(-1)  # the rename works from now on
    folder.chmod(0o2775)
    _turn(service, clock, 2)  # the next scan (scans are at least 2 s apart)
    assert drop.done.joinpath(*REL).is_dir() and not note.exists()
    assert service.snapshot()["not_taken"] == []


def test_a_stray_file_flood_costs_a_few_lines_a_few_notes_and_a_bounded_status(
    drop: Drop,
    emulator: Emulator,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="xnat_drop")
    drop.write_config(emulator.url, settle=SETTLE, rescan=60)
    subject = drop.incoming / "P1" / "S01"
    subject.mkdir(parents=True)
    for n in range(500):
        (subject / f"IM{n:04d}.dcm").write_bytes(b"x")
    (drop.incoming / "P1" / "SUBJ24_MR1.zip").write_bytes(b"PK")
    service = start_service(drop, clock)
    try:
        _flood(drop, service, clock, subject, caplog)
    finally:
        service.close()


def _flood(
    drop: Drop,
    service: Service,
    clock: ManualClock,
    subject: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for _ in range(5):
        _turn(service, clock, SETTLE)
    said = [r for r in caplog.records if "it is not taken" in r.getMessage()]
    summary = [r for r in caplog.records if "more lines about folders and files" in r.getMessage()]
    assert len(said) == 20 and len(summary) == 1
    assert "481 more" in summary[0].getMessage()
    written = sorted(p.name for p in drop.incoming.rglob("*.NOT-TAKEN.txt"))
    assert written == [
        "IM0000.dcm.NOT-TAKEN.txt",
        "IM0001.dcm.NOT-TAKEN.txt",
        "IM0002.dcm.NOT-TAKEN.txt",
        "SUBJ24_MR1.zip.NOT-TAKEN.txt",
    ]
    snapshot = service.snapshot()
    assert len(snapshot["not_taken"]) == 100 and snapshot["not_taken_more"] == 401
    # Gone files take their notes with them; notes of ours nobody needs are tidied.
    (subject / "IM0000.dcm").unlink()
    (drop.incoming / "P1" / "gone.zip.NOT-TAKEN.txt").write_text("xnat-drop did not take x\r\n")
    (drop.incoming / "P1" / "theirs.zip.NOT-TAKEN.txt").write_text("a lab member's own\r\n")
    os.chown(drop.incoming / "P1" / "theirs.zip.NOT-TAKEN.txt", 64101, 64101)
    _turn(service, clock, SETTLE)
    assert not (subject / "IM0000.dcm.NOT-TAKEN.txt").exists()
    assert not (drop.incoming / "P1" / "gone.zip.NOT-TAKEN.txt").exists()
    assert (drop.incoming / "P1" / "theirs.zip.NOT-TAKEN.txt").exists()
