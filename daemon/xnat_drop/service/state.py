"""What the service loop knows: its claimed sessions, XNAT's state, the state directory's.
Owned and changed by the loop only; the status board reads it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from xnat_drop.adapters.fs.claims import Claim
from xnat_drop.core.model import Fingerprint, Session, Verdict
from xnat_drop.core.policy import Decision, Failure
from xnat_drop.service.availability import Availability
from xnat_drop.service.intake import Intake
from xnat_drop.service.steps import Progress


@dataclass(frozen=True, slots=True)
class Clock:
    """Time as the loop sees it: `monotonic` for waiting, `wall` for reports and names."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time  # noqa: TID251 - the one place the real clock enters


@dataclass
class Job:
    """A claimed session and what the loop knows about it."""

    claim: Claim
    next_at: float  # monotonic: when it may take its next step
    failures: tuple[Failure, ...] = ()  # attempts spent (not outages), also in the ledger
    session: Session | None = None
    verdict: Verdict | None = None
    last_error: str = ""
    filing: Decision | None = None  # decided DONE or FAILED: the next step files it
    filing_failures: int = 0  # the drop tree refused the filing this many times
    forced: bool = False  # sent back with `retry --force`: upload even if delivered before
    first_seen: float | None = None  # monotonic: first seen in incoming/ (held sessions wait
    # watch.max_settle from then); None for a claim recovered from the work folder
    arrived_at: float | None = None  # the same, wall clock (late files are timed by it)
    fingerprint: Fingerprint | None = None  # as it settled: a held session waits for a change

    @property
    def attempts(self) -> int:
        return len(self.failures)


@dataclass
class StoragePause:
    """The state directory cannot be used: all work waits until a probe write succeeds."""

    reason: str
    since: float  # wall clock
    failures: int
    next_probe: float  # monotonic


@dataclass
class LoopState:
    """Everything the loop keeps between turns (and the board shows)."""

    intake: Intake
    xnat: Availability
    jobs: list[Job] = field(default_factory=list)
    progress: Progress = field(default_factory=Progress)
    storage: StoragePause | None = None
    server_version: str = ""

    def next_job(self, now: float) -> Job | None:
        """The first job whose time has come and that may go on (monotonic `now`)."""
        for job in self.jobs:
            if job.next_at <= now and not self._waits_for_xnat(job):
                return job
        return None

    def next_wake(self) -> float:
        """When the loop must look next: intake, XNAT's probe, or a job's time."""
        times = [self.intake.next_wake()]
        probe = self.xnat.next_probe()
        if probe is not None:
            times.append(probe)
        times += [job.next_at for job in self.jobs if not self._waits_for_xnat(job)]
        return min(times)

    def once_finished(self) -> bool:
        """`run --once`: every session present at the start is done with."""
        return not self.jobs and not self.intake.only

    def open_count(self) -> int:
        """Sessions still to finish, claimed or not yet taken."""
        return len(self.jobs) + len(self.intake.only or ())

    def _waits_for_xnat(self, job: Job) -> bool:
        # A session already judged needs XNAT next (filing does not); one not yet judged can
        # go on without it.
        return self.xnat.blocked and job.verdict is not None and job.filing is None
