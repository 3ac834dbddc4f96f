"""core.policy.decide: table tests on values, no disk, no clock, no mocks. Every result is shown
with the decision it gets, and attempts are shown running out."""

from __future__ import annotations

import pytest

from xnat_drop.core.config import RetryConfig
from xnat_drop.core.model import Policy, UploadReceipt, Violation
from xnat_drop.core.policy import (
    Action,
    AttemptResult,
    Decision,
    Failure,
    Result,
    decide,
    delivery_failed,
)

RETRY = RetryConfig(first_delay=30.0, max_delay=3600.0, max_attempts=3)
NOW, WALL, SETTLE = 1000.0, 1_800_000_000.0, 60.0
EXCLUDED = Violation("nifti", Policy.EXCLUDE, "T1w.nii", "left out", ("T1w.nii",))
REFUSAL = Violation("xnat-rejected", Policy.REJECT, "XNAT", "XNAT refused it.")
RECEIPT = UploadReceipt(("/data/prearchive/projects/P1/1/S01_MR1",), 5, 1000, 1.0)


def d(result: AttemptResult, failures: tuple[Failure, ...] = (), jitter: float = 0.5) -> Decision:
    return decide(result, failures, RETRY, SETTLE, NOW, WALL, jitter)


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (
            AttemptResult(Result.DELIVERED, (EXCLUDED,), RECEIPT),
            Decision(Action.DONE, violations=(EXCLUDED,), receipt=RECEIPT),
        ),
        (
            AttemptResult(Result.REJECTED, (EXCLUDED, REFUSAL)),
            Decision(Action.FAILED, violations=(EXCLUDED, REFUSAL)),
        ),
        (
            AttemptResult(Result.REFUSED, (REFUSAL,), reason="XNAT refused it."),
            Decision(Action.FAILED, violations=(REFUSAL,), reason="XNAT refused it."),
        ),
        (
            AttemptResult(Result.CHANGED, reason="IM1 was written"),
            Decision(Action.RESETTLE, at=NOW + SETTLE, reason="IM1 was written"),
        ),
        (
            AttemptResult(Result.UNREACHABLE, reason="timeout", retry_after=120.0),
            Decision(Action.WAIT_FOR_XNAT, reason="timeout"),
        ),
        (
            AttemptResult(Result.WEB_PAGES, reason="a login page"),
            Decision(Action.WAIT_FOR_XNAT, reason="a login page"),
        ),
        (
            AttemptResult(Result.CREDENTIALS, reason="401"),
            Decision(Action.PAUSE_UPLOADS, reason="401"),
        ),
        (
            AttemptResult(Result.STORAGE, reason="disk full"),
            Decision(Action.PAUSE_STORAGE, reason="disk full"),
        ),
        (AttemptResult(Result.WAITING), Decision(Action.WAIT)),
    ],
    ids=lambda value: value.result.value if isinstance(value, AttemptResult) else "",
)
def test_each_result_gets_its_decision(result: AttemptResult, expected: Decision) -> None:
    assert d(result) == expected


def test_outages_and_credentials_never_spend_an_attempt_whatever_was_spent_before() -> None:
    spent = (Failure(1.0, "500"), Failure(2.0, "500"))
    for result in (Result.UNREACHABLE, Result.WEB_PAGES, Result.CREDENTIALS, Result.STORAGE):
        decision = d(AttemptResult(result, reason="x"), spent)
        assert decision.spent is None and decision.action is not Action.FAILED


@pytest.mark.parametrize(
    ("before", "jitter", "delay"),
    [
        (0, 0.0, 15.0),  # first failure: half the first delay at the lowest jitter
        (0, 0.999, 30.0),
        (1, 0.5, 45.0),  # doubled, jittered
    ],
)
def test_a_failed_attempt_retries_with_backoff_and_is_counted(
    before: int, jitter: float, delay: float
) -> None:
    failures = tuple(Failure(float(i), "500") for i in range(before))
    decision = d(AttemptResult(Result.FAILED_ATTEMPT, reason="a 500"), failures, jitter)
    assert decision.action is Action.RETRY
    assert decision.spent == Failure(WALL, "a 500")
    assert decision.at == pytest.approx(NOW + delay, abs=0.1)


def test_the_last_attempt_fails_the_session_with_its_whole_history() -> None:
    failures = (Failure(1_700_000_000.0, "a 500"), Failure(1_700_000_060.0, "unexpected"))
    decision = d(AttemptResult(Result.FAILED_ATTEMPT, (EXCLUDED,), reason="a 500 again"), failures)
    assert decision.action is Action.FAILED and decision.spent == Failure(WALL, "a 500 again")
    excluded, failed = decision.violations
    assert excluded == EXCLUDED and failed.rule == "delivery-failed"
    assert "tried 3 times" in failed.sentence
    for words in ("2023-11-14T22:13:20Z a 500", "unexpected", "a 500 again"):
        assert words in failed.sentence


def test_delivery_failed_names_no_header_value_only_times_and_reasons() -> None:
    violation = delivery_failed((Failure(0.0, "XNAT answered 500"),))
    assert violation.policy is Policy.REJECT and violation.subject == "xnat-drop"
    assert "1970-01-01T00:00:00Z XNAT answered 500" in violation.sentence


SHORT = Violation("incomplete-series", Policy.REJECT, "series 5 (folder 05_bold)", "short")


@pytest.mark.parametrize(
    ("hold_until", "expected"),
    [
        (NOW + 1, Decision(Action.HOLD, at=NOW + SETTLE, violations=(SHORT,))),  # still waiting
        (NOW, Decision(Action.FAILED, violations=(SHORT,))),  # the wait is over
    ],
)
def test_an_incomplete_session_is_held_until_its_wait_ends(
    hold_until: float, expected: Decision
) -> None:
    result = AttemptResult(Result.INCOMPLETE, (SHORT,))
    got = decide(result, (), RETRY, SETTLE, NOW, WALL, 0.5, hold_until=hold_until)
    assert got == expected
