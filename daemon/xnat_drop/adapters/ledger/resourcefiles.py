"""The ledger's record of session resource files (a table of the same SQLite file).

Each file is recorded before its request ("sending") and after XNAT wrote it ("sent", with
the MD5 of what was sent), keyed by the XNAT session it went to, not by the claim: a session
sent back with `retry` after its resources failed resumes them under a new claim, and a kill -9
anywhere resumes without writing a file twice. A "sending" file found at the next attempt had
its request cut: it is sent again with overwrite=true (XNAT may hold part of it).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

from xnat_drop.core.errors import StorageError

F = TypeVar("F", bound=Callable[..., Any])

RESOURCE_SCHEMA = """
CREATE TABLE IF NOT EXISTS resource_files (
    session_uri TEXT NOT NULL,
    label TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    size INTEGER NOT NULL,
    md5 TEXT NOT NULL DEFAULT '',
    at REAL NOT NULL,
    PRIMARY KEY (session_uri, label, name)
);
"""
FileState = Literal["sending", "sent"]


def storage_errors(method: F) -> F:
    """SQLite's errors (a full disk, a read-only or damaged file) as StorageError (for every
    method of the ledger, both parts)."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            raise StorageError(f"the ledger cannot be used: {exc}") from exc

    return cast(F, wrapper)


@dataclass(frozen=True, slots=True)
class SentFile:
    """What the ledger knows of one resource file of one XNAT session."""

    label: str
    name: str
    state: FileState
    size: int
    md5: str


class ResourceRows:
    """The resource_files table, for the Ledger (which owns the connection)."""

    _db: sqlite3.Connection

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # the Ledger's

    @storage_errors
    def resource_file(self, session_uri: str, label: str, name: str) -> SentFile | None:
        row = self._db.execute(
            "SELECT label, name, state, size, md5 FROM resource_files "
            "WHERE session_uri = ? AND label = ? AND name = ?",
            (session_uri, label, name),
        ).fetchone()
        return None if row is None else SentFile(row[0], row[1], row[2], row[3], row[4])

    @storage_errors
    def resource_files(self, session_uri: str) -> list[SentFile]:
        rows = self._db.execute(
            "SELECT label, name, state, size, md5 FROM resource_files WHERE session_uri = ? "
            "ORDER BY label, name",
            (session_uri,),
        ).fetchall()
        return [SentFile(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    @storage_errors
    def record_resource_file(
        self,
        session_uri: str,
        label: str,
        name: str,
        state: FileState,
        size: int,
        md5: str,
        at: float,
    ) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO resource_files "
                "(session_uri, label, name, state, size, md5, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (session_uri, label, name, state, size, md5, at),
            )
