"""The service loop: the one place that owns the daemon's state and joins the core to the
adapters.

One thread does everything in order: rescan incoming/, claim what has settled, and take one
claimed session at a time a step further on a helper thread (attempt: judge, deliver; then
file: report, record, move). A step returns a result and changes nothing here; core.policy
decides what that result means, and the loop applies the decision. Watcher events and signals
only wake the loop (a self-pipe) and set flags; everything else, logging included, happens on
this thread. While XNAT is unreachable the whole queue waits and one probe per backoff interval
asks whether it is back; refused credentials pause uploads until the secret changes. Neither
ever sends a session to failed/.
"""

from __future__ import annotations

import logging
import os
import random
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from xnat_drop.adapters import credentials as creds
from xnat_drop.adapters.fs import claimrecord, claims, startup
from xnat_drop.adapters.ledger import FILE_NAME as LEDGER_FILE
from xnat_drop.adapters.ledger import Ledger
from xnat_drop.adapters.systemd_api import Notifier
from xnat_drop.adapters.watcher import Watcher
from xnat_drop.adapters.workers import InspectionPool
from xnat_drop.core.config import Config
from xnat_drop.core.errors import (
    ConfigError,
    StorageError,
)
from xnat_drop.core.model import Seen
from xnat_drop.core.shown import shown
from xnat_drop.core.text import plural
from xnat_drop.service import transportcheck
from xnat_drop.service.attempt import Tools
from xnat_drop.service.availability import Availability
from xnat_drop.service.board import Board
from xnat_drop.service.claiming import Claimer
from xnat_drop.service.delivery import XnatPort
from xnat_drop.service.inbox import ProvenPaths
from xnat_drop.service.intake import Intake
from xnat_drop.service.judge import check_keywords
from xnat_drop.service.outcomes import Outcomes
from xnat_drop.service.outputs import Outputs
from xnat_drop.service.state import Clock, Job, LoopState
from xnat_drop.service.stepping import Stepping
from xnat_drop.service.steps import Heartbeat, Step, Waker
from xnat_drop.service.upkeep import Upkeep, state_problem
from xnat_drop.service.xnatfilter import FilterCache

log = logging.getLogger("xnat_drop.service")

EX_TEMPFAIL = 75  # `run --once` left sessions waiting (XNAT unavailable or credentials refused)
STORAGE_PROBE = (5.0, 300.0)  # first and longest wait between looks at a broken state dir

__all__ = ["EX_TEMPFAIL", "Clock", "Service"]


