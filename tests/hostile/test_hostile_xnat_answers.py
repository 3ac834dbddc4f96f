"""XNAT answers are checked for shape, and the daemon's own leftovers never block a retry.
On the real daemon, as its own user, against the stand-in.

Each test failed on the code before issue 11 (93eee20): a login page, a redirect or an empty
body sent every queued session to failed/ with advice to "fix the files"; and a session sent
back after a refused commit was refused as `session-exists` because of its own leftover.
"""

from __future__ import annotations

import pytest

from xnat_standin import Emulator, Fault
from xnat_standin.demo.samples import ORIGINAL, SeriesSpec

from conftest import PROJECT
from hostile_lab import Daemon, LabTree, cli, needs_root, no_traceback, run_once

pytestmark = needs_root

LOGIN_PAGE = "<html><head><title>Sign in</title></head><body><form>password</form></body></html>"
SESSIONS = [(PROJECT, "S01", "S01_MR1"), (PROJECT, "S02", "S02_MR1")]


@pytest.mark.parametrize(
    "fault",
    [
        Fault(method="GET", path=f"/data/projects/{PROJECT}", status=200, body=LOGIN_PAGE,
              content_type="text/html", times=0),
        Fault(method="POST", path="/data/services/import", status=302, body="",
              location="https://sso.example.org/login", times=0),
        Fault(method="GET", path=f"/data/projects/{PROJECT}/experiments", status=200, body="",
              content_type="application/json", times=0),
    ],
    ids=["html-login-page", "redirect-to-sso", "empty-json"],
)  # fmt: skip
def test_answers_that_are_not_data_pause_and_keep_every_session(
    lab: LabTree, emulator: Emulator, fault: Fault
) -> None:
    emulator.inject(fault)
    for relpath in SESSIONS:
        lab.lab_drop(relpath)
    with Daemon(lab) as daemon:
        daemon.wait_log("XNAT unavailable")
        daemon.until(lambda: "web pages" in (lab.state / "status.json").read_text()
                 or "unreachable" in (lab.state / "status.json").read_text(), "status")  # fmt: skip
        assert not lab.failed.exists() or not any(lab.failed.iterdir())
        emulator.clear_faults()  # the proxy is fixed: everything goes through by itself
        for relpath in SESSIONS:
            daemon.until(lambda r=relpath: lab.done.joinpath(*r).is_dir(), "delivered", 60)  # type: ignore[misc]
        code = daemon.stop()
    assert code == 0
    assert not lab.failed.exists() or not any(lab.failed.iterdir())
    no_traceback(daemon.log)


def test_a_retry_after_failed_attempts_is_not_blocked_by_our_own_leftover(
    lab: LabTree, emulator: Emulator
) -> None:
    lab.write_config(attempts=2)
    relpath = SESSIONS[0]
    # Every build answers 500 while XNAT itself is fine: after two attempts, delivery-failed.
    emulator.inject(Fault(method="POST", path="/data/prearchive/projects", status=500, times=0))
    lab.lab_drop(relpath, [SeriesSpec(1, "T1", ORIGINAL, images=2)])
    code, log = run_once(lab)
    assert code == 0, log
    failed = lab.failed.joinpath(*relpath)
    assert "[delivery-failed]" in failed.with_name("S01_MR1.report.txt").read_text()
    assert len(emulator.prearchive()) == 1  # our own upload, kept for the administrator
    emulator.clear_faults()
    # The data manager sends it back as the report says: it must go through now.
    result = cli(lab, "retry", str(failed))
    assert result.returncode == 0, result.stderr
    code, log = run_once(lab)
    assert code == 0, log
    assert lab.done.joinpath(*relpath).is_dir(), log
    assert "left in the prearchive by the earlier failed attempt" in log
    [session] = emulator.prearchive()
    assert session.file_count == 2
    no_traceback(log)
