"""Delivery through XNAT's DICOM receiver (issue 19): the real daemon process against the
stand-in's receiver over loopback C-STORE, with its HTTP API for the checks and verification.

A clean session verified and built at once, AA: false on an auto-archive project, a Deflated
file, a class XNAT does not take, a kill -9 halfway, a stall past the idle interval, the
whitelist pause, a receiver's own routing rule, and the start-up refusals (exit 78).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests

pytest.importorskip("pynetdicom", reason="the cstore extra (pynetdicom) is missing")

from xnat_standin import DicomReceiver, Emulator, ScpFault
from xnat_standin.demo.samples import SeriesSpec, write_session

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

REL = (PROJECT, "S01", "S01_MR1")
SCANS = [SeriesSpec(1, "localizer", images=3), SeriesSpec(2, "T1_MPRAGE", images=4)]
ROUTE = f"Project: {PROJECT} Subject: S01 Session: S01_MR1 AA: false"
EX_CONFIG = 78
PHOTOACOUSTIC = pydicom.uid.UID(
    "1.2.840.10008.5.1.4.1.1.6.3"
)  # newer than XNAT's receiver's class list
EX_TEMPFAIL = 75


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    """The stand-in with its DICOM receiver on a free loopback port (AE XNAT)."""
    with receiving(tmp_path / "xnat", idle_build_seconds=60) as emu:
        yield emu


def receiving(root: Path, idle_build_seconds: float) -> Emulator:
    """A stand-in with its DICOM receiver (AE XNAT) on a free loopback port, building a
    receiving session once it was idle `idle_build_seconds` (sessionXmlRebuilderInterval)."""
    return Emulator(
        root=root,
        users={USER: PASSWORD},
        projects=[PROJECT],
        dicom_port=0,
        idle_build_seconds=idle_build_seconds,
    )


def use_cstore(drop: Drop, emulator: Emulator, more: str = "") -> None:
    drop.write_config(
        emulator.url,
        xnat='transport = "cstore"',
        extra=f'[cstore]\nhost = "127.0.0.1"\nport = {emulator.dicom_port}\n'
        f'session_wait_seconds = 3\n{more}\n[rules]\nnon-dicom = "exclude"\n',
    )


def drop_study(drop: Drop, rel: tuple[str, ...] = REL, scans: list[SeriesSpec] = SCANS) -> Path:
    staging = drop.root.parent / "staging" / "/".join(rel)
    write_session(staging, scans, patient_id="S01")
    (staging / "notes.txt").write_text("not DICOM: excluded by the rules\n")
    target = drop.incoming.joinpath(*rel)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(staging, target)
    return target


def nothing_failed(drop: Drop) -> bool:
    return not drop.failed.exists() or not any(drop.failed.rglob("*"))


def test_a_session_goes_by_c_store_to_done_verified_and_untouched(
    drop: Drop, emulator: Emulator
) -> None:
    use_cstore(drop, emulator)
    folder = drop_study(drop)
    before = digest(folder)
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    done = drop.done.joinpath(*REL)
    assert digest(done) == before  # byte-identical: PatientComments was set on copies
    stores = emulator.dicom_stores()
    assert len(stores) == 7 and {s.status for s in stores} == {0}
    assert {s.calling_ae for s in stores} == {"XNAT_DROP"}
    [session] = emulator.prearchive()
    assert (session.project, session.subject, session.folder) == REL
    assert (session.file_count, session.status) == (7, "READY")  # built at once, no idle wait
    stored = next(Path(emulator.root).rglob("*.dcm"))
    assert pydicom.dcmread(stored).PatientComments == ROUTE
    report = " ".join(done.with_name(done.name + ".report.txt").read_text().split())
    assert "Verified in the prearchive" in report
    assert "(C-STORE)" in report  # how it went, with the objects' bytes and rate
    assert f'PatientComments (0010,4000) was set to "{ROUTE}"' in report
    assert "The files in this folder were not changed" in report
    assert not any(  # nothing went over the HTTP import
        r.method == "POST" and r.path == "/data/services/import" for r in emulator.requests()
    )


def test_an_auto_archive_project_is_verified_before_it_is_archived(
    drop: Drop, emulator: Emulator
) -> None:
    emulator.add_project("AUTO", 4)  # archives automatically, unless AA: false says otherwise
    drop.write_config(
        emulator.url,
        xnat='transport = "cstore"\ndestination = "archive"',
        extra=f'[cstore]\nhost = "127.0.0.1"\nport = {emulator.dicom_port}\n'
        '[rules]\nnon-dicom = "exclude"\n',
    )
    rel = ("AUTO", "S01", "S01_MR1")
    drop_study(drop, rel)
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    [archived] = emulator.archive()
    assert (archived.project, archived.label, archived.file_count) == ("AUTO", "S01_MR1", 7)
    commits = [r for r in emulator.requests() if r.query.get("action") == "commit"]
    assert len(commits) == 1  # archived by xnat-drop's commit, after verifying


def test_aa_false_keeps_an_auto_archive_session_in_the_prearchive_past_the_idle_build(
    drop: Drop, tmp_path: Path
) -> None:
    """With destination = "prearchive", a session of a project that archives automatically
    stays READY in the prearchive even though XNAT's idle builder (1 s here) built half of it
    during a stalled store: the routing line's AA: false, not luck with the timing."""
    with receiving(tmp_path / "idle", idle_build_seconds=1) as emu:
        emu.add_project("AUTO", 4)
        use_cstore(drop, emu)
        emu.inject_dicom(ScpFault(stall=3.5, nth=4))
        rel = ("AUTO", "S01", "S01_MR1")
        drop_study(drop, rel)
        result = run_daemon(drop)
        assert result.returncode == 0, result.stderr
        assert "longer than XNAT's idle interval" in result.stderr
        time.sleep(3)  # the idle builder looks again
        assert emu.archive() == []
        [session] = emu.prearchive()
        assert (session.project, session.status, session.file_count) == ("AUTO", "READY", 7)


