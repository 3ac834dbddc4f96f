"""The status board: systemd's one-line STATUS, the status.json snapshot `xnat-drop status`
reads, and today's tally. Reads the loop's state, changes none of it.

Whenever it rewrites status.json it hands the full report (the snapshot and the last outcomes:
what `status --json` prints) to its sinks: the status files on the share, the page, the
metrics, the notifications. A sink that fails is logged and never stops the loop.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from xnat_drop import __version__
from xnat_drop.adapters.fs import statusfile
from xnat_drop.adapters.fs.statusfile import is_running
from xnat_drop.adapters.ledger import Entry, Ledger
from xnat_drop.core.config import Config
from xnat_drop.core.metrics import SESSION_STATES
from xnat_drop.core.model import Outcome
from xnat_drop.core.shown import shown
from xnat_drop.core.text import iso, size
from xnat_drop.service.state import Clock, Job, LoopState

log = logging.getLogger("xnat_drop.service")

Report = dict[str, Any]  # what `status --json` prints: see `report`
# A sink is called on the loop's thread with each report, and the ledger; the ledger is None
# while a step runs (the step has it), so the last outcomes are then the ones read before.
Sink = Callable[[Report, "Ledger | None"], None]
STATUS_REFRESH = 10.0  # seconds: the status snapshot is rewritten at least this often
BUSY_GAP = 2.0  # seconds: while a step runs, progress is published at most this often
LISTED = 100  # claimed sessions named in the snapshot; the rest are counted
NAME_SHOWN = 60  # characters of a session name in the one-line status


@dataclass
class Board:
    """What the daemon shows of itself. `publish` writes status.json when it changed."""

    config: Config
    clock: Clock
    day: date | None = None
    done: int = 0
    failed: int = 0
    sinks: list[Sink] = field(default_factory=list)  # given each report that is published
    # More of the snapshot, by key: what a sink has to say of itself (the status files' folder
    # cannot be written, ...), so that status.json and `xnat-drop status` show it.
    parts: dict[str, Callable[[], Any]] = field(default_factory=dict)
    notifications: Callable[[], dict[str, Any] | None] | None = None  # their health, if on
    _published: tuple[str, float] = field(default=("", float("-inf")))
    _failing: set[int] = field(default_factory=set)  # sinks whose last call failed (logged)
    _recent: tuple[list[Entry], list[Entry]] = field(default=([], []))  # last done, failed

    def count_today(self, ledger: Ledger) -> None:
        """Start today's tally from the ledger (at start, and when the day changes)."""
        self.day = datetime.fromtimestamp(self.clock.wall()).date()
        midnight = datetime.combine(self.day, datetime.min.time()).timestamp()
        self.done = ledger.count_since("done", midnight)
        self.failed = ledger.count_since("failed", midnight)

    def tally(self, outcome: Outcome, ledger: Ledger) -> None:
        if self.day != datetime.fromtimestamp(self.clock.wall()).date():
            self.count_today(ledger)  # a new day: start from the ledger again
        elif outcome is Outcome.DONE:
            self.done += 1
        else:
            self.failed += 1

    def line(self, state: LoopState) -> str:
        """One line for systemd's STATUS=: what waits, what happens now, today's tally, XNAT."""
        parts = []
        if state.storage is not None:
            parts.append(f"PAUSED: {state.storage.reason}")
        busy, done, total = state.progress.read()
        notices = state.intake.notices
        waiting = len(state.intake.seen) - len(notices.blocked)
        waiting += sum(1 for j in state.jobs if j.claim.id != busy)
        parts.append(f"{waiting} waiting")
        if notices.count:
            parts.append(f"{notices.count} cannot be taken")
        job = next((j for j in state.jobs if j.claim.id == busy), None) if busy else None
        if job is not None:
            percent = f" {100 * done // total}%" if total else ""
            name = shown(job.claim.relpath[-1])
            if len(name) > NAME_SHOWN:
                name = name[: NAME_SHOWN - 3] + "..."
            parts.append(f"uploading {name}{percent} of {size(total)}")
        parts.append(f"{self.done} done today")
        parts.append(f"{self.failed} failed")
        xnat = state.xnat
        if xnat.auth is not None:
            parts.append("XNAT refused the credentials: uploads paused")
        elif xnat.outage is not None:
            since = datetime.fromtimestamp(xnat.outage.since).strftime("%H:%M")
            parts.append(f"XNAT {xnat.outage.state} since {since}")
        elif xnat.contact is None:
            parts.append("XNAT not yet contacted")
        else:
            parts.append("XNAT ok")
        if xnat.token_warning():
            parts.append(xnat.token_warning())
        return " · ".join(parts)

    def snapshot(self, state: LoopState) -> dict[str, Any]:
        """Everything `xnat-drop status` shows, as JSON-ready data (names escaped)."""
        mono, wall = self.clock.monotonic(), self.clock.wall()

        def at(monotonic: float) -> str | None:
            return None if monotonic == float("inf") else iso(wall + monotonic - mono)

        xnat = state.xnat.state(at)
        xnat.update(url=self.config.xnat.url, server_version=state.server_version)
        busy = state.progress.read()[0]
        sessions = dict.fromkeys(SESSION_STATES, 0)
        notices = state.intake.notices
        sessions["settling"] = sum(1 for r in state.intake.seen if r not in notices.blocked)
        sessions["blocked"] = notices.count
        for job in state.jobs:
            sessions[self._phase(job, state, busy)] += 1
        arrived = [job.arrived_at or job.claim.claimed_at for job in state.jobs]
        return {
            "schema": statusfile.SCHEMA,
            "pid": os.getpid(),
            "version": __version__,
            "updated_at": iso(wall),
            "xnat": xnat,
            "settling": state.intake.settling(at),
            "settling_more": state.intake.unlisted,
            "not_taken": state.intake.notices.listed(at),
            "not_taken_more": state.intake.notices.unlisted,
            "work": [self._job(job, state, busy, at) for job in state.jobs[:LISTED]],
            "work_more": max(0, len(state.jobs) - LISTED),
            "storage": None
            if state.storage is None
            else {"state": "paused", "detail": state.storage.reason},
            "today": {"done": self.done, "failed": self.failed},
            # For the metrics: every session by state (core/metrics.py SESSION_STATES), and
            # since when the oldest claimed one waits (first seen in incoming/).
            "sessions": sessions,
            "oldest_waiting_since": iso(min(arrived)) if arrived else None,
            "notifications": None if self.notifications is None else self.notifications(),
        } | {key: part() for key, part in self.parts.items()}

    def publish(self, state: LoopState, ledger: Ledger | None, *, force: bool = False) -> None:
        """Rewrite status.json if something changed (or STATUS_REFRESH passed), then hand the
        full report to every sink. `ledger` None: a step runs (and has the ledger), so only
        its progress is new, published at most every BUSY_GAP.

        Raises OSError when the state directory cannot take it, StorageError when the ledger
        cannot be read.
        """
        now = self.clock.monotonic()
        since = now - self._published[1]
        if ledger is None and since < BUSY_GAP and not force:
            return  # before the snapshot: the loop asks every half second while a step runs
        snapshot = self.snapshot(state)
        key = repr({k: v for k, v in snapshot.items() if k != "updated_at"})
        if not force and key == self._published[0] and since < STATUS_REFRESH:
            return
        statusfile.write(self.config.paths.state, snapshot)
        self._published = (key, now)
        if not self.sinks:
            return
        if ledger is not None:
            listed = self.config.status.listed
            self._recent = (ledger.recent("done", listed), ledger.recent("failed", listed))
        done, failed = self._recent
        self._hand_out(report(snapshot, done, failed, self.clock.wall(), running=True), ledger)

    def next_refresh(self) -> float:
        """When (monotonic) status.json is due again, changed or not: the loop wakes for it,
        so a reader (the page's /healthz) can tell a live loop from a hung one."""
        return self._published[1] + STATUS_REFRESH

    def _hand_out(self, data: Report, ledger: Ledger | None) -> None:
        for sink in self.sinks:
            try:
                sink(data, ledger)
            except Exception:  # a status file, page or channel never stops the loop
                if id(sink) not in self._failing:  # once per failure, not once per turn
                    log.exception("cannot publish the status to %s", _name(sink))
                self._failing.add(id(sink))
            else:
                self._failing.discard(id(sink))

    @staticmethod
    def _phase(job: Job, state: LoopState, busy: str) -> str:
        """The job's state as the metrics count it (the same cases as its words below)."""
        xnat = state.xnat
        if job.claim.id == busy:
            return "uploading"
        if job.filing is not None:
            return "filing"
        if job.verdict is None:
            return "claimed"
        if xnat.auth is not None or xnat.outage is not None:
            return "waiting_xnat"
        return "retrying" if job.attempts else "claimed"

    def _job(
        self, job: Job, state: LoopState, busy: str, at: Callable[[float], str | None]
    ) -> dict[str, Any]:
        xnat = state.xnat
        progress = None
        # `phase` says the same as `words` as a key, for the status files' words.
        if job.claim.id == busy:
            words = phase = "uploading"
            _, sent, total = state.progress.read()
            rate, packing = state.progress.pace()
            progress = {
                "bytes_sent": sent,
                "bytes_total": total,
                "bytes_per_second": round(rate),
                "packing": packing,
            }
        elif job.filing is not None:
            words = f"being filed in {job.filing.action.value}/"
            phase = f"filing-{job.filing.action.value}"
        elif job.verdict is None:
            words, phase = "waiting to be inspected", "inspecting"
        elif xnat.auth is not None:
            words, phase = "waiting: XNAT refused the credentials", "credentials"
        elif xnat.outage is not None:
            words, phase = f"waiting: XNAT {xnat.outage.state}", "xnat-down"
        elif job.attempts:
            attempt = f"attempt {job.attempts + 1} of {self.config.retry.max_attempts}"
            words, phase = f"retrying ({attempt}) at {at(job.next_at)}", "retrying"
        else:
            words = phase = "next"
        return {
            "session": job.claim.display,
            "claim": job.claim.id,
            "state": words,
            "phase": phase,
            "attempts": job.attempts,
            "since": iso(job.claim.claimed_at),
            "last_error": shown(job.last_error)[:500],
            "progress": progress,
            "retry_at": at(job.next_at) if job.attempts and job.filing is None else None,
            "project": job.verdict.target.project if job.verdict and job.verdict.target else None,
        }


