"""Delivery through XNAT's inbox (issue 18): the real daemon process against the stand-in's
inbox handler over loopback HTTP, the stand-in seeing the test's inbox folder as its inboxPath.

The path check, staging and its removal, the user's folder untouched, XNAT's failures, a
stalled queue, a kill right after the POST, and the start-up refusals (exit 78).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from xnat_drop.adapters.fs import inboxstage
from xnat_drop.core.errors import SessionChangedError
from xnat_drop.core.model import FileFacts, FileKind
from xnat_standin import Emulator
from xnat_standin.demo.samples import SeriesSpec, write_session
from xnat_standin.inboxfaults import InboxFault

from conftest import (
    PASSWORD,
    PROJECT,
    USER,
    Drop,
    daemon_env,
    digest,
    run_daemon,
    start_daemon,
    stop_daemon,
    wait_until,
)
from hostile_lab import LAB_GID, LAB_UID, SERVICE_GID, SERVICE_UID, as_user, needs_root

REL = (PROJECT, "S01", "S01_MR1")
SCANS = [SeriesSpec(1, "localizer", images=3), SeriesSpec(2, "T1_MPRAGE", images=4)]
SERVER_INBOX = "/data/xnat/inbox"
EX_CONFIG = 78
EX_TEMPFAIL = 75


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    return folder


@pytest.fixture
def emulator(tmp_path: Path, inbox: Path) -> Iterator[Emulator]:
    """The stand-in, seeing `inbox` as its inboxPath /data/xnat/inbox."""
    with Emulator(
        root=tmp_path / "xnat", users={USER: PASSWORD}, projects=[PROJECT], inbox_root=inbox
    ) as emu:
        yield emu


def use_inbox(
    drop: Drop,
    url: str,
    root: Path,
    server_path: str = SERVER_INBOX,
    *,
    more: str = "",
    link: str = "hardlink",
) -> None:
    drop.write_config(
        url,
        xnat='transport = "inbox"',
        extra=f'[inbox]\nroot = "{root}"\nserver_path = "{server_path}"\nlink = "{link}"\n'
        f'{more}\n[rules]\nnon-dicom = "exclude"\n',
    )


def drop_study(drop: Drop, rel: tuple[str, ...] = REL) -> Path:
    staging = drop.root.parent / "staging" / "/".join(rel)
    write_session(staging, SCANS, patient_id="S01")
    (staging / "notes.txt").write_text("not DICOM: excluded by the rules\n")
    target = drop.incoming.joinpath(*rel)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(staging, target)
    return target


def inbox_entries(inbox: Path) -> list[str]:
    return sorted(str(p.relative_to(inbox)) for p in inbox.rglob("*"))


def test_a_session_goes_through_the_inbox_to_done_untouched(
    drop: Drop, emulator: Emulator, inbox: Path
) -> None:
    use_inbox(drop, emulator.url, inbox)
    folder = drop_study(drop)
    before = digest(folder)
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    done = drop.done.joinpath(*REL)
    assert digest(done) == before  # byte-identical, the excluded file still there
    [request] = emulator.inbox_requests()  # the path check made no request: XNAT refused it
    assert request.parameters["cleanupAfterImport"] == "false"
    assert not request.cleanup_after_import
    assert request.parameters["prevent_auto_commit"] == "true"
    assert (request.parameters["SUBJECT_ID"], request.parameters["EXPT_LABEL"]) == REL[1:]
    assert request.session_path.startswith(f"{SERVER_INBOX}/{PROJECT}/xnat-drop-")
    assert request.status == "Processed"
    [session] = emulator.prearchive()
    assert (session.file_count, session.status) == (7, "READY")  # no notes.txt in XNAT
    assert inbox_entries(inbox) == [PROJECT]  # staging folder and path-check file gone
    assert "XNAT sees inbox.root" in result.stderr
    assert not any(
        r.method == "POST" and r.path == "/data/services/import" and r.status == 200
        for r in emulator.requests()
        if "DICOM-zip" in r.query
    )


def test_an_auto_archive_project_is_verified_in_the_archive_and_says_so(
    drop: Drop, emulator: Emulator, inbox: Path
) -> None:
    """XNAT archives at once what the inbox imports for a project that archives automatically
    (nothing can keep it in the prearchive): the daemon verifies the archived session and
    the receipt says it was verified after archiving."""
    emulator.add_project("AUTO", 4)  # prearchive code 4: archive automatically
    use_inbox(drop, emulator.url, inbox)
    rel = ("AUTO", "S01", "S01_MR1")
    drop_study(drop, rel)
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    [request] = emulator.inbox_requests()
    assert request.status == "Completed"
    assert emulator.prearchive() == []
    [archived] = emulator.archive()
    assert (archived.project, archived.label, archived.file_count) == ("AUTO", "S01_MR1", 7)
    receipt = (drop.done / "AUTO" / "S01" / "S01_MR1.report.txt").read_text()
    assert "archived the session as soon as it was imported" in receipt
    assert "verified in the archive, after archiving" in receipt
    assert inbox_entries(inbox) == ["AUTO"]  # the staging folder is gone


def test_staging_holds_exactly_the_accepted_files_as_hard_links(tmp_path: Path) -> None:
    source = tmp_path / "claimed"
    write_session(source / "S", SCANS, patient_id="S01")
    (source / "S" / "notes.txt").write_text("excluded\n")
    dicoms = sorted(p for p in (source / "S").rglob("*.dcm"))
    accepted = [
        FileFacts(str(p.relative_to(source / "S")), p.stat().st_size, FileKind.DICOM)
        for p in dicoms[:5]
    ]
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    inboxstage.stage(source / "S", accepted, inbox, PROJECT, "c1", "hardlink")
    staged = inbox / PROJECT / "xnat-drop-c1"
    found = sorted(str(p.relative_to(staged)) for p in staged.rglob("*") if p.is_file())
    assert found == sorted(f.path for f in accepted)
    for f in accepted:
        assert (staged / f.path).stat().st_ino == (source / "S" / f.path).stat().st_ino
    assert not list((inbox / PROJECT).glob(".xnat-drop-*"))  # renamed into place
    inboxstage.remove(inbox, PROJECT, "c1")
    assert list((inbox / PROJECT).iterdir()) == []
    assert len(dicoms) == len(list((source / "S").rglob("*.dcm")))  # the user's files stay


def test_a_file_changed_since_inspection_is_never_staged(tmp_path: Path) -> None:
    source = tmp_path / "claimed"
    source.mkdir()
    (source / "a.dcm").write_bytes(b"x" * 10)
    judged = FileFacts("a.dcm", 10, FileKind.DICOM, stamp=12345)  # not the file's stamp
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with pytest.raises(SessionChangedError):
        inboxstage.stage(source, [judged], inbox, PROJECT, "c2", "hardlink")
    inboxstage.remove(inbox, PROJECT, "c2")
    assert list((inbox / PROJECT).iterdir()) == []


def test_a_project_folder_lab_members_can_write_is_never_used(tmp_path: Path) -> None:
    source = tmp_path / "claimed"
    source.mkdir()
    (source / "a.dcm").write_bytes(b"x" * 10)
    inbox = tmp_path / "inbox"
    (inbox / PROJECT).mkdir(parents=True)
    (inbox / PROJECT).chmod(0o777)
    with pytest.raises(PermissionError, match="XNAT follows links"):
        inboxstage.stage(
            source, [FileFacts("a.dcm", 10, FileKind.DICOM)], inbox, PROJECT, "c4", "hardlink"
        )
    assert list((inbox / PROJECT).iterdir()) == []


def test_a_wrong_server_path_pauses_inbox_delivery_and_keeps_the_data(
    drop: Drop, emulator: Emulator, inbox: Path
) -> None:
    use_inbox(drop, emulator.url, inbox, "/data/xnat/elsewhere")
    drop_study(drop)
    result = run_daemon(drop, timeout=15)
    assert result.returncode == EX_TEMPFAIL, result.stderr
    assert "XNAT cannot use its inbox as configured" in result.stderr
    assert "You must specify a valid path" in result.stderr  # XNAT's own words
    assert not drop.failed.exists() or not any(drop.failed.rglob("*"))
    assert list(drop.work.rglob("S01_MR1"))  # still in the work folder
    assert emulator.inbox_requests() == []
    assert emulator.prearchive() == []
    assert inbox_entries(inbox) == [PROJECT]  # the path-check file removed


def test_a_failed_import_goes_to_failed_with_xnats_words(
    drop: Drop, emulator: Emulator, inbox: Path
) -> None:
    use_inbox(drop, emulator.url, inbox)
    emulator.inject_inbox(InboxFault(path=f"{SERVER_INBOX}/{PROJECT}/", fail="Broken on purpose"))
    folder = drop_study(drop)
    before = digest(folder)
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    failed = drop.failed.joinpath(*REL)
    assert digest(failed) == before
    report = failed.with_name(failed.name + ".report.txt").read_text()
    assert "Broken on purpose" in report
    assert inbox_entries(inbox) == [PROJECT]  # staging removed


def test_no_valid_dicom_found_adds_the_permission_hint() -> None:
    from xnat_drop.core.inbox import failed_sentence

    words = failed_sentence("No valid DICOM files found for the specified session :/x")
    assert "No valid DICOM files found" in words
    assert "readable" in words
    assert "readable" not in failed_sentence("Unable to archive X: reasons")


def test_a_stalled_queue_waits_and_is_never_posted_twice(
    drop: Drop, emulator: Emulator, inbox: Path
) -> None:
    use_inbox(drop, emulator.url, inbox, more="stall_seconds = 1")
    emulator.inject_inbox(InboxFault(path=f"{SERVER_INBOX}/{PROJECT}/", stuck=True, times=0))
    drop_study(drop)
    result = run_daemon(drop, timeout=20)
    assert result.returncode == EX_TEMPFAIL, result.stderr
    assert "still Queued" in result.stderr
    assert "still Queued" in (drop.state / "status.json").read_text()  # the status's alarm
    [request] = emulator.inbox_requests()  # waited on again and again, posted once
    assert request.status == "Queued"
    assert list(drop.work.rglob("S01_MR1"))
    emulator.clear_inbox_faults()  # the queue moves again: the next run carries on
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    assert len(emulator.inbox_requests()) == 1
    assert drop.done.joinpath(*REL).is_dir()
    assert inbox_entries(inbox) == [PROJECT]


def test_killed_right_after_the_post_gives_one_request_and_one_session(
    drop: Drop, emulator: Emulator, inbox: Path
) -> None:
    use_inbox(drop, emulator.url, inbox)
    drop_study(drop)
    killed = run_daemon(drop, env=daemon_env(XNAT_DROP_FAILPOINT="after-inbox-post"))
    assert killed.returncode == -9, killed.stderr
    assert len(emulator.inbox_requests()) == 1
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    assert "adopting XNAT's inbox import request" in result.stderr
    assert len(emulator.inbox_requests()) == 1
    assert len(emulator.prearchive()) == 1
    assert drop.done.joinpath(*REL).is_dir()
    assert inbox_entries(inbox) == [PROJECT]


def test_an_inbox_root_lab_members_can_write_is_refused(
    drop: Drop, emulator: Emulator, inbox: Path
) -> None:
    use_inbox(drop, emulator.url, inbox)
    inbox.chmod(0o777)
    result = run_daemon(drop)
    assert result.returncode == EX_CONFIG, result.stderr
    assert "inbox.root" in result.stderr and "writable by lab members" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_hard_link_across_filesystems_is_a_config_error(drop: Drop, emulator: Emulator) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(drop.root).st_dev:
        pytest.skip("/dev/shm is missing or on the drop tree's filesystem: no second one here")
    other = shm / f"xnat-drop-inbox-{os.getpid()}"
    other.mkdir(mode=0o755)
    try:
        use_inbox(drop, emulator.url, other)
        result = run_daemon(drop)
        assert result.returncode == EX_CONFIG, result.stderr
        assert "another filesystem" in result.stderr
        assert "Traceback" not in result.stderr
        # Copies may cross filesystems: the copy mode stages there, as regular files of ours.
        source = drop.root.parent / "claimed"
        write_session(source, SCANS[:1], patient_id="S01")
        files = [
            FileFacts(str(p.relative_to(source)), p.stat().st_size, FileKind.DICOM)
            for p in source.rglob("*.dcm")
        ]
        inboxstage.stage(source, files, other, PROJECT, "c3", "copy")
        staged = other / PROJECT / "xnat-drop-c3"
        assert digest(staged) == digest(source)
        inboxstage.remove(other, PROJECT, "c3")
    finally:
        shutil.rmtree(other)


def test_check_config_warns_of_inbox_projects_that_archive_automatically(
    drop: Drop, emulator: Emulator, inbox: Path
) -> None:
    emulator.add_project("AUTO", 4)
    for project in ("AUTO", PROJECT):
        (inbox / project).mkdir(mode=0o755)
    use_inbox(drop, emulator.url, inbox)
    command = [sys.executable, "-m", "xnat_drop", "check-config", "--config", str(drop.config)]
    result = subprocess.run(
        command, capture_output=True, text=True, env=daemon_env(), timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "project AUTO archives automatically" in result.stderr
    assert f"project {PROJECT} archives" not in result.stderr


def test_a_bad_mapping_is_an_alarm_in_status_until_a_reload_fixes_it(
    drop: Drop, emulator: Emulator, inbox: Path
) -> None:
    """The running daemon: a wrong inbox.server_path pauses inbox delivery with its own words
    in the status (not "XNAT down"), the session waits in .work/, and once the operator
    fixes the setting and reloads, the path is proven again and the session delivered."""
    use_inbox(drop, emulator.url, inbox, "/data/xnat/elsewhere")
    drop_study(drop)
    status = drop.state / "status.json"
    proc = start_daemon(drop)
    try:
        wait_until(
            lambda: status.exists() and "inbox cannot be used" in status.read_text(),
            "the inbox alarm in status.json",
            proc,
        )
        lab = drop.root / "STATUS.txt"  # what lab members read, in words
        wait_until(
            lambda: lab.exists() and "its inbox cannot be used" in lab.read_text(),
            "the inbox alarm in STATUS.txt",
            proc,
        )
        assert "down since" not in lab.read_text()
        assert list(drop.work.rglob("S01_MR1"))
        assert not drop.failed.exists() or not any(drop.failed.rglob("*"))
        use_inbox(drop, emulator.url, inbox)  # the operator fixes inbox.server_path
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: drop.done.joinpath(*REL).is_dir(), "delivery after the fix", proc)
    finally:
        code, stderr = stop_daemon(proc)
    assert code == 0, stderr
    assert len(emulator.inbox_requests()) == 1


def test_a_staged_file_written_during_the_import_is_never_kept_in_xnat(
    drop: Drop, emulator: Emulator, inbox: Path
) -> None:
    """A hard link is the dropped file itself: a writer that kept a file open after the claim
    could change it while XNAT imports it. The daemon sees the staged files changed, deletes
    the session XNAT made of them, judges the session again and sends it anew."""
    use_inbox(drop, emulator.url, inbox)
    emulator.inject_inbox(InboxFault(path=f"{SERVER_INBOX}/{PROJECT}/", stuck=True, times=0))
    drop_study(drop)
    proc = start_daemon(drop)
    try:
        wait_until(lambda: len(emulator.inbox_requests()) == 1, "the first request", proc)
        [staged] = sorted(inbox.glob(f"{PROJECT}/xnat-drop-*/**/*.dcm"))[:1]
        with staged.open("r+b") as writer:  # in place: the same inode as the dropped file
            writer.seek(-2, os.SEEK_END)
            writer.write(b"\x01\x02")
        emulator.clear_inbox_faults()
        wait_until(lambda: drop.done.joinpath(*REL).is_dir(), "delivery after the change", proc)
    finally:
        code, stderr = stop_daemon(proc)
    assert code == 0, stderr
    assert "changed while XNAT imported it" in stderr
    first, second = emulator.inbox_requests()
    assert first.session_path == second.session_path  # posted again, after the first was set aside
    [session] = emulator.prearchive()  # the session made of the changed bytes is gone
    assert (session.file_count, session.status) == (7, "READY")
    assert inbox_entries(inbox) == [PROJECT]


_STAGE_AS_SERVICE = """
import errno, sys
from pathlib import Path
from xnat_drop.adapters.fs import inboxstage
from xnat_drop.core.inbox import staging_sentence
from xnat_drop.core.model import FileFacts, FileKind
source, inbox, link = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
files = [FileFacts("IM1.dcm", 4, FileKind.DICOM)]
try:
    inboxstage.stage(source, files, inbox, "P1", "c1", link)
