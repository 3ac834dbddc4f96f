"""How the loop takes a job's next step: the attempt, or the filing of a decided session, run
on the helper thread while the loop breathes (service/steps.py). A part of the Service
(service/loop.py), kept apart for size."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

from xnat_drop.adapters.fs.claims import WorkArea
from xnat_drop.core.errors import StorageError
from xnat_drop.core.model import Outcome
from xnat_drop.core.policy import Action, AttemptResult, Decision
from xnat_drop.service.attempt import Attempt, Tools, attempt, journal_fields
from xnat_drop.service.finish import Filing, filed
from xnat_drop.service.state import Clock, Job, LoopState
from xnat_drop.service.steps import Heartbeat, Step

log = logging.getLogger("xnat_drop.service")

STEP_BUDGET = 900.0  # seconds a step may go without progress (judging a huge session)
STEP_POLL = 0.5  # seconds between the loop's looks at a running step


class Stepping:
    """Running steps, for the Service."""

    clock: Clock
    state: LoopState
    _heartbeat: Heartbeat
    _step: Step[object] | None
    _abandoned: bool

    if TYPE_CHECKING:  # provided by the Service (or the other parts of it)

        def _tools(self) -> Tools: ...

        def _work_(self) -> WorkArea: ...

        def _while_busy(self) -> bool: ...

        def _publish(self, *, force: bool = False, busy: bool = False) -> None: ...

        def _pause_storage(self, reason: str) -> None: ...

        def _after_attempt(self, job: Job, result: AttemptResult) -> None: ...

        def _after_filing(
            self, job: Job, filing: Decision, result: Path | BaseException
        ) -> None: ...

    def _step_once(self, job: Job) -> None:
        """Take the job's next step on the helper thread and apply what it came back with; a
        decided session is filed at once, in a second step (a stop waits for both)."""
        if job.filing is None:
            others = tuple(j.claim for j in self.state.jobs if j is not job)
            view = Attempt(
                job.claim,
                job.session,
                job.verdict,
                job.forced,
                self.state.xnat.blocked,
                others=others,
                arrived_at=job.arrived_at,
            )
            tools = self._tools()
            finished, result = self._run(job, lambda: attempt(tools, view))
            if not finished:
                return
            try:
                self._after_attempt(job, cast(AttemptResult, result))
            except StorageError as exc:  # recording the decision failed: tried again later
                self._pause_storage(str(exc))
            if job.filing is None or job.next_at > self.clock.monotonic():
                self._publish()
                return
        filing = job.filing
        assert filing is not None
        item = Filing(
            job.claim,
            Outcome.DONE if filing.action is Action.DONE else Outcome.FAILED,
            filing.violations,
            job.session,
            job.verdict,
            filing.receipt,
            job.attempts + (0 if filing.spent else 1),  # this one, unless counted already
        )
        tools, work = self._tools(), self._work_()
        finished, result = self._run(job, lambda: filed(tools, work, item))
        if finished:
            try:
                self._after_filing(job, filing, cast("Path | BaseException", result))
            except StorageError as exc:
                self._pause_storage(str(exc))
            self._publish()

    def _run(self, job: Job, fn: Callable[[], object]) -> tuple[bool, object]:
        """Run one step on the helper thread while the loop breathes; (finished, its value).
        A step abandoned at shutdown is said so, and left to the process exit."""
        step: Step[object] = Step(fn)
        self._step = step
        self._heartbeat.start(STEP_BUDGET)
        try:
            finished, result = step.wait(self._while_busy, STEP_POLL)
        finally:
            self._heartbeat.end()
        if not finished:
            self._abandoned = True
            log.warning(
                "%s: stopped in the middle of a step; it stays in the work folder and resumes at "
                "the next start",
                job.claim.display,
                extra=journal_fields(job.claim, job.verdict),
            )
            return False, None
        self._step = None
        return True, result
