"""Notifications end to end: the real daemon process against the stand-in, a real SMTP server
(aiosmtpd) and a real webhook receiver on loopback. Short settle, retry and outage times."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from xnat_drop.adapters.fs import statusfile
from xnat_drop.service.failpoints import ENV as FAILPOINT_ENV
from xnat_standin import Emulator, Fault
from xnat_standin.demo.samples import SeriesSpec, write_nifti

import conftest
from conftest import (
    PROJECT,
    USER,
    Drop,
    daemon_env,
    start_daemon,
    stop_daemon,
    wait_until,
)
from notify_helpers import (
    Mailbox,
    free_port,
    hook_receiver,
    make_ca,
    notify_table,
    private_file,
    smtp_server,
)

SCANS = [SeriesSpec(1, "localizer", images=2)]
ADMIN = "admin@lab.example.org"
HEADER_VALUES = ("^DEMO", "20261121")  # PatientName and StudyDate of the sessions written


def failing(drop: Drop, subject: str) -> tuple[str, ...]:
    """Drop a session that breaks the rules (a NIfTI file in it): it goes to failed/."""
    relpath = (PROJECT, subject, f"{subject}_MR1")
    write_nifti(conftest.drop_session(drop, relpath, SCANS) / "T1w.nii.gz")
    return relpath


def clean(drop: Drop, subject: str) -> tuple[str, ...]:
    relpath = (PROJECT, subject, f"{subject}_MR1")
    conftest.drop_session(drop, relpath, SCANS)
    return relpath


def configure(
    drop: Drop, emulator: Emulator, port: int, *, xnat: str = "", watch: str = "", **notify: Any
) -> None:
    keys: dict[str, Any] = {
        "email_to": [ADMIN],
        "email_from": "xnat-drop@lab.example.org",
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_security": "none",
        "outage_after_seconds": 3,
    }
    keys.update(notify)
    drop.write_config(emulator.url, extra=notify_table(**keys), xnat=xnat, watch=watch)


def status(drop: Drop) -> dict[str, Any]:
    return statusfile.read(drop.state) or {}


@contextmanager
def daemon(drop: Drop, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    """The daemon, running until the block ends (stopped with SIGTERM, which must work)."""
    proc = start_daemon(drop, env=env)
    try:
        wait_until(lambda: bool(status(drop).get("pid") == proc.pid), "the first status", proc)
        yield proc
    finally:
        if proc.poll() is None:
            code, stderr = stop_daemon(proc)
            assert code == 0, stderr


def settled(drop: Drop, proc: subprocess.Popen[str]) -> None:
    """Wait until nothing waits in the outbox (what was due is sent)."""
    wait_until(
        lambda: (status(drop).get("notifications") or {}).get("pending") == 0,
        "an empty outbox",
        proc,
    )


def bodies(box: Mailbox) -> str:
    return "\n".join(str(m["Subject"]) + "\n" + m.get_content() for m in box.received())


def test_one_mail_per_failed_session_and_a_restart_repeats_none(
    drop: Drop, emulator: Emulator
) -> None:
    with smtp_server() as box:
        configure(drop, emulator, box.port)
        with daemon(drop) as proc:
            first, second = failing(drop, "S02"), failing(drop, "S03")
            clean(drop, "S04")
            mails = box.wait_for(2)
            wait_until(drop.done.joinpath(PROJECT, "S04", "S04_MR1").is_dir, "the clean one", proc)
            settled(drop, proc)
        with daemon(drop) as proc:  # a restart: nothing is sent again
            settled(drop, proc)
            time.sleep(1.0)
        assert len(box.received()) == 2
    by_subject = {str(m["Subject"]): m for m in mails}
    for relpath in (first, second):
        folder = "/".join(relpath)
        mail = by_subject[f"[xnat-drop] NOT uploaded: {folder} (nifti)"]
        text = mail.get_content()
        assert f"incoming/{folder}" in text and "Rules:              nifti" in text
        assert f"failed/{folder}.report.txt" in text
        assert (drop.root / f"failed/{folder}.report.txt").is_file()
        assert mail["To"] == ADMIN and mail["Message-ID"]
    assert not any(value in bodies(box) for value in HEADER_VALUES)


def test_the_project_and_the_owner_of_the_folder_get_their_own_mail(
    drop: Drop, emulator: Emulator
) -> None:
    with smtp_server() as box:
        owner = f"{os.getuid()}=owner@lab.example.org"  # the uid that wrote the session folder
        projects = [f"{PROJECT}=p1@lab.example.org", "OTHER=other@lab.example.org"]
        configure(drop, emulator, box.port, projects=projects, owners=[owner])
        with daemon(drop) as proc:
            failing(drop, "S02")
            box.wait_for(3)
            settled(drop, proc)
        mails = box.received()
    assert sorted(str(m["To"]) for m in mails) == [
        ADMIN,
        "owner@lab.example.org",
        "p1@lab.example.org",
    ]
    assert len({str(m["Subject"]) for m in mails}) == 1
    assert len({str(m["Message-ID"]) for m in mails}) == 3


def test_turned_on_by_a_reload_the_history_is_not_mailed_and_the_daily_digest_comes(
    drop: Drop, emulator: Emulator
) -> None:
    with smtp_server() as box:
        with daemon(drop) as proc:  # notifications off
            failing(drop, "S02")
            wait_until(drop.failed.joinpath(PROJECT, "S02", "S02_MR1").is_dir, "S02 filed", proc)
            configure(drop, emulator, box.port, digest_time="00:00")  # due at once, daily
            proc.send_signal(signal.SIGHUP)
            [digest] = box.wait_for(1, what="the daily digest")
            failing(drop, "S03")
            box.wait_for(2)
            settled(drop, proc)
        with daemon(drop) as proc:  # a restart on the same day: no second digest
            settled(drop, proc)
            time.sleep(1)
        subjects = box.subjects()
    assert len(subjects) == 2, subjects
    assert digest["Subject"].startswith("[xnat-drop] Daily digest ")
    assert f"{PROJECT}/S02/S02_MR1  (nifti)" in digest.get_content()  # the last day's tally
    assert subjects[1] == f"[xnat-drop] NOT uploaded: {PROJECT}/S03/S03_MR1 (nifti)"


def test_a_short_outage_sends_nothing_a_long_one_its_start_and_end_once(
    drop: Drop, emulator: Emulator
) -> None:
    def xnat() -> str:
        return str((status(drop).get("xnat") or {}).get("state"))

    with smtp_server() as box:
        configure(drop, emulator, box.port, xnat="check_interval_seconds = 1")
        with daemon(drop) as proc:
            wait_until(lambda: xnat() == "ok", "XNAT ok", proc)
            emulator.inject(Fault(path="/", status=503, times=0))  # a flap: about a second
            wait_until(lambda: xnat() == "unreachable", "the flap", proc)
            emulator.clear_faults()
            wait_until(lambda: xnat() == "ok", "XNAT back", proc)
            time.sleep(4)  # longer than outage_after_seconds: still nothing
            assert box.received() == []

            emulator.inject(Fault(path="/", status=503, times=0))
            box.wait_for(1, what="the outage's start")
            emulator.clear_faults()
            box.wait_for(2, what="the outage's end")
            time.sleep(2)
        started, ended = box.subjects()
    assert started.startswith("[xnat-drop] XNAT unreachable since ")
    assert ended.startswith("[xnat-drop] XNAT answers again (down ")
    assert "nothing is failed" in box.received()[0].get_content()


def test_refused_credentials_are_told_once_across_a_restart(drop: Drop, emulator: Emulator) -> None:
    drop.secret.write_text(f"{USER}:wrong-password\n")
    with smtp_server() as box:
        configure(drop, emulator, box.port)
        with daemon(drop) as proc:
            [mail] = box.wait_for(1)
            settled(drop, proc)
        with daemon(drop) as proc:
            wait_until(
                lambda: (status(drop).get("xnat") or {}).get("state") == "credentials refused",
                "the refusal again",
                proc,
            )
            settled(drop, proc)
            time.sleep(1)
        assert len(box.received()) == 1
    assert mail["Subject"] == "[xnat-drop] XNAT refuses the credentials: uploads paused"
    assert "wrong-password" not in mail.get_content()


def test_a_folder_never_ready_after_max_settle_is_told_once(drop: Drop, emulator: Emulator) -> None:
    folder = drop.incoming / PROJECT / "S05" / "S05_MR1"
    folder.mkdir(parents=True)
    (folder / "IM0001.dcm.part").write_bytes(b"half a copy")  # a partial name never settles
    with smtp_server() as box:
        owner = f"{os.getuid()}=owner@lab.example.org"  # who wrote the folder hears of it too
        configure(drop, emulator, box.port, watch="max_settle_seconds = 1", owners=[owner])
        with daemon(drop) as proc:
            box.wait_for(2)
            settled(drop, proc)
            time.sleep(1.5)
        mails = box.received()
    assert sorted(str(m["To"]) for m in mails) == [ADMIN, "owner@lab.example.org"]
    for mail in mails:
        assert mail["Subject"] == f"[xnat-drop] Not taken: incoming/{PROJECT}/S05/S05_MR1"
        assert "NOT READY" in mail.get_content()


def test_webhooks_json_and_slack(drop: Drop, emulator: Emulator, tmp_path: Path) -> None:
    with hook_receiver() as hook:
        url_file = private_file(tmp_path / "webhook-url", hook.url + "\n")
        for form, subject in (("json", "S02"), ("slack", "S03")):
            drop.write_config(
                emulator.url,
                extra=notify_table(webhook=form, webhook_url_file=str(url_file)),
            )
            with daemon(drop) as proc:
                failing(drop, subject)
                hook.wait_for(1 if form == "json" else 2)
                settled(drop, proc)
        posts = hook.received()
        assert len(posts) == 2
        data, slack = posts[0].body, posts[1].body
        assert data["event"] == "failed" and data["session"] == f"{PROJECT}/S02/S02_MR1"
        assert (
            data["rules"] == "nifti"
            and data["report"] == f"failed/{PROJECT}/S02/S02_MR1.report.txt"
        )
        assert list(slack) == ["text"] and f"{PROJECT}/S03/S03_MR1" in slack["text"]
        assert posts[0].headers["Idempotency-Key"] != posts[1].headers["Idempotency-Key"]
        # The URL is a secret: status.json shows nothing of it.
        assert "s3cr3t" not in json.dumps(status(drop))


def test_starttls_with_a_login_from_the_credentials_directory(
    drop: Drop, emulator: Emulator, tmp_path: Path
) -> None:
    ca = make_ca(tmp_path / "ca")
    creds = tmp_path / "credentials"
    private_file(creds / "smtp-password", "p4ss-w0rd!\n")
    env = daemon_env(CREDENTIALS_DIRECTORY=str(creds))
    with smtp_server(starttls=ca.server_context(), login=True) as box:
        configure(
            drop,
            emulator,
            box.port,
            smtp_security="starttls",
            smtp_ca_bundle=str(ca.ca),
            smtp_user="mailer",
        )
        checked = _cli(drop, "check-config", "--offline", env=env)
        assert checked.returncode == 0, checked.stderr
        assert f"e-mail via 127.0.0.1:{box.port} (starttls) as 'mailer'" in checked.stdout
        assert str(creds / "smtp-password") in checked.stdout
        proc = start_daemon(drop, env=env)
        try:
            failing(drop, "S02")
            [mail] = box.wait_for(1)
        finally:
            code, stderr = stop_daemon(proc)
        assert code == 0, stderr
        assert box.logins == [("mailer", "p4ss-w0rd!")]
    assert "NOT uploaded" in str(mail["Subject"])
    assert "p4ss-w0rd!" not in stderr + checked.stdout + checked.stderr
    assert "notification sent" in stderr


def test_a_channel_without_its_secret_stops_the_start_with_exit_78(
    drop: Drop, emulator: Emulator
) -> None:
    configure(drop, emulator, free_port(), smtp_user="mailer", webhook="slack")
    started = _cli(drop, "run", "--once")
    assert started.returncode == 78, started.stderr
    assert "notify.smtp_password_file" in started.stderr
    assert "notify.webhook_url_file" in started.stderr
    checked = _cli(drop, "check-config", "--offline")
    assert checked.returncode == 78 and "notify.smtp_password_file" in checked.stderr


def test_kill_9_with_a_letter_waiting_sends_it_once_after_the_restart(
    drop: Drop, emulator: Emulator
) -> None:
    port = free_port()  # nothing listens yet: the mail waits in the outbox
    configure(drop, emulator, port)
    proc = start_daemon(drop)
    try:
        failing(drop, "S02")
        wait_until(
            lambda: (status(drop).get("notifications") or {}).get("pending") == 1,
            "a letter waiting",
            proc,
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    with smtp_server(port) as box:
        with daemon(drop) as proc:
            box.wait_for(1)
            settled(drop, proc)
        with daemon(drop) as proc:
            settled(drop, proc)
            time.sleep(1)
        assert len(box.received()) == 1


def test_kill_9_between_acceptance_and_the_mark_repeats_it_with_the_same_message_id(
    drop: Drop, emulator: Emulator
) -> None:
    """The one window the outbox leaves open, as the README says: the repeat is recognisable."""
    with smtp_server() as box:
        configure(drop, emulator, box.port)
        proc = start_daemon(drop, env=daemon_env(**{FAILPOINT_ENV: "notify-accepted"}))
        failing(drop, "S02")
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, stderr
        with daemon(drop) as proc:
            box.wait_for(2)
            settled(drop, proc)
        first, again = box.received()
    assert first["Message-ID"] == again["Message-ID"] and first["Subject"] == again["Subject"]


def test_a_storm_becomes_a_digest(drop: Drop, emulator: Emulator) -> None:
    subjects = [f"S{i:02}" for i in range(15)]
    with smtp_server() as box:
        configure(drop, emulator, box.port, storm_limit=5, storm_window_seconds=8)
        with daemon(drop) as proc:
            for subject in subjects:
                failing(drop, subject)

            def told() -> list[str]:
                text = bodies(box)
                return [s for s in subjects if f"{PROJECT}/{s}/{s}_MR1" in text]

            wait_until(lambda: len(told()) == 15, "every session told", proc, timeout=60)
            settled(drop, proc)
        mails = box.received()
    digests = [m for m in mails if "(digest)" in str(m["Subject"])]
    singles = [m for m in mails if m not in digests]
    assert digests and len(singles) <= 5, [str(m["Subject"]) for m in mails]
    for subject in subjects:  # each session exactly once, alone or in a digest
        folder = f"{PROJECT}/{subject}/{subject}_MR1"
        assert (
            sum(f"NOT uploaded: {folder} " in m.get_content() + str(m["Subject"]) for m in mails)
            == 1
        )


def test_a_failing_channel_never_delays_delivery_and_status_says_so(
    drop: Drop, emulator: Emulator
) -> None:
    configure(drop, emulator, free_port())  # no mail server at all
    with daemon(drop) as proc:
        failing(drop, "S02")
        clean(drop, "S03")
        wait_until(drop.done.joinpath(PROJECT, "S03", "S03_MR1").is_dir, "the delivery", proc)
        wait_until(drop.failed.joinpath(PROJECT, "S02", "S02_MR1").is_dir, "the failure", proc)
        wait_until(
            lambda: (status(drop).get("notifications") or {}).get("state") == "failing",
            "the channel failing",
            proc,
        )
        shown = _cli(drop, "status")
    assert shown.returncode == 0, shown.stderr
    assert "notifications failing since " in shown.stdout
    assert "cannot reach 127.0.0.1" in shown.stdout


def test_notifications_off_by_default_write_nothing(drop: Drop, emulator: Emulator) -> None:
    with daemon(drop) as proc:
        failing(drop, "S02")
        wait_until(drop.failed.joinpath(PROJECT, "S02", "S02_MR1").is_dir, "the failure", proc)
    assert status(drop).get("notifications") is None


def _cli(
    drop: Drop, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "xnat_drop", args[0], "--config", str(drop.config), *args[1:]]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=60, env=env or daemon_env(), check=False
    )
