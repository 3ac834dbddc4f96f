"""A lab's drop tree as the service sees it: the daemon as its own unprivileged user, lab
members as another, a setgid group tree, and helpers to watch the daemon's log.

The daemon runs under `setpriv` with no capabilities (user 64100, the lab group 64200 as a
supplementary group, umask 0007), as the unit runs it; lab members write as user 64101 with
umask 0002. Tests that need this skip, saying why, where the suite does not run as root.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from xnat_standin.demo.samples import SeriesSpec, write_session

from conftest import Drop, daemon_env
from emulator_helpers import PASSWORD, USER

SERVICE_UID = SERVICE_GID = 64100
LAB_UID = 64101
LAB_GID = 64200
SETPRIV = shutil.which("setpriv")
SCANS = [SeriesSpec(1, "localizer", images=2), SeriesSpec(2, "T1_MPRAGE", images=3)]

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or SETPRIV is None,
    reason="runs the daemon as its own unprivileged user: needs root and setpriv (util-linux)",
)


def as_user(uid: int, gid: int, groups: tuple[int, ...] = ()) -> list[str]:
    """A setpriv prefix: run as `uid`, no capabilities, killed when the test process dies."""
    assert SETPRIV is not None
    group_args = [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
    return [
        SETPRIV,
        f"--reuid={uid}",
        f"--regid={gid}",
        *group_args,
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--pdeathsig=KILL",
    ]


@dataclass
class LabTree(Drop):
    """A drop tree set up as the README says, owned by the service, shared with the lab."""

    base: Path = Path()
    url: str = ""

    def write_config(  # type: ignore[override]
        self,
        extra: str = "",
        *,
        settle: float = 0.5,
        watch: str = "",
        xnat: str = "",
        attempts: int = 5,
    ) -> None:
        super().write_config(
            self.url, extra, settle=settle, retry=(0.2, 1.0, attempts), xnat=xnat, watch=watch
        )
        self.config.chmod(0o644)

    def lab_drop(
        self, relpath: tuple[str, ...], scans: list[SeriesSpec] = SCANS, *, writable: bool = True
    ) -> Path:
        """A lab member copies a finished export in with `cp -r` (umask 0002). With `writable`
        False the export is 0755 (from a USB stick, say), and so is the copy: the service may
        not move it (test_hostile_blocked.py)."""
        export = self.base / "exports" / secrets.token_hex(4)
        write_session(export, scans, patient_id=relpath[-2] if len(relpath) > 1 else "X")
        # Exported by the lab member at umask 0002 (cp -r keeps the source's modes).
        subprocess.run(["chmod", "-R", "g+w" if writable else "go-w", str(export)], check=True)
        subprocess.run(["chown", "-R", f"{LAB_UID}:{LAB_GID}", str(export.parent)], check=True)
        target = self.incoming.joinpath(*relpath)
        self.as_lab("mkdir", "-p", str(target.parent))
        # cp -r into a staging name, then rename: the session appears whole, as most copy
        # tools finish; the tests about slow copies live with the intake tests.
        staging = target.parent / f".copying-{secrets.token_hex(4)}"
        self.as_lab("cp", "-r", str(export), str(staging))
        self.as_lab("mv", str(staging), str(target))
        return target

    def as_lab(self, *argv: str) -> None:
        subprocess.run(
            [*as_user(LAB_UID, LAB_GID, (LAB_GID,)), *argv], check=True, umask=0o002, timeout=60
        )


@contextlib.contextmanager
def lab_tree(url: str) -> Iterator[LabTree]:
    """The tree, its config and secret, owned as in production; removed afterwards (the
    `lab` fixture in conftest.py)."""
    base = Path(tempfile.mkdtemp(prefix="xnat-drop-hostile-", dir="/tmp"))
    base.chmod(0o755)  # the service and the lab must reach what is below
    tree = LabTree(
        base / "drop", base / "xnat-drop.toml", base / "secret", base / "state", base, url
    )
    (base / "exports").mkdir()
    for folder, mode in ((tree.root, 0o2750), (tree.incoming, 0o2770)):
        folder.mkdir(exist_ok=True)
        os.chown(folder, SERVICE_UID, LAB_GID)
        folder.chmod(mode)
    tree.state.mkdir(mode=0o700)
    os.chown(tree.state, SERVICE_UID, SERVICE_GID)
    secret = base / "secret"
    secret.write_text(f"{USER}:{PASSWORD}\n")
    os.chown(secret, SERVICE_UID, SERVICE_GID)
    secret.chmod(0o600)
    tree.write_config()
    try:
        yield tree
    finally:
        shutil.rmtree(base, ignore_errors=True)


class Daemon:
    """The real daemon process, running as the service user, its log read as it comes."""

    def __init__(
        self,
        tree: LabTree,
        *args: str,
        env: dict[str, str] | None = None,
        max_files: int | None = None,
    ) -> None:
        # max_files: RLIMIT_NOFILE, set by prlimit(1), which then execs setpriv and the daemon.
        limit = [] if max_files is None else ["prlimit", f"--nofile={max_files}:{max_files}"]
        cmd = [*limit, *as_user(SERVICE_UID, SERVICE_GID, (LAB_GID,)), sys.executable, "-m"]
        cmd += ["xnat_drop", "run", "--config", str(tree.config), *args]
        environment = (env or daemon_env()) | {"HOME": "/nonexistent"}
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="backslashreplace",
            env=environment,
            umask=0o007,
            cwd="/",
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_log(self, pattern: str, timeout: float = 30, after: int = 0) -> int:
        """Index of the first log line matching the regex `pattern` (at or after `after`)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for index in range(after, len(self.lines)):
                if regex.search(self.lines[index]):
                    return index
            assert self.proc.poll() is None, f"the daemon exited; log:\n{self.log}"
            time.sleep(0.05)
        raise AssertionError(f"no log line matching {pattern!r} within {timeout} s:\n{self.log}")

    def until(self, condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
        """Poll `condition` while the daemon runs; fail with its log on timeout or exit."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None, f"the daemon exited waiting for {what}:\n{self.log}"
            assert time.monotonic() < deadline, f"timed out waiting: {what}\n{self.log}"
            time.sleep(0.05)

    def wait(self, timeout: float = 60) -> int:
        """Wait for the process to end by itself (`run --once`); returns its exit code."""
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait; kill after `timeout` (then fail)."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"no exit within {timeout} s of SIGTERM:\n{self.log}") from None
        self._reader.join(timeout=5)
        return code

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def run_once(tree: LabTree, *args: str, timeout: float = 60) -> tuple[int, str]:
    """`run --once` as the service user: (exit code, log)."""
    with Daemon(tree, "--once", "--timeout", str(timeout - 5), *args) as daemon:
        code = daemon.wait(timeout)
        return code, daemon.log


def cli(tree: LabTree, *args: str) -> subprocess.CompletedProcess[str]:
    """An `xnat-drop` command as root (data managers run `retry` and `status` with sudo)."""
    return subprocess.run(
        [sys.executable, "-m", "xnat_drop", *args, "--config", str(tree.config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def no_traceback(log: str) -> None:
    """Nothing a lab member or an operator does may end in a Python traceback."""
    assert "Traceback" not in log, log


def wait_for(condition: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(0.05)
