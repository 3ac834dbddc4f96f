"""Delivery to XNAT, verified: the real daemon process against the stand-in over loopback HTTP.

Broken-off uploads, existing sessions, refusals, counts that do not match, archive commits,
repeated server errors and refused credentials, each from the lab's point of view: where the
folder ends up, what XNAT holds, and what the report says.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xnat_standin import Emulator, Fault
from xnat_standin.demo.samples import SeriesSpec, write_session

from conftest import PASSWORD, PROJECT, USER, Drop, run_daemon, start_daemon

REL = (PROJECT, "S01", "S01_MR1")
STUDY = "1.2.826.0.1.3680043.8.498.1001"
SCANS = [SeriesSpec(1, "localizer", images=3), SeriesSpec(2, "T1_MPRAGE", images=4)]


def drop_study(
    drop: Drop, relpath: tuple[str, ...] = REL, scans: list[SeriesSpec] = SCANS, study: str = STUDY
) -> Path:
    staging = drop.root.parent / "staging" / "/".join(relpath)
    write_session(staging, scans, patient_id="S01", study_uid=study)
    target = drop.incoming.joinpath(*relpath)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(staging, target)
    return target


def report_of(root: Path, relpath: tuple[str, ...] = REL) -> tuple[str, dict[str, object]]:
    folder = root.joinpath(*relpath)
    text = folder.with_name(folder.name + ".report.txt").read_text()
    return text, json.loads(folder.with_name(folder.name + ".report.json").read_text())


def rules_in(data: dict[str, object]) -> list[str]:
    return [str(v["rule"]) for v in data["violations"]]  # type: ignore[attr-defined,index]


def requests_to(emulator: Emulator, method: str, prefix: str) -> list[int | None]:
    return [
        r.status for r in emulator.requests() if r.method == method and r.path.startswith(prefix)
    ]


def test_a_connection_dropped_mid_upload_ends_with_one_complete_session(
    drop: Drop, emulator: Emulator
) -> None:
    folder = drop_study(drop)
    half = sum(p.stat().st_size for p in folder.rglob("*.dcm")) // 2
    emulator.inject(Fault(method="POST", path="/data/services/import", drop_after_bytes=half))
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    assert requests_to(emulator, "POST", "/data/services/import") == [
        None,
        200,
    ]  # dropped, then whole
    assert "deleting the partial prearchive session" in result.stderr
    assert len(requests_to(emulator, "DELETE", "/data/prearchive/")) == 1
    [session] = emulator.prearchive()  # exactly one, complete, built for review
    assert (session.file_count, session.status, session.tag) == (7, "READY", STUDY)
    text, data = report_of(drop.done)
    assert data["xnat"]["verified"] == [  # type: ignore[index]
        {
            "series": "the series of 3 files under 01_localizer/ (first: 01_localizer/IM0001.dcm)",
            "sent": 3,
            "held": 3,
        },
        {
            "series": "the series of 4 files under 02_T1_MPRAGE/ (first: 02_T1_MPRAGE/IM0001.dcm)",
            "sent": 4,
            "held": 4,
        },
    ]
    assert "Verified in the prearchive" in text


def test_archive_destination_commits_and_verifies_in_the_archive(
    drop: Drop, emulator: Emulator
) -> None:
    drop.write_config(emulator.url, xnat='destination = "archive"')
    drop_study(drop)
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    [archived] = emulator.archive()
    assert (archived.project, archived.subject, archived.label, archived.file_count) == (
        PROJECT,
        "S01",
        "S01_MR1",
        7,
    )
    assert emulator.prearchive() == []
    text, data = report_of(drop.done)
    assert data["xnat"]["uris"] == [archived.uri]  # type: ignore[index]
    assert data["xnat"]["destination"] == "archive"  # type: ignore[index]
    assert "Verified in the archive: XNAT holds the 7 files of 2 series as sent" in text
    commits = [r for r in emulator.requests() if r.query.get("action") == "commit"]
    assert [(c.status, c.query.get("AA")) for c in commits] == [(301, "true")]


def first_delivery(drop: Drop, emulator: Emulator) -> None:
    """Put the study into XNAT's archive as a lab member would have, earlier."""
    drop.write_config(emulator.url, xnat='destination = "archive"')
    drop_study(drop)
    assert run_daemon(drop).returncode == 0
    assert [a.file_count for a in emulator.archive()] == [7]


