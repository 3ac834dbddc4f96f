"""What the loop does with a step's result: the policy's decision for an attempt, applied to
the loop's state, and the end of a filing. A part of the Service (service/loop.py), kept apart
for size: it changes only loop state (and records a spent attempt in the ledger)."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING

from xnat_drop.adapters.fs.claims import WorkArea
from xnat_drop.adapters.ledger import Ledger
from xnat_drop.core.backoff import backoff
from xnat_drop.core.completeness import held_text
from xnat_drop.core.config import Config
from xnat_drop.core.errors import StorageError
from xnat_drop.core.model import Outcome
from xnat_drop.core.policy import Action, AttemptResult, Decision, Result, decide
from xnat_drop.core.shown import shown
from xnat_drop.core.text import duration
from xnat_drop.service.attempt import journal_fields
from xnat_drop.service.board import Board
from xnat_drop.service.state import Clock, Job, LoopState

log = logging.getLogger("xnat_drop.service")


class Outcomes:
    """Applying decisions, for the Service."""

    config: Config
    clock: Clock
    rng: random.Random
    state: LoopState
    _board: Board

    if TYPE_CHECKING:  # provided by the Service (or the other part of it)

        def _ledger_(self) -> Ledger: ...

        def _work_(self) -> WorkArea: ...

        def _waiting_for_xnat(self) -> int: ...

        def _pause_auth(self, reason: str) -> None: ...

        def _pause_storage(self, reason: str) -> None: ...

    def _after_attempt(self, job: Job, result: AttemptResult) -> None:
        """Apply the policy's decision on an attempt's result."""
        if result.verdict is not None:
            job.session, job.verdict = result.session, result.verdict
        now, wall = self.clock.monotonic(), self.clock.wall()
        first_seen = job.first_seen if job.first_seen is not None else now
        decision = decide(
            result,
            job.failures,
            self.config.retry,
            self.config.watch.settle,
            now,
            wall,
            self.rng.random(),
            hold_until=first_seen + self.config.watch.max_settle,
        )
        if result.reason:
            job.last_error = result.reason
        if decision.spent is not None:
            self._ledger_().spend_attempt(job.claim.id, decision.spent.at, decision.spent.reason)
            job.failures = (*job.failures, decision.spent)
        action = decision.action
        fields = journal_fields(job.claim, job.verdict)
        if action in (Action.DONE, Action.FAILED):
            job.filing, job.next_at = decision, now
            if action is Action.DONE:
                self.state.xnat.outage_ends(self._waiting_for_xnat())
        elif action is Action.RETRY:
            assert decision.at is not None
            job.next_at = decision.at
            log.warning(
                "%s: attempt %d of %d failed (%s); next try in %.1f s",
                job.claim.display,
                job.attempts,
                self.config.retry.max_attempts,
                decision.reason,
                decision.at - now,
                extra=fields,
            )
        elif action is Action.RESETTLE:
            assert decision.at is not None
            log.warning(
                "%s: changed while being read (%s); waiting for it to settle",
                job.claim.display,
                decision.reason,
                extra=fields,
            )
            job.session = job.verdict = None
            job.next_at = decision.at
        elif action is Action.HOLD:
            self._hold(job, decision, first_seen)
        elif action is Action.WAIT_FOR_XNAT:
            self.state.xnat.outage_begins(
                decision.reason,
                retry_after=result.retry_after,
                web_pages=result.result is Result.WEB_PAGES,
                inbox=_project(result) if result.result is Result.INBOX else "",
                receiver=result.result is Result.RECEIVER,
            )
        elif action is Action.PAUSE_UPLOADS:
            self._pause_auth(decision.reason)
        elif action is Action.PAUSE_STORAGE:
            self._pause_storage(decision.reason)

    def _hold(self, job: Job, decision: Decision, first_seen: float) -> None:
        """An incomplete session goes back to incoming/, where the rest of its copy lands, and
        waits there for its files to change (or for its wait to end). Should that place be
        taken again meanwhile, it stays claimed and is judged again after a settle period."""
        why = held_text(decision.violations)
        until = first_seen + self.config.watch.max_settle
        now = self.clock.monotonic()
        fields = journal_fields(job.claim, job.verdict)
        self._ledger_().event(job.claim.id, self.clock.wall(), "held", why)
        if self._work_().give_back(job.claim):
            self.state.jobs.remove(job)
            self.state.intake.hold(job.claim.relpath, job.fingerprint, first_seen, until, why, now)
            log.warning(
                "%s: looks incomplete (%s); put back into incoming/ to wait for the rest of "
                "the copy, at most %s more",
                job.claim.display,
                why,
                duration(max(0.0, until - now)),
                extra=fields,
            )
            return
        assert decision.at is not None
        job.session = job.verdict = None
        job.next_at = decision.at
        job.last_error = f"looks incomplete: {why}"
        log.warning(
            "%s: looks incomplete (%s); judged again in %s",
            job.claim.display,
            why,
            duration(decision.at - now),
            extra=fields,
        )

    def _after_filing(self, job: Job, filing: Decision, result: Path | BaseException) -> None:
        if isinstance(result, StorageError):
            self._pause_storage(str(result))
            return
        if isinstance(result, OSError):
            # The drop tree refused (a read-only or full failed/): never lost, never half moved.
            job.filing_failures += 1
            retry = self.config.retry
            delay = backoff(
                job.filing_failures, retry.first_delay, retry.max_delay, self.rng.random()
            )
            job.next_at = self.clock.monotonic() + delay
            where = "done" if filing.action is Action.DONE else "failed"
            job.last_error = f"cannot move it to {where}/: {shown(str(result))}"
            log.error(
                "%s: cannot put it into %s/ (%s); it stays in the work folder and is tried "
                "again in %.0f s",
                job.claim.display,
                where,
                shown(str(result)),
                delay,
                extra=journal_fields(job.claim, job.verdict),
            )
            return
        self.state.jobs.remove(job)
        outcome = Outcome.DONE if filing.action is Action.DONE else Outcome.FAILED
        self._board.tally(outcome, self._ledger_())


def _project(result: AttemptResult) -> str:
    """The project whose inbox path failed (the probe proves it again)."""
    verdict = result.verdict
    return verdict.target.project if verdict is not None and verdict.target is not None else "?"
