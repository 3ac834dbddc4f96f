"""The ledger's running totals, for the metrics (core/metrics.py): sessions delivered and failed
by XNAT project, failures by rule, bytes sent, upload durations by histogram bucket.

They are counted in a small table, changed in the same transaction as the session row they
come from (the difference between the row's share before and after the change), so reading
them costs the same for ten sessions as for a million, and they survive restarts exactly: they
are the ledger's rows, summed. A ledger from before this table (or one whose counting changed:
LAYOUT) gains the new columns and counts its rows once at open.
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from typing import Any

from xnat_drop.adapters.ledger.resourcefiles import storage_errors
from xnat_drop.core.metrics import DURATION_BUCKETS, INF, Totals, bucket_key

TOTALS_SCHEMA = """
CREATE TABLE IF NOT EXISTS totals (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID
"""
# Columns of `sessions` newer than the table: added to older ledgers at open. NULL: unknown
# (sessions filed before they were recorded, and failed ones).
ADDED_COLUMNS = (("bytes_sent", "INTEGER"), ("upload_seconds", "REAL"))
COUNTED = frozenset({"outcome", "project", "reason", "bytes_sent", "upload_seconds"})
# What the counts mean (version, histogram bounds): when it changes, the rows are counted again.
LAYOUT = "1 " + " ".join(f"{bound:g}" for bound in DURATION_BUCKETS)
_ROW = "SELECT outcome, project, reason, bytes_sent, upload_seconds FROM sessions"

Share = dict[tuple[str, str], float]


class TotalRows:
    """The totals table, for the Ledger (which owns the connection)."""

    _db: sqlite3.Connection

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # the Ledger's

    def _prepare_totals(self) -> None:
        """At open (writable): add the new columns and count the rows if the table is new."""
        with self._transaction() as db:
            present = {str(row[1]) for row in db.execute("PRAGMA table_info(sessions)")}
            for name, kind in ADDED_COLUMNS:
                if name not in present:
                    db.execute(f"ALTER TABLE sessions ADD COLUMN {name} {kind}")
            db.execute(TOTALS_SCHEMA)
            layout = db.execute("SELECT key FROM totals WHERE kind = 'layout'").fetchone()
            if layout is None or layout[0] != LAYOUT:
                _count_again(db)

    def _share(self, db: sqlite3.Connection, claim_id: str) -> Share:
        """What one session's row adds to the totals now (inside the caller's transaction)."""
        return share(db.execute(f"{_ROW} WHERE claim_id = ?", (claim_id,)).fetchone())

    def _recount(self, db: sqlite3.Connection, claim_id: str, before: Share) -> None:
        """The row changed: add the difference between its share now and `before`."""
        after = self._share(db, claim_id)
        _add(db, {k: after.get(k, 0) - before.get(k, 0) for k in before.keys() | after.keys()})

    @storage_errors
    def totals(self) -> Totals:
        """Every delivered and failed session the ledger holds, summed."""
        delivered: dict[str, int] = {}
        failed: dict[str, int] = {}
        rules: dict[str, int] = {}
        durations = dict.fromkeys([*(f"{b:g}" for b in DURATION_BUCKETS), INF], 0)
        sent, seconds = 0, 0.0
        for kind, key, value in self._db.execute("SELECT kind, key, value FROM totals"):
            if kind == "delivered":
                delivered[key] = int(value)
            elif kind == "failed":
                failed[key] = int(value)
            elif kind == "failed_rule":
                rules[key] = int(value)
            elif kind == "duration" and key in durations:
                durations[key] = int(value)
            elif kind == "duration_sum":
                seconds = float(value)
            elif kind == "sent_bytes":
                sent = int(value)
        # The index on (outcome, updated_at) answers this at once.
        last = self._db.execute(
            "SELECT MAX(updated_at) FROM sessions WHERE outcome = 'done'"
        ).fetchone()[0]
        return Totals(
            delivered=tuple(sorted(delivered.items())),
            failed=tuple(sorted(failed.items())),
            failed_by_rule=tuple(sorted(rules.items())),
            sent_bytes=sent,
            durations=tuple(durations.values()),
            duration_sum=seconds,
            last_delivery=None if last is None else float(last),
        )


def share(row: sqlite3.Row | tuple[Any, ...] | None) -> Share:
    """What a session row (outcome, project, reason, bytes_sent, upload_seconds) adds to the
    totals: nothing until it is filed."""
    found: Share = {}
    if row is None:
        return found
    outcome, project, reason, sent, seconds = tuple(row)
    if outcome == "done":
        found["delivered", project] = 1
        if sent is not None:
            found["sent_bytes", ""] = sent
        if seconds is not None:
            found["duration", bucket_key(seconds)] = 1
            found["duration_sum", ""] = seconds
    elif outcome == "failed":
        found["failed", project] = 1
        for rule in {r.strip() for r in str(reason).split(",")} - {""}:
            found["failed_rule", rule] = 1
    return found


def _count_again(db: sqlite3.Connection) -> None:
    """Count every filed row from scratch (a new table, or a new LAYOUT)."""
    db.execute("DELETE FROM totals")
    summed: Share = {}
    for row in db.execute(f"{_ROW} WHERE outcome IN ('done', 'failed')"):
        for key, value in share(row).items():
            summed[key] = summed.get(key, 0) + value
    _add(db, summed)
    db.execute("INSERT INTO totals (kind, key, value) VALUES ('layout', ?, 0)", (LAYOUT,))


def _add(db: sqlite3.Connection, change: Share) -> None:
    db.executemany(
        "INSERT INTO totals (kind, key, value) VALUES (?, ?, ?) "
        "ON CONFLICT (kind, key) DO UPDATE SET value = value + excluded.value",
        [(kind, key, value) for (kind, key), value in change.items() if value],
    )