def test_an_existing_session_is_never_merged_into_under_reject(
    drop: Drop, emulator: Emulator
) -> None:
    first_delivery(drop, emulator)
    emulator.clear_requests()
    again = (PROJECT, "S01", "S01_MR1")
    drop_study(drop, again, [SeriesSpec(3, "T2", images=2)])
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    text, data = report_of(drop.failed, again)
    # New instances of the study just delivered under the same labels: the rest of a copy
    # (issue 13), told as such, with the append route and no advice to relabel.
    assert rules_in(data) == ["late-files"]
    flat = " ".join(text.split())
    assert "arrived" in flat and "after the session was delivered" in flat
    assert 'xnat.on_existing = "append"' in flat
    assert "another label" not in flat and "relabel" not in flat
    assert requests_to(emulator, "POST", "/data/services/import") == []  # nothing sent
    assert [a.file_count for a in emulator.archive()] == [7]  # unchanged


def test_the_same_study_under_another_label_is_found_by_its_uid(
    drop: Drop, emulator: Emulator
) -> None:
    first_delivery(drop, emulator)
    relabelled = (PROJECT, "S01", "S01_MR1_again")
    drop_study(drop, relabelled)
    assert run_daemon(drop).returncode == 0
    _, data = report_of(drop.failed, relabelled)
    assert rules_in(data) == ["session-exists"]


def test_append_adds_to_the_existing_session(drop: Drop, emulator: Emulator) -> None:
    first_delivery(drop, emulator)
    drop.write_config(emulator.url, xnat='destination = "archive"\non_existing = "append"')
    drop_study(drop, REL, [SeriesSpec(3, "T2", images=2)])
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    [archived] = emulator.archive()
    assert {scan: len(files) for scan, files in archived.scans.items()} == {"1": 3, "2": 4, "3": 2}
    names = sorted(p.name for p in drop.done.joinpath(PROJECT, "S01").iterdir() if p.is_dir())
    assert names == ["S01_MR1", "S01_MR1__2"]


def test_replace_lets_the_new_files_win(drop: Drop, emulator: Emulator) -> None:
    first_delivery(drop, emulator)
    drop.write_config(emulator.url, xnat='destination = "archive"\non_existing = "replace"')
    drop_study(drop, REL, [SeriesSpec(2, "T1_MPRAGE", images=4)])  # re-export of series 2
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    commits = [r for r in emulator.requests() if r.query.get("action") == "commit"]
    assert commits[-1].query.get("overwrite") == "delete"
    assert len(emulator.archive()) == 1


def test_replace_gives_way_to_a_new_copy_in_the_prearchive(drop: Drop, emulator: Emulator) -> None:
    drop_study(drop)
    assert run_daemon(drop).returncode == 0  # READY in the prearchive, not archived
    drop.write_config(emulator.url, xnat='on_existing = "replace"')
    drop_study(drop, REL, SCANS[:1])
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    [session] = emulator.prearchive()
    assert session.file_count == 3  # only the new copy's files
    assert "replacing prearchive session" in result.stderr


def test_xnat_refusing_the_archive_is_a_failure_not_an_outage(
    drop: Drop, emulator: Emulator
) -> None:
    first_delivery(drop, emulator)
    # Same label, other subject: XNAT's commit refuses to move the session (500 FAILED: ...).
    drop.write_config(emulator.url, xnat='destination = "archive"\non_existing = "append"')
    other = (PROJECT, "S02", "S01_MR1")
    drop_study(drop, other, [SeriesSpec(5, "T2", images=1)])
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    text, data = report_of(drop.failed, other)
    assert rules_in(data) == ["xnat-rejected"]
    assert "XNAT refused to archive: FAILED: Unable to archive" in text
    assert "XNAT unavailable" not in result.stderr


def test_counts_that_do_not_match_go_to_failed_with_the_numbers(
    drop: Drop, emulator: Emulator
) -> None:
    drop_study(drop)
    # XNAT lists the scans truthfully, then says scan 1 holds 1 file instead of 3.
    lying = '{"ResultSet": {"Result": [{"label": "DICOM", "file_count": "1", "file_size": "10"}]}}'
    emulator.inject(Fault(method="GET", path="/data/prearchive/projects/P1/", times=1))
    emulator.inject(
        Fault(method="GET", path="/data/prearchive/projects/P1/", status=200, body=lying)
    )
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    text, data = report_of(drop.failed)
    assert rules_in(data) == ["count-mismatch"]
    assert "sent 7 files in 2 series" in text and "has 1 of 3 files" in " ".join(text.split())
    assert emulator.prearchive() == []  # our incomplete session was removed


