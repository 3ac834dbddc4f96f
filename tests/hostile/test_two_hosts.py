"""Two hosts, one share: two real daemons, each with its own state directory and XNAT account,
each seeing the drop tree through its own bindfs mount of one backing folder (as two servers
mount one NFS or SMB share), the sessions written into the backing folder by a third machine.

Every session must end in done/ exactly once and reach XNAT exactly once, never from both
daemons; a daemon killed with -9 in the middle of an upload leaves its claim to itself (its
ledger knows what reached XNAT): the other daemon never adopts it, even once the lock is free,
and the killed daemon resumes it when it starts again. docs/several-hosts.md says why.

Each mount forwards locks to the backing folder (`--enable-lock-forwarding`), as a share with
working cross-host locks does; the batch test also runs with locks kept per mount (what NFS
with `local_lock=all` or `nolock` gives): claims stay exactly-once without shared locks.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from xnat_drop.service.failpoints import ENV as FAILPOINT_ENV
from xnat_drop.service.failpoints import PAUSE_ENV
from xnat_standin import Emulator
from xnat_standin.demo.samples import SeriesSpec, write_session

from conftest import PROJECT, Drop, daemon_env
from emulator_helpers import PASSWORD

SETPRIV = shutil.which("setpriv")
BINDFS = shutil.which("bindfs")
SESSIONS = 12
SCANS = [SeriesSpec(1, "T1", images=2)]
IMPORT = "/data/services/import"

pytestmark = pytest.mark.skipif(
    BINDFS is None or SETPRIV is None,
    reason="needs bindfs (two mounts of one share) and setpriv (daemons that die with the tests)",
)


@dataclass
class Host:
    """One lab server: its mount of the share, its state, its XNAT user, its daemon."""

    name: str
    drop: Drop
    user: str
    log_file: Path
    proc: subprocess.Popen[str] | None = None
    _log: IO[str] | None = None

    def start(self, **env: str) -> None:
        """Start the daemon (again: a run before must have ended), its log appended."""
        assert SETPRIV is not None
        if self.proc is not None:
            self.stop()
        self._log = self.log_file.open("a")
        cmd = [SETPRIV, "--pdeathsig", "KILL", sys.executable, "-m", "xnat_drop", "run"]
        self.proc = subprocess.Popen(
            [*cmd, "--config", str(self.drop.config)],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            text=True,
            env=daemon_env(**env),
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        """SIGTERM and wait (a dead daemon is just reaped); its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.name} did not stop:\n{self.log}") from None
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None
        return code

    @property
    def log(self) -> str:
        return self.log_file.read_text(errors="backslashreplace") if self.log_file.exists() else ""

    def claimed(self) -> list[str]:
        """The sessions this host claimed from incoming/ (all its runs), by label."""
        return [
            line.split(": settled", 1)[0].rsplit("/", 1)[-1]
            for line in self.log.splitlines()
            if "; claimed as " in line
        ]


@dataclass
class Share:
    backing: Path  # the share itself, as its server holds it
    hosts: tuple[Host, Host]
    staging: Path


