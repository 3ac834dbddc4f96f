"""Issue 13, points 5 and 6: `check-config` sees what `run` sees, and XNAT is asked at start and
periodically. The real `xnat-drop` processes, as the service user (setpriv), against the
stand-in; every mistake ends in exit 78 (or the documented code) and one paragraph, never a
traceback."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from xnat_standin import Emulator, Fault

from conftest import daemon_env
from emulator_helpers import PASSWORD, USER
from hostile_lab import (
    LAB_GID,
    SERVICE_GID,
    SERVICE_UID,
    Daemon,
    LabTree,
    as_user,
    cli,
    needs_root,
    no_traceback,
)

pytestmark = needs_root


def as_service(
    lab: LabTree, *argv: str, groups: tuple[int, ...] = (LAB_GID,), timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`xnat-drop ARGV --config ...` as the service user, with these supplementary groups."""
    cmd = [*as_user(SERVICE_UID, SERVICE_GID, groups), sys.executable, "-m", "xnat_drop"]
    cmd += [*argv, "--config", str(lab.config)]
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=daemon_env() | {"HOME": "/nonexistent"},
        umask=0o007,
        cwd="/",
        check=False,
    )


@contextlib.contextmanager
def mounted(*argv: str, target: Path) -> Iterator[None]:
    """`mount ARGV TARGET` for the test's length, or a skip saying why it cannot be done."""
    done = subprocess.run(
        ["mount", *argv, str(target)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({done.stderr.strip()})")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


@dataclass(frozen=True)
class Mistake:
    """A configuration or permission mistake, what check-config says, and whether `run` too."""

    name: str
    make: Callable[[LabTree, Emulator, contextlib.ExitStack], None]
    says: str  # a regex the message must match (it names the path or the user)
    code: int = 78
    run_too: bool = True  # `run` refuses it the same way (XNAT's answers only pause `run`)
    groups: tuple[int, ...] = (LAB_GID,)


def _done_elsewhere(lab: LabTree, _emu: Emulator, stack: contextlib.ExitStack) -> None:
    lab.done.mkdir()
    os.chown(lab.done, SERVICE_UID, LAB_GID)
    options = f"mode=2770,uid={SERVICE_UID},gid={LAB_GID}"
    stack.enter_context(mounted("-t", "tmpfs", "-o", options, "tmpfs", target=lab.done))


def _read_only_tree(lab: LabTree, _emu: Emulator, stack: contextlib.ExitStack) -> None:
    stack.enter_context(mounted("--bind", str(lab.root), target=lab.root))
    subprocess.run(["mount", "-o", "remount,bind,ro", str(lab.root)], check=True)


def _state_not_writable(lab: LabTree, _emu: Emulator, _stack: contextlib.ExitStack) -> None:
    os.chown(lab.state, 0, 0)
    lab.state.chmod(0o755)


def _state_cannot_be_made(lab: LabTree, _emu: Emulator, _stack: contextlib.ExitStack) -> None:
    lab.state.rmdir()  # its parent is root's 0755: the service cannot make it


def _tree_not_enterable(lab: LabTree, _emu: Emulator, _stack: contextlib.ExitStack) -> None:
    os.chown(lab.root, 0, LAB_GID)  # entered through the lab group, which the unit forgot
    lab.root.chmod(0o2750)


def _secret(text: str) -> Callable[[LabTree, Emulator, contextlib.ExitStack], None]:
    def make(lab: LabTree, _emu: Emulator, _stack: contextlib.ExitStack) -> None:
        lab.secret.write_text(text)

    return make


def _secret_folder(lab: LabTree, _emu: Emulator, _stack: contextlib.ExitStack) -> None:
    lab.secret.unlink()
    lab.secret.mkdir(mode=0o700)
    os.chown(lab.secret, SERVICE_UID, SERVICE_GID)


def _secret_root_only(lab: LabTree, _emu: Emulator, _stack: contextlib.ExitStack) -> None:
    os.chown(lab.secret, 0, 0)  # as installed: 0600 root, handed over by LoadCredential=


def _web_pages(_lab: LabTree, emu: Emulator, _stack: contextlib.ExitStack) -> None:
    page = "<html><body><h1>Sign in</h1></body></html>"
    emu.inject(Fault("GET", "/data/JSESSION", 200, page, times=0, content_type="text/html"))


def _unreachable(lab: LabTree, _emu: Emulator, _stack: contextlib.ExitStack) -> None:
    lab.url = "http://127.0.0.1:9"  # discard: nothing listens
    lab.write_config()


MISTAKES = [
    Mistake("done-on-another-filesystem", _done_elsewhere, r"one filesystem.*done \S*/done"),
    Mistake("read-only-tree", _read_only_tree, r"\S*/drop, \S*/drop/incoming are on a read-only"),
    Mistake("state-dir-not-writable", _state_not_writable, r"cannot write to \S*/state"),
    Mistake("state-dir-cannot-be-made", _state_cannot_be_made, r"\S*/state does not exist"),
    Mistake(
        "service-user-cannot-enter-the-tree",
        _tree_not_enterable,
        r"cannot enter \S*/drop .*SupplementaryGroups=",
        groups=(),
    ),
    Mistake("secret-is-a-folder", _secret_folder, r"\S*/secret is a folder"),
    Mistake("secret-unreadable", _secret_root_only, r"cannot open \S*/secret.*LoadCredential="),
    Mistake("secret-empty", _secret(""), r"\S*/secret is empty"),
    Mistake("secret-badly-formatted", _secret(f"{USER}\n"), r"\S*/secret must hold one line"),
    Mistake(
        "wrong-password",
        _secret(f"{USER}:not-{PASSWORD}\n"),
        rf"XNAT refused user '{USER}' \(401\)",
        run_too=False,
    ),
    Mistake("xnat-answers-web-pages", _web_pages, r"web page.*single sign-on", run_too=False),
    Mistake("xnat-unreachable", _unreachable, r"XNAT unreachable at http://127\.0\.0\.1:9", 0),
]


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.name for m in MISTAKES])
def test_every_mistake_is_one_paragraph_and_exit_78_never_a_traceback(
    lab: LabTree, emulator: Emulator, mistake: Mistake
) -> None:
    assert as_service(lab, "check-config").returncode == 0  # the tree as the README sets it up
    with contextlib.ExitStack() as stack:
        mistake.make(lab, emulator, stack)
        checked = as_service(lab, "check-config", groups=mistake.groups)
        assert not lab.work.exists()  # check-config created nothing to find out
        no_traceback(checked.stderr + checked.stdout)
        assert checked.returncode == mistake.code, checked.stderr + checked.stdout
        assert re.search(mistake.says, checked.stderr), checked.stderr
        assert PASSWORD not in checked.stderr + checked.stdout
        if mistake.code == 78:
            assert checked.stderr.count("\n  - ") == 1, checked.stderr  # one problem, said once
        if mistake.run_too:
            ran = as_service(lab, "run", "--once", "--timeout", "20", groups=mistake.groups)
            no_traceback(ran.stderr)
            expected = 0 if mistake.code == 0 else 78
            assert ran.returncode == expected, ran.stderr
            if expected == 78:
                assert re.search(mistake.says, ran.stderr), ran.stderr


