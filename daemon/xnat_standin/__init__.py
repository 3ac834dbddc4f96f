"""A local XNAT stand-in over real HTTP, faithful to xnat-api.md, with fault injection.

Used by the tests, the benchmarks and the demo (``python -m xnat_standin.demo``); run alone
with ``xnat-standin``::

    with Emulator(tmp_path / "xnat", users={"alice": "s3cret"}, projects=["P1"]) as emu:
        ...  # talk to emu.url; inspect emu.prearchive(), emu.archive(), emu.requests()
"""

from __future__ import annotations

from .app import Emulator
from .faults import Fault
from .inboxfaults import InboxFault
from .inboxstate import InboxRequest
from .records import ArchivedSession, PrearchiveSession, RequestRecord
from .scpconfig import DicomReceiver
from .scpstate import AssociationRecord, ScpFault, StoreRecord

__all__ = [
    "ArchivedSession",
    "AssociationRecord",
    "DicomReceiver",
    "Emulator",
    "Fault",
    "InboxFault",
    "InboxRequest",
    "PrearchiveSession",
    "RequestRecord",
    "ScpFault",
    "StoreRecord",
]