@dataclass
class Service(Outcomes, Upkeep, Stepping):
    """The daemon. `connect` builds an XNAT client (it reads the credentials)."""

    config: Config
    connect: Callable[[], XnatPort]
    clock: Clock = field(default_factory=Clock)
    rng: random.Random = field(default_factory=random.Random)
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    notifier: Notifier = field(default_factory=lambda: Notifier({}))
    # The loop's own state, never passed in.
    waker: Waker = field(init=False, default_factory=Waker)
    state: LoopState = field(init=False)
    _board: Board = field(init=False)
    _outputs: Outputs = field(init=False)  # status files, page, metrics, notifications
    _client: XnatPort | None = field(init=False, default=None)
    _ledger: Ledger | None = field(init=False, default=None)
    _work: claims.WorkArea | None = field(init=False, default=None)
    _pool: InspectionPool = field(init=False, default_factory=InspectionPool)
    _heartbeat: Heartbeat = field(init=False, default_factory=Heartbeat)
    _step: Step[object] | None = field(init=False, default=None)  # the one that may still run
    _filters: FilterCache = field(init=False)  # XNAT's series filters, read a few minutes ago
    # Set by signal handlers (an assignment, nothing else) and read by the loop.
    _stop_signal: int = field(init=False, default=0)
    _reload_signal: bool = field(init=False, default=False)
    stopping: bool = field(init=False, default=False)
    _stop_deadline: float | None = field(init=False, default=None)
    _deadline: float | None = field(init=False, default=None)
    _abandoned: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        xnat = Availability(self.config.retry, self.clock.monotonic, self.clock.wall, self.rng)
        xnat.check_interval = self.config.xnat.check_interval
        self.state = LoopState(Intake(self.config), xnat)
        self._board = Board(self.config, self.clock)
        self._outputs = Outputs(lambda: self.config, self.clock, self.env, self._board)
        self._filters = FilterCache(self.clock.monotonic)
        self._proven = ProvenPaths()  # inbox paths XNAT confirmed (service/inbox.py)

    @property
    def jobs(self) -> list[Job]:
        return self.state.jobs

    @property
    def seen(self) -> dict[tuple[str, ...], Seen]:
        """The session candidates in incoming/ and since when each is unchanged."""
        return self.state.intake.seen

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Check and prepare folders and the ledger, recover claims from an earlier run, read
        the credentials. XNAT itself is first contacted by the first turn (`tick`): an XNAT
        that is down is an outage, never a reason not to start.

        Raises ConfigError for unusable credentials, keywords or folders (exit 78), having
        closed whatever it opened.
        """
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        check_keywords(self.config)
        self._outputs.open()  # the channels' secrets: a channel without its secret is exit 78
        paths = self.config.paths
        # The same checks as `check-config`, changing nothing, before anything is created.
        problems = startup.problems(paths, LEDGER_FILE)
        if problems:
            raise ConfigError(problems, self.config.source)
        try:
            claims.prepare(paths)
        except OSError as exc:
            raise ConfigError([f"paths: {shown(str(exc))}"], self.config.source) from exc
        if found := transportcheck.problems(self.config):  # the inbox, C-STORE
            raise ConfigError(found, self.config.source)
        self._client = self._connect()  # the secret is read now: unusable is exit 78
        self.state.xnat.secret_stamp = creds.stamp(self.config.xnat.secret_file, self.env)
        try:
            self._ledger = Ledger(paths.state / LEDGER_FILE)
            self._ledger.probe()
            self._heartbeat = Heartbeat(self.clock.monotonic)
            self._work = claims.WorkArea(paths, claimrecord.owner(paths.state))
            self._board.count_today(self._ledger)
            self._outputs.start(self._ledger)  # the page and the notifications
            self._claimer().orphans(self.config, self.clock.monotonic(), self.state.jobs)
            self._board.publish(self.state, self._ledger, force=True)  # not yet contacted
        except (OSError, StorageError, ValueError) as exc:
            raise ConfigError([state_problem(paths.state, exc)], self.config.source) from exc
        log.info(
            "XNAT at %s; destination %s; watching %s",
            self.config.xnat.url,
            self.config.xnat.destination,
            self.config.paths.incoming,
        )

    def run(self, *, once: bool = False, timeout: float | None = None) -> int:
        """Loop until stopped (or, with `once`, until the sessions present now are finished).

        Returns the process exit code: 0, or EX_TEMPFAIL when `once` leaves sessions waiting.
        """
        self.start()
        # Polling mode has no observer: the loop's own rescan, every poll interval, is the one
        # walk of incoming/ (watchdog's polling observer would walk it a second time).
        watcher = None
        if self.config.watch.observer == "inotify":
            watcher = Watcher(self.config.paths.incoming, self.waker.wake)
            watcher.start()
        deadline = None if timeout is None else self.clock.monotonic() + timeout
        self._deadline = deadline if once else None
        intake = self.state.intake
        try:
            if once:
                intake.scan(self.clock.monotonic())
                # An empty folder never settles: waiting for it would never end.
                intake.only = {r for r, s in self.seen.items() if s.fingerprint.count}
            # Ready only now: configuration loaded, claims recovered, the watcher running.
            self.notifier.ready(self.status_line())
            while True:
                self._take_signals()
                if self.stopping:
                    break
                wait = self.tick()
                self._breathe()
                if self._abandoned:
                    break
                if once:
                    code = self._once_result(deadline, timeout)
                    if code is not None:
                        return code
                if wait > 0:
                    # The watchdog wants a ping in time; a wake-up ends the wait early.
                    interval = self.notifier.watchdog_interval
                    self.waker.wait(min(wait, interval) if interval else wait)
            self.notifier.stopping("stopping")
            return EX_TEMPFAIL if once and not self.state.once_finished() else 0
        finally:
            if watcher is not None:
                watcher.stop()
            self.close()

    def close(self) -> None:
        """Release XNAT's connection, our claims and the ledger (also after a failed start).
        Idempotent.

        A step abandoned at shutdown may still be running: then nothing it uses is closed
        under it (no ledger closed, no claim lock released); the process exit does that.
        """
        if self._step is not None and self._step.alive:
            log.info("leaving the abandoned step's claim and ledger to the process exit")
            return
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._work is not None:
            self._work.close()
            self._work = None
        self._pool.close()
        if self._ledger is not None:
            try:
                self._board.publish(self.state, self._ledger, force=True)
            except (OSError, StorageError) as exc:
                log.warning("cannot write the status file: %s", exc)
            self._outputs.stopped()  # after the last report: its letters may still go
            self._ledger.close()
            self._ledger = None
        self._outputs.close()
        self.waker.close()

    # -- signals: flags only ------------------------------------------------------------------

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Ask the loop to stop after the current step (from any thread)."""
        self.note_stop(signum)
        self.waker.wake()

    def note_stop(self, signum: int) -> None:
        """`stop` for a signal handler: one store, no call, no lock, no logging. The waker's
        routed signal fd wakes the loop; and a handler that does next to nothing cannot nest
        deeper and deeper under a storm of signals."""
        self._stop_signal = signum

    def request_reload(self) -> None:
        """Ask the loop to reload its configuration at its next turn (from any thread)."""
        self.note_reload()
        self.waker.wake()

    def note_reload(self) -> None:
        """`request_reload` for a SIGHUP handler; as `note_stop`."""
        self._reload_signal = True

    def _take_signals(self) -> None:
        """The loop's side of the flags, between turns: log, then act."""
        self._take_stop()
        if self._reload_signal:
            self._reload_signal = False
            self._reload()

    def _take_stop(self) -> None:
        """A stop is noticed during a step too (a reload waits: the step uses the client)."""
        if self._stop_signal and not self.stopping:
            name = signal.Signals(self._stop_signal).name
            log.info("received %s; stopping after the current step", name)
            self.stopping = True

    # -- one turn of the loop -----------------------------------------------------------------

    def tick(self) -> float:
        """Do what is due now; returns how long the loop may sleep before the next turn."""
        now = self.clock.monotonic()
        state = self.state
        if state.storage is not None:
            if now >= state.storage.next_probe:
                self._probe_storage()
            if state.storage is not None:
                return max(0.0, state.storage.next_probe - self.clock.monotonic())
        try:
            if self.waker.drain() or now >= state.intake.next_scan:
                state.intake.scan(now, breathe=self.notifier.watchdog)
                self._claimer().orphans(self.config, now, state.jobs)
            self._claimer().settled(self.config, state.intake, now, state.jobs)
        except StorageError as exc:
            self._pause_storage(str(exc))
            return 0.0
        self._watch_secret()
        if state.xnat.check_due(now):
            self._check_xnat()
        job = self.state.next_job(now)
        if job is not None:
            self._step_once(job)
            return 0.0
        self._publish()
        self._outputs.flush()  # a change the status files' interval held back, when it may go
        wake = min(self.state.next_wake(), self._board.next_refresh(), self._outputs.due())
        return max(0.0, wake - self.clock.monotonic())

    def _once_result(self, deadline: float | None, timeout: float | None) -> int | None:
        """For `run --once`: the exit code once it is time to stop, else None."""
        if self.state.once_finished():
            return 0
        if self.state.xnat.auth is not None:
            log.error(
                "stopping: uploads are paused; %s wait", plural(self.state.open_count(), "session")
            )
            return EX_TEMPFAIL
        if deadline is not None and self.clock.monotonic() >= deadline:
            log.error(
                "stopping: %s still waiting after %.0f s",
                plural(self.state.open_count(), "session"),
                timeout,
            )
            return EX_TEMPFAIL
        return None

    # -- the pieces a turn uses ---------------------------------------------------------------

    def _ledger_(self) -> Ledger:
        assert self._ledger is not None, "start() opens the ledger"
        return self._ledger

    def _work_(self) -> claims.WorkArea:
        assert self._work is not None, "start() opens the work area"
        return self._work

    def _claimer(self) -> Claimer:
        return Claimer(self._work_(), self._ledger_(), self.clock)

    def _tools(self) -> Tools:
        assert self._client is not None
        return Tools(
            self.config,
            self._client,
            self._ledger_(),
            self._pool,
            self._heartbeat,
            self.state.progress,
            self.clock.monotonic,
            self.clock.wall,
            self._filters,
            self.state.server_version,
            self._proven,
        )

    def _connect(self) -> XnatPort:
        """A new XNAT client whose every request counts as a sign of life for the watchdog."""
        client = self.connect()
        xnat = self.config.xnat
        client.on_request = lambda: self._heartbeat.beat(
            xnat.connect_timeout + xnat.read_timeout + 30
        )
        return client

    def _breathe(self) -> None:
        """Between turns: ping the watchdog, refresh STATUS."""
        self.notifier.watchdog()
        self.notifier.status(self.status_line())

    def _while_busy(self) -> bool:
        """Called every STEP_POLL while a step runs; False abandons the step (on SIGTERM, or
        when `run --once --timeout` ran out)."""
        if self._heartbeat.alive():
            self.notifier.watchdog()  # a step stuck beyond its budget gets no ping
        self.notifier.status(self.status_line())
        self._publish(busy=True)  # the upload's progress, for the status files and the page
        self._take_stop()
        now = self.clock.monotonic()
        if self._deadline is not None and now >= self._deadline:
            log.error("stopping: the --timeout ran out in the middle of a step")
            return False  # the step resumes at the next start, as after SIGTERM
        if not self.stopping:
            return True
        if self._stop_deadline is None:
            grace = self.config.stop_timeout
            self._stop_deadline = now + grace
            self.notifier.stopping(f"stopping: finishing the current step (at most {grace:.0f} s)")
            log.info("stopping: the current step may take up to %.0f s more", grace)
        return now < self._stop_deadline

    def status_line(self) -> str:
        """One line for systemd's STATUS=: what waits, what happens now, today's tally, XNAT."""
        return self._board.line(self.state)

    def snapshot(self) -> dict[str, Any]:
        """What `xnat-drop status` would show now."""
        return self._board.snapshot(self.state)

    def _publish(self, *, force: bool = False, busy: bool = False) -> None:
        """Rewrite status.json when something changed; a state dir that refuses pauses work.
        `busy`: a step runs and has the ledger."""
        if self._ledger is None:
            return
        try:
            self._board.publish(self.state, None if busy else self._ledger, force=force)
        except (OSError, StorageError) as exc:
            self._pause_storage(f"cannot write the status file: {exc}")
