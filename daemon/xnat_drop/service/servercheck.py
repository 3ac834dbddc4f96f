"""`xnat-drop check --server`: the server-side checks a delivery makes, asked read-only.

The same checks, in the same order, as service/delivery.py and service/xnatfilter.py: the
project exists, the session is not in XNAT already (under on_existing = "reject"), and what
XNAT's series import filter would drop. Nothing is written to XNAT or to the ledger.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xnat_drop.core import importfilter
from xnat_drop.core.config import Config
from xnat_drop.core.counting import expected
from xnat_drop.core.importfilter import NO_PLAN, FilterPlan
from xnat_drop.core.model import Verdict, Violation
from xnat_drop.core.noheader import series_words
from xnat_drop.core.rules import unknown_project
from xnat_drop.core.seriesfilter import Decision, described
from xnat_drop.service.delivery import XnatPort, session_exists
from xnat_drop.service.xnatfilter import FilterCache, evaluated


@dataclass(frozen=True, slots=True)
class ServerAnswer:
    """What XNAT would make of a judged folder: the verdict with its filter applied, the
    refusals a delivery would meet, and per series what the filter would drop."""

    verdict: Verdict
    refusals: tuple[Violation, ...] = ()
    series: tuple[dict[str, Any], ...] = ()
    filters: str = ""  # the filters in words ("" = none)


def ask(
    client: XnatPort, config: Config, folder: Path, verdict: Verdict, cache: FilterCache
) -> ServerAnswer:
    """The server-side checks for `verdict` (judged from `folder`), XNAT's filters read through
    `cache` (one for all the folders of a check). Raises Xnat*Error."""
    target = verdict.target
    if target is None or not verdict.accepted:
        return ServerAnswer(verdict)
    if not client.project_exists(target.project):
        return ServerAnswer(verdict, (unknown_project(target.project),))
    study = expected(verdict.upload).study_uid
    archived = client.find_archived(target.project, target.session, study)
    staged = client.find_prearchive(target.project, study)
    refused = session_exists(archived, staged, config.xnat)
    refusals = (refused,) if refused is not None else ()
    if config.rules.series_import_filter == "off":
        return ServerAnswer(verdict, refusals)
    filters = cache.filters(client, target.project)
    if not filters:
        return ServerAnswer(verdict, refusals)
    plan, decisions = evaluated(filters, folder, verdict.upload, config.rules.series_import_filter)
    return ServerAnswer(
        importfilter.applied(verdict, plan),
        refusals,
        _per_series(verdict, decisions, plan),
        plan.words,
    )


def _per_series(
    verdict: Verdict, decisions: dict[str, Decision], plan: FilterPlan = NO_PLAN
) -> tuple[dict[str, Any], ...]:
    """Per series of the upload: its files, how many XNAT's filter drops, and why."""
    files: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    why: dict[str, set[str]] = defaultdict(set)
    paths: dict[str, list[str]] = defaultdict(list)
    for facts in verdict.upload:
        if facts.header is None:
            continue
        uid = facts.header.series_instance_uid
        paths[uid].append(facts.path)
        files[uid] += 1
        decision = decisions[facts.path]
        if decision.unsure:
            why[uid].add(f"unpredictable: {decision.unsure}")
        elif not decision.keep:
            dropped[uid] += 1
            why[uid].add(described(decision))
    unsure = set(plan.unsure_series)
    return tuple(
        {
            "series": series_words(paths[uid]),
            "files": files[uid],
            "xnat_drops": dropped[uid],
            "unpredictable": uid in unsure,
            "why": sorted(why[uid]),
        }
        for uid in files
    )
