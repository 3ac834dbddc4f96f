"""The service loop: the only module that joins the pure core to the outside world.

One thread does everything in order: rescan incoming/, claim what has settled, and take one
claimed session at a time through judge → deliver → done/ or failed/. Watcher events only wake
the loop early. While XNAT is unreachable the whole queue waits and one probe per backoff
interval asks whether it is back; refused credentials pause uploads until the secret changes.
Neither ever sends a session to failed/.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from xnat_drop import __version__
from xnat_drop.adapters import configfile
from xnat_drop.adapters import credentials as creds
from xnat_drop.adapters.fs import claims as store
from xnat_drop.adapters.fs import filing, trust
from xnat_drop.adapters.fs import statusfile as status_file
from xnat_drop.adapters.fs.beneath import Dir, UnsafePathError
from xnat_drop.adapters.fs.tree import REGULAR, walk
from xnat_drop.adapters.fs.zipstream import BundleEntry, ZipStream
from xnat_drop.adapters.ledger import FILE_NAME as LEDGER_FILE
from xnat_drop.adapters.ledger import Ledger
from xnat_drop.adapters.systemd_api import Notifier
from xnat_drop.adapters.watcher import Watcher
from xnat_drop.adapters.workers import InspectionPool
from xnat_drop.core.backoff import backoff
from xnat_drop.core.config import Config
from xnat_drop.core.errors import (
    ConfigError,
    SessionChangedError,
    StorageError,
    XnatAuthError,
    XnatRejectedError,
    XnatServerError,
    XnatTransientError,
)
from xnat_drop.core.model import (
    FileKind,
    Outcome,
    Policy,
    Seen,
    Session,
    UploadReceipt,
    Verdict,
    Violation,
)
from xnat_drop.core.names import is_junk_path
from xnat_drop.core.report import Report, render_json, render_text
from xnat_drop.core.rules import unknown_project
from xnat_drop.core.shown import shown, shown_path
from xnat_drop.service import failpoints
from xnat_drop.service.availability import Availability, duration
from xnat_drop.service.delivery import Delivery, XnatPort, content_key
from xnat_drop.service.intake import Intake
from xnat_drop.service.judge import check_keywords, judge
from xnat_drop.service.steps import Heartbeat, run_step

log = logging.getLogger(__name__)

EX_TEMPFAIL = 75  # `run --once` left sessions waiting (XNAT unavailable or credentials refused)
STATUS_REFRESH = 10.0  # seconds: the status snapshot is rewritten at least this often
STEP_BUDGET = 900.0  # seconds a step may go without progress (judging a huge session)
STEP_POLL = 0.5  # seconds between the loop's looks at a running step
PROGRESS_QUIET = 120.0  # seconds judging may go on after a sign of progress (a file read)
LISTED = 100  # claimed sessions named in the status snapshot; the rest are counted
STORAGE_PROBE = (5.0, 300.0)  # first and longest wait between looks at a broken state dir


@dataclass
class StoragePause:
    """The state directory cannot be used: all work waits until a probe write succeeds."""

    reason: str
    since: float  # wall clock
    failures: int
    next_probe: float  # monotonic


@dataclass(frozen=True, slots=True)
class Clock:
    """Time as the loop sees it: `monotonic` for waiting, `wall` for reports and names."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time  # noqa: TID251 - the one place the real clock enters


@dataclass
class Job:
    """A claimed session and what the loop knows about it (mutable, private to the loop)."""

    claim: store.Claim
    next_at: float
    attempts: int = 0  # spent on failures that were not outages (also in the ledger)
    session: Session | None = None
    verdict: Verdict | None = None
    last_error: str = ""
    storage_failures: int = 0
    uploading: bool = False
    sent: tuple[int, int] = (0, 0)  # bytes sent, bytes to send (for STATUS)
    forced: bool = False  # sent back with `retry --force`: upload even if delivered before


