"""What the daemon is doing, for `xnat-drop status`: a snapshot file it rewrites, read here.

The running daemon writes `status.json` in its state directory (atomically, when something
changed); `status` reads it and the ledger's recent outcomes, and never talks to the daemon.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from xnat_drop.adapters.fs.beneath import Dir
from xnat_drop.adapters.ledger import Entry

FILE_NAME = "status.json"
SCHEMA = 1


def iso(ts: float | None) -> str | None:
    """Seconds since the epoch as an ISO 8601 UTC time, or None."""
    if ts is None:
        return None
    return (
        datetime.fromtimestamp(ts, tz=timezone.utc)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )


def write(state_dir: Path, snapshot: dict[str, Any]) -> None:
    """Replace status.json atomically. Names in it are escaped already (shown.py); anything
    that is still not UTF-8 becomes a backslash escape rather than an error."""
    data = (json.dumps(snapshot, indent=2, ensure_ascii=False) + "\n").encode(
        "utf-8", "backslashreplace"
    )
    with Dir.open(state_dir) as folder:
        folder.write_atomic(FILE_NAME, data, 0o644)


def read(state_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((state_dir / FILE_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_running(pid: int) -> bool:
    """True when a process with this pid exists (the daemon that wrote the snapshot)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by another user (the service account)
    return True


def report(
    snapshot: dict[str, Any] | None, done: list[Entry], failed: list[Entry], now: float
) -> dict[str, Any]:
    """Everything `status --json` prints: the daemon's snapshot and the last outcomes."""
    running = bool(snapshot) and is_running(int(snapshot.get("pid", 0)))  # type: ignore[union-attr]
    return {
        "running": running,
        "snapshot": snapshot,
        "last_done": [_finished(e) for e in done],
        "last_failed": [_finished(e) for e in failed],
        "now": iso(now),
    }


def _finished(entry: Entry) -> dict[str, Any]:
    return {
        "session": entry.relpath,
        "at": iso(entry.updated_at),
        "where": entry.final_path,
        "xnat": entry.archive_uri or entry.prearchive_uri,
        "reason": entry.reason,
    }


def render(data: dict[str, Any], now: float) -> str:
    """The status for people: one block per kind of session, each with its reason and age."""
    snap = data.get("snapshot") or {}
    lines = []
    if not data.get("running"):
        seen = snap.get("updated_at")
        lines.append(f"xnat-drop is NOT running{f' (last seen {seen})' if seen else ''}.")
    else:
        lines.append(f"xnat-drop {snap.get('version', '')} is running (pid {snap.get('pid')}).")
    xnat = snap.get("xnat") or {}
    if xnat:
        state = xnat.get("state", "unknown")
        detail = f": {xnat['detail']}" if xnat.get("detail") else ""
        since = f" since {xnat['since']}" if xnat.get("since") else ""
        version = f" {xnat['server_version']}" if xnat.get("server_version") else ""
        lines.append(f"XNAT{version} at {xnat.get('url', '?')}: {state}{since}{detail}")
    for title, key in (
        ("Settling (waiting for the copy to finish)", "settling"),
        ("Claimed", "work"),
    ):
        items = snap.get(key) or []
        more = int(snap.get(f"{key}_more") or 0)
        lines += ["", f"{title}: {len(items) + more}"]
        for item in items:
            age = _age(item.get("since"), now)
            lines.append(f"  {item.get('session')}  {item.get('state', '')}  ({age})")
            if item.get("last_error"):
                lines.append(f"      last error: {item['last_error']}")
        if more:
            lines.append(f"  ... and {more:,} more")
    for title, key in (("Last delivered", "last_done"), ("Last failed", "last_failed")):
        items = data.get(key) or []
        lines += ["", f"{title}: {len(items)}"]
        for item in items:
            extra = item.get("xnat") if key == "last_done" else item.get("reason")
            lines.append(f"  {item['at']}  {item['session']}  {extra or ''}".rstrip())
    return "\n".join(lines) + "\n"


def _age(stamp: str | None, now: float) -> str:
    if not stamp:
        return "?"
    try:
        then = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return "?"
    seconds = max(0, int(now - then))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"
