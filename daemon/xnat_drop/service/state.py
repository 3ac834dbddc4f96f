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
