"""What the loop does after an attempt: the error policy, as one pure function.

An attempt (judge, then deliver) ends in one of a few results. `decide` turns the result, the
attempts spent so far, the retry settings, the time and a random jitter into a decision:

- DELIVERED: DONE (report, record, move to done/).
- REJECTED (the rules, a re-drop), REFUSED (XNAT, for good): FAILED with the violations.
- CHANGED (files changed while read): RESETTLE, judge again once quiet for settle seconds.
- UNREACHABLE (timeout; a 5xx while XNAT's probe fails too), WEB_PAGES (a proxy's page where
  data is due): WAIT_FOR_XNAT; the whole queue waits and no attempt is spent.
- CREDENTIALS (401/403): PAUSE_UPLOADS until the secret changes.
- FAILED_ATTEMPT (a 500 XNAT otherwise answers, an unexpected error): RETRY with backoff, or
  FAILED as delivery-failed once the attempts are used up.
- STORAGE (the state directory): PAUSE_STORAGE, all work waits.
- WAITING (judged and accepted while XNAT was paused): WAIT until XNAT is back.
- INCOMPLETE (a series short of what its headers announce): HOLD it in incoming/ until its
  files change, up to `hold_until`; then FAILED as incomplete-series.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from xnat_drop.core.backoff import backoff
from xnat_drop.core.config import RetryConfig
from xnat_drop.core.model import Policy, Session, UploadReceipt, Verdict, Violation
from xnat_drop.core.text import iso


class Result(str, Enum):
    """How an attempt ended."""

    DELIVERED = "delivered"
    REJECTED = "rejected"
    REFUSED = "refused"
    CHANGED = "changed"
    UNREACHABLE = "unreachable"
    WEB_PAGES = "web-pages"  # something in front of XNAT answers with web pages, not data
    INBOX = "inbox"  # XNAT's inbox cannot be used as configured (service/inbox.py)
    RECEIVER = "receiver"  # XNAT's DICOM receiver refuses xnat-drop (service/cstore.py)
    CREDENTIALS = "credentials"
    FAILED_ATTEMPT = "failed-attempt"
    STORAGE = "storage"
    WAITING = "waiting"
    INCOMPLETE = "incomplete"


class Action(str, Enum):
    """What the loop does next with the session (and, for some, with the whole queue)."""

    DONE = "done"
    FAILED = "failed"
    RETRY = "retry"
    RESETTLE = "resettle"
    WAIT_FOR_XNAT = "wait-for-xnat"
    PAUSE_UPLOADS = "pause-uploads"
    PAUSE_STORAGE = "pause-storage"
    WAIT = "wait"
    HOLD = "hold"


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one attempt came back with. `session` and `verdict` are set once it was judged
    (this attempt or an earlier one); `reason` is for logs and status; `retry_after` is
    XNAT's own hint (Retry-After)."""

    result: Result
    violations: tuple[Violation, ...] = ()
    receipt: UploadReceipt | None = None
    reason: str = ""
    retry_after: float | None = None
    session: Session | None = None
    verdict: Verdict | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    """An attempt spent on a failure that was not an outage: when (wall clock), and why."""

    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do. `at` (monotonic) is when to try again, for RETRY and RESETTLE; `spent`
    is the failure to record when this attempt counts (RETRY, and FAILED when attempts ran
    out)."""

    action: Action
    at: float | None = None
    violations: tuple[Violation, ...] = ()
    receipt: UploadReceipt | None = None
    reason: str = ""
    spent: Failure | None = None


def decide(
    outcome: AttemptResult,
    failures: tuple[Failure, ...],
    retry: RetryConfig,
    settle: float,
    now: float,
    wall: float,
    jitter: float,
    *,
    hold_until: float = float("inf"),
) -> Decision:
    """The decision for `outcome`, given the `failures` spent on this session before.

    `now` is monotonic (for `at`), `wall` the clock time of the attempt (recorded with a spent
    attempt), `jitter` a number in [0, 1) for the backoff, `hold_until` (monotonic) the end
    of the wait for the rest of an incomplete session.
    """
    result, reason = outcome.result, outcome.reason
    if result is Result.INCOMPLETE:
        if now < hold_until:
            return Decision(Action.HOLD, at=now + settle, violations=outcome.violations)
        return Decision(Action.FAILED, violations=outcome.violations, reason=reason)
    if result is Result.DELIVERED:
        return Decision(Action.DONE, violations=outcome.violations, receipt=outcome.receipt)
    if result in (Result.REJECTED, Result.REFUSED):
        return Decision(Action.FAILED, violations=outcome.violations, reason=reason)
    if result is Result.CHANGED:
        return Decision(Action.RESETTLE, at=now + settle, reason=reason)
    if result in (Result.UNREACHABLE, Result.WEB_PAGES, Result.INBOX, Result.RECEIVER):
        return Decision(Action.WAIT_FOR_XNAT, reason=reason)
    if result is Result.CREDENTIALS:
        return Decision(Action.PAUSE_UPLOADS, reason=reason)
    if result is Result.STORAGE:
        return Decision(Action.PAUSE_STORAGE, reason=reason)
    if result is Result.WAITING:
        return Decision(Action.WAIT)
    spent = Failure(wall, reason)
    count = len(failures) + 1
    if count >= retry.max_attempts:
        history = (*failures, spent)
        violation = delivery_failed(history)
        return Decision(
            Action.FAILED, violations=(*outcome.violations, violation), reason=reason, spent=spent
        )
    delay = backoff(count, retry.first_delay, retry.max_delay, jitter)
    return Decision(Action.RETRY, at=now + delay, reason=reason, spent=spent)


def delivery_failed(history: tuple[Failure, ...]) -> Violation:
    """The violation of a session that failed every attempt, with each attempt's reason."""
    listed = "; ".join(f"{iso(f.at)} {f.reason}" for f in history)
    return Violation(
        "delivery-failed",
        Policy.REJECT,
        "xnat-drop",
        f"xnat-drop tried {len(history)} times and failed each time ({listed}). The files "
        "are untouched. Tell the administrator (the service log has the details), then move "
        "the folder back to try again.",
    )
