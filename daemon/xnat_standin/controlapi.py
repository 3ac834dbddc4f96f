"""The stand-in's own control API (``/_emulator/...``, loopback only, no authentication) and
the JSON snapshot of its state that tests read: what tests inject and look at, apart from the
Emulator's Python methods (app.py).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from . import pages
from .faults import Fault
from .pages import Reply
from .scpconfig import DicomReceiver
from .scpstate import ScpFault

if TYPE_CHECKING:
    from .app import Emulator


def control(emu: Emulator, method: str, path: str, body: bytes) -> Reply:
    """The ``/_emulator/`` API (no authentication; loopback only)."""
    action = path.removeprefix("/_emulator").strip("/")
    try:
        data: Any = json.loads(body) if body.strip() else None
    except ValueError:
        return pages.json_reply({"error": "body is not JSON"}, 400)
    try:
        if (method, action) == ("GET", "state"):
            return pages.json_reply(state(emu))
        if (method, action) == ("POST", "faults"):
            emu.inject(Fault.from_json(data))
            return pages.json_reply({"faults": [f.as_json() for f in emu.faults.pending()]})
        if (method, action) == ("DELETE", "faults"):
            emu.clear_faults()
            return pages.json_reply({"faults": []})
        if (method, action) == ("POST", "expire-sessions"):
            emu.expire_sessions()
            return pages.json_reply({"sessions": 0})
        if (method, action) == ("POST", "projects"):
            if not isinstance(data, dict) or not isinstance(data.get("id"), str):
                raise ValueError('expected {"id": "P", "prearchive_code": 0}')
            emu.add_project(
                data["id"],
                int(data.get("prearchive_code", 0)),
                aliases=[str(a) for a in data.get("aliases", [])],
            )
            return pages.json_reply({"projects": _project_states(emu)})
        if action == "inbox-faults":  # inbox.py
            return emu.inbox.control(method, data)
        if action in ("dicom-faults", "dicom-receivers"):
            return _dicom_control(emu, method, action, data)
        if action in ("series-filters", "project-readers", "site-config-admin-only"):
            return _filter_control(emu, method, action, data)
        if (method, action) == ("POST", "checksums"):
            if not isinstance(data, dict) or not isinstance(data.get("on"), bool):
                raise ValueError('expected {"on": true|false}')
            emu.set_checksums(data["on"])
            return pages.json_reply({"checksums": data["on"]})
        if (method, action) == ("POST", "users"):
            if not isinstance(data, dict) or not {"name", "password"} <= set(data):
                raise ValueError('expected {"name": "u", "password": "p"}')
            emu.add_user(str(data["name"]), str(data["password"]))
            return pages.json_reply({"users": "ok"})
    except (TypeError, ValueError) as error:
        return pages.json_reply({"error": str(error)}, 400)
    return pages.json_reply({"error": f"no control endpoint {method} {path}"}, 404)


def _dicom_control(emu: Emulator, method: str, action: str, data: Any) -> Reply:
    """POST/DELETE dicom-faults (an ScpFault), POST dicom-receivers (XNAT's JSON)."""
    if (method, action) == ("POST", "dicom-faults"):
        emu.inject_dicom(ScpFault.from_json(data))
    elif (method, action) == ("DELETE", "dicom-faults"):
        emu.clear_dicom_faults()
    elif (method, action) == ("POST", "dicom-receivers"):
        emu.set_dicom_receiver(DicomReceiver.from_json(data))
    else:
        return pages.json_reply({"error": f"no control endpoint {method} {action}"}, 404)
    return pages.json_reply(emu.dicom.as_json())


def _filter_control(emu: Emulator, method: str, action: str, data: Any) -> Reply:
    """POST/DELETE series-filters, POST project-readers, POST site-config-admin-only."""
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    project = data.get("project")
    if project is not None and not isinstance(project, str):
        raise ValueError('"project" is a project ID or null (the site)')
    if (method, action) == ("POST", "series-filters"):
        emu.set_series_filter(
            project,
            mode=str(data.get("mode", "blacklist")),
            list_text=str(data.get("list", "localizer")),
            status=str(data.get("status", "enabled")),
            contents=None if data.get("contents") is None else str(data["contents"]),
        )
    elif (method, action) == ("DELETE", "series-filters"):
        emu.clear_series_filter(project)
    elif (method, action) == ("POST", "project-readers") and project is not None:
        users = data.get("users")
        emu.set_project_readers(project, None if users is None else map(str, users))
    elif (method, action) == ("POST", "site-config-admin-only"):
        admins = data.get("admins")
        emu.set_site_config_admin_only(
            bool(data.get("admin_only", True)),
            admins=None if admins is None else map(str, admins),
        )
    else:
        return pages.json_reply({"error": f"no control endpoint {method} {action}"}, 404)
    return pages.json_reply({"series_filters": emu.filters.as_json()})


def state(emu: Emulator) -> dict[str, Any]:
    """Everything a test may want to look at, as JSON-ready data."""
    return {
        "version": emu.version.text,
        "projects": _project_states(emu),
        "prearchive": [
            {
                "project": s.project,
                "timestamp": s.timestamp,
                "folder": s.folder,
                "name": s.name,
                "subject": s.subject,
                "tag": s.tag,
                "status": s.status,
                "uri": s.uri,
                "prevent_auto_commit": s.prevent_auto_commit,
                "source": s.source,
                "scans": {k: list(v) for k, v in s.scans.items()},
            }
            for s in emu.prearchive()
        ],
        "archive": [
            {
                "project": s.project,
                "subject": s.subject,
                "label": s.label,
                "id": s.id,
                "uid": s.uid,
                "scans": {k: list(v) for k, v in s.scans.items()},
            }
            for s in emu.archive()
        ],
        "requests": [
            {
                "method": r.method,
                "path": r.path,
                "query": r.query,
                "status": r.status,
                "user_agent": r.user_agent,
                "user": r.user,
                "body_bytes": r.body_bytes,
            }
            for r in emu.requests()
        ],
        "faults": [fault.as_json() for fault in emu.faults.pending()],
        "series_filters": emu.filters.as_json(),
        "site_preferences": emu.api.configs.site_preferences(),
        "inbox": emu.inbox.state(),
        "dicom": emu.dicom.as_json(),
        "http_sessions": emu.auth.session_count(),
    }


def _project_states(emu: Emulator) -> list[dict[str, Any]]:
    return [
        {"id": p.id, "prearchive_code": p.prearchive_code, "aliases": list(p.aliases)}
        for p in emu.store.projects()
    ]