def _mount(backing: Path, mount: Path, *, shared_locks: bool) -> None:
    assert BINDFS is not None
    mount.mkdir()
    locks = ["--multithreaded", "--enable-lock-forwarding"] if shared_locks else []
    done = subprocess.run(
        [BINDFS, "--no-allow-other", *locks, str(backing), str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"bindfs cannot mount here: {done.stderr.strip()}")


def _unmount(mount: Path) -> None:
    unmounted = subprocess.run(["fusermount", "-u", str(mount)], capture_output=True, check=False)
    if unmounted.returncode != 0:
        subprocess.run(["fusermount", "-u", "-z", str(mount)], capture_output=True, check=False)


@contextlib.contextmanager
def _share(tmp_path: Path, emulator: Emulator, *, shared_locks: bool) -> Iterator[Share]:
    backing = tmp_path / "share"
    (backing / "incoming").mkdir(parents=True)
    hosts = []
    mounted: list[Path] = []
    try:
        for name in ("host-a", "host-b"):
            mount = tmp_path / name / "share"
            (tmp_path / name).mkdir()
            _mount(backing, mount, shared_locks=shared_locks)
            mounted.append(mount)
            emulator.add_user(name, PASSWORD)
            secret = tmp_path / name / "secret"
            secret.touch(mode=0o600)
            secret.write_text(f"{name}:{PASSWORD}\n")
            drop = Drop(
                mount, tmp_path / name / "xnat-drop.toml", secret, tmp_path / name / "state"
            )
            drop.write_config(
                emulator.url,
                extra='[log]\nlevel = "info"\n',
                watch='observer = "polling"\npoll_interval_seconds = 0.3',
            )
            hosts.append(Host(name, drop, name, tmp_path / name / "daemon.log"))
        yield Share(backing, (hosts[0], hosts[1]), tmp_path / "staging")
    finally:
        for host in hosts:
            if host.alive():
                host.stop()
        for mount in mounted:
            _unmount(mount)


@pytest.fixture
def share(tmp_path: Path, emulator: Emulator) -> Iterator[Share]:
    with _share(tmp_path, emulator, shared_locks=True) as found:
        yield found


def relpaths() -> list[tuple[str, str, str]]:
    return [(PROJECT, f"S{n:02d}", f"S{n:02d}_MR1") for n in range(1, SESSIONS + 1)]


def drop_batch(share: Share) -> None:
    """A third machine writes the sessions to the share, each appearing whole, all at once."""
    for relpath in relpaths():
        write_session(share.staging.joinpath(*relpath), SCANS, patient_id=relpath[1])
    for relpath in relpaths():
        target = share.backing.joinpath("incoming", *relpath)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(share.staging.joinpath(*relpath), target)


def until(condition: Callable[[], bool], what: str, share: Share, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {h.name}\n{h.log}" for h in share.hosts)
            raise AssertionError(f"timed out waiting: {what}\n{logs}")
        time.sleep(0.1)


def all_done(share: Share) -> bool:
    return all(share.backing.joinpath("done", *r).is_dir() for r in relpaths())


def started(host: Host) -> Callable[[], bool]:
    status = host.drop.state / "status.json"

    def written() -> bool:
        return status.exists()

    return written


def check_exactly_once(share: Share, emulator: Emulator) -> dict[str, collections.Counter[str]]:
    """Every session in done/ once, nothing elsewhere, one session per drop in XNAT, each sent
    by one daemon; returns the import requests per label, by XNAT user (host)."""
    backing = share.backing
    labels = sorted(r[-1] for r in relpaths())
    assert sorted(p.name for p in backing.glob("done/*/*/*") if p.is_dir()) == labels
    assert not any(p.name.endswith("__2") for p in backing.rglob("*"))  # no second filing
    assert sorted(p.name for p in backing.glob("done/*/*/*.report.json")) == [
        f"{label}.report.json" for label in labels
    ]
    assert not any(backing.glob("failed/*")) and not any(backing.glob("incoming/*/*/*"))
    assert list(backing.glob(".work/[!.]*")) == []  # no claim left behind
    stored = sorted((s.name, s.file_count) for s in emulator.prearchive())
    assert stored == [(label, 2) for label in labels]  # one whole session per drop
    sent: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for request in emulator.requests():
        if request.path == IMPORT and request.status is not None:
            sent[request.query.get("EXPT_LABEL", "?")][request.user or "?"] += 1
    assert sorted(sent) == labels
    assert {label: sum(c.values()) for label, c in sent.items()} == dict.fromkeys(labels, 1)
    return sent


def report_split(
    capsys: pytest.CaptureFixture[str], title: str, sent: dict[str, collections.Counter[str]]
) -> dict[str, int]:
    split = collections.Counter(user for c in sent.values() for user in c)
    with capsys.disabled():
        print(f"\n{title}: " + ", ".join(f"{u} uploaded {n}" for u, n in sorted(split.items())))
    return dict(split)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("locks", ["shared", "per-mount"])
def test_two_hosts_deliver_a_batch_each_session_once(
    tmp_path: Path, emulator: Emulator, capsys: pytest.CaptureFixture[str], locks: str
) -> None:
    # Both daemons run from the start and race for the same 12 folders at the same moments.
    with _share(tmp_path, emulator, shared_locks=locks == "shared") as share:
        a, b = share.hosts
        a.start()
        b.start()
        until(lambda: started(a)() and started(b)(), "both daemons started", share)
        drop_batch(share)
        until(lambda: all_done(share), "every session in done/", share, timeout=150)
        assert a.stop() == 0 and b.stop() == 0, a.log + b.log
        sent = check_exactly_once(share, emulator)
        split = report_split(capsys, f"two hosts, {locks} locks", sent)
        assert sum(split.values()) == SESSIONS
        assert sorted(a.claimed() + b.claimed()) == sorted(sent)  # each claimed once
        for host in (a, b):
            assert "recovered from the work folder" not in host.log
            assert "Traceback" not in host.log


@pytest.mark.timeout(240)
def test_a_killed_hosts_claim_waits_for_it_and_is_never_taken_by_the_other(
    share: Share, emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = share.hosts
    # A claims a session, then pauses (its loop asleep, mid-batch) while B, started now,
    # claims the rest (A claims more if B is slow to start: each of A's claims waits for A);
    # A then dies (kill -9, as a power cut) half way through its first upload.
    a.start(**{PAUSE_ENV: "after-claim=8", FAILPOINT_ENV: "mid-upload"})
    until(started(a), "host-a started", share)
    drop_batch(share)
    until(lambda: "pausepoint after-claim" in a.log, "host-a's first claim", share)
    b.start()
    until(lambda: a.proc is not None and a.proc.poll() is not None, "host-a killed", share)
    assert a.proc is not None and a.proc.returncode == -signal.SIGKILL, a.log
    mine = {r for r in relpaths() if r[-1] in a.claimed()}
    assert mine and len(mine) < SESSIONS, a.log
    claims = {r: [p.parent for p in share.backing.glob(f".work/*/{r[-1]}")] for r in mine}

    # B delivers everything else; A's claims stay where they are, their locks free (A is dead).
    others = [r for r in relpaths() if r not in mine]
    until(
        lambda: all(share.backing.joinpath("done", *r).is_dir() for r in others),
        "host-b to deliver the rest",
        share,
    )
    until(lambda: "which is not running" in b.log, "host-b to notice the orphan", share)
    time.sleep(2)  # several more of B's looks at the work folder
    for relpath, [claim] in claims.items():
        assert claim.joinpath(relpath[-1]).is_dir()
        assert not share.backing.joinpath("done", *relpath).exists()
    assert "recovered from the work folder" not in b.log
    assert sorted(b.claimed()) == sorted(r[-1] for r in others)

    # A starts again: its ledger knows its half-sent upload; it resumes its claims itself.
    a.start()
    until(lambda: all_done(share), "host-a to resume its claims", share)
    for relpath in mine:
        assert f"{relpath[-1]}: recovered from the work folder" in a.log
    assert a.stop() == 0 and b.stop() == 0
    sent = check_exactly_once(share, emulator)
    for relpath in mine:  # only A ever sent its sessions (once each, to the end)
        assert sent[relpath[-1]] == collections.Counter({"host-a": 1})
    cut = [r for r in emulator.requests() if r.path == IMPORT and r.status is None]
    assert {r.user for r in cut} <= {"host-a"}  # the upload cut by the kill was A's
    assert {r.query.get("EXPT_LABEL") for r in cut} <= {r[-1] for r in mine}
    split = report_split(capsys, "two hosts, one killed", sent)
    assert split == {"host-a": len(mine), "host-b": SESSIONS - len(mine)}
