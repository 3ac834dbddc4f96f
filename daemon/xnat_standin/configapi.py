"""The config resources that expose series import filters (xnat-api-round2.md §2).

``GET /data/config/{tool}[/{path}]`` (site scope) and ``GET /data/projects/{P}/config/...``
answer as XNAT's ``ConfigResource``: a ResultSet of ``tool, path, project, user, create_date,
reason, contents, unversioned, version, status``; ``contents=true`` the raw contents (404 when
disabled); ``meta=true`` the row without contents; 404s worded as XNAT words them, 204 with
``accept-not-found=true``. The project is looked up by ID (not alias), then read access is
checked. The stand-in keeps no configs but ``seriesImportFilter/config``.

``GET /xapi/siteConfig/values/{names}`` and ``/xapi/siteConfig/{name}`` answer the site
filter's three preferences and ``checksums`` (the only ones the stand-in keeps besides the open
ones), and to admins only ``inboxPath`` (403 for anyone else who names it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import pages
from .call import Call
from .filterconfig import PATH, TOOL, FilterConfig, SeriesFilters
from .pages import Reply
from .store import Store

COLUMNS = (
    "tool",
    "path",
    "project",
    "user",
    "create_date",
    "reason",
    "contents",
    "unversioned",
    "version",
    "status",
)


class ConfigResources:
    """``ConfigResource`` for the filter entries, and the site preferences copied from them."""

    def __init__(
        self,
        filters: SeriesFilters,
        store: Store,
        other_preferences: Callable[[], dict[str, Any]] | None = None,
        *,
        admin_preferences: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.filters = filters
        self.store = store
        self._other_preferences = other_preferences  # e.g. checksums (catalog.py)
        self._admin_preferences = admin_preferences  # e.g. inboxPath (inbox.py)

    def site_preferences(self) -> dict[str, Any]:
        """Every site preference the stand-in keeps (besides the open ones)."""
        other = self._other_preferences() if self._other_preferences is not None else {}
        return {**self.filters.site_preferences(), **other}

    def site(self, call: Call, rest: list[str]) -> Reply:
        """``/data/config/...``: no permission check in XNAT's resource itself; the stand-in
        can refuse non-admins (``set_site_config_admin_only``), the case XNAT leaves open."""
        refused = _method(call)
        if refused is not None:
            return refused
        if self.filters.site_refused(call.user):
            return pages.status_page(403)
        return self._represent(call, None, rest)

    def project(self, call: Call, project_id: str, rest: list[str]) -> Reply:
        """``/data/projects/{P}/config/...``."""
        refused = _method(call)
        if refused is not None:
            return refused
        project = self.store.project(project_id)
        if project is None or project.id != project_id:
            return pages.status_page(404, f"The requested project {project_id} does not exist.")
        if not self.filters.can_read(call.user, project_id):
            return pages.status_page(403, f"User {call.user} can not access project {project_id}")
        return self._represent(call, project_id, rest)

    def site_config(self, call: Call, rest: list[str]) -> Reply:
        """``/xapi/siteConfig/values/{a,b}`` (a JSON map of the names it knows) and
        ``/xapi/siteConfig/{name}`` (a boolean as JSON, a string as its bare text)."""
        if call.method != "GET":
            return pages.servlet_error_page(405, "Method Not Allowed")
        preferences = self.site_preferences()
        admin_only = self._admin_preferences() if self._admin_preferences is not None else {}
        asked = {name.strip() for name in rest[-1].split(",")} if rest else set()
        if asked & set(admin_only) and not self.filters.is_admin(call.user):
            # Not in the "authenticated:" list of site-config-access.yaml (round 2 §1.3); the
            # body of XNAT's refusal is not documented [I].
            return pages.servlet_error_page(403, "Forbidden")
        preferences.update(admin_only)
        if len(rest) == 2 and rest[0] == "values":
            names = {name.strip() for name in rest[1].split(",")}
            return pages.json_reply({k: v for k, v in preferences.items() if k in names})
        if len(rest) == 1 and rest[0] in preferences:
            value = preferences[rest[0]]
            if isinstance(value, str):
                return pages.text(200, value, "application/json;charset=UTF-8")
            return pages.json_reply(value)
        if len(rest) == 1:
            return pages.text(404, f"No site configuration property named {rest[0]}")
        return pages.servlet_error_page(404, "Not Found")

    # -- ConfigResource.represent ---------------------------------------------------------

    def _represent(self, call: Call, project: str | None, rest: list[str]) -> Reply:
        tool = rest[0] if rest else None
        path = "/".join(rest[1:]) or None
        config = self.filters.config(project)
        contents = _true(call.query.get("contents"))
        meta = _true(call.query.get("meta"))
        accept_not_found = _true(call.query.get("accept-not-found"))
        user = call.user or ""
        if tool is None:  # the tools with a config in this scope
            if config is not None:
                return pages.table(("tool",), [{"tool": TOOL}], call.format)
            return _not_found(user, project, tool, path, accept_not_found)
        found = config if tool == TOOL and path in (None, PATH) else None
        if path is not None and contents and not meta:
            if found is None or found.status == "disabled":
                if accept_not_found:
                    return Reply(204, b"", "text/plain;charset=UTF-8")
                return pages.status_page(
                    404,
                    f"Config not found for user {user} and project {_java(project)} "
                    f"on tool [{tool}] path [{path}]",
                )
            return pages.text(200, found.contents)
        if found is None:
            return _not_found(user, project, tool, path, accept_not_found)
        return _rows(found, project, call.format, meta_only=meta and not contents)


def _method(call: Call) -> Reply | None:
    if call.method == "GET":
        return None
    if call.method in ("PUT", "DELETE"):
        return pages.status_page(
            501, f"The XNAT stand-in does not implement {call.method} on config resources."
        )
    return pages.status_page(405)


def _rows(config: FilterConfig, project: str | None, fmt: str | None, *, meta_only: bool) -> Reply:
    return pages.table(COLUMNS, [config.row(project, meta_only=meta_only)], fmt)


def _not_found(
    user: str, project: str | None, tool: str | None, path: str | None, accept_not_found: bool
) -> Reply:
    if accept_not_found:  # XNAT sets 204 and an empty table; a 204 carries no body
        return Reply(204, b"", "text/plain;charset=UTF-8")
    return pages.status_page(
        404,
        f"Couldn't find config for user {user} and project {_java(project)} "
        f"on tool [{_java(tool)}] path [{_java(path)}]",
    )


def _true(value: str | None) -> bool:
    """``isQueryVariableTrueHelper``: present and neither "false" nor "0" (any case)."""
    return value is not None and value.lower() not in ("false", "0")


def _java(value: str | None) -> str:
    """A value as Java's String.format writes it: null for None."""
    return "null" if value is None else value
