"""The ledger's record of how each claim's files went to XNAT (a table of the same SQLite file).

A transport that hands XNAT something to work on by itself records what it handed over before
and after it asks: the inbox transport its staging folder (as the server sees it) before the
POST, XNAT's request id right after it, and the request's last status. A restart then carries
on with that request and never asks XNAT twice for one staging folder (service/inbox.py).
The C-STORE transport records which objects it sends (a digest of the list, in `staging`) and
how many XNAT took (in `status`), to resume after them (service/cstore.py).
Older ledgers gain the table at open (CREATE TABLE IF NOT EXISTS).
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from dataclasses import dataclass

from xnat_drop.adapters.ledger.resourcefiles import storage_errors

TRANSPORT_SCHEMA = """
CREATE TABLE IF NOT EXISTS transports (
    claim_id TEXT PRIMARY KEY,
    transport TEXT NOT NULL,
    staging TEXT NOT NULL DEFAULT '',
    request TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT '',
    at REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Shipment:
    """How a claim's files went to XNAT: the transport ("import", "inbox", "cstore"); for the
    inbox the staging folder as XNAT sees it, XNAT's request id and its last status (""
    unknown); for C-STORE the digest of the objects in order and how many XNAT took."""

    transport: str
    staging: str = ""
    request: str = ""
    status: str = ""


class TransportRows:
    """The transports table, for the Ledger (which owns the connection)."""

    _db: sqlite3.Connection

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # the Ledger's

    @storage_errors
    def record_shipment(self, claim_id: str, at: float, shipment: Shipment) -> None:
        """Replace what is known of how this claim's files go to XNAT."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO transports "
                "(claim_id, transport, staging, request, status, at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    claim_id,
                    shipment.transport,
                    shipment.staging,
                    shipment.request,
                    shipment.status,
                    at,
                ),
            )

    @storage_errors
    def shipment(self, claim_id: str) -> Shipment | None:
        row = self._db.execute(
            "SELECT transport, staging, request, status FROM transports WHERE claim_id = ?",
            (claim_id,),
        ).fetchone()
        if row is None:
            return None
        return Shipment(str(row[0]), str(row[1]), str(row[2]), str(row[3]))
