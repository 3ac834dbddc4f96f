"""How a verdict's files reach XNAT: the one seam between delivery and the ways of sending.

Delivery (delivery.py) checks the project and the existing sessions, then asks a `Transport`
to put the files into XNAT's prearchive, then verifies, commits and sends the resources: the
same for every transport. The zip over HTTP (`ZipImport`) is the first transport, XNAT's inbox
(service/inbox.py) the second, XNAT's DICOM receiver (service/cstore.py) the third.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from xnat_drop.adapters.ledger import Ledger, Shipment
from xnat_drop.adapters.xnat.connection import Body
from xnat_drop.core.model import Target, Verdict


@dataclass(frozen=True, slots=True)
class Parcel:
    """What a transport is given: the claim, its verdict and target, the StudyInstanceUID the
    prearchive files it under, whether an earlier send of this claim may have reached XNAT
    (`resending`), and `begin`, which the transport calls once, right before it sends
    anything new: it removes what a broken-off earlier send left and records "uploading"."""

    claim_id: str
    verdict: Verdict
    target: Target
    study_uid: str
    resending: bool
    begin: Callable[[], None]


class Transport(Protocol):
    """Sends one verdict's files to XNAT."""

    name: str
    note: str  # what the receipt says of this way of sending ("": nothing to say)

    def send(self, parcel: Parcel) -> tuple[str, ...]:
        """Put the files into XNAT; returns the URIs of the sessions they landed in, as
        XNAT's import answers them. Raises the Xnat*Error types."""
        ...

    def release(self, claim_id: str) -> None:
        """The delivery is verified, or has failed for good: drop what the transport keeps
        for it outside the drop tree (the inbox's staging folder). Idempotent."""
        ...


class ZipImport:
    """The DICOM-zip import over HTTP: the files streamed as one zip body (zipbody.py)."""

    name = "import"
    note = ""

    def __init__(
        self,
        upload: Callable[[Callable[[], Body], Target], tuple[str, ...]],
        make_body: Callable[[], Body],
        ledger: Ledger,
        wall: Callable[[], float],
    ) -> None:
        self._upload = upload
        self._make_body = make_body
        self._ledger = ledger
        self._wall = wall

    def send(self, parcel: Parcel) -> tuple[str, ...]:
        # XNAT writes as it reads the zip: a broken-off upload left part of it, which goes
        # first (begin), and the whole zip is sent again.
        parcel.begin()
        self._ledger.record_shipment(parcel.claim_id, self._wall(), Shipment(self.name))
        return self._upload(self._make_body, parcel.target)

    def release(self, claim_id: str) -> None:
        pass  # nothing kept outside the drop tree
