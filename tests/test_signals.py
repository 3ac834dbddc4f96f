"""Signals set flags only: a handler never takes a lock the loop may hold, and thousands of
SIGHUP and SIGTERM while the loop runs end in the right state. The real daemon process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from xnat_standin import Emulator, Fault
from xnat_standin.demo.samples import SeriesSpec

from conftest import PROJECT, Drop, drop_session, run_daemon, start_daemon, wait_until

REL = (PROJECT, "S01", "S01_MR1")

# Builds the service as `xnat-drop run` does, holds every lock its wake-up primitive has (the
# old loop's threading.Event held one inside clear(), every turn), then delivers SIGHUP and
# SIGTERM to its own main thread. A handler that needs such a lock never returns.
PROBE = textwrap.dedent(
    """
    import os, signal, sys, threading
    from pathlib import Path
    from xnat_drop.adapters import configfile
    from xnat_drop.commands.run import install_signals
    from xnat_drop.service.loop import Service

    LOCKS = (type(threading.Lock()), type(threading.RLock()), threading.Condition)
    cfg = configfile.load(Path(sys.argv[1]), dict(os.environ))
    service = Service(cfg, connect=lambda: None)
    install_signals(service)
    held = [v for v in vars(service.waker).values() if isinstance(v, LOCKS)]
    for lock in held:
        lock.acquire()
    os.kill(os.getpid(), signal.SIGHUP)
    os.kill(os.getpid(), signal.SIGTERM)
    print("handled", len(held), service._reload_signal, service._stop_signal == signal.SIGTERM)
    """
)


def test_handlers_never_wait_for_a_lock_the_loop_holds(drop: Drop) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(drop.config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["handled", "0", "True", "True"]


def test_thousands_of_sighup_and_sigterm_while_the_loop_runs(
    drop: Drop, emulator: Emulator
) -> None:
    drop.write_config(emulator.url, settle=0.2, rescan=0.2)
    proc = start_daemon(drop)
    try:
        wait_until((drop.state / "status.json").exists, "the daemon started", proc)
        drop_session(drop, REL, [SeriesSpec(1, "T1", images=40, rows=128, columns=128)])
        stop_at = time.monotonic() + 2.0
        sent = 0
        while time.monotonic() < stop_at and proc.poll() is None:
            os.kill(proc.pid, signal.SIGHUP)
            sent += 1
        for _ in range(1000):  # then a storm of stops: the first one counts, once
            if proc.poll() is not None:
                break
            os.kill(proc.pid, signal.SIGTERM)
            os.kill(proc.pid, signal.SIGHUP)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert sent > 1000, sent
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "Exception ignored" not in stderr  # no signal written to a closed pipe
    assert stderr.count("received SIGTERM") == 1
    assert "reload: configuration reloaded" in stderr
    # Stopped after (or in the middle of) a step: a restart finishes it, exactly once.
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    assert drop.done.joinpath(*REL).is_dir()
    [session] = emulator.prearchive()
    assert session.file_count == 40


def test_a_stop_during_a_step_is_noticed_and_a_reload_waits_for_the_step(
    drop: Drop, emulator: Emulator
) -> None:
    emulator.inject(Fault(method="POST", path="/data/services/import", delay=3.0))
    drop.write_config(emulator.url, settle=0.2, rescan=0.2)
    proc = start_daemon(drop)
    try:
        wait_until((drop.state / "status.json").exists, "the daemon started", proc)
        drop_session(drop, REL, [SeriesSpec(1, "T1", images=2)])
        wait_until(
            lambda: drop.work.exists() and any(drop.work.glob("[!.]*")), "the session claimed", proc
        )
        time.sleep(1.0)  # in the middle of the (slowed) upload
        os.kill(proc.pid, signal.SIGHUP)
        os.kill(proc.pid, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "received SIGTERM" in stderr and "Traceback" not in stderr
    # The step finished (within stop_timeout_seconds): delivered once, and nothing pending.
    assert drop.done.joinpath(*REL).is_dir(), stderr
    assert len(emulator.prearchive()) == 1
