"""The ledger: what already happened to each claimed session, in SQLite (WAL) in the state dir.

Folders say where a session is; the ledger says how far its delivery got (checked, uploading,
uploaded, verified, committed) and what XNAT holds of it, so a restart or a retry resumes at the
right step, and a partial prearchive session is deleted only when this daemon created it.
Written by the service loop, and by the notifications' sender (its outbox only, outbox.py, on a
connection of its own); `xnat-drop status` opens it read-only.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from xnat_drop.adapters.ledger.outbox import OUTBOX_SCHEMA, Outbox, OutboxRows
from xnat_drop.adapters.ledger.resourcefiles import RESOURCE_SCHEMA, ResourceRows
from xnat_drop.adapters.ledger.resourcefiles import storage_errors as _storage
from xnat_drop.adapters.ledger.rows import (
    SCHEMA,
    Delivered,
    DeliveryState,
    Entry,
    Event,
    ShapeEntry,
    entry_of,
    transaction,
)
from xnat_drop.adapters.ledger.totals import COUNTED, TotalRows
from xnat_drop.adapters.ledger.transports import TRANSPORT_SCHEMA, Shipment, TransportRows
from xnat_drop.core.shown import shown

__all__ = [
    "DIGEST_BYTES",
    "FILE_NAME",
    "IMAGES_VERIFIED",
    "Delivered",
    "DeliveryState",
    "Entry",
    "Event",
    "Ledger",
    "Outbox",
    "ShapeEntry",
    "Shipment",
]

FILE_NAME = "ledger.sqlite3"
IMAGES_VERIFIED = "images-verified"  # the event: XNAT holds the images, verified
DIGEST_BYTES = 8  # of each SOP instance digest in `delivered`
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
        "bytes_sent",  # delivered: what the receipt counted (adapters/ledger/totals.py)
        "upload_seconds",
    }
)


class Ledger(ResourceRows, TotalRows, OutboxRows, TransportRows):
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
                self._db.executescript(SCHEMA + RESOURCE_SCHEMA + OUTBOX_SCHEMA + TRANSPORT_SCHEMA)
                self._prepare_totals()
            self._db.row_factory = sqlite3.Row
        except BaseException:
            self._db.close()  # a damaged or full file: no connection left behind
            raise

    def close(self) -> None:
        self._db.close()

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self._db)

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
        return None if row is None else entry_of(row)

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
        counted = not COUNTED.isdisjoint(fields)
        with self._transaction() as db:
            before = self._share(db, claim_id) if counted else {}
            db.execute(
                f"UPDATE sessions SET {assignments}, updated_at = ? WHERE claim_id = ?",  # noqa: S608 - names checked above
                (*fields.values(), at, claim_id),
            )
            if counted:  # the totals change with the row, in the same transaction
                self._recount(db, claim_id, before)

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
    def images_in_xnat(self, content_key: str) -> Entry | None:
        """The latest failed claim of the same content whose images XNAT holds, verified (its
        resources failed after them): a `retry` of it resumes at the resources."""
        row = self._db.execute(
            "SELECT * FROM sessions s WHERE content_key = ? AND outcome = 'failed' AND EXISTS "
            "(SELECT 1 FROM events e WHERE e.claim_id = s.claim_id AND e.kind = ?) "
            "ORDER BY updated_at DESC LIMIT 1",
            (content_key, IMAGES_VERIFIED),
        ).fetchone()
        return None if row is None else entry_of(row)

    @_storage
    def adopt(self, claim_id: str, earlier: Entry, at: float) -> None:
        """Make `claim_id` carry on where `earlier` stopped: its XNAT session and filter plan."""
        with self._transaction() as db:
            db.execute(
                "UPDATE sessions SET state = 'committed', study_uid = ?, project = ?, "
                "subject = ?, label = ?, owns_prearchive = 0, prearchive_uri = ?, "
                "archive_uri = ?, existing = ?, updated_at = ? WHERE claim_id = ?",
                (
                    earlier.study_uid,
                    earlier.project,
                    earlier.subject,
                    earlier.label,
                    earlier.prearchive_uri,
                    earlier.archive_uri,
                    json.dumps(list(earlier.existing)),
                    at,
                    claim_id,
                ),
            )
            db.execute(
                "INSERT OR REPLACE INTO filter_plans (claim_id, plan, at) "
                "SELECT ?, plan, ? FROM filter_plans WHERE claim_id = ?",
                (claim_id, at, earlier.claim_id),
            )
            db.execute(
                "INSERT INTO events (claim_id, at, kind, detail) VALUES (?, ?, ?, ?)",
                (claim_id, at, "adopted", earlier.claim_id),
            )

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
        return [entry_of(r) for r in rows]

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
        return None if row is None else entry_of(row)

    @_storage
    def record_delivered(
        self, claim_id: str, at: float, study_key: str, instances: Iterable[bytes]
    ) -> None:
        """Record the study and instance digests (DIGEST_BYTES each, distinct) of a delivered
        session."""
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
        return None if row is None else entry_of(row)

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
