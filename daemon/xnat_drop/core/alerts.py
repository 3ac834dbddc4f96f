"""Which notifications are due. Pure: given the daemon's report (what `status --json` prints),
the memory of what was told already, the [notify] settings and `now` (wall clock).

Each event has a key that names it for good (the outbox stores each message once per key, so
a restart never repeats one):

- `outage-started:<since>`: XNAT has been unreachable for `outage_after` (a shorter flap says
  nothing); `outage-ended:<since>` when it answers again, only if its start was told;
- `credentials:<since>`: XNAT refused the credentials (at once: nothing moves until fixed);
- `stuck:<path>:<day>`: a folder in incoming/ that cannot be taken (blocked), or is still not
  ready after watch.max_settle_seconds: once per episode (a restart on the same day says
  nothing new; one still stuck on a later day after a restart is told again);
- `retrying:<claim>`: a claimed session that spent an attempt and is still not filed after
  `retrying_after`;
- `failed:<claim>`: a session filed in failed/ (read from the ledger, not from the report:
  see failed_alert);
- `daily:<date>`: the daily digest, at `digest_time` in the lab's zone.

The memory (what was told, what is being watched) is kept in the ledger with the messages it
produced, in one transaction: a crash between the two is impossible.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, tzinfo
from typing import Any

from xnat_drop.core import messages
from xnat_drop.core.messages import Alert, Claimed, Context, FailedSession, Stuck
from xnat_drop.core.monitoring import NotifyConfig
from xnat_drop.core.text import from_iso

__all__ = [
    "Alert",
    "Claimed",
    "Context",
    "Facts",
    "FailedSession",
    "Memory",
    "Stuck",
    "daily_due",
    "facts_of",
]

NOT_YET = "not yet contacted"
ANSWERING = frozenset({"ok", "credentials refused"})  # XNAT answers: no outage


@dataclass(frozen=True, slots=True)
class Facts:
    """What the alerts need of one report."""

    xnat_state: str = NOT_YET
    xnat_since: str = ""  # ISO: since when the state holds (outages, refused credentials)
    stuck: tuple[Stuck, ...] = ()
    claimed: tuple[Claimed, ...] = ()
    waiting: int = 0  # settling and claimed sessions


@dataclass(frozen=True, slots=True)
class Memory:
    """What was told, and what is being watched; kept in the ledger between runs."""

    outage: str = ""  # the outage being watched: its `since` ("" none)
    outage_told: bool = False
    auth: str = ""  # the credentials refusal told: its `since`
    stuck: tuple[tuple[str, str], ...] = ()  # (path, key) told and still stuck
    retrying: tuple[str, ...] = ()  # claims told and still claimed
    daily: str = ""  # the date of the last daily digest

    def to_json(self) -> str:
        return json.dumps(
            {
                "outage": self.outage,
                "outage_told": self.outage_told,
                "auth": self.auth,
                "stuck": [list(s) for s in self.stuck],
                "retrying": list(self.retrying),
                "daily": self.daily,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | None) -> Memory:
        """The memory stored by `to_json`; an empty one for anything else."""
        try:
            data = json.loads(text or "{}")
            return cls(
                str(data.get("outage", "")),
                bool(data.get("outage_told", False)),
                str(data.get("auth", "")),
                tuple((str(p), str(k)) for p, k in data.get("stuck", [])),
                tuple(str(c) for c in data.get("retrying", [])),
                str(data.get("daily", "")),
            )
        except (ValueError, TypeError, AttributeError):
            return cls()


def facts_of(report: Mapping[str, Any]) -> Facts:
    """The facts of a report as board.report makes it (a missing snapshot: nothing known)."""
    snap = report.get("snapshot") or {}
    xnat = snap.get("xnat") or {}
    stuck = [
        Stuck(str(item.get("path", "")), str(item.get("reason", "")), str(item.get("fix", "")))
        for item in snap.get("not_taken") or []
        if item.get("kind") == "folder"
    ]
    stuck += [
        Stuck(str(item.get("session", "")), str(item.get("state", "")))
        for item in snap.get("settling") or []
        if item.get("phase") == "stuck"  # not settled after watch.max_settle (service/intake.py)
    ]
    claimed = tuple(
        Claimed(
            str(item.get("claim", "")),
            str(item.get("session", "")),
            str(item.get("project") or ""),
            int(item.get("attempts") or 0),
            from_iso(str(item.get("since") or "")) or 0.0,
            str(item.get("retry_at") or ""),
        )
        for item in snap.get("work") or []
    )
    waiting = len(snap.get("settling") or []) + int(snap.get("settling_more") or 0)
    waiting += len(claimed) + int(snap.get("work_more") or 0)
    return Facts(
        str(xnat.get("state") or NOT_YET),
        str(xnat.get("since") or ""),
        tuple(stuck),
        claimed,
        waiting,
    )


def watch(
    memory: Memory, facts: Facts, now: float, config: NotifyConfig, ctx: Context
) -> tuple[Memory, list[Alert]]:
    """The alerts due now from the report's facts, and the memory after them. An event the
    configuration does not want is remembered as told all the same (its end then says
    nothing either)."""
    alerts: list[Alert] = []
    memory = _outage(memory, facts, now, config, ctx, alerts)
    memory = _credentials(memory, facts, config, ctx, alerts)
    memory = _stuck(memory, facts, now, config, ctx, alerts)
    memory = _retrying(memory, facts, now, config, ctx, alerts)
    return memory, alerts


def _outage(
    memory: Memory, facts: Facts, now: float, config: NotifyConfig, ctx: Context, out: list[Alert]
) -> Memory:
    state = facts.xnat_state
    if state == NOT_YET:
        return memory  # not known yet (a start): an outage told before may still go on
    if state in ANSWERING:
        if memory.outage and memory.outage_told and config.wants("outage"):
            out.append(messages.outage_ended(memory.outage, now, ctx))
        return replace(memory, outage="", outage_told=False)
    since, told = memory.outage, memory.outage_told
    # A told outage goes on across a restart (the new run dates it anew): still the same one.
    if not since or (not told and since != facts.xnat_since):
        since, told = facts.xnat_since, False
    began = from_iso(since)
    if not told and began is not None and now - began >= config.outage_after:
        told = True
        if config.wants("outage"):
            out.append(messages.outage_started(since, state, now, facts.waiting, ctx))
    return replace(memory, outage=since, outage_told=told)


def _credentials(
    memory: Memory, facts: Facts, config: NotifyConfig, ctx: Context, out: list[Alert]
) -> Memory:
    state = facts.xnat_state
    if state == "credentials refused":
        if memory.auth:
            return memory  # told already (in this run or before a restart)
        if config.wants("credentials"):
            out.append(messages.credentials_refused(facts.xnat_since, facts.waiting, ctx))
        return replace(memory, auth=facts.xnat_since or "?")
    if state == NOT_YET:
        return memory
    return replace(memory, auth="")


def _stuck(
    memory: Memory, facts: Facts, now: float, config: NotifyConfig, ctx: Context, out: list[Alert]
) -> Memory:
    told = dict(memory.stuck)
    kept: dict[str, str] = {}
    day = datetime.fromtimestamp(now, tz=ctx.zone).date().isoformat()
    for item in facts.stuck:
        if item.path in kept:
            continue
        key = told.get(item.path)
        if key is None:
            key = f"stuck:{item.path}:{day}"
            if config.wants("stuck"):
                out.append(messages.stuck(item, key, ctx))
        kept[item.path] = key
    return replace(memory, stuck=tuple(sorted(kept.items())))


def _retrying(
    memory: Memory, facts: Facts, now: float, config: NotifyConfig, ctx: Context, out: list[Alert]
) -> Memory:
    told = set(memory.retrying)
    current = {c.claim for c in facts.claimed}
    for item in facts.claimed:
        if item.claim in told or not item.attempts or now - item.since < config.retrying_after:
            continue
        told.add(item.claim)
        if config.wants("retrying"):
            out.append(messages.retrying(item, now, ctx))
    return replace(memory, retrying=tuple(sorted(told & current)))


def daily_due(memory: Memory, now: float, digest_time: str, zone: tzinfo) -> str | None:
    """The date (YYYY-MM-DD, the lab's) whose daily digest is due now, or None: at or after
    `digest_time` ("HH:MM"), once a day; "" means no digest."""
    if not digest_time:
        return None
    local = datetime.fromtimestamp(now, tz=zone)
    hour, minute = (int(part) for part in digest_time.split(":"))
    day = local.date().isoformat()
    if (local.hour, local.minute) < (hour, minute) or memory.daily == day:
        return None
    return day


def new_failures(
    sessions: Sequence[FailedSession], config: NotifyConfig, ctx: Context
) -> list[Alert]:
    """One alert per failed session (the ledger's rows since the watermark)."""
    if not config.wants("failed"):
        return []
    return [messages.failed(s, ctx) for s in sessions]