@dataclass
class Service:
    """The daemon. `connect` builds an XNAT client (it reads the credentials)."""

    config: Config
    connect: Callable[[], XnatPort]
    clock: Clock = field(default_factory=Clock)
    rng: random.Random = field(default_factory=random.Random)
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    wake: threading.Event = field(default_factory=threading.Event)
    notifier: Notifier = field(default_factory=lambda: Notifier({}))
    # The loop's own state, never passed in.
    jobs: list[Job] = field(init=False, default_factory=list)
    stopping: bool = field(init=False, default=False)
    _client: XnatPort | None = field(init=False, default=None)
    _ledger: Ledger | None = field(init=False, default=None)
    _work: store.WorkArea | None = field(init=False, default=None)
    _pool: InspectionPool = field(init=False, default_factory=InspectionPool)
    _server_version: str = field(init=False, default="")
    _xnat: Availability = field(init=False)
    _intake: Intake = field(init=False)
    _published: tuple[str, float] = field(init=False, default=("", float("-inf")))
    _heartbeat: Heartbeat = field(init=False, default_factory=Heartbeat)
    _reload_requested: bool = field(init=False, default=False)
    _stop_deadline: float | None = field(init=False, default=None)
    _abandoned: bool = field(init=False, default=False)
    _today: dict[str, Any] = field(init=False, default_factory=dict)
    _storage: StoragePause | None = field(init=False, default=None)
    _deadline: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._xnat = Availability(
            self.config.retry, self.clock.monotonic, self.clock.wall, self.rng
        )
        self._intake = Intake(self.config)

    @property
    def seen(self) -> dict[tuple[str, ...], Seen]:
        """The session candidates in incoming/ and since when each is unchanged."""
        return self._intake.seen

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Prepare folders and the ledger, recover claims from an earlier run, connect to XNAT.

        Raises ConfigError for unusable credentials, keywords or folders (exit 78).
        """
        check_keywords(self.config)
        paths = self.config.paths
        breaches = trust.problems(paths)
        if breaches:
            raise ConfigError(breaches, self.config.source)
        try:
            store.prepare(paths)
        except OSError as exc:
            raise ConfigError([f"paths: {shown(str(exc))}"], self.config.source) from exc
        try:
            self._ledger = Ledger(paths.state / LEDGER_FILE)
            self._ledger.probe()
            status_file.write(paths.state, {"schema": status_file.SCHEMA, "pid": os.getpid()})
            self._heartbeat = Heartbeat(self.clock.monotonic)
            self._work = store.WorkArea(paths)
            self._count_today()
            self._adopt_orphans()
        except (OSError, StorageError) as exc:
            raise ConfigError([_state_problem(paths.state, exc)], self.config.source) from exc
        self._client = self._connect()
        self._server_version = self._client.server_version()
        log.info(
            "XNAT %s at %s; destination %s; watching %s",
            self._server_version or "(version unknown)",
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
            watcher = Watcher(self.config.paths.incoming, self.wake)
            watcher.start()
        deadline = None if timeout is None else self.clock.monotonic() + timeout
        self._deadline = deadline if once else None
        try:
            if once:
                self._intake.scan(self.clock.monotonic())
                # An empty folder never settles: waiting for it would never end.
                self._intake.only = {r for r, s in self.seen.items() if s.fingerprint.count}
            # Ready only now: configuration loaded, claims recovered, the watcher running.
            self.notifier.ready(self.status_line())
            while not self.stopping:
                if self._reload_requested:
                    self._reload()
                wait = self.tick()
                self._breathe()
                if self._abandoned:
                    break
                if once:
                    if self._once_finished():
                        return 0
                    if self._xnat.auth is not None:
                        log.error(
                            "stopping: uploads are paused; %d session(s) wait", self._open_count()
                        )
                        return EX_TEMPFAIL
                    if deadline is not None and self.clock.monotonic() >= deadline:
                        log.error(
                            "stopping: %d session(s) still waiting after %.0f s",
                            self._open_count(),
                            timeout,
                        )
                        return EX_TEMPFAIL
                if wait > 0:
                    # tick() clears the wake-up and rescans; the watchdog wants a ping in time.
                    interval = self.notifier.watchdog_interval
                    self.wake.wait(min(wait, interval) if interval else wait)
            self.notifier.stopping("stopping")
            return EX_TEMPFAIL if once and not self._once_finished() else 0
        finally:
            if watcher is not None:
                watcher.stop()
            self.close()

    def close(self) -> None:
        """Release XNAT's connection, our claims and the ledger (also after a failed start)."""
        if self._client is not None:
            self._client.close()
        if self._work is not None:
            self._work.close()
        self._pool.close()
        if self._ledger is not None:
            self._publish(force=True)
            self._ledger.close()
            self._ledger = None

    def stop(self) -> None:
        """Ask the loop to stop after the current step (signal handlers call this)."""
        self.stopping = True
        self.wake.set()

    def request_reload(self) -> None:
        """Ask the loop to reload its configuration at its next turn (SIGHUP)."""
        self._reload_requested = True
        self.wake.set()

    # -- one turn of the loop -----------------------------------------------------------------

    def tick(self) -> float:
        """Do what is due now; returns how long the loop may sleep before the next turn."""
        now = self.clock.monotonic()
        if self._storage is not None:
            if now >= self._storage.next_probe:
                self._probe_storage()
            if self._storage is not None:
                return max(0.0, self._storage.next_probe - self.clock.monotonic())
        try:
            if self.wake.is_set() or now >= self._intake.next_scan:
                self.wake.clear()
                self._intake.scan(now, breathe=self.notifier.watchdog)
                self._adopt_orphans()
            self._claim_settled(now)
        except StorageError as exc:
            self._pause_storage(exc)
            return 0.0
        self._retry_credentials()
        if self._xnat.probe_due(now):
            self._probe()
        job = self._next_job(now)
        if job is not None:
            self._heartbeat.start(STEP_BUDGET)
            try:
                finished = run_step(lambda: self._attempt(job), self._while_busy, STEP_POLL)
            finally:
                self._heartbeat.end()
            if not finished:
                self._abandoned = True
                log.warning(
                    "%s: stopped in the middle of a step; it stays in the work folder and "
                    "resumes at the next start",
                    job.claim.display,
                    extra=_fields(job),
                )
                return 0.0
            self._publish()
            return 0.0
        self._publish()
        return max(0.0, self._next_wake(now) - self.clock.monotonic())

    def _claim_settled(self, now: float) -> None:
        marker = self.config.watch.ready_marker
        for relpath, seen in self._intake.ready(now):
            self.notifier.watchdog()  # each claim looks at its folder again: many take a while
            try:
                claim = self._work_().claim(relpath, self.clock.wall(), seen.fingerprint, marker)
            except SessionChangedError as exc:
                self._intake.try_later(relpath, now)
                log.info("%s: not taken: %s", shown_path(relpath), exc)
                continue
            except OSError as exc:  # nothing moved: tried again after another settle period
                self._not_claimed(relpath, now, exc)
                continue
            self._intake.taken(relpath)
            if claim is None:
                log.info("%s: gone before it could be claimed", shown_path(relpath))
                continue
            forced = filing.take_force_marker(self.config.paths.incoming, relpath)
            job = Job(claim, next_at=now, forced=forced)
            self.jobs.append(job)  # first: a ledger failure below must not lose the claim
            self._ledger_().claimed(claim.id, claim.display, self.clock.wall())
            self._ledger_().update(
                claim.id, self.clock.wall(), fingerprint=seen.fingerprint.names_hash, forced=forced
            )
            fp = seen.fingerprint
            log.info(
                "%s: settled (%d files, %d bytes); claimed as %s",
                claim.display,
                fp.count,
                fp.total_bytes,
                claim.id,
                extra=_fields(job),
            )
            failpoints.hit("after-claim")

    def _not_claimed(self, relpath: tuple[str, ...], now: float, exc: OSError) -> None:
        """A settled folder could not be taken: say why once, try again after a settle."""
        if isinstance(exc, UnsafePathError):
            why = f"{exc.strerror}"
        elif isinstance(exc, PermissionError):
            # Moving a folder to another parent needs write permission on the folder itself.
            why = "not writable by xnat-drop (the session folder itself must be group-writable)"
        else:
            why = f"cannot take it into the work folder ({shown(str(exc))})"
        said = self._intake.blocked.get(relpath)
        self._intake.try_later(relpath, now, why)
        if said != why:
            log.error(
                "%s: %s; it stays in incoming/ and is tried again every %.0f s",
                shown_path(relpath),
                why,
                self.config.watch.settle,
            )

    def _next_job(self, now: float) -> Job | None:
        blocked = self._xnat.blocked
        for job in self.jobs:
            # A session already judged needs XNAT next; one not yet judged can go on without it.
            if job.next_at <= now and not (blocked and job.verdict is not None):
                return job
        return None

    def _next_wake(self, now: float) -> float:
        times = [self._intake.next_wake()]
        probe = self._xnat.next_probe()
        if probe is not None:
            times.append(probe)
        blocked = self._xnat.blocked
        times += [job.next_at for job in self.jobs if not (blocked and job.verdict is not None)]
        return min(times)

    def _once_finished(self) -> bool:
        return not self.jobs and not self._intake.only

    def _open_count(self) -> int:
        return len(self.jobs) + len(self._intake.only or ())

    def _ledger_(self) -> Ledger:
        assert self._ledger is not None, "start() opens the ledger"
        return self._ledger

    def _work_(self) -> store.WorkArea:
        assert self._work is not None, "start() opens the work area"
        return self._work

    def _adopt_orphans(self) -> None:
        """Take over claims nobody holds: ours from before a restart, or a killed daemon's."""
        now = self.clock.monotonic()
        paths = self.config.paths
        for claim in self._work_().recover():
            self._ledger_().claimed(claim.id, claim.display, self.clock.wall())
            entry = self._ledger_().entry(claim.id)
            root = paths.done if entry is not None and entry.outcome == "done" else paths.failed
            final = Path(entry.final_path) if entry is not None and entry.final_path else None
            if entry is not None and entry.outcome and final and final.is_relative_to(root):
                # Decided, reported, then stopped before the move: finish the move.
                try:
                    dest = self._work_().complete(claim, root, final.relative_to(root).parts)
                except OSError as exc:
                    log.error("%s: cannot finish its move (%s)", claim.display, shown(str(exc)))
                    self._work_().release(claim)
                    continue
                log.info(
                    "%s: completed the interrupted move to %s", claim.display, self._shown(dest)
                )
                continue
            attempts, forced = (entry.attempts, entry.forced) if entry else (0, False)
            job = Job(claim, next_at=now, attempts=attempts, forced=forced)
            log.info(
                "%s: recovered from the work folder (claimed %s)",
                claim.display,
                claim.id,
                extra=_fields(job),
            )
            self.jobs.append(job)

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
        """Called every STEP_POLL while a step runs; False abandons the step (on SIGTERM)."""
        if self._heartbeat.alive():
            self.notifier.watchdog()  # a step stuck beyond its budget gets no ping
        self.notifier.status(self.status_line())
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
        parts = []
        if self._storage is not None:
            parts.append(f"PAUSED: {self._storage.reason}")
        busy = next((j for j in list(self.jobs) if j.uploading), None)
        waiting = len(self.seen) + sum(1 for j in list(self.jobs) if j is not busy)
        parts.append(f"{waiting} waiting")
        if busy is not None:
            done, total = busy.sent
            percent = f" {100 * done // total}%" if total else ""
            name = shown(busy.claim.relpath[-1])
            name = name if len(name) <= 60 else name[:57] + "..."
            parts.append(f"uploading {name}{percent} of {_size(total)}")
        today = self._today
        parts.append(f"{today.get('done', 0)} done today")
        parts.append(f"{today.get('failed', 0)} failed")
        if self._xnat.auth is not None:
            parts.append("XNAT refused the credentials: uploads paused")
        elif self._xnat.outage is not None:
            since = datetime.fromtimestamp(self._xnat.outage.since).strftime("%H:%M")
            parts.append(f"XNAT {self._xnat.outage.state} since {since}")
        else:
            parts.append("XNAT ok")
        return " · ".join(parts)

    def _count_today(self) -> None:
        day = datetime.fromtimestamp(self.clock.wall()).date()
        midnight = datetime.combine(day, datetime.min.time()).timestamp()
        ledger = self._ledger_()
        self._today = {
            "day": day,
            "done": ledger.count_since("done", midnight),
            "failed": ledger.count_since("failed", midnight),
        }

    def _reload(self) -> None:
        """SIGHUP: read the configuration again; a broken one keeps the current one."""
        self._reload_requested = False
        self.notifier.reloading()
        source = Path(self.config.source)
        try:
            new = configfile.load(source, self.env)
            check_keywords(new)
        except ConfigError as exc:
            log.error(
                "reload: keeping the current configuration, the new one has problems: %s", exc
            )
            self.notifier.ready(self.status_line())
            return
        kept = []
        if new.paths != self.config.paths:
            new = replace(new, paths=self.config.paths)
            kept.append("paths")
        if new.watch.observer != self.config.watch.observer:
            new = replace(new, watch=replace(new.watch, observer=self.config.watch.observer))
            kept.append("watch.observer")
        reconnect = new.xnat != self.config.xnat
        self.config = new
        self._xnat.retry = new.retry
        self._intake.config = new
        logging.getLogger("xnat_drop").setLevel(new.log_level.upper())
        if reconnect:
            try:
                client = self._connect()
            except ConfigError as exc:
                log.error(
                    "reload: cannot use the new XNAT settings (%s); keeping the old client", exc
                )
            else:
                if self._client is not None:
                    self._client.close()
                self._client = client
                self._server_version = client.server_version()
        note = f" ({', '.join(kept)} need a restart to change)" if kept else ""
        log.info("reload: configuration reloaded from %s%s", source, note)
        self.notifier.ready(self.status_line())

    # -- one session --------------------------------------------------------------------------

    def _attempt(self, job: Job) -> None:
        """Take one claimed session one step further; every outcome is handled here."""
        try:
            self._attempt_once(job)
        except StorageError as exc:  # the job stays as it is; all work waits for the state dir
            self._pause_storage(exc)
        finally:
            job.uploading = False

    def _attempt_once(self, job: Job) -> None:
        claim = job.claim
        try:
            if job.verdict is None:
                self._judge(job)
                failpoints.hit("after-judge")
            assert job.session is not None and job.verdict is not None
            if not job.verdict.accepted:
                # Judged again after it changed mid-upload: what went out must not stay.
                self._delivery().withdraw_partial(claim.id)
                self._finish(job, Outcome.FAILED, job.verdict.violations)
                return
            earlier = self._delivered_before(job)
            if earlier is not None:
                self._finish(job, Outcome.FAILED, (*job.verdict.violations, earlier))
                return
            if self._xnat.blocked:
                return  # judged; the upload waits for XNAT with the rest of the queue
            receipt = self._deliver(job)
            self._finish(job, Outcome.DONE, job.verdict.violations, receipt)
        except SessionChangedError as exc:
            # A writer kept an open file after the claim: judge again once it is quiet.
            log.warning(
                "%s: changed while being read (%s); waiting for it to settle",
                claim.display,
                shown(str(exc)),
                extra=_fields(job),
            )
            job.session = job.verdict = None
            job.next_at = self.clock.monotonic() + self.config.watch.settle
        except XnatTransientError as exc:
            job.last_error = str(exc)
            self._xnat.outage_begins(exc)
        except XnatServerError as exc:
            # A 500: an outage (the probe fails too) or something about this session.
            if self._xnat_is_down():
                job.last_error = str(exc)
                self._xnat.outage_begins(exc)
            else:
                self._spend_attempt(job, f"XNAT answered with an error: {exc}", exc)
        except XnatAuthError as exc:
            self._pause_auth(exc)
            job.last_error = str(exc)
        except XnatRejectedError as exc:
            target = job.verdict.target if job.verdict else None
            if exc.rule == "unknown-project" and target is not None:
                violation = unknown_project(target.project)
            else:
                violation = _xnat_violation(exc)
            self._finish(job, Outcome.FAILED, (*self._judged(job), violation))
        except StorageError:
            raise
        except Exception as exc:
            log.exception("%s: unexpected error", claim.display)
            self._spend_attempt(job, f"unexpected error: {type(exc).__name__}: {exc}", exc)

    def _delivered_before(self, job: Job) -> Violation | None:
        """The same instances, same labels, already delivered (per the ledger): a re-drop."""
        assert job.verdict is not None and job.verdict.target is not None
        key = content_key(job.verdict.target, job.verdict.upload)
        self._ledger_().update(job.claim.id, self.clock.wall(), content_key=key)
        earlier = self._ledger_().delivered(key)
        if earlier is None or earlier.claim_id == job.claim.id or job.forced:
            return None
        where = earlier.archive_uri or earlier.prearchive_uri
        sentence = (
            f"This session was already delivered on {status_file.iso(earlier.updated_at)} "
            f"({self.config.xnat.url}{where}); it was not uploaded again. If it must be sent "
            "again anyway, ask the data manager to run `xnat-drop retry --force` on this folder."
        )
        return Violation(
            "already-delivered", Policy.REJECT, "the whole session", sentence, detail=where
        )

    def _judge(self, job: Job) -> None:
        claim = job.claim
        quiet = PROGRESS_QUIET
        judgement = judge(
            claim.folder,
            claim.relpath,
            self.config,
            self._pool,
            progress=lambda: self._heartbeat.beat(quiet),
        )
        failpoints.hit("after-inspect")
        _unchanged_since_inspection(claim.folder, judgement.session)
        session, verdict = judgement.session, judgement.verdict
        job.session, job.verdict = session, verdict
        rules = ", ".join(sorted({v.rule for v in verdict.violations}))
        dicom = sum(1 for f in session.files if f.is_dicom)
        found = f"inspected {len(session.files)} files ({dicom} DICOM)"
        if verdict.accepted:
            broken = f"; left out by the rules: {rules}" if rules else ""
            log.info(
                "%s: %s: accepted, %d to upload%s",
                claim.display,
                found,
                len(verdict.upload),
                broken,
                extra=_fields(job),
            )
        else:
            log.info(
                "%s: %s: rejected (%s)", claim.display, found, rules, extra=_fields(job, RULE=rules)
            )

    def _deliver(self, job: Job) -> UploadReceipt:
        """Stream the zip to XNAT and see it verified there. Raises the Xnat*Error types."""
        assert (
            job.verdict is not None and job.verdict.target is not None and self._client is not None
        )
        target, verdict = job.verdict.target, job.verdict
        # Each file is opened below the claimed folder through no link, and must still be the
        # file inspection judged (its stamp): only judged bytes leave.
        entries = [BundleEntry(f.path, f.path, f.size, f.stamp) for f in verdict.upload]
        root = Dir.open(job.claim.folder)
        streams: list[ZipStream] = []

        def make_body() -> ZipStream:
            total = sum(f.size for f in verdict.upload)
            log.info(
                "%s: uploading %d files (%.1f MB) to XNAT %s/%s/%s",
                job.claim.display,
                len(entries),
                total / 1e6,
                target.project,
                target.subject,
                target.session,
                extra=_fields(job),
            )
            job.uploading = True
            half = total // 2

            job.sent = (0, total)
            quiet = self.config.xnat.read_timeout + 30

            def progress(done: int) -> None:
                job.sent = (done, total)
                self._heartbeat.beat(quiet)
                if done >= half:
                    failpoints.hit("mid-upload")

            # 2 MiB buffers: DICOM files up to that size are read once; memory stays small.
            streams.append(ZipStream(entries, root=root, buffer_limit=2 << 20, progress=progress))
            return streams[-1]

        delivery = self._delivery()
        started = self.clock.monotonic()
        try:
            receipt = delivery.deliver(job.claim.id, verdict, make_body)
        finally:
            for stream in streams:
                stream.close()
            root.close()
        self._xnat.outage_ends(self._waiting_for_xnat())
        return replace(
            receipt,
            bytes_sent=streams[-1].bytes_done if streams else 0,
            seconds=self.clock.monotonic() - started,
            server_version=self._server_version,
        )

    def _delivery(self) -> Delivery:
        assert self._client is not None
        return Delivery(self._client, self.config.xnat, self._ledger_(), self.clock.wall)

    def _spend_attempt(self, job: Job, reason: str, exc: Exception) -> None:
        """A failure that is not an outage: retry with backoff until max_attempts."""
        job.last_error = reason
        job.attempts = self._ledger_().spend_attempt(job.claim.id, self.clock.wall(), reason)
        retry = self.config.retry
        if job.attempts >= retry.max_attempts:
            self._give_up(job, exc)
            return
        delay = backoff(job.attempts, retry.first_delay, retry.max_delay, self.rng.random())
        job.next_at = self.clock.monotonic() + delay
        log.warning(
            "%s: attempt %d of %d failed (%s); next try in %.1f s",
            job.claim.display,
            job.attempts,
            retry.max_attempts,
            reason,
            delay,
            extra=_fields(job),
        )

    def _give_up(self, job: Job, exc: Exception) -> None:
        history = "; ".join(
            f"{status_file.iso(e.at)} {e.detail}"
            for e in self._ledger_().events(job.claim.id)
            if e.kind == "attempt-failed"
        )
        violation = Violation(
            "delivery-failed",
            Policy.REJECT,
            "xnat-drop",
            f"xnat-drop tried {job.attempts} times and failed each time ({history}). The files "
            "are untouched. Tell the administrator (the service log has the details), then move "
            "the folder back to try again.",
        )
        self._finish(job, Outcome.FAILED, (*self._judged(job), violation))
        del exc

    def _finish(
        self,
        job: Job,
        outcome: Outcome,
        violations: tuple[Violation, ...],
        receipt: UploadReceipt | None = None,
    ) -> None:
        """Report, record and move the session to done/ or failed/.

        A storage problem (a read-only or full failed/, a locked ledger) leaves it in the work
        folder to be tried again later: it is never lost and never half moved.
        """
        try:
            self._report_and_move(job, outcome, violations, receipt)
        except OSError as exc:  # the drop tree, not the state dir (StorageError goes up)
            job.storage_failures += 1
            retry = self.config.retry
            delay = backoff(
                job.storage_failures, retry.first_delay, retry.max_delay, self.rng.random()
            )
            job.next_at = self.clock.monotonic() + delay
            job.last_error = f"cannot move it to {outcome.value}/: {shown(str(exc))}"
            log.error(
                "%s: cannot put it into %s/ (%s); it stays in the work folder and is tried again "
                "in %.0f s",
                job.claim.display,
                outcome.value,
                shown(str(exc)),
                delay,
                extra=_fields(job),
            )

    def _report_and_move(
        self,
        job: Job,
        outcome: Outcome,
        violations: tuple[Violation, ...],
        receipt: UploadReceipt | None,
    ) -> None:
        paths = self.config.paths
        claim = job.claim
        root = paths.done if outcome is Outcome.DONE else paths.failed
        other = paths.failed if outcome is Outcome.DONE else paths.done
        filing.discard_own_reports(other, claim.id, claim.relpath)
        placement = filing.place(root, claim.id, claim.relpath)
        dest = placement.path
        session = job.session or Session(claim.relpath[-1], claim.relpath, ())
        report = Report(
            outcome=outcome,
            session=session,
            location=self._shown(dest),
            decided_at=self.clock.wall(),
            verdict=job.verdict,
            target=job.verdict.target if job.verdict else None,
            violations=violations,
            receipt=receipt,
            attempts=job.attempts + 1,
            incoming=self._shown(paths.incoming.joinpath(*claim.relpath)),
            claim_id=claim.id,
            notes=placement.notes,
        )
        # Reports, then the ledger's decision, then the move: a crash between any two is
        # finished by the next start (see _adopt_orphans), never decided twice.
        filing.write_reports(
            placement, {".report.txt": render_text(report), ".report.json": render_json(report)}
        )
        failpoints.hit("after-reports")
        rules = sorted({v.rule for v in violations if v.policy is Policy.REJECT})
        self._ledger_().update(
            claim.id,
            self.clock.wall(),
            state=outcome.value,
            outcome=outcome.value,
            reason=", ".join(rules),
            final_path=str(dest),
        )
        failpoints.hit("before-move")
        self._work_().complete(claim, root, placement.relpath)
        self.jobs.remove(job)
        self._tally(outcome)
        if outcome is Outcome.DONE:
            uris = ", ".join(receipt.uris if receipt else ())
            log.info(
                "%s: delivered (%s) -> %s",
                claim.display,
                uris,
                report.location,
                extra=_fields(job, XNAT_URI=uris),
            )
        else:
            log.info(
                "%s: not uploaded (%s) -> %s",
                claim.display,
                ", ".join(rules),
                report.location,
                extra=_fields(job, RULE=", ".join(rules)),
            )

    def _tally(self, outcome: Outcome) -> None:
        if self._today.get("day") != datetime.fromtimestamp(self.clock.wall()).date():
            self._count_today()  # a new day: start from the ledger again
        else:
            self._today[outcome.value] = self._today.get(outcome.value, 0) + 1

    def _judged(self, job: Job) -> tuple[Violation, ...]:
        return job.verdict.violations if job.verdict is not None else ()

    # -- the state directory ------------------------------------------------------------------

    def _pause_storage(self, exc: BaseException) -> None:
        """The ledger or status file cannot be written: all work waits, loudly, losing nothing."""
        now = self.clock.monotonic()
        if self._storage is None:
            self._storage = StoragePause(shown(str(exc)), self.clock.wall(), 0, now)
            log.error(
                "WORK PAUSED: the state directory %s cannot be used (%s). Nothing is lost: "
                "sessions stay where they are and work resumes by itself once it can be "
                "written again (is it full or read-only?)",
                self.config.paths.state,
                self._storage.reason,
            )
        pause = self._storage
        pause.failures += 1
        first, longest = STORAGE_PROBE
        pause.next_probe = now + backoff(pause.failures, first, longest, self.rng.random())
        self.notifier.status(self.status_line())

    def _probe_storage(self) -> None:
        """While paused: one ledger write and one status write; both must succeed."""
        assert self._storage is not None
        try:
            self._ledger_().probe()
            status_file.write(self.config.paths.state, self._snapshot())
        except (OSError, StorageError) as exc:
            self._pause_storage(exc)
            return
        lasted = self.clock.wall() - self._storage.since
        self._storage = None
        log.info("the state directory works again after %s; work resumes", duration(lasted))

    def _probe(self) -> None:
        """One light request while XNAT is unavailable; it ends the outage if it succeeds."""
        assert self._client is not None
        try:
            self._client.probe()
        except (XnatTransientError, XnatServerError) as exc:
            self._xnat.probe_failed(exc)
            return
        except XnatAuthError as exc:
            self._pause_auth(exc)
            return
        self._xnat.outage_ends(self._waiting_for_xnat())

    def _waiting_for_xnat(self) -> int:
        return sum(1 for j in self.jobs if j.verdict is not None)

    def _xnat_is_down(self) -> bool:
        """Ask XNAT once whether it is answering at all (after a 500)."""
        assert self._client is not None
        try:
            self._client.probe()
        except (XnatTransientError, XnatServerError):
            return True
        except XnatAuthError:
            return False
        return False

    def _pause_auth(self, exc: XnatAuthError) -> None:
        self._xnat.pause(str(exc), creds.stamp(self.config.xnat.secret_file, self.env))

    def _retry_credentials(self) -> None:
        """Resume uploads once an operator replaced the refused secret (one login per change)."""
        auth = self._xnat.auth
        if auth is None:
            return
        current = creds.stamp(self.config.xnat.secret_file, self.env)
        if current is None or current == auth.stamp:
            return
        auth.stamp = current
        log.info("the XNAT secret changed; trying to log in again")
        try:
            client = self._connect()
            client.login()
        except (ConfigError, XnatAuthError) as exc:
            auth.reason = str(exc)
            log.error("UPLOADS STILL PAUSED: %s", exc)
            return
        except (XnatTransientError, XnatServerError) as exc:
            log.warning("cannot check the new secret yet: %s", exc)
            auth.stamp = None  # try again on the next turn
            return
        if self._client is not None:
            self._client.close()
        self._client = client
        self._xnat.resume()

    # -- status -----------------------------------------------------------------------------

    def _publish(self, *, force: bool = False) -> None:
        """Rewrite status.json when something changed (and every STATUS_REFRESH seconds)."""
        if self._ledger is None:
            return
        snapshot = self._snapshot()
        key = repr({k: v for k, v in snapshot.items() if k != "updated_at"})
        now = self.clock.monotonic()
        if not force and key == self._published[0] and now - self._published[1] < STATUS_REFRESH:
            return
        try:
            status_file.write(self.config.paths.state, snapshot)
        except OSError as exc:  # the state dir is full or read-only: everything waits
            self._pause_storage(StorageError(f"cannot write the status file: {exc}"))
            return
        self._published = (key, now)

    def _snapshot(self) -> dict[str, Any]:
        mono, wall = self.clock.monotonic(), self.clock.wall()

        def at(monotonic: float) -> str | None:
            return None if monotonic == float("inf") else status_file.iso(wall + monotonic - mono)

        xnat = self._xnat.state(at, status_file.iso)
        xnat.update(url=self.config.xnat.url, server_version=self._server_version)
        settling = self._intake.settling(at)
        work = [self._job_status(job, at) for job in self.jobs[:LISTED]]
        return {
            "schema": status_file.SCHEMA,
            "pid": os.getpid(),
            "version": __version__,
            "updated_at": status_file.iso(wall),
            "xnat": xnat,
            "settling": settling,
            "settling_more": self._intake.unlisted,
            "work": work,
            "work_more": max(0, len(self.jobs) - LISTED),
            "storage": None
            if self._storage is None
            else {"state": "paused", "detail": self._storage.reason},
            "today": {"done": self._today.get("done", 0), "failed": self._today.get("failed", 0)},
        }

    def _job_status(self, job: Job, at: Callable[[float], str | None]) -> dict[str, Any]:
        if job.uploading:
            state = "uploading"
        elif job.verdict is None:
            state = "waiting to be inspected"
        elif self._xnat.auth is not None:
            state = "waiting: XNAT refused the credentials"
        elif self._xnat.outage is not None:
            state = f"waiting: XNAT {self._xnat.outage.state}"
        elif job.attempts:
            attempt = f"attempt {job.attempts + 1} of {self.config.retry.max_attempts}"
            state = f"retrying ({attempt}) at {at(job.next_at)}"
        else:
            state = "next"
        return {
            "session": job.claim.display,
            "claim": job.claim.id,
            "state": state,
            "attempts": job.attempts,
            "since": status_file.iso(job.claim.claimed_at),
            "last_error": shown(job.last_error)[:500],
        }

    def _shown(self, path: Path) -> str:
        """`path` as lab members know it: relative to the drop tree when there is one."""
        paths = self.config.paths
        common = Path(os.path.commonpath([paths.incoming, paths.done, paths.failed]))
        try:
            text = str(path.relative_to(common)) if common != Path(common.anchor) else str(path)
        except ValueError:
            text = str(path)
        return shown(text)