def test_check_config_offline_does_not_ask_xnat(lab: LabTree, emulator: Emulator) -> None:
    lab.secret.write_text(f"{USER}:wrong\n")
    emulator.clear_requests()
    offline = as_service(lab, "check-config", "--offline")
    assert offline.returncode == 0, offline.stderr
    assert "not contacted (--offline)" in offline.stdout
    assert emulator.requests() == []
    online = as_service(lab, "check-config")
    assert online.returncode == 78 and "refused user" in online.stderr


def test_check_config_as_root_and_with_a_systemd_credential(
    lab: LabTree, emulator: Emulator
) -> None:
    """README step 5: as root (the secret 0600 root), or as the service user with the secret
    handed over in $CREDENTIALS_DIRECTORY, as `systemd-run -p LoadCredential=` does."""
    os.chown(lab.secret, 0, 0)
    as_root = cli(lab, "check-config")
    assert as_root.returncode == 0, as_root.stderr
    assert "logged in; XNAT 1.8.10" in as_root.stdout and "checked as root" in as_root.stdout
    creds = lab.base / "credentials"
    creds.mkdir(mode=0o500)
    (creds / "xnat-secret").write_text(f"{USER}:{PASSWORD}\n")
    (creds / "xnat-secret").chmod(0o440)
    for path in (creds, creds / "xnat-secret"):
        os.chown(path, SERVICE_UID, SERVICE_GID)
    cmd = [*as_user(SERVICE_UID, SERVICE_GID, (LAB_GID,)), sys.executable, "-m", "xnat_drop"]
    cmd += ["check-config", "--config", str(lab.config)]
    env = daemon_env(CREDENTIALS_DIRECTORY=str(creds)) | {"HOME": "/nonexistent"}
    service = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, cwd="/")
    assert service.returncode == 0, service.stderr
    assert f"secret from {creds}/xnat-secret" in service.stdout
    assert "logged in" in service.stdout and "checked as root" not in service.stdout


# -- run: XNAT at start and periodically ------------------------------------------------------


def status(lab: LabTree) -> dict[str, object]:
    """The daemon's XNAT block as `xnat-drop status --json` shows it."""
    shown = cli(lab, "status", "--json")
    snapshot = json.loads(shown.stdout).get("snapshot") or {}
    xnat = snapshot.get("xnat") or {}
    assert isinstance(xnat, dict)
    return xnat


def jsession_logins(emulator: Emulator) -> int:
    return sum(1 for r in emulator.requests() if r.path == "/data/JSESSION")


