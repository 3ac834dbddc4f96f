"""What XNAT's series import filter does to an accepted session, as a plan. Pure.

XNAT drops the objects its filter matches, silently, in every transport (xnat-api-round2.md
§2). Given each file's `seriesfilter.Decision`, `plan` says what the daemon does about it under
`rules.series-import-filter`:

- "exclude": leave out exactly what XNAT would drop (one violation per series, naming the
  filter and pattern), and verify the rest strictly;
- "reject": the same series, as violations that send the session to failed/;
- either way, a session XNAT would keep nothing of is rejected with the filter explained
  (never XNAT's "empty answer");
- objects whose fate cannot be predicted are uploaded; verification then tolerates their
  series missing, and the receipt says so.

The plan is recorded in the ledger (`to_json`/`from_json`) before anything is sent, so a resumed
delivery uploads the very same files.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final

from xnat_drop.core.filetable import picked
from xnat_drop.core.model import FileFacts, Policy, Remedy, Verdict, Violation
from xnat_drop.core.noheader import capital, series_words
from xnat_drop.core.seriesfilter import Decision, SeriesFilter, described
from xnat_drop.core.text import plural

RULE: Final = "series-import-filter"


@dataclass(frozen=True, slots=True)
class FilterPlan:
    """What to do about XNAT's filter: violations to add, files left out, series whose absence
    verification tolerates (their fate cannot be predicted), and notes for the receipt."""

    violations: tuple[Violation, ...] = ()
    dropped: tuple[str, ...] = ()
    unsure_series: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    key: str = ""  # a fingerprint of the filters it was made from ("" = none)
    words: str = ""  # those filters in words, e.g. "project P1's blacklist: “localizer”"


NO_PLAN = FilterPlan()


def filters_words(filters: Sequence[SeriesFilter]) -> str:
    """The filters in words for a report: scope, mode and patterns."""
    parts = []
    for f in filters:
        patterns = ", ".join(f"“{p.text}”" for p in f.patterns) or "no patterns"
        parts.append(f"{f.scope}'s {f.mode}: {patterns}")
    return "; ".join(parts)


def with_filters(filter_plan: FilterPlan, key: str, filters: Sequence[SeriesFilter]) -> FilterPlan:
    """The plan, marked with the filters it was made from."""
    return replace(filter_plan, key=key, words=filters_words(filters))


def plan(
    upload: Sequence[FileFacts],
    decisions: Mapping[str, Decision],
    filters: Sequence[SeriesFilter],
    policy: str,
) -> FilterPlan:
    """The plan for `upload` (the verdict's files) given each file's decision by path."""
    notes = [
        f"XNAT's series import filter of {f.scope} cannot be predicted here ({f.unpredictable}). "
        "Everything was uploaded; a series that XNAT dropped is not counted as missing"
        for f in filters
        if f.unpredictable
    ]
    groups: dict[tuple[str, str], list[FileFacts]] = defaultdict(list)
    unsure: dict[str, None] = {}
    for facts in upload:
        decision = decisions.get(facts.path)
        if decision is None or facts.header is None:
            continue
        if decision.unsure:
            unsure[facts.header.series_instance_uid] = None
            if decision.filter is not None and decision.filter.unpredictable:
                continue  # said once for the whole filter, above
            note = (
                f"XNAT's decision on some objects cannot be predicted here ({decision.unsure}); "
                "they were uploaded, and their series is not counted as missing if XNAT dropped it"
            )
            if note not in notes:
                notes.append(note)
        elif not decision.keep:
            groups[(facts.header.series_instance_uid, described(decision))].append(facts)
    if any(f.unpredictable for f in filters):
        unsure.update(dict.fromkeys(f.header.series_instance_uid for f in upload if f.header))
    dropped = tuple(sorted(f.path for files in groups.values() for f in files))
    # Nothing left: one rejection explains the filter; the series are listed, not advised on.
    nothing_left = len(dropped) == len(upload) and bool(upload)
    how = "reject" if policy == "reject" else "listed" if nothing_left else "exclude"
    ordered = sorted(groups.items(), key=lambda item: (_series_order(item[1][0]), item[0][1]))
    violations = [_series_violation(files, why, how) for (_, why), files in ordered]
    if nothing_left and how != "reject":
        violations.append(_nothing_left(len(groups), filters))
    return FilterPlan(tuple(violations), dropped, tuple(unsure), tuple(notes))


def applied(verdict: Verdict, filter_plan: FilterPlan) -> Verdict:
    """`verdict` with the plan's files left out and its violations added."""
    if filter_plan == NO_PLAN:
        return verdict
    gone = set(filter_plan.dropped)
    excluded = {p for v in filter_plan.violations if v.policy is Policy.EXCLUDE for p in v.files}
    return Verdict(
        target=verdict.target,
        violations=(*verdict.violations, *filter_plan.violations),
        upload=picked(verdict.upload, lambda f: f.path not in gone),
        excluded=tuple(sorted({*verdict.excluded, *excluded})),
        ignored=verdict.ignored,
        duplicates=verdict.duplicates,
        notes=verdict.notes,
        resources=verdict.resources,
    )


def to_json(filter_plan: FilterPlan) -> str:
    """The plan as the ledger keeps it."""
    return json.dumps(
        {
            "violations": [
                {
                    "policy": v.policy.value,
                    "subject": v.subject,
                    "sentence": v.sentence,
                    "files": list(v.files),
                    "detail": v.detail,
                    "remedy": v.remedy.value if v.remedy else "",
                }
                for v in filter_plan.violations
            ],
            "dropped": list(filter_plan.dropped),
            "unsure_series": list(filter_plan.unsure_series),
            "notes": list(filter_plan.notes),
            "key": filter_plan.key,
            "words": filter_plan.words,
        }
    )


def from_json(text: str) -> FilterPlan:
    """The plan `to_json` recorded. Raises ValueError (or KeyError) for anything else."""
    data = json.loads(text)
    violations = tuple(
        Violation(
            RULE,
            Policy(v["policy"]),
            str(v["subject"]),
            str(v["sentence"]),
            tuple(str(p) for p in v["files"]),
            str(v["detail"]),
            Remedy(v["remedy"]) if v["remedy"] else None,
        )
        for v in data["violations"]
    )
    return FilterPlan(
        violations,
        tuple(str(p) for p in data["dropped"]),
        tuple(str(u) for u in data["unsure_series"]),
        tuple(str(n) for n in data["notes"]),
        str(data["key"]),
        str(data["words"]),
    )


def _series_order(facts: FileFacts) -> tuple[int, str]:
    header = facts.header
    if header is None:
        return (1 << 31, "")
    number = header.series_number
    return (number if number is not None else 1 << 31, header.series_instance_uid)


def _series_violation(files: list[FileFacts], why: str, how: str) -> Violation:
    """One series XNAT drops: `how` is "reject", "exclude" or "listed" (nothing is left of
    the session: the rejection beside it says what to do)."""
    name = series_words(f.path for f in files)
    policy = Policy.EXCLUDE
    if how == "listed":
        sentence = f"{capital(name)}: {why}."
    elif how == "reject":
        sentence = (
            f"XNAT would silently drop {name}: {why}. Remove the series from the "
            "folder and drop the session again, or ask the XNAT administrator to change the "
            'filter (or to set rules.series-import-filter = "exclude" in xnat-drop).'
        )
        policy = Policy.REJECT
    else:
        sentence = (
            f"{capital(name)} was left out of the upload because XNAT's "
            f"series import filter drops it: {why}. Nothing needs to be done unless XNAT should "
            "keep it: then ask the XNAT administrator to change the filter."
        )
    return Violation(
        RULE,
        policy,
        name,
        sentence,
        tuple(sorted(f.path for f in files)),
        detail=why,
    )


def _nothing_left(series: int, filters: Sequence[SeriesFilter]) -> Violation:
    scopes = " and ".join(f"{f.scope}'s {f.mode}" for f in filters if not f.unpredictable)
    sentence = (
        f"XNAT's series import filter ({scopes}) drops every series of this session "
        f"({plural(series, 'series', 'series')}, listed below), so XNAT would store nothing and "
        "nothing was sent. If these series belong in XNAT, ask the XNAT administrator to change "
        "the filter, then move the folder back."
    )
    return Violation(RULE, Policy.REJECT, "the whole session", sentence, remedy=Remedy.ADMIN)
