"""`xnat-drop status [--json]`: what the daemon is doing and why, and the last outcomes.

Reads the snapshot the daemon writes (status.json) and the ledger, read-only; never talks to
the daemon itself.
"""

from __future__ import annotations

import os
import time
from datetime import timezone, tzinfo
from pathlib import Path
from typing import Any

from xnat_drop.adapters import configfile, localzone
from xnat_drop.adapters.fs import statusfile
from xnat_drop.adapters.ledger import FILE_NAME, Entry, Ledger
from xnat_drop.core.errors import ConfigError, StorageError
from xnat_drop.core.text import age, from_iso, local, plural
from xnat_drop.service.board import report, report_json

EX_OK = 0
EX_NOT_RUNNING = 3


def show_status(config_path: Path, *, as_json: bool) -> int:
    """Print the status; 0 while the daemon runs, 3 when it does not. Raises ConfigError
    (exit 78) for an unusable configuration or an unreadable ledger."""
    cfg = configfile.load(config_path, dict(os.environ))
    state = cfg.paths.state
    done: list[Entry] = []
    failed: list[Entry] = []
    if (state / FILE_NAME).exists():
        try:
            ledger = Ledger(state / FILE_NAME, readonly=True)
            try:
                listed = cfg.status.listed  # as many as the daemon's page shows
                done, failed = ledger.recent("done", listed), ledger.recent("failed", listed)
            finally:
                ledger.close()
        except StorageError as exc:
            raise _unreadable(config_path, state, exc) from exc
    now = time.time()  # noqa: TID251 - the command's own "now", for ages
    data = report(statusfile.read(state), done, failed, now)
    zone = localzone.lab_zone(cfg.time_zone, os.environ)
    text = report_json(data) if as_json else render(data, now, zone)
    print(text, end="")
    return EX_OK if data["running"] else EX_NOT_RUNNING


def render(data: dict[str, Any], now: float, zone: tzinfo = timezone.utc) -> str:
    """The status for people: one block per kind of session, each with its reason and age;
    times in the lab's zone (`--json` keeps ISO 8601 in UTC)."""
    snap = data.get("snapshot") or {}
    lines = []
    if not data.get("running"):
        seen = _when(snap.get("updated_at"), zone)
        lines.append(f"xnat-drop is NOT running{f' (last seen {seen})' if seen else ''}.")
    else:
        lines.append(f"xnat-drop {snap.get('version', '')} is running (pid {snap.get('pid')}).")
    xnat = snap.get("xnat") or {}
    if xnat:
        state = xnat.get("state", "unknown")
        detail = f": {xnat['detail']}" if xnat.get("detail") else ""
        since = f" since {_when(xnat['since'], zone)}" if xnat.get("since") else ""
        version = f" {xnat['server_version']}" if xnat.get("server_version") else ""
        lines.append(f"XNAT{version} at {xnat.get('url', '?')}: {state}{since}{detail}")
        if xnat.get("next_probe"):
            lines.append(f"  next probe at {xnat['next_probe']}")
        if xnat.get("token_warning"):
            lines.append(f"  {xnat['token_warning']} (at {xnat.get('token_expires')}): renew it")
        elif xnat.get("token_expires"):
            lines.append(f"  alias token expires at {xnat['token_expires']}")
        if xnat.get("last_answer"):
            checked = f"last answer {xnat['last_answer']}"
            nxt = f", next check at {xnat['next_check']}" if xnat.get("next_check") else ""
            lines.append(f"  {checked}{nxt}")
    share = snap.get("share_status") or {}
    if share.get("problem"):
        lines.append(f"Status files on the share: {share['problem']}")
    notify = snap.get("notifications") or {}
    if notify.get("state") == "failing":
        waiting = plural(int(notify.get("pending") or 0), "message")
        lines.append(
            f"notifications failing since {_when(notify.get('since'), zone)} ({waiting} "
            f"waiting in the outbox): {notify.get('last_error', '')}"
        )
    for title, key in (
        ("Settling (waiting for the copy to finish)", "settling"),
        ("Cannot be taken (what is wrong, and the fix)", "not_taken"),
        ("Claimed", "work"),
    ):
        items = snap.get(key) or []
        more = int(snap.get(f"{key}_more") or 0)
        lines += ["", f"{title}: {len(items) + more}"]
        for item in items:
            lines += _item_lines(item, now)
        if more:
            lines.append(f"  ... and {more:,} more")
    for title, key in (("Last delivered", "last_done"), ("Last failed", "last_failed")):
        items = data.get(key) or []
        lines += ["", f"{title}: {len(items)}"]
        for item in items:
            extra = item.get("xnat") if key == "last_done" else item.get("reason")
            lines.append(f"  {_when(item['at'], zone)}  {item['session']}  {extra or ''}".rstrip())
    return "\n".join(lines) + "\n"


def _item_lines(item: dict[str, Any], now: float) -> list[str]:
    """A settling, claimed or blocked session (or a file where folders belong), for people."""
    age = _age(item.get("since"), now)
    if "reason" in item:  # cannot be taken
        lines = [f"  {item.get('path')}  {item.get('reason')}  ({age})"]
        lines.append(f"      fix: {item.get('fix')}")
        if item.get("note"):
            lines.append(f"      a note for the lab beside it: incoming/{item['note']}")
        return lines
    lines = [f"  {item.get('session')}  {item.get('state', '')}  ({age})"]
    if item.get("last_error"):
        lines.append(f"      last error: {item['last_error']}")
    return lines


def _when(stamp: str | None, zone: tzinfo) -> str:
    """An ISO 8601 time from the snapshot or the ledger, as the lab's clock reads it."""
    then = from_iso(stamp) if stamp else None
    return (stamp or "") if then is None else local(then, zone)


def _age(stamp: str | None, now: float) -> str:
    then = from_iso(stamp) if stamp else None
    return "?" if then is None else age(now - then)


def _unreadable(config_path: Path, state: Path, exc: StorageError) -> ConfigError:
    return ConfigError(
        [
            f"paths.state_dir: cannot read {state / FILE_NAME} ({exc}). If the file is "
            "damaged, stop the daemon and move it aside; the daemon makes a new one."
        ],
        str(config_path),
    )