def test_repeated_server_errors_spend_attempts_then_fail_with_the_history(
    drop: Drop, emulator: Emulator
) -> None:
    drop.write_config(emulator.url, retry=(0.1, 0.2, 3))
    drop_study(drop)
    emulator.inject(Fault(method="POST", path="/data/services/import", status=500, times=0))
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    assert requests_to(emulator, "POST", "/data/services/import") == [500, 500, 500]
    text, data = report_of(drop.failed)
    assert rules_in(data) == ["delivery-failed"]
    flat = " ".join(text.split())
    assert "tried 3 times" in flat and flat.count("XNAT answered with an error") == 3
    assert "XNAT unavailable" not in result.stderr  # XNAT was up: its probes answered


def test_a_500_while_xnat_goes_down_spends_no_attempt(drop: Drop, emulator: Emulator) -> None:
    drop.write_config(emulator.url, retry=(0.1, 0.2, 1))  # one spent attempt would fail it
    drop_study(drop)
    emulator.inject(Fault(method="POST", path="/data/services/import", status=500))
    emulator.inject(Fault(method="GET", path="/data/JSESSION"))  # the first login goes through
    emulator.inject(Fault(method="GET", path="/data/JSESSION", status=503, times=2))  # probes
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    assert drop.done.joinpath(*REL).is_dir()
    assert requests_to(emulator, "POST", "/data/services/import") == [500, 200]
    assert "XNAT unavailable" in result.stderr and "attempt 1" not in result.stderr


def test_an_alias_token_works_like_a_password(drop: Drop, emulator: Emulator) -> None:
    alias, secret = emulator.issue_token(USER)
    drop.secret.write_text(f"{alias}:{secret}\n")
    drop_study(drop)
    assert run_daemon(drop).returncode == 0
    assert drop.done.joinpath(*REL).is_dir()


def test_netrc_is_a_credential_source_and_must_be_private(
    drop: Drop, emulator: Emulator, tmp_path: Path
) -> None:
    text = drop.config.read_text().replace(f'secret_file = "{drop.secret}"\n', "")
    drop.config.write_text(text)
    home = tmp_path / "home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    netrc.chmod(0o644)
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"} | {
        "HOME": str(home)
    }
    check = [sys.executable, "-m", "xnat_drop", "check-config", "--config", str(drop.config)]
    loose = subprocess.run(check, capture_output=True, text=True, env=env, check=False)
    assert loose.returncode == 78 and ".netrc is readable by group or others" in loose.stderr
    netrc.chmod(0o600)
    ok = subprocess.run(check, capture_output=True, text=True, env=env, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "(machine 127.0.0.1)" in ok.stdout and PASSWORD not in ok.stdout


def test_wrong_credentials_pause_with_bounded_attempts_and_status_says_why(
    drop: Drop, emulator: Emulator
) -> None:
    drop.secret.write_text(f"{USER}:not-the-password\n")
    folder = drop_study(drop)
    files = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    proc = start_daemon(drop)
    try:
        deadline = time.monotonic() + 20
        while not any(r.status == 401 for r in emulator.requests()):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        time.sleep(3)  # many loop turns: still exactly one login attempt
        status = subprocess.run(
            [
                sys.executable,
                "-m",
                "xnat_drop",
                "status",
                "--config",
                str(drop.config),
                "--json",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
    assert len([r for r in emulator.requests() if r.status == 401]) == 1
    data = json.loads(status.stdout)
    assert data["running"] is True
    assert data["snapshot"]["xnat"]["state"] == "credentials refused"
    assert "401" in data["snapshot"]["xnat"]["detail"]
    [job] = data["snapshot"]["work"]
    assert job["session"] == "/".join(REL) and "refused the credentials" in job["state"]
    assert "not-the-password" not in status.stdout
    [waiting] = [p for claim in drop.work.glob("[!.]*") for p in claim.iterdir() if p.is_dir()]
    assert sorted(p.relative_to(waiting) for p in waiting.rglob("*") if p.is_file()) == files
    assert not any(drop.failed.iterdir())


@pytest.mark.parametrize("outcome", ["done", "failed"])
def test_status_lists_the_last_outcomes_after_the_daemon_stopped(
    drop: Drop, emulator: Emulator, outcome: str
) -> None:
    folder = drop_study(drop)
    if outcome == "failed":
        (folder / "notes.txt").write_text("not dicom\n")
    assert run_daemon(drop).returncode == 0
    status = subprocess.run(
        [sys.executable, "-m", "xnat_drop", "status", "--config", str(drop.config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert status.returncode == 3  # not running
    assert "xnat-drop is NOT running" in status.stdout
    section = "Last delivered: 1" if outcome == "done" else "Last failed: 1"
    assert section in status.stdout and "P1/S01/S01_MR1" in status.stdout
