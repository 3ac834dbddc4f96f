"""Where the stand-in keeps series import filters: XNAT's config service entries for tool
``seriesImportFilter``, path ``config``, at site scope and per project (xnat-api-round2.md §2),
with the site preferences XNAT copies into the site entry, plus who may read them.

An import asks for a ``FilterGate`` per object, as ``GradualDicomImporter`` does: building the
site filter happens first, before the object is even read; the project's filter is built once
the object's project is known; then the site filter and the project filter must both keep it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .dicomheader import NotDicomError
from .dicomvalues import read_values
from .seriesfilter import JavaError, SeriesFilter, build_filter, contents_map

TOOL = "seriesImportFilter"
PATH = "config"
STATUSES = ("enabled", "disabled")
ENABLE_PREFERENCE = "enableSitewideSeriesImportFilter"
MODE_PREFERENCE = "sitewideSeriesImportFilterMode"
LIST_PREFERENCE = "sitewideSeriesImportFilter"
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True, slots=True)
class FilterConfig:
    """One config service entry: the contents string and the row's status decide."""

    contents: str
    status: str  # "enabled" | "disabled"
    version: int
    created: float  # epoch seconds
    user: str = "admin"
    reason: str = "No reason given"

    @property
    def enabled(self) -> bool:
        return self.status == "enabled"

    def row(self, project: str | None, *, meta_only: bool = False) -> dict[str, str]:
        """The ConfigResource row (all strings; no project at site scope)."""
        return {
            "tool": TOOL,
            "path": PATH,
            "project": project or "",
            "user": self.user,
            "create_date": java_date(self.created),
            "reason": self.reason,
            "contents": "" if meta_only else self.contents,
            "unversioned": "false",
            "version": str(self.version),
            "status": self.status,
        }


class SeriesFilters:
    """Site and project filter configs, project readers and the site-config switch."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._configs: dict[str | None, FilterConfig] = {}
        self._versions: dict[str | None, int] = {}
        self._readers: dict[str, frozenset[str]] = {}
        self._admins: frozenset[str] = frozenset({"admin"})
        self._site_admin_only = False

    # -- configuration (the control API) ------------------------------------------------

    def set(
        self,
        project: str | None,
        *,
        mode: str = "blacklist",
        list_text: str = "localizer",
        status: str = "enabled",
        contents: str | None = None,
        user: str = "admin",
        reason: str = "No reason given",
    ) -> FilterConfig:
        """Store a filter as XNAT's DicomFilterService commits one, or ``contents`` verbatim."""
        if status not in STATUSES:
            raise ValueError(f"status must be 'enabled' or 'disabled', not {status!r}")
        if contents is None:
            values = {"mode": mode, "enabled": "true" if status == "enabled" else "false"}
            if project:
                values["projectId"] = project
            values["list"] = list_text
            contents = json.dumps(values, separators=(",", ":"), ensure_ascii=False)
        with self._lock:
            version = self._versions.get(project, 0) + 1
            self._versions[project] = version
            config = FilterConfig(contents, status, version, time.time(), user, reason)
            self._configs[project] = config
            return config

    def clear(self, project: str | None) -> None:
        with self._lock:
            self._configs.pop(project, None)

    def set_readers(self, project: str, users: Iterable[str] | None) -> None:
        """Who may read ``project`` (None: everyone). Admins always may."""
        with self._lock:
            if users is None:
                self._readers.pop(project, None)
            else:
                self._readers[project] = frozenset(users)

    def set_site_admin_only(self, on: bool, admins: Iterable[str] | None = None) -> None:
        with self._lock:
            self._site_admin_only = on
            if admins is not None:
                self._admins = frozenset(admins)

    # -- reading --------------------------------------------------------------------------

    def config(self, project: str | None) -> FilterConfig | None:
        with self._lock:
            return self._configs.get(project)

    def active(self) -> bool:
        """Is any filter configured (enabled or not: a broken one fails even disabled)?"""
        with self._lock:
            return bool(self._configs)

    def is_admin(self, user: str | None) -> bool:
        with self._lock:
            return user in self._admins

    def can_read(self, user: str | None, project: str) -> bool:
        with self._lock:
            readers = self._readers.get(project)
            return readers is None or user in readers or user in self._admins

    def site_refused(self, user: str | None) -> bool:
        """Does ``/data/config`` (site scope) refuse this user?"""
        with self._lock:
            return self._site_admin_only and user not in self._admins

    def site_preferences(self) -> dict[str, Any]:
        """The three site preferences, as XNAT keeps them in step with the site entry."""
        config = self.config(None)
        mode, listed = "blacklist", ""
        if config is not None:
            try:
                values = contents_map(config.contents)
            except JavaError:
                values = {}
            mode = values.get("mode") or mode
            listed = values.get("list") or listed
        return {
            ENABLE_PREFERENCE: config is not None and config.enabled,
            MODE_PREFERENCE: mode,
            LIST_PREFERENCE: listed,
        }

    def as_json(self) -> list[dict[str, Any]]:
        with self._lock:
            items = sorted(self._configs.items(), key=lambda item: item[0] or "")
        return [
            {
                "project": project,
                "status": config.status,
                "contents": config.contents,
                "version": config.version,
            }
            for project, config in items
        ]

    # -- imports --------------------------------------------------------------------------

    def gate(self) -> FilterGate:
        """The per-object check; building the site filter may raise JavaError."""
        config = self.config(None)
        site = None if config is None else build_filter(config.contents, enabled=config.enabled)
        return FilterGate(self, site)


class FilterGate:
    """One object's pass through the site filter and its project's filter."""

    def __init__(self, filters: SeriesFilters, site: SeriesFilter | None) -> None:
        self._filters = filters
        self._site = site

    def keeps(self, path: Path, project: str | None) -> bool:
        """Should the object stored at ``path``, bound for ``project`` (None: Unassigned), be
        kept? Raises JavaError where XNAT's importer throws (a project filter it cannot build,
        an unknown mode, a sequence to test, an object it cannot read again)."""
        project_filter = None
        if project:
            config = self._filters.config(project)
            if config is not None:
                project_filter = build_filter(config.contents, enabled=config.enabled)
        active = [f for f in (self._site, project_filter) if f is not None and f.enabled]
        if not active:
            return True
        try:
            values = read_values(path, {tag for f in active for tag in f.tags})
        except NotDicomError as error:
            raise JavaError("java.io.IOException", str(error)) from None
        return all(f.includes(values) for f in active)  # the site filter first, then the project's


def java_date(epoch: float) -> str:
    """``java.util.Date.toString()`` in UTC, e.g. "Fri Jan 05 10:11:12 UTC 2024"."""
    moment = time.gmtime(epoch)
    return (
        f"{_DAYS[moment.tm_wday]} {_MONTHS[moment.tm_mon - 1]} {moment.tm_mday:02d} "
        f"{moment.tm_hour:02d}:{moment.tm_min:02d}:{moment.tm_sec:02d} UTC {moment.tm_year}"
    )