def _xnat_violation(exc: XnatRejectedError) -> Violation:
    sentence = str(exc)
    if exc.rule == "xnat-rejected":
        sentence += (
            " Check the files named in XNAT's message, fix them, then drop the session again."
        )
    return Violation(exc.rule, Policy.REJECT, "XNAT", sentence)


def _fields(job: Job, **more: str) -> dict[str, str]:
    """Journal fields for a log line about `job` (`journalctl -u xnat-drop SESSION=...`)."""
    fields = {"SESSION": shown(job.claim.relpath[-1])}
    if job.verdict is not None and job.verdict.target is not None:
        fields["PROJECT"] = job.verdict.target.project
    fields.update(more)
    return fields


def _unchanged_since_inspection(folder: Path, session: Session) -> None:
    """Raise SessionChangedError when a file of `folder` was added, removed or written since
    inspection read it (a writer that kept a handle open after the claim): a verdict is filed
    only for the files as they are."""
    judged = {f.path: f.stamp for f in session.files if f.kind is not FileKind.JUNK}
    junk = {f.path for f in session.files if f.kind is FileKind.JUNK}
    for entry in walk(folder):
        if entry.relpath in junk or is_junk_path(entry.relpath):
            continue
        if entry.relpath not in judged:
            raise SessionChangedError(f"{entry.relpath} appeared while the session was inspected")
        was = judged.pop(entry.relpath)
        if entry.kind == REGULAR and was and was != entry.stamp:
            raise SessionChangedError(f"{entry.relpath} was written while it was inspected")
    if judged:
        raise SessionChangedError(f"{next(iter(judged))} vanished while the session was inspected")


def _state_problem(state: Path, exc: BaseException) -> str:
    """Why the state directory cannot be used, and what to do, in one sentence."""
    return (
        f"paths.state_dir: {state} cannot be used ({shown(str(exc))}). Free space if it is "
        f"full; make it writable by the service if it is read-only; if the ledger is damaged, "
        f"move {state / LEDGER_FILE} aside (claimed sessions are recovered from the work "
        "folder, but re-drops of earlier sessions are then no longer recognised)."
    )


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"
