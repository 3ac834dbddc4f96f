"""The ledger's tables and the rows it hands out (the package holds the connection and the
queries; resourcefiles.py the resource files' table)."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

# How far a claimed session got; the delivery records each before it runs.
DeliveryState = Literal[
    "claimed", "checked", "uploading", "uploaded", "verified", "committed", "done", "failed"
]
SCHEMA = """
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


def entry_of(row: sqlite3.Row) -> Entry:
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
        final_path=path_text(row["final_path"]),
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
    )


def path_text(value: bytes | str) -> str:
    """A stored final path as a str (bytes since names may be any bytes; text in old rows)."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction on `db` (autocommit mode), taken at once: the loop's connection
    and the sender thread's never wait half-way through."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