def test_not_yet_contacted_until_xnat_answers(lab: LabTree, emulator: Emulator) -> None:
    emulator.inject(Fault("GET", "/data/JSESSION", delay=4.0))  # XNAT slow to answer at first
    with Daemon(lab) as daemon:
        daemon.until(lambda: bool(status(lab)), "the first status snapshot")
        assert status(lab)["state"] == "not yet contacted"
        assert "XNAT: not yet contacted" in cli(lab, "status").stdout.replace(f" at {lab.url}", "")
        daemon.until(lambda: status(lab)["state"] == "ok", "XNAT's first answer")
        daemon.wait_log(r"XNAT 1\.8\.10 answers; logged in as 'alice'")
        assert status(lab)["next_check"]
        assert daemon.stop() == 0
    no_traceback(daemon.log)


def test_the_periodic_check_notices_a_password_changed_in_xnat(
    lab: LabTree, emulator: Emulator
) -> None:
    lab.write_config(xnat="check_interval_seconds = 1")
    with Daemon(lab) as daemon:
        daemon.until(lambda: status(lab).get("state") == "ok", "XNAT's first answer")
        emulator.add_user(USER, "changed-in-xnat")  # the secret file still has the old one
        daemon.wait_log(r"UPLOADS PAUSED: XNAT refused user 'alice' \(401\)")
        daemon.until(lambda: status(lab).get("state") == "credentials refused", "the pause")
        session = lab.lab_drop(("P1", "S01", "S01_MR1"))
        time.sleep(3)  # settled, claimed and judged; it waits, nothing is failed
        assert not (lab.failed / "P1").exists() and not session.exists()
        refused = sum(1 for r in emulator.requests() if r.status == 401)
        time.sleep(2)  # no login while paused: an account locks after 20 refused ones
        assert sum(1 for r in emulator.requests() if r.status == 401) == refused
        lab.secret.write_text(f"{USER}:changed-in-xnat\n")  # the fix: at once, no restart
        daemon.wait_log(r"the XNAT secret changed; checking it now")
        daemon.wait_log(r"logged in to XNAT again; uploads resume")
        daemon.until((lab.done / "P1" / "S01" / "S01_MR1").is_dir, "the delivery")
        assert daemon.stop() == 0
    assert "changed-in-xnat" not in daemon.log
    no_traceback(daemon.log)


def test_an_alias_token_near_its_expiry_is_warned_of(lab: LabTree, emulator: Emulator) -> None:
    emulator.auth.token_lifetime = 5 * 3600.0  # issued five hours before it expires
    alias, secret = emulator.issue_token(USER)
    lab.secret.write_text(f"{alias}:{secret}\n")
    checked = as_service(lab, "check-config")
    assert checked.returncode == 0, checked.stderr
    assert "alias token expires" in checked.stdout
    assert "warning: the XNAT alias token expires in" in checked.stderr
    assert "/data/services/tokens/issue" in checked.stderr and secret not in checked.stderr
    with Daemon(lab) as daemon:
        daemon.wait_log(r"the XNAT alias token token \w{8}\.\.\. expires in [45]\.\d h")
        daemon.until(lambda: bool(status(lab).get("token_warning")), "the token in status")
        assert str(status(lab)["token_warning"]).startswith("XNAT token expires in")
        assert "renew it" in cli(lab, "status").stdout
        assert daemon.stop() == 0
    assert secret not in daemon.log and alias not in daemon.log
    no_traceback(daemon.log)


def test_a_token_far_from_expiry_is_not_warned_of(lab: LabTree, emulator: Emulator) -> None:
    alias, secret = emulator.issue_token(USER)  # two days, XNAT's default
    lab.secret.write_text(f"{alias}:{secret}\n")
    with Daemon(lab) as daemon:
        daemon.until(lambda: bool(status(lab).get("token_expires")), "the token's expiry")
        assert not status(lab).get("token_warning")
        assert daemon.stop() == 0
    assert "expires in" not in daemon.log


def test_a_reload_checks_at_once_even_while_paused(lab: LabTree, emulator: Emulator) -> None:
    lab.write_config(xnat="check_interval_seconds = 3600")
    emulator.add_user(USER, "locked-out-for-now")  # e.g. XNAT's directory was briefly wrong
    with Daemon(lab) as daemon:
        daemon.wait_log(r"UPLOADS PAUSED")
        logins = jsession_logins(emulator)
        time.sleep(2)
        assert jsession_logins(emulator) == logins  # paused: no login on its own
        emulator.add_user(USER, PASSWORD)  # fixed on XNAT's side; the secret file unchanged
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_log(r"logged in to XNAT again; uploads resume")
        daemon.until(lambda: status(lab).get("state") == "ok", "ok in status")
        # And while all is well, a reload checks at once too, long before the interval.
        logins = jsession_logins(emulator)
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.until(lambda: jsession_logins(emulator) > logins, "a login after the reload", 10)
        assert daemon.stop() == 0
    no_traceback(daemon.log)


def test_status_shows_when_the_next_probe_is_due(lab: LabTree, emulator: Emulator) -> None:
    emulator.inject(Fault("*", "/data/JSESSION", 503, times=0))
    with Daemon(lab) as daemon:
        daemon.until(lambda: status(lab).get("state") == "unreachable", "the outage")
        assert status(lab).get("next_probe")
        assert "next probe at " in cli(lab, "status").stdout
        assert daemon.stop() == 0
    no_traceback(daemon.log)
