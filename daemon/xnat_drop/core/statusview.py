"""The status for lab members as files: STATUS.txt, STATUS.html and the status page's HTML,
rendered from the words of core/statuswords.py. Pure.

The text has CRLF line ends (Notepad shows the lines). The HTML is one static page: no script
at all, nothing fetched from elsewhere, one inline style (STYLE, a constant: its hash is the
page's Content-Security-Policy), a viewport for phones, and lists and tables that reflow on a
narrow screen. Every name in it is HTML-escaped (names are data: a folder may be called
`<script>`).
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from datetime import tzinfo
from typing import Any

from xnat_drop.core.statuswords import Finished, View, Waiting, view

STYLE = (
    "body{font:16px/1.45 system-ui,sans-serif;margin:0 auto;max-width:62em;padding:.5em 1em;"
    "color:#111;background:#fff}"
    "h1{font-size:1.3em;margin:.4em 0}h2{font-size:1.1em;margin:1.4em 0 .4em;"
    "border-bottom:1px solid #ccc}"
    "p{margin:.3em 0}ul{list-style:none;padding:0;margin:0}"
    "li{margin:.5em 0;padding:.2em .6em;border-left:4px solid #bbb}"
    "li.attention{border-color:#c00}li.progress{border-color:#06c}"
    ".path{font-weight:bold;overflow-wrap:anywhere}"
    ".fix,.where{font-family:monospace;overflow-wrap:anywhere}"
    ".bad{color:#b00;font-weight:bold}"
    "table{border-collapse:collapse;width:100%}"
    "th,td{text-align:left;vertical-align:top;padding:.3em .5em;border-bottom:1px solid #ddd;"
    "overflow-wrap:anywhere}"
    "@media (max-width:40em){table,thead,tbody,tr,th,td{display:block}thead{display:none}"
    "tr{border-bottom:1px solid #ccc;padding:.3em 0}td{border:0;padding:.1em 0}"
    'td[data-label]::before{content:attr(data-label) ": ";color:#555}}'
    "td.when,th{white-space:nowrap;overflow-wrap:normal}"
)
TIMESTAMP = "Updated"  # the first word of the line that changes with the clock alone
_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def style_hash() -> str:
    """The Content-Security-Policy source that allows exactly STYLE inline."""
    digest = hashlib.sha256(STYLE.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


def render_text(
    report: dict[str, Any],
    zone: tzinfo,
    *,
    project: str | None = None,
    by_folder: bool = True,
    share: str = "",
) -> str:
    """STATUS.txt: CRLF line endings, so Notepad shows it. `project`: only its sessions
    (`by_folder`, `share`: see core.statuswords.view)."""
    return text(view(report, zone, project=project, by_folder=by_folder, share=share))


def render_html(
    report: dict[str, Any],
    zone: tzinfo,
    *,
    project: str | None = None,
    refresh: float | None = None,
    by_folder: bool = True,
    share: str = "",
) -> str:
    """STATUS.html (refresh None) or the page (refreshing itself every `refresh` seconds)."""
    found = view(report, zone, project=project, by_folder=by_folder, share=share)
    return page(found, refresh=refresh)


def file_names(project: str | None, *, html: bool) -> tuple[str, ...]:
    """The status files for `project` (None: all of them in one): STATUS.txt (and .html), or
    STATUS-<project>.txt with the name made safe for any filesystem: a name of other
    characters (or too long) gets them replaced and a short hash of the real one appended, so
    that two projects never share a file."""
    stem = "STATUS"
    if project is not None:
        safe = project
        if not _SAFE_NAME.fullmatch(project):
            digest = hashlib.sha256(project.encode("utf-8", "backslashreplace")).hexdigest()[:8]
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", project)[:64] + "-" + digest
        stem = f"STATUS-{safe}"
    return (f"{stem}.txt", f"{stem}.html") if html else (f"{stem}.txt",)


def text(v: View) -> str:
    """The view as plain text, CRLF line ends."""
    lines = [
        v.title,
        f"{TIMESTAMP} {v.updated} (rewritten within seconds of a change, at least every minute)",
        "",
        f"xnat-drop: {v.daemon}",
        f"XNAT: {v.xnat}",
    ]
    if v.today:
        lines.append(f"Today: {v.today}")
    if not v.waiting:
        lines += ["", "Nothing waiting or in progress."]
    for title, group in (
        ("NEEDS ATTENTION (cannot be taken until someone acts)", v.attention),
        ("IN PROGRESS", v.progress),
        ("ARRIVING (not taken yet)", v.arriving),
    ):
        if group:
            lines += ["", f"{title}: {len(group)}"]
            for item in group:
                lines += _waiting_lines(item)
    lines += [f"  ... {note}" for note in _counted(v)]
    for title, done, failed in (
        ("LAST DELIVERED", v.delivered, False),
        ("LAST FAILED", v.failed, True),
    ):
        if done:
            lines += ["", f"{title}:"]
            lines += [line for item in done for line in _finished_lines(item, failed)]
    return "\r\n".join(lines) + "\r\n"


def page(v: View, *, refresh: float | None = None) -> str:
    """The view as one HTML page (no script); `refresh`: it reloads itself that often."""
    meta = f'<meta http-equiv="refresh" content="{max(1, round(refresh))}">' if refresh else ""
    daemon_class = "" if v.daemon == "running" else ' class="bad"'
    xnat_class = "" if v.xnat.startswith("up") else ' class="bad"'
    body = [
        f"<h1>{_e(v.title)}</h1>",
        f"<p>{TIMESTAMP} {_e(v.updated)}</p>",
        f"<p{daemon_class}>xnat-drop: {_e(v.daemon)}</p>",
        f"<p{xnat_class}>XNAT: {_e(v.xnat)}</p>",
    ]
    if v.today:
        body.append(f"<p>Today: {_e(v.today)}</p>")
    if not v.waiting:
        body.append("<p>Nothing waiting or in progress.</p>")
    for title, group, kind in (
        ("Needs attention", v.attention, "attention"),
        ("In progress", v.progress, "progress"),
        ("Arriving (not taken yet)", v.arriving, "arriving"),
    ):
        if group:
            body.append(f"<h2>{title} ({len(group)})</h2><ul>")
            body += [_waiting_item(item, kind) for item in group]
            body.append("</ul>")
    body += [f"<p>{_e(note)}</p>" for note in _counted(v)]
    for title, done, label, failed in (
        ("Last delivered", v.delivered, "In XNAT", False),
        ("Last failed", v.failed, "Not uploaded", True),
    ):
        if done:
            body.append(
                f"<h2>{title}</h2><table><thead><tr><th>When</th><th>Session</th>"
                f"<th>{label}</th><th>Report</th></tr></thead><tbody>"
            )
            body += [_finished_row(item, label, failed) for item in done]
            body.append("</tbody></table>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{meta}<title>{_e(v.title)}</title><style>{STYLE}</style></head>\n"
        "<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _counted(v: View) -> list[str]:
    """Sessions counted but not named: over the listing limit, or of no project yet."""
    notes = []
    if v.unlisted:
        notes.append(f"and {v.unlisted:,} more not listed here (too many to list)")
    if v.unassigned:
        notes.append(f"and {v.unassigned:,} more in incoming/ not yet assigned to a project")
    return notes


def _waiting_lines(item: Waiting) -> list[str]:
    lines = [f"  {item.path}", f"      {item.words}"]
    if item.fix:
        lines.append(f"      fix: {item.fix}")
    if item.note:
        lines.append(f"      a note beside it says the same: {item.note}")
    return lines


def _finished_lines(item: Finished, failed: bool) -> list[str]:
    lines = [f"  {item.at}  {item.path}"]
    if failed:
        lines.append(f"      not uploaded: {item.rules or 'see the report'}")
    elif item.xnat:
        lines.append(f"      in XNAT: {item.xnat}")
    if item.report:
        lines.append(f"      report: {item.report}")
    return lines


def _waiting_item(item: Waiting, kind: str) -> str:
    parts = [
        f'<li class="{kind}"><div class="path">{_e(item.path)}</div>',
        f"<div>{_e(item.words)}</div>",
    ]
    if item.fix:
        parts.append(f'<div>fix: <span class="fix">{_e(item.fix)}</span></div>')
    if item.note:
        parts.append(
            f'<div>a note beside it says the same: <span class="where">{_e(item.note)}</span></div>'
        )
    return "".join(parts) + "</li>"


def _finished_row(item: Finished, label: str, failed: bool) -> str:
    if failed:
        outcome = _e(item.rules or "see the report")
    elif item.xnat.startswith(("https://", "http://")):
        outcome = f'<a href="{_e(item.xnat)}">{_e(item.xnat)}</a>'
    else:
        outcome = _e(item.xnat)
    return (
        f'<tr><td class="when">{_e(item.at)}</td><td class="path">{_e(item.path)}</td>'
        f'<td data-label="{label}">{outcome}</td>'
        f'<td class="where" data-label="Report">{_e(item.report)}</td></tr>'
    )


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))
