"""The notifications' outbox: tables of the ledger's SQLite file.

`outbox` holds each message (core/mailing.py's letters) from the moment an event is known
until a mail server or webhook accepted it: keyed for good, so the same event is never queued
twice (INSERT OR IGNORE), across restarts too. `notify_state` holds the notifications' memory
(core/alerts.py) and since when failed sessions are told; `notify_told` the failed sessions
told. Both are written in the same transaction as the letters they produced.

Two users, two connections: the loop queues through the Ledger (OutboxRows, its one
connection); the sender thread has an `Outbox` of its own (WAL lets them work side by side,
each write a short transaction).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Literal, cast

from xnat_drop.adapters.ledger.resourcefiles import storage_errors
from xnat_drop.adapters.ledger.rows import Entry, entry_of, transaction
from xnat_drop.core.mailing import Channel, Letter
from xnat_drop.core.shown import shown

OUTBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    channel TEXT NOT NULL,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    fields TEXT NOT NULL DEFAULT '[]',
    created_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    sent_at REAL,
    digest TEXT NOT NULL DEFAULT '',
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (state, next_at);
CREATE INDEX IF NOT EXISTS outbox_recipient ON outbox (channel, recipient, sent_at);
CREATE TABLE IF NOT EXISTS notify_state (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS notify_told (
    claim_id TEXT PRIMARY KEY,
    at REAL NOT NULL
);
"""
LetterState = Literal["pending", "sent", "refused"]


class OutboxRows:
    """The loop's side of the outbox, for the Ledger (which owns the connection)."""

    _db: sqlite3.Connection

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # the Ledger's

    @storage_errors
    def notify_state(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM notify_state WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    @storage_errors
    def enqueue(
        self,
        letters: Sequence[Letter],
        state: Mapping[str, str],
        told: Sequence[str] = (),
        at: float = 0.0,
    ) -> int:
        """Queue the letters not queued before (by key), set `state` and record the failed
        sessions `told`, in one transaction; returns how many letters are new."""
        new = 0
        with self._transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO notify_told (claim_id, at) VALUES (?, ?)",
                [(claim, at) for claim in told],
            )
            for letter in letters:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO outbox (key, kind, channel, recipient, subject, body, "
                    "fields, created_at, next_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        shown(letter.key),
                        letter.kind,
                        letter.channel,
                        letter.recipient,
                        letter.subject,
                        letter.body,
                        json.dumps([list(f) for f in letter.fields], ensure_ascii=False),
                        letter.created_at,
                        letter.created_at,
                    ),
                )
                new += cursor.rowcount
            for name, value in state.items():
                db.execute(
                    "INSERT OR REPLACE INTO notify_state (name, value) VALUES (?, ?)", (name, value)
                )
        return new

    @storage_errors
    def untold_failures(self, since: float, limit: int = 500) -> list[Entry]:
        """The sessions filed in failed/ at `since` or later and not told yet, oldest first."""
        rows = self._db.execute(
            "SELECT * FROM sessions s WHERE outcome = 'failed' AND updated_at >= ? AND NOT "
            "EXISTS (SELECT 1 FROM notify_told t WHERE t.claim_id = s.claim_id) "
            "ORDER BY updated_at, claim_id LIMIT ?",
            (since, limit),
        )
        return [entry_of(r) for r in rows]


class Outbox:
    """The sender thread's own connection to the ledger file (made on that thread)."""

    @storage_errors
    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            self._db.execute("PRAGMA synchronous=FULL")  # a "sent" mark survives a power cut
            self._db.executescript(OUTBOX_SCHEMA)
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self._db)

    @storage_errors
    def due(self, now: float, channels: Sequence[Channel], limit: int = 1000) -> list[Letter]:
        """The letters waiting to be sent by these channels whose time has come, oldest
        first."""
        rows = self._db.execute(
            "SELECT key, kind, channel, recipient, subject, body, fields, created_at, attempts "
            "FROM outbox WHERE state = 'pending' AND next_at <= ? AND channel IN (?, ?) "
            "ORDER BY created_at, key LIMIT ?",
            (now, *_two(channels), limit),
        )
        return [
            Letter(
                str(r[0]),
                str(r[1]),
                cast(Channel, r[2]),
                str(r[3]),
                str(r[4]),
                str(r[5]),
                tuple((str(a), str(b)) for a, b in json.loads(r[6] or "[]")),
                float(r[7]),
                int(r[8]),
            )
            for r in rows
        ]

    @storage_errors
    def window(self, channel: Channel, recipient: str, since: float) -> tuple[int, float | None]:
        """How many messages this recipient got since `since` (a digest counts one), and when
        its last digest went out."""
        row = self._db.execute(
            "SELECT COUNT(DISTINCT CASE WHEN digest = '' THEN key ELSE digest END) FROM outbox "
            "WHERE channel = ? AND recipient = ? AND state = 'sent' AND sent_at > ?",
            (channel, recipient, since),
        ).fetchone()
        last = self._db.execute(
            "SELECT MAX(sent_at) FROM outbox WHERE channel = ? AND recipient = ? AND digest != ''",
            (channel, recipient),
        ).fetchone()
        return int(row[0]), None if last[0] is None else float(last[0])

    @storage_errors
    def mark_sent(self, keys: Sequence[str], at: float, digest: str = "") -> None:
        with self._transaction() as db:
            db.executemany(
                "UPDATE outbox SET state = 'sent', sent_at = ?, digest = ?, last_error = '' "
                "WHERE key = ? AND state = 'pending'",
                [(at, digest, key) for key in keys],
            )

    @storage_errors
    def mark_failed(
        self, keys: Sequence[str], error: str, next_at: float, *, refused: bool = False
    ) -> None:
        """One more failed try: again at `next_at`, or never (`refused`: the server said the
        message can never be delivered, e.g. an unknown address)."""
        state: LetterState = "refused" if refused else "pending"
        with self._transaction() as db:
            db.executemany(
                "UPDATE outbox SET attempts = attempts + 1, next_at = ?, state = ?, "
                "last_error = ? WHERE key = ? AND state = 'pending'",
                [(next_at, state, shown(error)[:500], key) for key in keys],
            )

    @storage_errors
    def waiting(self, channels: Sequence[Channel]) -> tuple[int, float | None]:
        """How many letters of these channels wait, and when the first is due."""
        row = self._db.execute(
            "SELECT COUNT(*), MIN(next_at) FROM outbox WHERE state = 'pending' "
            "AND channel IN (?, ?)",
            _two(channels),
        ).fetchone()
        return int(row[0]), None if row[1] is None else float(row[1])

    @storage_errors
    def prune(self, before: float) -> int:
        """Forget the letters sent (or refused) before `before`; returns how many."""
        with self._transaction() as db:
            cursor = db.execute(
                "DELETE FROM outbox WHERE state != 'pending' AND COALESCE(sent_at, next_at) < ?",
                (before,),
            )
        return cursor.rowcount


def _two(channels: Sequence[Channel]) -> tuple[str, str]:
    """The channels for `IN (?, ?)`: there are two at most ("" matches none)."""
    first = channels[0] if channels else ""
    return first, channels[1] if len(channels) > 1 else first
