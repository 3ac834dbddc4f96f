"""XNAT's series import filter, applied before anything is sent (rules.series-import-filter).

XNAT drops the DICOM objects its site or project filter matches, silently, in every transport
(xnat-api-round2.md §2). Here the filters are read from XNAT (kept a few minutes per project,
forgotten on reload and after a count mismatch), the values they test are read from the claimed
files, core/seriesfilter.py decides per object, and core/importfilter.py turns that into a plan
that is recorded in the ledger before the upload: a resumed delivery sends the same files.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from xnat_drop.adapters.dicom.filtervalues import read_values, tag_of
from xnat_drop.adapters.ledger import Ledger
from xnat_drop.core import importfilter
from xnat_drop.core.errors import SessionChangedError, XnatAuthError
from xnat_drop.core.importfilter import NO_PLAN, FilterPlan
from xnat_drop.core.model import FileFacts, Verdict
from xnat_drop.core.seriesfilter import (
    Decision,
    SeriesFilter,
    decide,
    from_config,
    from_site_values,
)
from xnat_drop.service.delivery import XnatPort

log = logging.getLogger("xnat_drop.service")

CACHE_SECONDS = 300.0  # a filter changed in XNAT is seen within this (and after a mismatch)
_SITE = None  # the cache key of the site's filter


class FilterCache:
    """The site's and each project's filters as last read from XNAT, for CACHE_SECONDS."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._kept: dict[str | None, tuple[float, SeriesFilter | None]] = {}

    def clear(self) -> None:
        """Forget every filter (a reload, a count mismatch): the next delivery asks XNAT."""
        self._kept.clear()

    def filters(self, client: XnatPort, project: str) -> tuple[SeriesFilter, ...]:
        """The enabled filters XNAT applies to `project`'s imports: the site's, the project's.

        Raises the Xnat*Error types (a 403 on the project's filter pauses uploads: what XNAT
        would drop cannot be known).
        """
        site = self._get(_SITE, lambda: _site_filter(client))
        own = self._get(project, lambda: _project_filter(client, project))
        return tuple(f for f in (site, own) if f is not None)

    def _get(self, key: str | None, read: Callable[[], SeriesFilter | None]) -> SeriesFilter | None:
        now = self._monotonic()
        kept = self._kept.get(key)
        if kept is not None and now - kept[0] < CACHE_SECONDS:
            return kept[1]
        value = read()
        self._kept[key] = (now, value)
        return value


def _site_filter(client: XnatPort) -> SeriesFilter | None:
    try:
        row = client.series_filter(None)
    except XnatAuthError:
        # /data/config may be closed to non-admins; the site preferences are not.
        enabled, mode, text = client.site_filter_preferences()
        return from_site_values(enabled, mode, text, tag_of)
    if row is None:
        return None
    return from_config("the site", row.status, row.contents, tag_of)


def _project_filter(client: XnatPort, project: str) -> SeriesFilter | None:
    row = client.series_filter(project)
    if row is None:  # none, or no such project (the delivery's check says so next)
        return None
    return from_config(f"project {project}", row.status, row.contents, tag_of)


def filter_key(filters: tuple[SeriesFilter, ...]) -> str:
    """A short fingerprint of the filters (to tell whether XNAT's changed since a check)."""
    text = repr([(f.scope, f.mode, f.patterns, f.unpredictable) for f in filters])
    return hashlib.sha256(text.encode()).hexdigest()[:16] if filters else ""


def planned(
    cache: FilterCache,
    client: XnatPort,
    ledger: Ledger,
    claim_id: str,
    folder: Path,
    verdict: Verdict,
    *,
    policy: str,
    wall: float,
    progress: Callable[[], None] | None = None,
) -> FilterPlan:
    """The plan for this claim: the one recorded, once anything may have been sent; else
    made now from XNAT's current filters and recorded.

    Raises the Xnat*Error types, and SessionChangedError when a file cannot be read again.
    """
    entry = ledger.entry(claim_id)
    recorded = ledger.filter_plan(claim_id)
    if entry is not None and entry.state not in ("claimed", "checked"):
        # Something may be in XNAT already: the same files, whatever the filter is now. (A
        # delivery begun before filters were read has no plan: it goes on as it began.)
        return importfilter.from_json(recorded) if recorded else NO_PLAN
    if policy == "off":
        return NO_PLAN
    assert verdict.target is not None
    filters = cache.filters(client, verdict.target.project)
    if not filters:
        filter_plan = NO_PLAN
    else:
        filter_plan, _ = evaluated(filters, folder, verdict.upload, policy, progress)
        log.info(
            "%s: XNAT's series import filter (%s): %d of %d files would be dropped",
            verdict.target.session,
            filter_plan.words,
            len(filter_plan.dropped),
            len(verdict.upload),
        )
    ledger.record_filter_plan(claim_id, wall, importfilter.to_json(filter_plan))
    return filter_plan


def evaluated(
    filters: tuple[SeriesFilter, ...],
    folder: Path,
    upload: Sequence[FileFacts],
    policy: str,
    progress: Callable[[], None] | None = None,
) -> tuple[FilterPlan, dict[str, Decision]]:
    """The plan for `upload` (files below `folder`) under `filters`, and each file's decision.

    Raises SessionChangedError when a file cannot be read again.
    """
    tags = frozenset(t for f in filters if not f.unpredictable for t in f.tags)
    paths = [f.path for f in upload]
    try:
        values = read_values(folder, paths, tags, progress) if tags else {}
    except OSError as exc:
        raise SessionChangedError(f"a file could not be read again: {exc}") from exc
    decisions = {path: decide(filters, values.get(path, {})) for path in paths}
    filter_plan = importfilter.plan(upload, decisions, filters, policy)
    return importfilter.with_filters(filter_plan, filter_key(filters), filters), decisions


def mismatch_note(cache: FilterCache, client: XnatPort, project: str, used: FilterPlan) -> str:
    """After a count mismatch or an empty import: a sentence naming XNAT's filter when it
    changed since the check (or applies and may explain it); "" when it cannot matter."""
    cache.clear()
    try:
        now = cache.filters(client, project)
    except Exception:
        log.debug("could not read XNAT's series import filter again", exc_info=True)
        return ""
    key = filter_key(now)
    if key == used.key:
        if not now:
            return ""
        return (
            f" XNAT applies a series import filter to this project ({used.words}); what it "
            "dropped may explain the difference."
        )
    before = used.words or "none"
    after = importfilter.filters_words(now) or "none"
    return (
        f" XNAT's series import filter changed between the check and the import (then: "
        f"{before}; now: {after}). Drop the session again: the new filter will be applied."
    )
