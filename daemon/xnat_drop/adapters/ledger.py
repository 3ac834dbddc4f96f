"""The ledger: what already happened to each claimed session, in SQLite (WAL) in the state dir.

Folders say where a session is; the ledger says how far its delivery got (checked, uploading,
uploaded, verified, committed) and what XNAT holds of it, so a restart or a retry resumes at the
right step, and a partial prearchive session is deleted only when this daemon created it.
Written by the service loop only; `xnat-drop status` opens it read-only.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from xnat_drop.core.errors import StorageError
from xnat_drop.core.shown import shown

F = TypeVar("F", bound=Callable[..., Any])

FILE_NAME = "ledger.sqlite3"
DIGEST_BYTES = 8  # of each SOP instance digest in `delivered`
# How far a claimed session got; the delivery records each before it runs.
DeliveryState = Literal[
    "claimed", "checked", "uploading", "uploaded", "verified", "committed", "done", "failed"
]
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    claim_id TEXT PRIMARY KEY,
    relpath TEXT NOT NULL,
    fingerprint TEXT NOT NULL DEFAULT '',
    content_key TEXT NOT NULL DEFAULT '',
    forced INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    study_uid TEXT NOT NULL DEFAULT '',
    project TEXT NOT NULL DEFAULT '',
    subject TEXT NOT NULL DEFAULT '',
    label TEXT NOT NULL DEFAULT '',
    owns_prearchive INTEGER NOT NULL DEFAULT 0,
    prearchive_uri TEXT NOT NULL DEFAULT '',
    archive_uri TEXT NOT NULL DEFAULT '',
    existing TEXT NOT NULL DEFAULT '[]',
    outcome TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    final_path TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_outcome ON sessions (outcome, updated_at);
CREATE INDEX IF NOT EXISTS sessions_content ON sessions (content_key, outcome);
CREATE TABLE IF NOT EXISTS events (
    claim_id TEXT NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_claim ON events (claim_id, at);
CREATE TABLE IF NOT EXISTS shapes (
    claim_id TEXT PRIMARY KEY,
    parent TEXT NOT NULL,
    name TEXT NOT NULL,
    studies TEXT NOT NULL,
    series TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS shapes_parent ON shapes (parent, at);
CREATE TABLE IF NOT EXISTS delivered (
    claim_id TEXT PRIMARY KEY,
    study_key TEXT NOT NULL,
    at REAL NOT NULL,
    instances BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS delivered_study ON delivered (study_key, at);
CREATE TABLE IF NOT EXISTS filter_plans (
    claim_id TEXT PRIMARY KEY,
    plan TEXT NOT NULL,
    at REAL NOT NULL
);
"""
_FIELDS = frozenset(
    {
        "state",
        "fingerprint",
        "content_key",
        "forced",
        "study_uid",
        "project",
        "subject",
        "label",
        "owns_prearchive",
        "prearchive_uri",
        "archive_uri",
        "existing",
        "outcome",
        "reason",
        "final_path",
    }
)


@dataclass(frozen=True, slots=True)
class Entry:
    """One session's row. `existing` lists what XNAT already held before our first upload."""

    claim_id: str
    relpath: str
    fingerprint: str
    content_key: str
    forced: bool
    state: DeliveryState
    attempts: int
    study_uid: str
    project: str
    subject: str
    label: str
    owns_prearchive: bool
    prearchive_uri: str
    archive_uri: str
    existing: tuple[str, ...]
    outcome: str
    reason: str
    final_path: str
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class ShapeEntry:
    """What a judged session held, as keys (core/depth.py: hashes, never a UID), and where it
    went: `outcome` is "" while it is still claimed, `updated_at` when its row last changed."""

    claim_id: str
    name: str
    studies: frozenset[str]
    series: frozenset[str]
    outcome: str
    updated_at: float


@dataclass(frozen=True, slots=True)
class Delivered:
    """What a delivered session held: digests of its study and of its SOP instances, never the
    UIDs themselves (see service/latefiles.py), and when it was delivered."""

    claim_id: str
    at: float
    instances: frozenset[bytes]


@dataclass(frozen=True, slots=True)
class Event:
    at: float
    kind: str
    detail: str