def report(
    snapshot: dict[str, Any] | None,
    done: Sequence[Entry],
    failed: Sequence[Entry],
    now: float,
    *,
    running: bool | None = None,
) -> Report:
    """Everything `status --json` prints: the daemon's snapshot and the last outcomes.
    `running` None: judged by whether the snapshot's pid is alive (the command's view)."""
    if running is None:
        running = bool(snapshot) and is_running(int(snapshot.get("pid", 0)))  # type: ignore[union-attr]
    return {
        "running": running,
        "snapshot": snapshot,
        "last_done": [_finished(e) for e in done],
        "last_failed": [_finished(e) for e in failed],
        "now": iso(now),
    }


def report_json(data: Report) -> str:
    """The report as `status --json` prints it (and the page's /status.json serves it)."""
    return json.dumps(data, indent=2, ensure_ascii=False)


def _finished(entry: Entry) -> dict[str, Any]:
    return {
        "session": entry.relpath,
        "at": iso(entry.updated_at),
        "where": entry.final_path,
        "xnat": entry.archive_uri or entry.prearchive_uri,
        "reason": entry.reason,
        "project": entry.project or None,
    }


def _name(sink: Sink) -> str:
    owner = getattr(sink, "__self__", None)
    return type(owner).__name__ if owner is not None else getattr(sink, "__name__", "a sink")