def test_a_deflated_file_is_delivered_inflated_and_left_deflated_on_the_share(
    drop: Drop, emulator: Emulator
) -> None:
    """XNAT's receiver takes no Deflated syntax: the daemon sends the object in Explicit VR
    Little Endian, and the user's file stays as it was."""
    use_cstore(drop, emulator)
    folder = drop_study(drop)
    victim = sorted(folder.rglob("*.dcm"))[0]
    dataset = pydicom.dcmread(victim)
    dataset.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    dataset.save_as(victim, enforce_file_format=True)
    assert pydicom.dcmread(victim).file_meta.TransferSyntaxUID.is_deflated
    before = digest(folder)
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    assert digest(drop.done.joinpath(*REL)) == before
    syntaxes = {s.sop_instance_uid: s.transfer_syntax for s in emulator.dicom_stores()}
    assert syntaxes[dataset.SOPInstanceUID] == pydicom.uid.ExplicitVRLittleEndian
    [session] = emulator.prearchive()
    assert session.file_count == 7


def test_a_class_xnat_does_not_take_refuses_the_session_before_anything_is_sent(
    drop: Drop, emulator: Emulator
) -> None:
    use_cstore(drop, emulator)
    folder = drop_study(drop)
    odd = sorted(folder.rglob("*.dcm"))[-1]
    dataset = pydicom.dcmread(odd)
    dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = PHOTOACOUSTIC
    dataset.save_as(odd, enforce_file_format=True)
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    assert emulator.dicom_stores() == [] and emulator.prearchive() == []
    failed = drop.failed.joinpath(*REL)
    report = " ".join(failed.with_name(failed.name + ".report.txt").read_text().split())
    assert "cstore-unsupported" in report
    assert "Photoacoustic Image Storage" in report
    assert "nothing was sent" in report


def test_killed_halfway_resumes_with_one_session_and_no_object_sent_twice(
    drop: Drop, emulator: Emulator
) -> None:
    use_cstore(drop, emulator)
    drop_study(drop)
    killed = run_daemon(drop, env=daemon_env(XNAT_DROP_FAILPOINT="mid-cstore"))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(emulator.dicom_stores()) == 3  # 7 // 2, then the kill
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    assert "resuming after the 3 XNAT took before" in result.stderr
    uids = [s.sop_instance_uid for s in emulator.dicom_stores()]
    assert len(uids) == len(set(uids)) == 7  # each object once
    [session] = emulator.prearchive()
    assert (session.file_count, session.status) == (7, "READY")
    assert drop.done.joinpath(*REL).is_dir()