def _storage(method: F) -> F:
    """SQLite's errors (a full disk, a read-only or damaged file) as StorageError."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            raise StorageError(f"the ledger cannot be used: {exc}") from exc

    return cast(F, wrapper)


class Ledger:
    """The state directory's SQLite ledger; every write is its own transaction.

    Text from outside (session paths, error messages) is stored escaped (shown.py): SQLite
    cannot bind a name that is not UTF-8. Final paths are stored as their bytes, exactly.
    Every SQLite error is raised as StorageError.
    """

    @_storage
    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        if readonly:
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            # The loop runs each step on a helper thread (steps.py) and never uses the ledger
            # while a step runs: one connection, one user at a time.
            self._db = sqlite3.connect(
                path, timeout=30, isolation_level=None, check_same_thread=False
            )
        try:
            if not readonly:
                # WAL: status readers never block the daemon; synchronous=FULL: a power cut
                # never loses a state change that was reported done.
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.executescript(_SCHEMA)
            self._db.row_factory = sqlite3.Row
        except BaseException:
            self._db.close()  # a damaged or full file: no connection left behind
            raise

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @_storage
    def claimed(self, claim_id: str, relpath: str, at: float) -> None:
        """Record a new claim (a no-op if it is already known, e.g. after a restart)."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO sessions (claim_id, relpath, state, created_at, updated_at) "
                "VALUES (?, ?, 'claimed', ?, ?)",
                (claim_id, shown(relpath), at, at),
            )

    @_storage
    def entry(self, claim_id: str) -> Entry | None:
        row = self._db.execute("SELECT * FROM sessions WHERE claim_id = ?", (claim_id,)).fetchone()
        return None if row is None else _entry(row)

    @_storage
    def update(self, claim_id: str, at: float, **fields: Any) -> None:
        """Set some of a session's fields (see _FIELDS); `existing` is a sequence of URIs."""
        unknown = set(fields) - _FIELDS
        if unknown:
            raise ValueError(f"unknown ledger fields: {sorted(unknown)}")
        if "existing" in fields:
            fields["existing"] = json.dumps(list(fields["existing"]))
        if "final_path" in fields:  # bytes: any name, exactly
            fields["final_path"] = os.fsencode(fields["final_path"])
        if "reason" in fields:
            fields["reason"] = shown(fields["reason"])
        for flag in ("owns_prearchive", "forced"):
            if flag in fields:
                fields[flag] = int(bool(fields[flag]))
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._transaction() as db:
            db.execute(
                f"UPDATE sessions SET {assignments}, updated_at = ? WHERE claim_id = ?",  # noqa: S608 - names checked above
                (*fields.values(), at, claim_id),
            )

    @_storage
    def spend_attempt(self, claim_id: str, at: float, reason: str) -> int:
        """Count one failed attempt (not an outage) with its reason; returns the new total."""
        with self._transaction() as db:
            db.execute(
                "UPDATE sessions SET attempts = attempts + 1, updated_at = ? WHERE claim_id = ?",
                (at, claim_id),
            )
            db.execute(
                "INSERT INTO events (claim_id, at, kind, detail) "
                "VALUES (?, ?, 'attempt-failed', ?)",
                (claim_id, at, shown(reason)),
            )
            row = db.execute(
                "SELECT attempts FROM sessions WHERE claim_id = ?", (claim_id,)
            ).fetchone()
        return int(row[0]) if row else 0

    @_storage
    def record_filter_plan(self, claim_id: str, at: float, plan: str) -> None:
        """What XNAT's series filter made of this claim (core/importfilter.py, as JSON): kept
        so that a resumed delivery sends exactly the same files."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO filter_plans (claim_id, plan, at) VALUES (?, ?, ?)",
                (claim_id, plan, at),
            )

    @_storage
    def filter_plan(self, claim_id: str) -> str | None:
        row = self._db.execute(
            "SELECT plan FROM filter_plans WHERE claim_id = ?", (claim_id,)
        ).fetchone()
        return None if row is None else str(row["plan"])

    @_storage
    def event(self, claim_id: str, at: float, kind: str, detail: str) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO events (claim_id, at, kind, detail) VALUES (?, ?, ?, ?)",
                (claim_id, at, kind, shown(detail)),
            )

    @_storage
    def events(self, claim_id: str) -> list[Event]:
        rows = self._db.execute(
            "SELECT at, kind, detail FROM events WHERE claim_id = ? ORDER BY at, rowid", (claim_id,)
        )
        return [Event(float(r["at"]), str(r["kind"]), str(r["detail"])) for r in rows]

    @_storage
    def recent(self, outcome: str, limit: int = 10) -> list[Entry]:
        """The last finished sessions with this outcome ("done" or "failed"), newest first;
        none while the daemon is still creating the file (a reader may open it just then)."""
        if not self._has_sessions():
            return []
        rows = self._db.execute(
            "SELECT * FROM sessions WHERE outcome = ? ORDER BY updated_at DESC LIMIT ?",
            (outcome, limit),
        )
        return [_entry(r) for r in rows]

    def _has_sessions(self) -> bool:
        found = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sessions'"
        ).fetchone()
        return found is not None

    @_storage
    def delivered(self, content_key: str) -> Entry | None:
        """The latest delivered session with the same content (the same DICOM instances)."""
        row = self._db.execute(
            "SELECT * FROM sessions WHERE content_key = ? AND outcome = 'done' "
            "ORDER BY updated_at DESC LIMIT 1",
            (content_key,),
        ).fetchone()
        return None if row is None else _entry(row)

    @_storage
    def record_delivered(
        self, claim_id: str, at: float, study_key: str, instances: frozenset[bytes]
    ) -> None:
        """Record the study and instance digests (DIGEST_BYTES each) of a delivered session."""
        blob = b"".join(sorted(instances))
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO delivered (claim_id, study_key, at, instances) "
                "VALUES (?, ?, ?, ?)",
                (claim_id, study_key, at, blob),
            )

    @_storage
    def delivered_since(self, study_key: str, since: float) -> list[Delivered]:
        """The sessions of this study delivered at `since` or later, newest first."""
        rows = self._db.execute(
            "SELECT claim_id, at, instances FROM delivered WHERE study_key = ? AND at >= ? "
            "ORDER BY at DESC",
            (study_key, since),
        )
        return [
            Delivered(
                str(r["claim_id"]),
                float(r["at"]),
                frozenset(
                    bytes(r["instances"][i : i + DIGEST_BYTES])
                    for i in range(0, len(r["instances"]), DIGEST_BYTES)
                ),
            )
            for r in rows
        ]

    @_storage
    def own_leftover(self, prearchive_uri: str) -> Entry | None:
        """The failed session of ours that left this prearchive session behind, if any: what
        our own upload created may be deleted before the same data is sent again."""
        row = self._db.execute(
            "SELECT * FROM sessions WHERE prearchive_uri = ? AND owns_prearchive = 1 "
            "AND outcome = 'failed' ORDER BY updated_at DESC LIMIT 1",
            (prearchive_uri,),
        ).fetchone()
        return None if row is None else _entry(row)

    @_storage
    def record_shape(
        self,
        claim_id: str,
        at: float,
        *,
        parent: str,
        name: str,
        studies: frozenset[str],
        series: frozenset[str],
    ) -> None:
        """Keep the study and series keys of a judged session dropped as `name` in `parent`
        (paths as shown), so the folders beside it see them after it is filed."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO shapes (claim_id, parent, name, studies, series, at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    claim_id,
                    shown(parent),
                    shown(name),
                    " ".join(sorted(studies)),
                    " ".join(sorted(series)),
                    at,
                ),
            )

    @_storage
    def shapes_beside(self, parent: str, since: float, limit: int) -> list[ShapeEntry]:
        """The sessions judged since `since` that were dropped in `parent`, newest first."""
        rows = self._db.execute(
            "SELECT shapes.claim_id, shapes.name, shapes.studies, shapes.series, "
            "COALESCE(sessions.outcome, '') AS outcome, "
            "COALESCE(sessions.updated_at, shapes.at) AS updated_at "
            "FROM shapes LEFT JOIN sessions ON sessions.claim_id = shapes.claim_id "
            "WHERE shapes.parent = ? AND shapes.at >= ? ORDER BY shapes.at DESC LIMIT ?",
            (shown(parent), since, limit),
        )
        return [
            ShapeEntry(
                str(r["claim_id"]),
                str(r["name"]),
                frozenset(str(r["studies"]).split()),
                frozenset(str(r["series"]).split()),
                str(r["outcome"]),
                float(r["updated_at"]),
            )
            for r in rows
        ]

    @_storage
    def probe(self) -> None:
        """A write that changes nothing: raises StorageError while the ledger cannot take one,
        or is damaged (quick_check)."""
        result = self._db.execute("PRAGMA quick_check").fetchone()
        if result is None or result[0] != "ok":
            raise sqlite3.DatabaseError(
                f"the ledger file is damaged ({result[0] if result else '?'})"
            )
        with self._transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS probe (at REAL)")
            db.execute("INSERT INTO probe VALUES (0)")
            db.execute("DELETE FROM probe")

    @_storage
    def count_since(self, outcome: str, since: float) -> int:
        row = self._db.execute(
            "SELECT COUNT(*) FROM sessions WHERE outcome = ? AND updated_at >= ?", (outcome, since)
        ).fetchone()
        return int(row[0])


def _entry(row: sqlite3.Row) -> Entry:
    return Entry(
        claim_id=row["claim_id"],
        relpath=row["relpath"],
        fingerprint=row["fingerprint"],
        content_key=row["content_key"],
        forced=bool(row["forced"]),
        state=row["state"],
        attempts=int(row["attempts"]),
        study_uid=row["study_uid"],
        project=row["project"],
        subject=row["subject"],
        label=row["label"],
        owns_prearchive=bool(row["owns_prearchive"]),
        prearchive_uri=row["prearchive_uri"],
        archive_uri=row["archive_uri"],
        existing=tuple(json.loads(row["existing"] or "[]")),
        outcome=row["outcome"],
        reason=row["reason"],
        final_path=_path_text(row["final_path"]),
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
    )


def _path_text(value: bytes | str) -> str:
    """A stored final path as a str (bytes since names may be any bytes; text in old rows)."""
    return os.fsdecode(value) if isinstance(value, bytes) else value
