"""The DICOM receiver's faults and what it saw: associations and C-STOREs, for tests to read.

Faults in the style of ``faults.py``: a refused association, a chosen status for the Nth
C-STORE, an A-ABORT at the Nth C-STORE, a stall before handling one. Store faults count the
C-STOREs the receiver gets from the moment the fault is added (``nth=1``: the next one).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any

from . import faults
from .scpconfig import DicomReceiver

MAX_RECORDS = 10_000


@dataclass(frozen=True, slots=True)
class ScpFault:
    """What to do to associations or C-STOREs from ``calling_ae`` (None: any). One effect:

    - ``refuse``: A-ASSOCIATE-RJ with ``result`` (1 permanent, 2 transient), ``source``
      (1 service user, 2 provider ACSE, 3 provider presentation) and ``reason`` (per source,
      as PS3.8 9.3.4; default 2/3/2: transient, local limit exceeded). ``times`` associations.
    - ``status``: answer the C-STORE with this status (and ``error_comment``), storing nothing.
    - ``abort``: send A-ABORT instead of answering the C-STORE (nothing stored): with
      ``nth=N+1`` the association is cut after N stores.
    - ``stall``: wait this many seconds before handling the C-STORE (then store and answer).

    The store effects start at the ``nth`` C-STORE counted from now and take ``times``
    C-STOREs (0: every one from then on).
    """

    refuse: bool = False
    result: int = 2
    source: int = 3
    reason: int = 2
    status: int | None = None
    error_comment: str | None = None
    abort: bool = False
    stall: float = 0.0
    nth: int = 1
    times: int = 1
    calling_ae: str | None = None

    def validate(self) -> None:
        effects = [self.refuse is True, self.status is not None, self.abort is True]
        effects.append(isinstance(self.stall, (int, float)) and self.stall > 0)
        reasons = {1: (1, 2, 3, 7), 2: (1, 2), 3: (1, 2)}
        checks = (
            (effects.count(True) == 1, "exactly one of refuse, status, abort and stall"),
            (isinstance(self.stall, (int, float)) and self.stall >= 0, "stall must be >= 0"),
            (self.result in (1, 2), "result must be 1 (permanent) or 2 (transient)"),
            (self.reason in reasons.get(self.source, ()), "no such source and reason"),
            (self.status is None or _is_status(self.status), "status must be a 16-bit number"),
            (self.error_comment is None or isinstance(self.error_comment, str), "bad comment"),
            (isinstance(self.nth, int) and self.nth >= 1, "nth must be >= 1"),
            (isinstance(self.times, int) and self.times >= 0, "times must be >= 0"),
            (self.calling_ae is None or isinstance(self.calling_ae, str), "bad calling_ae"),
        )
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def matches(self, calling_ae: str) -> bool:
        return self.calling_ae is None or self.calling_ae == calling_ae

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> ScpFault:
        """Build one from a JSON object; raises ValueError on unknown or mistyped keys."""
        return faults.from_json(cls, data, "DICOM fault")


def _is_status(value: object) -> bool:
    return isinstance(value, int) and 0 <= value <= 0xFFFF


@dataclass(frozen=True, slots=True)
class AssociationRecord:
    """One association request: accepted, or rejected with (result, source, reason)."""

    calling_ae: str
    called_ae: str
    peer: str  # "ip:port"
    accepted: bool
    rejection: tuple[int, int, int] | None = None


@dataclass(frozen=True, slots=True)
class StoreRecord:
    """One C-STORE and the answer it got (``aborted``: none, the association was cut)."""

    calling_ae: str
    called_ae: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    status: int
    error_comment: str | None = None
    aborted: bool = False
    stored: bool = False  # filed into the prearchive (not dropped by a filter, not failed)


class ScpState:
    """The receivers as configured, their faults and records, under the emulator's lock."""

    def __init__(self, lock: threading.RLock, receivers: list[DicomReceiver]) -> None:
        self._lock = lock
        self._receivers = list(receivers)
        self._faults: list[list[Any]] = []  # [fault, stores seen, uses left or None]
        self._associations: list[AssociationRecord] = []
        self._stores: list[StoreRecord] = []

    def receivers(self) -> list[DicomReceiver]:
        with self._lock:
            return list(self._receivers)

    def set_receiver(self, receiver: DicomReceiver) -> None:
        """Add a receiver, or replace the one with its AE title (XNAT: unique per port)."""
        with self._lock:
            kept = [r for r in self._receivers if r.ae_title != receiver.ae_title]
            self._receivers = [*kept, receiver]

    def remove_receiver(self, ae_title: str) -> None:
        with self._lock:
            self._receivers = [r for r in self._receivers if r.ae_title != ae_title]

    def add_fault(self, fault: ScpFault) -> None:
        fault.validate()
        with self._lock:
            self._faults.append([fault, 0, fault.times or None])

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def faults(self) -> list[ScpFault]:
        with self._lock:
            return [entry[0] for entry in self._faults]

    def take_refusal(self, calling_ae: str) -> ScpFault | None:
        """The first ``refuse`` fault for a new association from ``calling_ae``, counted."""
        with self._lock:
            for entry in self._faults:
                if entry[0].refuse and entry[0].matches(calling_ae):
                    self._use(entry)
                    return entry[0]  # type: ignore[no-any-return]
        return None

    def take_store_fault(self, calling_ae: str) -> ScpFault | None:
        """Count one C-STORE for every store fault it matches; the first now due, counted."""
        due: list[Any] | None = None
        with self._lock:
            for entry in list(self._faults):
                fault: ScpFault = entry[0]
                if fault.refuse or not fault.matches(calling_ae):
                    continue
                entry[1] += 1
                if due is None and entry[1] >= fault.nth:
                    due = entry
            if due is not None:
                self._use(due)
                return due[0]  # type: ignore[no-any-return]
        return None

    def _use(self, entry: list[Any]) -> None:
        if entry[2] is not None:
            entry[2] -= 1
            if entry[2] <= 0:
                self._faults.remove(entry)

    def note_association(self, record: AssociationRecord) -> None:
        with self._lock:
            self._associations.append(record)
            del self._associations[:-MAX_RECORDS]

    def note_store(self, record: StoreRecord) -> None:
        with self._lock:
            self._stores.append(record)
            del self._stores[:-MAX_RECORDS]

    def associations(self) -> list[AssociationRecord]:
        with self._lock:
            return list(self._associations)

    def stores(self) -> list[StoreRecord]:
        with self._lock:
            return list(self._stores)

    def as_json(self) -> dict[str, Any]:
        return {
            "receivers": [asdict(receiver) for receiver in self.receivers()],
            "faults": [fault.as_json() for fault in self.faults()],
            "associations": [asdict(record) for record in self.associations()],
            "stores": [asdict(record) for record in self.stores()],
        }