def test_a_send_that_broke_off_with_no_session_left_is_sent_again_whole(
    drop: Drop, emulator: Emulator, http: requests.Session
) -> None:
    """Killed halfway, and the half session deleted meanwhile (an administrator cleaned the
    prearchive): nothing is skipped, all seven go again."""
    use_cstore(drop, emulator)
    drop_study(drop)
    killed = run_daemon(drop, env=daemon_env(XNAT_DROP_FAILPOINT="mid-cstore"))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    [half] = emulator.prearchive()
    assert http.delete(f"{emulator.url}/data{half.uri}").status_code == 200
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    assert "resuming" not in result.stderr
    assert len(emulator.dicom_stores()) == 3 + 7
    [session] = emulator.prearchive()
    assert session.file_count == 7


def test_a_stall_longer_than_the_idle_interval_still_ends_in_one_verified_session(
    drop: Drop, tmp_path: Path
) -> None:
    """XNAT builds a session idle for sessionXmlRebuilderInterval (1 s here): a store stalled
    for longer lets it build the first half; AA: false keeps that in the prearchive, the rest
    joins it, and the daemon builds and verifies the whole."""
    with receiving(tmp_path / "idle", idle_build_seconds=1) as emu:
        use_cstore(drop, emu)
        emu.inject_dicom(ScpFault(stall=3.5, nth=4))
        drop_study(drop)
        result = run_daemon(drop)
        assert result.returncode == 0, result.stderr
        assert "longer than XNAT's idle interval" in result.stderr
        [session] = emu.prearchive()
        assert (session.file_count, session.status) == (7, "READY")
        assert emu.archive() == []
        assert drop.done.joinpath(*REL).is_dir()


def test_a_transient_status_is_retried_and_a_refusal_goes_to_failed_with_xnats_words(
    drop: Drop, emulator: Emulator, tmp_path: Path
) -> None:
    use_cstore(drop, emulator)
    emulator.inject_dicom(ScpFault(status=0xA700, error_comment="disk full", nth=2))
    drop_study(drop)
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    [session] = emulator.prearchive()
    assert session.file_count == 7
    assert drop.done.joinpath(*REL).is_dir()
    # A refusal (0xC000) is XNAT's word on the object: failed/, with its Error Comment.
    emulator.inject_dicom(ScpFault(status=0xC000, error_comment="no good", nth=1))
    rel = (PROJECT, "S02", "S02_MR1")
    drop_study(drop, rel)
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    failed = drop.failed.joinpath(*rel)
    report = " ".join(failed.with_name(failed.name + ".report.txt").read_text().split())
    assert "refused" in report and "no good" in report and "0xC000" in report


def test_a_whitelist_refusal_pauses_in_words_until_the_receiver_takes_xnat_drop(
    drop: Drop, emulator: Emulator
) -> None:
    """The running daemon: a receiver whose whitelist lacks xnat-drop pauses delivery with its
    own words in the status (not "XNAT down"); the session waits in .work/, and once the
    administrator adds xnat-drop, the probe's C-ECHO ends the pause and it is delivered."""
    emulator.set_dicom_receiver(DicomReceiver(whitelist_enabled=True, whitelist=("OTHER",)))
    use_cstore(drop, emulator)
    drop_study(drop)
    status = drop.state / "status.json"
    proc = start_daemon(drop)
    try:
        wait_until(
            lambda: status.exists() and "receiver refuses xnat-drop" in status.read_text(),
            "the receiver alarm in status.json",
            proc,
        )
        lab = drop.root / "STATUS.txt"
        wait_until(
            lambda: lab.exists() and "DICOM receiver refuses" in lab.read_text(),
            "the receiver alarm in STATUS.txt",
            proc,
        )
        assert "down since" not in lab.read_text()
        assert list(drop.work.rglob("S01_MR1")) and nothing_failed(drop)
        assert emulator.dicom_stores() == []
        emulator.set_dicom_receiver(
            DicomReceiver(whitelist_enabled=True, whitelist=("OTHER", "XNAT_DROP"))
        )
        wait_until(lambda: drop.done.joinpath(*REL).is_dir(), "delivery once allowed", proc)
    finally:
        code, stderr = stop_daemon(proc)
    assert code == 0, stderr
    assert "not on its whitelist" in stderr
    assert len(emulator.dicom_stores()) == 7


def test_a_called_ae_xnat_does_not_list_pauses_and_names_the_ones_it_does(
    drop: Drop, emulator: Emulator
) -> None:
    use_cstore(drop, emulator, more='called_ae = "NOPE"')
    drop_study(drop)
    result = run_daemon(drop, timeout=15)
    assert result.returncode == EX_TEMPFAIL, result.stderr
    assert "no DICOM receiver with the AE title NOPE" in result.stderr
    assert f"XNAT:{emulator.dicom_port}" in result.stderr
    assert list(drop.work.rglob("S01_MR1")) and nothing_failed(drop)


