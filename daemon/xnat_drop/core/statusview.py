"""The status in words for lab members: STATUS.txt, STATUS.html and the status page's HTML,
rendered from the report `status --json` prints. Pure: names arrive escaped (shown.py), and
every one is HTML-escaped again here.

(A first cut: the share's status files replace it with the full rendering.)
"""

from __future__ import annotations

import base64
import hashlib
import html
from datetime import tzinfo
from typing import Any

STYLE = "body{font-family:sans-serif;margin:1em;max-width:60em}"


def style_hash() -> str:
    """The Content-Security-Policy source that allows exactly STYLE inline."""
    digest = hashlib.sha256(STYLE.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


def render_text(report: dict[str, Any], zone: tzinfo, *, project: str | None = None) -> str:
    """STATUS.txt: CRLF line endings, so Notepad shows it. `project`: only its sessions."""
    snap = report.get("snapshot") or {}
    lines = [
        f"xnat-drop status at {report.get('now', '')}",
        f"XNAT: {(snap.get('xnat') or {}).get('state', '?')}",
    ]
    return "\r\n".join(lines) + "\r\n"


def render_html(
    report: dict[str, Any],
    zone: tzinfo,
    *,
    project: str | None = None,
    refresh: float | None = None,
) -> str:
    """STATUS.html (refresh None) or the page (refreshing itself every `refresh` seconds)."""
    snap = report.get("snapshot") or {}
    meta = f'<meta http-equiv="refresh" content="{refresh:.0f}">' if refresh else ""
    rows = "".join(
        f"<li>{_e(item.get('session'))}: {_e(item.get('state'))}</li>"
        for item in snap.get("work") or []
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{meta}<title>xnat-drop status</title><style>{STYLE}</style></head>"
        f"<body><h1>xnat-drop</h1><ul>{rows}</ul></body></html>"
    )


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))