except OSError as exc:
    print(errno.errorcode[exc.errno], staging_sentence(inbox, link, exc.errno, str(exc)))
else:
    print("staged")
"""


@needs_root
@pytest.mark.skipif(
    Path("/proc/sys/fs/protected_hardlinks").read_text().strip() != "1",
    reason="the kernel's fs.protected_hardlinks is off here",
)
@pytest.mark.parametrize("link", ["hardlink", "copy"])
def test_files_a_lab_member_owns_cannot_be_hard_linked_by_the_service(link: str) -> None:
    """As the lab runs it: the service is its own user, the dropped file a lab member's (mode
    0644). The kernel refuses the link (protected_hardlinks): the sentence says what to do;
    copies work."""
    base = Path(tempfile.mkdtemp(prefix="xnat-drop-inbox-", dir="/tmp"))
    base.chmod(0o755)  # pytest's own tmp_path is root's alone: the service must reach this
    try:
        _stage_as_service(base, link)
    finally:
        shutil.rmtree(base)


def _stage_as_service(base: Path, link: str) -> None:
    source, inbox = base / "claimed", base / "inbox"
    source.mkdir(mode=0o755)
    (source / "IM1.dcm").write_bytes(b"DICM")
    os.chown(source / "IM1.dcm", LAB_UID, LAB_GID)
    (source / "IM1.dcm").chmod(0o644)
    inbox.mkdir(mode=0o755)
    os.chown(inbox, SERVICE_UID, SERVICE_GID)
    command = [*as_user(SERVICE_UID, SERVICE_GID), sys.executable, "-c", _STAGE_AS_SERVICE]
    result = subprocess.run(
        [*command, str(source), str(inbox), link],
        capture_output=True,
        text=True,
        env=daemon_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    if link == "copy":
        assert result.stdout.strip() == "staged"
        assert (inbox / PROJECT / "xnat-drop-c1" / "IM1.dcm").read_bytes() == b"DICM"
    else:
        assert result.stdout.startswith("EPERM ")
        assert 'set inbox.link = "copy"' in result.stdout
        assert not list((inbox / PROJECT).iterdir())  # nothing half-staged is left
