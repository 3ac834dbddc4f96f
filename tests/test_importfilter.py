"""What the daemon does about XNAT's series import filter (core/importfilter.py) and how
verification tolerates what an unpredictable filter may have dropped (delivery.without_dropped).
Pure: the decisions come from core/seriesfilter.py on made-up values."""

from __future__ import annotations

import pytest

from xnat_drop.core import importfilter
from xnat_drop.core.counting import Expected, SeriesCount, count_problem, without_dropped
from xnat_drop.core.model import DicomHeader, FileFacts, FileKind, Policy, Remedy, Target, Verdict
from xnat_drop.core.seriesfilter import DEFAULT_TAG, SeriesFilter, decide, from_config

MR = "1.2.840.10008.5.1.4.1.1.4"
TAGS = {"SeriesDescription": DEFAULT_TAG, "ImageType": 0x00080008}


def dicom(path: str, series: int, description: str) -> FileFacts:
    header = DicomHeader(
        MR, f"1.2.3.{series}.{path}", "1.2.3", f"1.2.3.{series}", series, description, (), "MR"
    )
    return FileFacts(path, 10, FileKind.DICOM, header)


UPLOAD = (
    dicom("a1", 1, "localizer"),
    dicom("a2", 1, "localizer"),
    dicom("b1", 2, "T1_MPRAGE"),
    dicom("c1", 3, "AAHScout"),
)
VERDICT = Verdict(Target("P1", "S1", "E1"), (), UPLOAD, (), ())


def project_filter(mode: str, listed: str) -> SeriesFilter:
    contents = f'{{"mode": "{mode}", "list": "{listed}"}}'
    found = from_config("project P1", "enabled", contents, TAGS.get)
    assert found is not None
    return found


def plan_for(filters: list[SeriesFilter], policy: str = "exclude") -> importfilter.FilterPlan:
    decisions = {
        f.path: decide(filters, {DEFAULT_TAG: f.header.series_description if f.header else None})
        for f in UPLOAD
    }
    return importfilter.plan(UPLOAD, decisions, filters, policy)


def test_exclude_leaves_out_exactly_the_dropped_series_one_violation_each() -> None:
    plan = plan_for([project_filter("blacklist", "localizer\\\\nscout")])
    assert plan.dropped == ("a1", "a2", "c1")
    assert [v.files for v in plan.violations] == [("a1", "a2"), ("c1",)]
    assert all(v.policy is Policy.EXCLUDE for v in plan.violations)
    assert "“localizer”" in plan.violations[0].sentence
    filtered = importfilter.applied(VERDICT, plan)
    assert [f.path for f in filtered.upload] == ["b1"]
    assert filtered.excluded == ("a1", "a2", "c1")
    assert filtered.accepted


def test_reject_fails_the_session_with_the_same_series() -> None:
    plan = plan_for([project_filter("blacklist", "localizer")], "reject")
    filtered = importfilter.applied(VERDICT, plan)
    assert [v.policy for v in plan.violations] == [Policy.REJECT]
    assert not filtered.accepted
    assert "administrator" in plan.violations[0].sentence


def test_a_whitelist_that_matches_nothing_leaves_nothing_and_says_so() -> None:
    plan = plan_for([project_filter("whitelist", "DIFFUSION")])
    filtered = importfilter.applied(VERDICT, plan)
    assert not filtered.accepted
    [nothing] = [v for v in plan.violations if v.policy is Policy.REJECT]
    assert "drops every series" in nothing.sentence and "3 series" in nothing.sentence
    assert nothing.remedy is Remedy.ADMIN


def test_an_unpredictable_filter_drops_nothing_and_tolerates_every_series() -> None:
    plan = plan_for([project_filter("blacklist", "localizer\\\\Z")])
    assert plan.dropped == () and plan.violations == ()
    assert set(plan.unsure_series) == {"1.2.3.1", "1.2.3.2", "1.2.3.3"}
    assert any("cannot be predicted" in note for note in plan.notes)


def test_the_plan_survives_the_ledger_exactly() -> None:
    filters = [project_filter("blacklist", "localizer")]
    plan = importfilter.with_filters(plan_for(filters), "k1", filters)
    assert importfilter.from_json(importfilter.to_json(plan)) == plan
    assert plan.words == "project P1's blacklist: “localizer”"
    with pytest.raises((ValueError, KeyError)):
        importfilter.from_json('{"violations": []}')


SENT = Expected(
    "1.2.3",
    (
        SeriesCount("1.2.3.1", 1, "series 1", 2),
        SeriesCount("1.2.3.2", 2, "series 2", 1),
        SeriesCount("1.2.3.3", 3, "series 3", 1),
    ),
)


def test_verification_tolerates_only_whole_series_it_was_told_may_go() -> None:
    held = {"2": 1, "3": 1}
    sent, gone = without_dropped(SENT, held, frozenset({"1.2.3.1"}))
    assert gone == ("series 1",)
    assert count_problem(sent, held, merged=False) == ""
    # Not among those XNAT may drop: still a mismatch.
    sent, gone = without_dropped(SENT, held, frozenset({"1.2.3.3"}))
    assert gone == ()
    assert "series 1 is missing" in count_problem(sent, held, merged=False)
    # Held in part: never tolerated.
    held = {"1": 1, "2": 1, "3": 1}
    sent, gone = without_dropped(SENT, held, frozenset({"1.2.3.1"}))
    assert gone == ()
    assert "has 1 of 2 files" in count_problem(sent, held, merged=False)


def test_without_distinct_numbers_series_are_matched_by_count() -> None:
    sent = Expected(
        "1.2.3",
        (SeriesCount("s1", None, "series a", 5), SeriesCount("s2", None, "series b", 3)),
    )
    kept, gone = without_dropped(sent, {"1": 3}, frozenset({"s1"}))
    assert gone == ("series a",)
    assert count_problem(kept, {"1": 3}, merged=False) == ""
    kept, gone = without_dropped(sent, {"1": 2}, frozenset({"s1"}))
    assert gone == ()
