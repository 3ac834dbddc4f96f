"""The service loop: the only module that joins the pure core to the outside world.

One thread does everything in order: rescan incoming/, claim what has settled, and take one
claimed session at a time through inspect → rules → upload → done/ or failed/. Watcher events
only wake the loop early. XNAT being down or refusing our credentials pauses uploads; it never
sends a session to failed/.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from . import credentials as creds
from . import store
from .bundle import BundleEntry, ZipStream
from .config import Config
from .errors import (
    ConfigError,
    SessionChangedError,
    XnatAuthError,
    XnatRejectedError,
    XnatTransientError,
)
from .judge import check_keywords, judge
from .model import Outcome, Policy, Seen, Session, Target, UploadReceipt, Verdict, Violation
from .report import Report, render_json, render_text
from .retry import backoff
from .rules import unknown_project
from .stability import fingerprint, is_stable, observe, settles_at
from .tree import find_sessions, walk
from .watch import Watcher
from .xnat import Body

log = logging.getLogger(__name__)

EX_TEMPFAIL = 75  # `run --once` left sessions waiting (XNAT unavailable or credentials refused)
MAX_UNEXPECTED = 3  # unexpected errors on one session before it goes to failed/ for a human


class XnatPort(Protocol):
    """What the loop needs from XNAT (xnat.XnatClient; tests may pass the real one)."""

    def server_version(self) -> str: ...
    def login(self) -> None: ...
    def project_exists(self, project: str) -> bool: ...
    def upload(self, make_body: Callable[[], Body], target: Target) -> tuple[str, ...]: ...
    def close(self) -> None: ...


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
    attempts: int = 0
    transient_failures: int = 0
    unexpected_failures: int = 0
    session: Session | None = None
    verdict: Verdict | None = None
    last_error: str = ""


@dataclass
class _Pause:
    until: float = 0.0  # XNAT unreachable: no upload before this monotonic time
    auth: str = ""  # credentials refused: no upload until the secret changes
    auth_stamp: creds.SecretStamp | None = None


@dataclass
class Service:
    """The daemon. `connect` builds an XNAT client (it reads the credentials)."""

    config: Config
    connect: Callable[[], XnatPort]
    clock: Clock = field(default_factory=Clock)
    rng: random.Random = field(default_factory=random.Random)
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    wake: threading.Event = field(default_factory=threading.Event)
    # The loop's own state, never passed in.
    seen: dict[tuple[str, ...], Seen] = field(init=False, default_factory=dict)
    jobs: list[Job] = field(init=False, default_factory=list)
    stopping: bool = field(init=False, default=False)
    _client: XnatPort | None = field(init=False, default=None)
    _server_version: str = field(init=False, default="")
    _pause: _Pause = field(init=False, default_factory=_Pause)
    _next_scan: float = field(init=False, default=0.0)
    _last_scan: float = field(init=False, default=float("-inf"))
    _watching_once: set[tuple[str, ...]] | None = field(init=False, default=None)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Prepare folders, recover claims from an earlier run, connect to XNAT.

        Raises ConfigError for unusable credentials or folders (exit 78).
        """
        check_keywords(self.config)
        try:
            store.prepare(self.config.paths)
        except OSError as exc:
            raise ConfigError([f"paths: {exc}"], self.config.source) from exc
        now = self.clock.monotonic()
        for claim in store.recover(self.config.paths):
            log.info("%s: recovered from the work folder (claimed %s)", claim.display, claim.id)
            self.jobs.append(Job(claim, next_at=now))
        self._client = self.connect()
        self._server_version = self._client.server_version()
        log.info(
            "XNAT %s at %s; watching %s",
            self._server_version or "(version unknown)",
            self.config.xnat.url,
            self.config.paths.incoming,
        )

    def run(self, *, once: bool = False, timeout: float | None = None) -> int:
        """Loop until stopped (or, with `once`, until the sessions present now are finished).

        Returns the process exit code: 0, or EX_TEMPFAIL when `once` leaves sessions waiting.
        """
        self.start()
        watcher = Watcher(
            self.config.paths.incoming,
            self.wake,
            observer=self.config.watch.observer,
            poll_interval=self.config.watch.poll_interval,
        )
        watcher.start()
        deadline = None if timeout is None else self.clock.monotonic() + timeout
        try:
            if once:
                self._scan(self.clock.monotonic())
                # An empty folder never settles: waiting for it would never end.
                self._watching_once = {r for r, s in self.seen.items() if s.fingerprint.count}
            while not self.stopping:
                wait = self.tick()
                if once:
                    if self._once_finished():
                        return 0
                    if self._pause.auth:
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
                    self.wake.wait(wait)  # tick() clears it and rescans
            return EX_TEMPFAIL if once and not self._once_finished() else 0
        finally:
            watcher.stop()
            if self._client is not None:
                self._client.close()

    def stop(self) -> None:
        """Ask the loop to stop after the current step (signal handlers call this)."""
        self.stopping = True
        self.wake.set()

    # -- one turn of the loop -----------------------------------------------------------------

    def tick(self) -> float:
        """Do what is due now; returns how long the loop may sleep before the next turn."""
        now = self.clock.monotonic()
        if self.wake.is_set() or now >= self._next_scan:
            self.wake.clear()
            self._scan(now)
        self._claim_settled(now)
        self._retry_credentials()
        job = self._next_job(now)
        if job is not None:
            self._attempt(job)
            return 0.0
        return max(0.0, self._next_wake(now) - self.clock.monotonic())

    def _scan(self, now: float) -> None:
        """Re-read incoming/: fingerprint every session candidate, forget vanished ones."""
        # Writers trigger events per block: rescanning at most every `gap` keeps a big copy
        # from turning into a walk per write.
        gap = min(2.0, self.config.watch.settle / 4)
        if now - self._last_scan < gap:
            self._next_scan = self._last_scan + gap  # come back as soon as allowed
            return
        self._last_scan = now
        self._next_scan = now + self.config.watch.rescan_interval
        incoming = self.config.paths.incoming
        depth = len(self.config.routing.layout)
        current = {}
        for relpath in find_sessions(incoming, depth):
            if self._watching_once is not None and relpath not in self._watching_once:
                continue  # `run --once` handles only what was there at the start
            folder = incoming.joinpath(*relpath)
            fp = fingerprint((e.relpath, e.size, e.mtime_ns) for e in walk(folder))
            previous = self.seen.get(relpath)
            current[relpath] = observe(previous, fp, now)
            if previous is None:
                log.info("%s: new, waiting until it stops changing", "/".join(relpath))
        if self._watching_once is not None:
            self._watching_once &= set(current)
        self.seen = current

    def _claim_settled(self, now: float) -> None:
        settle = self.config.watch.settle
        for relpath, seen in list(self.seen.items()):
            if not is_stable(seen, now, settle):
                continue
            claim = store.claim(self.config.paths, relpath, self.clock.wall())
            del self.seen[relpath]
            if self._watching_once is not None:
                self._watching_once.discard(relpath)
            if claim is None:
                log.info("%s: gone before it could be claimed", "/".join(relpath))
                continue
            fp = seen.fingerprint
            log.info(
                "%s: settled (%d files, %d bytes); claimed as %s",
                claim.display,
                fp.count,
                fp.total_bytes,
                claim.id,
            )
            self.jobs.append(Job(claim, next_at=now))

    def _next_job(self, now: float) -> Job | None:
        blocked = self._xnat_blocked(now)
        for job in self.jobs:
            # A session already judged needs XNAT next; one not yet judged can go on without it.
            if job.next_at <= now and not (blocked and job.verdict is not None):
                return job
        return None

    def _next_wake(self, now: float) -> float:
        times = [self._next_scan]
        settle = self.config.watch.settle
        times += [t for s in self.seen.values() if (t := settles_at(s, settle)) is not None]
        blocked_until = self._pause.until if not self._pause.auth else float("inf")
        for job in self.jobs:
            times.append(
                max(job.next_at, blocked_until) if job.verdict is not None else job.next_at
            )
        return min(times)

    def _xnat_blocked(self, now: float) -> bool:
        return bool(self._pause.auth) or now < self._pause.until

    def _once_finished(self) -> bool:
        return not self.jobs and not self._watching_once

    def _open_count(self) -> int:
        return len(self.jobs) + len(self._watching_once or ())

    # -- one session --------------------------------------------------------------------------

    def _attempt(self, job: Job) -> None:
        """Take one claimed session one step further; every outcome is handled here."""
        claim = job.claim
        job.attempts += 1
        try:
            if job.verdict is None:
                self._judge(job)
            assert job.session is not None and job.verdict is not None
            if not job.verdict.accepted:
                self._finish(job, Outcome.FAILED, job.verdict.violations)
                return
            receipt = self._deliver(job)
            self._pause.until = 0.0
            self._finish(job, Outcome.DONE, job.verdict.violations, receipt)
        except SessionChangedError as exc:
            # A writer kept an open file after the claim: judge again once it is quiet.
            log.warning(
                "%s: changed while being read (%s); waiting for it to settle", claim.display, exc
            )
            job.session = job.verdict = None
            job.next_at = self.clock.monotonic() + self.config.watch.settle
        except XnatTransientError as exc:
            job.transient_failures += 1
            retry = self.config.retry
            delay = backoff(
                job.transient_failures,
                retry.first_delay,
                retry.max_delay,
                self.rng.random(),
                exc.retry_after,
            )
            job.next_at = self.clock.monotonic() + delay
            self._pause.until = job.next_at
            job.last_error = str(exc)
            log.warning(
                "%s: XNAT unavailable (%s); uploads wait, next try in %.1f s",
                claim.display,
                exc,
                delay,
            )
        except XnatAuthError as exc:
            self._pause.auth = str(exc)
            self._pause.auth_stamp = creds.stamp(self.config.xnat.secret_file, self.env)
            job.last_error = str(exc)
            log.error("UPLOADS PAUSED: %s", exc)
        except XnatRejectedError as exc:
            target = job.verdict.target if job.verdict else None
            if exc.rule == "unknown-project" and target is not None:
                violation = unknown_project(target.project)
            else:
                violation = _xnat_violation(exc)
            self._finish(job, Outcome.FAILED, (*self._judged(job), violation))
        except Exception as exc:
            job.unexpected_failures += 1
            job.last_error = f"{type(exc).__name__}: {exc}"
            log.exception(
                "%s: unexpected error (attempt %d)", claim.display, job.unexpected_failures
            )
            if job.unexpected_failures >= MAX_UNEXPECTED:
                self._give_up(job, exc)
            else:
                job.next_at = self.clock.monotonic() + self.config.retry.first_delay

    def _judge(self, job: Job) -> None:
        claim = job.claim
        judgement = judge(claim.folder, claim.relpath, self.config)
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
            )
        else:
            log.info("%s: %s: rejected (%s)", claim.display, found, rules)

    def _deliver(self, job: Job) -> UploadReceipt:
        """Check the project, then stream the zip to XNAT. Raises the Xnat*Error types."""
        assert (
            job.verdict is not None and job.verdict.target is not None and self._client is not None
        )
        target, verdict = job.verdict.target, job.verdict
        if not self._client.project_exists(target.project):
            raise XnatRejectedError("unknown-project", unknown_project(target.project).sentence)
        entries = [BundleEntry(job.claim.folder / f.path, f.path, f.size) for f in verdict.upload]
        streams: list[ZipStream] = []

        def make_body() -> ZipStream:
            streams.append(ZipStream(entries))
            return streams[-1]

        total = sum(f.size for f in verdict.upload)
        log.info(
            "%s: uploading %d files (%.1f MB) to XNAT %s/%s/%s",
            job.claim.display,
            len(entries),
            total / 1e6,
            target.project,
            target.subject,
            target.session,
        )
        started = self.clock.monotonic()
        try:
            uris = self._client.upload(make_body, target)
        finally:
            for stream in streams:
                stream.close()
        seconds = self.clock.monotonic() - started
        for uri in uris:
            if not uri.startswith(
                (
                    f"/data/prearchive/projects/{target.project}/",
                    f"/data/archive/projects/{target.project}/",
                )
            ):
                raise XnatRejectedError(
                    "xnat-unassigned",
                    f"XNAT filed the upload at {uri} instead of project {target.project}. "
                    "Ask the XNAT administrator to move or delete that prearchive session.",
                )
        return UploadReceipt(
            uris, len(entries), streams[-1].bytes_done, seconds, self._server_version
        )

    def _finish(
        self,
        job: Job,
        outcome: Outcome,
        violations: tuple[Violation, ...],
        receipt: UploadReceipt | None = None,
    ) -> None:
        paths = self.config.paths
        claim = job.claim
        root = paths.done if outcome is Outcome.DONE else paths.failed
        dest = store.destination(root, claim)
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
            attempts=job.attempts,
            incoming=self._shown(paths.incoming.joinpath(*claim.relpath)),
        )
        store.finish(
            claim, dest, {".report.txt": render_text(report), ".report.json": render_json(report)}
        )
        self.jobs.remove(job)
        if outcome is Outcome.DONE:
            log.info(
                "%s: delivered (%s) -> %s",
                claim.display,
                ", ".join(receipt.uris if receipt else ()),
                report.location,
            )
        else:
            rules = sorted({v.rule for v in violations if v.policy is Policy.REJECT})
            log.info(
                "%s: not uploaded (%s) -> %s", claim.display, ", ".join(rules), report.location
            )

    def _give_up(self, job: Job, exc: Exception) -> None:
        violation = Violation(
            "internal-error",
            Policy.REJECT,
            "xnat-drop",
            f"xnat-drop failed {job.unexpected_failures} times on this session with an unexpected "
            f"error ({type(exc).__name__}: {exc}). The files are untouched. Tell the administrator "
            "(the service log has the details), then move the folder back to try again.",
        )
        try:
            self._finish(job, Outcome.FAILED, (*self._judged(job), violation))
        except OSError:
            log.exception(
                "%s: cannot move it to failed/; it stays in the work folder", job.claim.display
            )
            job.next_at = float("inf")

    def _judged(self, job: Job) -> tuple[Violation, ...]:
        return job.verdict.violations if job.verdict is not None else ()

    def _retry_credentials(self) -> None:
        """Resume uploads once an operator replaced the refused secret (one login per change)."""
        if not self._pause.auth:
            return
        current = creds.stamp(self.config.xnat.secret_file, self.env)
        if current is None or current == self._pause.auth_stamp:
            return
        self._pause.auth_stamp = current
        log.info("the XNAT secret changed; trying to log in again")
        try:
            client = self.connect()
            client.login()
        except (ConfigError, XnatAuthError) as exc:
            self._pause.auth = str(exc)
            log.error("UPLOADS STILL PAUSED: %s", exc)
            return
        except XnatTransientError as exc:
            log.warning("cannot check the new secret yet: %s", exc)
            self._pause.auth_stamp = None  # try again on the next turn
            return
        if self._client is not None:
            self._client.close()
        self._client = client
        self._pause.auth = ""
        log.info("logged in to XNAT again; uploads resume")

    def _shown(self, path: Path) -> str:
        """`path` as lab members know it: relative to the drop tree when there is one."""
        paths = self.config.paths
        common = Path(os.path.commonpath([paths.incoming, paths.done, paths.failed]))
        try:
            return str(path.relative_to(common)) if common != Path(common.anchor) else str(path)
        except ValueError:
            return str(path)


def _xnat_violation(exc: XnatRejectedError) -> Violation:
    sentence = str(exc)
    if exc.rule == "xnat-rejected":
        sentence += (
            " Check the files named in XNAT's message, fix them, then drop the session again."
        )
    return Violation(exc.rule, Policy.REJECT, "XNAT", sentence)
