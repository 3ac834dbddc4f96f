"""Shared fixtures: a drop tree with its config, the XNAT stand-in, and the daemon as a process."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests

if TYPE_CHECKING:
    from xnat_standin import Emulator

    from hostile_lab import LabTree

from xnat_drop.adapters.fs import claimrecord
from xnat_drop.adapters.fs import claims as store
from xnat_drop.core.config import PathsConfig
from xnat_standin.demo.samples import SeriesSpec, write_session

from emulator_helpers import PASSWORD, USER, client

PROJECT = "P1"


@dataclass
class Drop:
    """A drop tree (incoming/, done/, failed/, .work/) with a config file and a secret."""

    root: Path
    config: Path
    secret: Path
    state: Path

    @property
    def incoming(self) -> Path:
        return self.root / "incoming"

    @property
    def done(self) -> Path:
        return self.root / "done"

    @property
    def failed(self) -> Path:
        return self.root / "failed"

    @property
    def work(self) -> Path:
        return self.root / ".work"

    def write_config(
        self,
        url: str,
        extra: str = "",
        settle: float = 0.5,
        rescan: float = 0.5,
        retry: tuple[float, float, int] = (0.2, 1.0, 5),
        xnat: str = "",
        watch: str = "",
    ) -> None:
        """(Re)write the config: short settle and retry times so tests run fast."""
        self.config.write_text(
            f"""
[paths]
root = "{self.root}"
state_dir = "{self.state}"

[watch]
settle_seconds = {settle}
rescan_seconds = {rescan}
{watch}

[xnat]
url = "{url}"
secret_file = "{self.secret}"
connect_timeout_seconds = 2
read_timeout_seconds = 30
{xnat}

[retry]
first_delay_seconds = {retry[0]}
max_delay_seconds = {retry[1]}
max_attempts = {retry[2]}
{extra}
"""
        )


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    from xnat_standin import Emulator

    with Emulator(root=tmp_path / "xnat", users={USER: PASSWORD}, projects=[PROJECT]) as emu:
        yield emu


@pytest.fixture
def http(emulator: Emulator) -> Iterator[requests.Session]:
    """A requests session with Basic credentials for the stand-in."""
    with client() as session:
        yield session


@pytest.fixture
def drop(tmp_path: Path, emulator: Emulator) -> Drop:
    root = tmp_path / "drop"
    (root / "incoming").mkdir(parents=True)
    secret = tmp_path / "secret"
    secret.touch(mode=0o600)
    secret.write_text(f"{USER}:{PASSWORD}\n")
    item = Drop(root, tmp_path / "xnat-drop.toml", secret, tmp_path / "state")
    item.write_config(emulator.url)
    return item


@pytest.fixture
def paths(tmp_path: Path) -> PathsConfig:
    """A prepared drop tree's folders in tmp_path (store and filing tests)."""
    p = PathsConfig(
        tmp_path / "incoming",
        tmp_path / "done",
        tmp_path / "failed",
        tmp_path / ".work",
        tmp_path / "state",
    )
    store.prepare(p)
    return p


# The claims' owner in the store and filing tests: one daemon, as if it were on host "lab-a".
OWNER = claimrecord.Owner("a" * 32, "lab-a")


@pytest.fixture
def area(paths: PathsConfig) -> Iterator[store.WorkArea]:
    work = store.WorkArea(paths, OWNER)
    yield work
    work.close()


@pytest.fixture
def lab(emulator: Emulator) -> Iterator[LabTree]:
    """A drop tree owned as in production, for the daemon run as its own user (hostile/)."""
    from hostile_lab import lab_tree

    with lab_tree(emulator.url) as tree:
        yield tree


def atime_shows_reads(tmp_path: Path) -> None:
    """Skip unless reading a file updates its atime here (tests that tell reads by atime)."""
    probe = tmp_path / "probe"
    probe.write_bytes(b"x")
    os.utime(probe, (time.time() - 86_400, probe.stat().st_mtime))
    probe.read_bytes()
    if probe.stat().st_atime < time.time() - 3600:
        pytest.skip("this filesystem does not record reads in atime")


def drop_session(drop: Drop, relpath: tuple[str, ...], scans: list[SeriesSpec]) -> Path:
    """Write a session elsewhere, then move it in whole, as a finished copy arrives."""
    staging = drop.root.parent / "staging" / "/".join(relpath)
    write_session(staging, scans, patient_id=relpath[-2] if len(relpath) > 1 else "X")
    target = drop.incoming.joinpath(*relpath)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(staging, target)
    return target


def digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file below `folder`, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def daemon_env(**extra: str) -> dict[str, str]:
    """The environment for a daemon process: ours, without systemd's variables, plus `extra`."""
    drop = ("CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_USEC")
    return {k: v for k, v in os.environ.items() if k not in drop} | extra


# A killed pytest run must not leave daemons behind, still watching its temporary folders:
# setpriv (util-linux) makes the kernel SIGKILL the daemon when the test process dies, then
# execs it (so the Popen's pid is the daemon's). preexec_fn could do the same, but it is not
# safe in a process with threads.
_SETPRIV = shutil.which("setpriv")
_DIE_WITH_TESTS = [_SETPRIV, "--pdeathsig", "KILL"] if _SETPRIV else []


def run_daemon(
    drop: Drop, *args: str, timeout: float = 60.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real `xnat-drop run --once` process over `drop` and wait for it."""
    cmd = [*_DIE_WITH_TESTS, sys.executable, "-m", "xnat_drop", "run", "--config"]
    cmd += [str(drop.config), "--once"]
    cmd += ["--timeout", str(timeout - 5), *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env or daemon_env(), check=False
    )


def start_daemon(
    drop: Drop, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start the real daemon process (`run`, no --once) in the background."""
    cmd = [*_DIE_WITH_TESTS, sys.executable, "-m", "xnat_drop", "run", "--config"]
    cmd += [str(drop.config), *args]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env or daemon_env()
    )


def stop_daemon(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str]:
    """SIGTERM, then wait: (exit code, stderr). Fails (after a kill) if it does not stop."""
    proc.send_signal(signal.SIGTERM)
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
        raise AssertionError(f"no exit within {timeout} s of SIGTERM:\n{stderr}") from None
    return proc.returncode, stderr


def wait_until(
    condition: Callable[[], bool],
    what: str,
    proc: subprocess.Popen[str] | None = None,
    timeout: float = 30,
) -> None:
    """Poll `condition` until true; fail naming `what` on timeout or if `proc` exits."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        assert proc is None or proc.poll() is None, f"the daemon exited while waiting: {what}"
        time.sleep(0.1)