def test_a_receiver_routing_rule_that_sends_the_session_elsewhere_is_routing_failed(
    drop: Drop, emulator: Emulator
) -> None:
    emulator.add_project("S01")  # the receiver's rule takes the project from PatientID
    emulator.set_dicom_receiver(
        DicomReceiver(
            routing_expressions_enabled=True, project_routing_expression=r"(0010,0020):(.*)"
        )
    )
    use_cstore(drop, emulator)
    drop_study(drop)
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    assert "routing expressions of its own" in result.stderr  # warned before sending
    failed = drop.failed.joinpath(*REL)
    report = " ".join(failed.with_name(failed.name + ".report.txt").read_text().split())
    assert "routing-failed" in report
    assert f"XNAT took all 7 objects but no session appeared in {PROJECT}" in report
    assert "Unassigned prearchive" in report
    [elsewhere] = emulator.prearchive()
    assert (elsewhere.project, elsewhere.file_count) == ("S01", 7)


def test_a_public_receiver_address_is_refused_at_start(drop: Drop, emulator: Emulator) -> None:
    drop.write_config(
        emulator.url,
        xnat='transport = "cstore"',
        extra='[cstore]\nhost = "1.1.1.1"\n',  # a public address, no DNS needed
    )
    result = run_daemon(drop)
    assert result.returncode == EX_CONFIG, result.stderr
    assert "not a loopback or private address" in result.stderr
    assert "allow_remote_plain" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_says_the_receiver_answers(drop: Drop, emulator: Emulator) -> None:
    import subprocess
    import sys

    use_cstore(drop, emulator)
    drop.secret.chmod(0o600)
    result = subprocess.run(
        [sys.executable, "-m", "xnat_drop", "check-config", "--config", str(drop.config)],
        capture_output=True,
        text=True,
        env=daemon_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"XNAT at 127.0.0.1:{emulator.dicom_port} as XNAT_DROP; C-ECHO answered" in (
        result.stdout
    )


def comment_all(folder: Path, comments: str) -> None:
    """What a scanner that routes for XNAT writes: the line in each file's PatientComments."""
    for path in folder.rglob("*.dcm"):
        dataset = pydicom.dcmread(path)
        dataset.PatientComments = comments
        dataset.save_as(path, enforce_file_format=True)


def test_as_is_sends_files_their_own_headers_route_without_changing_a_byte(
    drop: Drop, emulator: Emulator
) -> None:
    use_cstore(drop, emulator, more='routing = "as-is"')
    folder = drop_study(drop)
    comment_all(folder, f"Project: {PROJECT} Subject: S01 Session: S01_MR1")
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    [session] = emulator.prearchive()
    assert (session.project, session.subject, session.folder, session.file_count) == (*REL, 7)
    for stored in Path(emulator.root).rglob("*.dcm"):  # the header XNAT got is the file's own
        assert pydicom.dcmread(stored).PatientComments == (
            f"Project: {PROJECT} Subject: S01 Session: S01_MR1"
        )
    done = drop.done.joinpath(*REL)
    receipt = " ".join(done.with_name(done.name + ".report.txt").read_text().split())
    assert 'each object unchanged (cstore.routing = "as-is")' in receipt


@pytest.mark.parametrize(
    ("project", "comments", "words"),
    [
        (PROJECT, "Project: OTHER Subject: S01 Session: S01_MR1", "do not name project P1"),
        ("AUTO", "Project: AUTO Subject: S01 Session: S01_MR1", 'do not say "AA: false"'),
    ],
)
def test_as_is_refuses_files_that_would_land_elsewhere_or_be_archived_unverified(
    drop: Drop, emulator: Emulator, project: str, comments: str, words: str
) -> None:
    emulator.add_project("AUTO", 4)
    use_cstore(drop, emulator, more='routing = "as-is"')
    rel = (project, "S01", "S01_MR1")
    comment_all(drop_study(drop, rel), comments)
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    assert emulator.dicom_stores() == [] and emulator.prearchive() == []
    failed = drop.failed.joinpath(*rel)
    report = " ".join(failed.with_name(failed.name + ".report.txt").read_text().split())
    assert "cstore-unrouted" in report and words in report
    assert "Project: OTHER" not in report  # a header's value never leaves the daemon
