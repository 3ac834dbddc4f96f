"""XNAT's DICOM receiver on loopback: ``DicomSCP`` + ``CStoreService``, with pynetdicom.

The one module that imports pynetdicom (the optional ``cstore`` extra); the Emulator imports it
(``scprunner``) only when asked for a DICOM port. Association (as dcm4che2 answers): a called AE
title no enabled receiver has → A-ASSOCIATE-RJ permanent, service user, "called AE title not
recognised"; a calling AE outside an enabled whitelist → the same with "calling AE title not
recognised"; presentation contexts for XNAT's SOP classes and transfer syntaxes only (others
rejected in the A-ASSOCIATE-AC); C-ECHO. Per C-STORE (``CStoreService.doCStore``): the object,
as received, goes through ``objectimporter.import_stored_file`` (series filters, routing,
grouping) with no project, subject or label parameters; 0x0000 also when a filter drops it; a
client error (``EntryError``, the Importer's 400) → 0xC000 with the message as Error Comment;
anything else → 0xA700. One prearchive timestamp per association.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.transport import ThreadedAssociationServer

from .filterconfig import SeriesFilters
from .importjob import EntryError, ImportJob, ImportRefusedError
from .objectimporter import import_stored_file
from .scpconfig import (
    STORAGE_SOP_CLASSES,
    TRANSFER_SYNTAXES,
    VERIFICATION,
    VERIFICATION_SYNTAXES,
    DicomReceiver,
)
from .scprouting import ReceiverRouter
from .scpstate import AssociationRecord, ScpState, StoreRecord
from .store import Store
from .versions import XnatVersion

log = logging.getLogger("xnat_standin")

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # CStoreService.REFUSED_OUT_OF_RESOURCES
CANNOT_UNDERSTAND = 0xC000  # CStoreService.ERROR_CANNOT_UNDERSTAND
PERMANENT, SERVICE_USER = 0x01, 0x01
CALLING_AE_NOT_RECOGNISED, CALLED_AE_NOT_RECOGNISED = 0x03, 0x07


@dataclass(frozen=True, slots=True)
class _Peer:
    """An accepted association: who called which receiver, and its prearchive timestamp."""

    receiver: DicomReceiver
    calling_ae: str
    peer: str
    timestamp: str


class DicomScp:
    """The receivers' network side: one pynetdicom server on ``host:port`` for every AE."""

    def __init__(
        self,
        *,
        store: Store,
        filters: SeriesFilters,
        version: XnatVersion,
        state: ScpState,
        receivers: Callable[[], list[DicomReceiver]],  # read at each association
        host: str,
    ) -> None:
        self.store = store
        self.filters = filters
        self.version = version
        self.state = state
        self._receivers = receivers
        self.host = host
        self._stopping = threading.Event()
        self._peers: dict[int, _Peer] = {}
        self._lock = threading.Lock()
        self._ae: AE | None = None
        self._server: ThreadedAssociationServer | None = None

    def start(self, port: int) -> int:
        """Listen (``port`` 0: a free one); returns the port."""
        ae = AE()
        ae.require_called_aet = False  # done in _on_requested, for several AE titles
        ae.maximum_associations = 64
        ae.network_timeout = 60
        ae.add_supported_context(VERIFICATION, list(VERIFICATION_SYNTAXES))
        for sop_class in STORAGE_SOP_CLASSES:
            ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
        handlers: list[EventHandlerType] = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_ECHO, _on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_CONN_CLOSE, self._on_closed),
        ]
        self._stopping.clear()
        server = ae.start_server((self.host, port), block=False, evt_handlers=handlers)
        self._ae, self._server = ae, server
        assert server is not None
        return int(server.server_address[1])

    def stop(self) -> None:
        """Abort every live association (a stalled store wakes up) and close the socket."""
        self._stopping.set()
        if self._ae is not None:
            _abort_live(self._ae)
        if self._server is not None:
            self._server.shutdown()
            self._ae = self._server = None
        with self._lock:
            self._peers.clear()

    # -- association --------------------------------------------------------------------

    def _on_requested(self, event: Event) -> None:
        assoc = event.assoc
        request: Any = assoc.requestor.primitive
        calling = str(request.calling_ae_title).strip()
        called = str(request.called_ae_title).strip()
        ip, port = assoc.requestor.address, assoc.requestor.port
        peer = f"{ip}:{port}"
        receiver = next((r for r in self._receivers() if r.enabled and r.ae_title == called), None)
        rejection: tuple[int, int, int] | None = None
        if receiver is None:
            rejection = (PERMANENT, SERVICE_USER, CALLED_AE_NOT_RECOGNISED)
        elif not receiver.admits(calling, ip):
            rejection = (PERMANENT, SERVICE_USER, CALLING_AE_NOT_RECOGNISED)
        else:
            fault = self.state.take_refusal(calling)
            if fault is not None:
                rejection = (fault.result, fault.source, fault.reason)
        self.state.note_association(
            AssociationRecord(calling, called, peer, rejection is None, rejection)
        )
        if rejection is not None:
            log.info(
                "DICOM association %s -> %s from %s: rejected %s", calling, called, peer, rejection
            )
            assoc.acse.send_reject(*rejection)
            assoc.kill()  # as pynetdicom's own rejections: the A-ASSOCIATE-RJ goes out first
            return
        assert receiver is not None
        with self._lock:
            self._peers[id(assoc)] = _Peer(
                receiver, calling, peer, self.store.prearchive.new_timestamp()
            )

    def _on_closed(self, event: Event) -> None:
        with self._lock:
            self._peers.pop(id(event.assoc), None)

    def _peer(self, assoc: Association) -> _Peer | None:
        with self._lock:
            return self._peers.get(id(assoc))

    # -- C-STORE ------------------------------------------------------------------------

    def _on_store(self, event: Event) -> Dataset:
        request: Any = event.request
        peer = self._peer(event.assoc)
        context: Any = event.context
        record = StoreRecord(
            calling_ae=peer.calling_ae if peer else "",
            called_ae=peer.receiver.ae_title if peer else "",
            sop_class_uid=str(request.AffectedSOPClassUID),
            sop_instance_uid=str(request.AffectedSOPInstanceUID),
            transfer_syntax=str(context.transfer_syntax),  # one UID (a str)
            status=OUT_OF_RESOURCES,
        )
        if peer is None:  # stopped under way
            return _answer(OUT_OF_RESOURCES, "The receiver is shutting down")
        fault = self.state.take_store_fault(peer.calling_ae)
        if fault is not None and fault.stall:
            self._stopping.wait(fault.stall)
        elif fault is not None and fault.abort:
            self.state.note_store(replace(record, aborted=True))
            event.assoc.abort()
            return _answer(OUT_OF_RESOURCES, None)
        elif fault is not None and fault.status is not None:
            answered = replace(record, status=fault.status, error_comment=fault.error_comment)
            self.state.note_store(answered)
            return _answer(fault.status, fault.error_comment)
        status, comment, stored = self._import(event, peer, record)
        self.state.note_store(replace(record, status=status, error_comment=comment, stored=stored))
        return _answer(status, comment)

    def _import(
        self, event: Event, peer: _Peer, record: StoreRecord
    ) -> tuple[int, str | None, bool]:
        receiver = peer.receiver
        params = {
            "rename": "true",  # no file name over DICOM: XNAT's namer names the file
            "prevent_anon": str(not receiver.anonymization_enabled).lower(),
            "Sender-ID": f"{peer.calling_ae}@/{peer.peer}",
            "Sender-AE-Title": peer.calling_ae,
            "Transfer-Syntax-UID": record.transfer_syntax,
            "Receiver-AE-Title": receiver.ae_title,
        }
        temp = self.store.temp_path()
        try:
            # Built per object, as XNAT reads the receiver's expressions per object: a line it
            # cannot parse fails every C-STORE (an IllegalArgumentException: 0xA700).
            router = ReceiverRouter(receiver) if receiver.routing_expressions_enabled else None
            job = ImportJob(
                self.store, self.version, params, "", filters=self.filters, router=router
            )
            temp.write_bytes(event.encoded_dataset(include_meta=True))
            row = import_stored_file(job, temp, peer.timestamp, name=record.sop_instance_uid)
        except EntryError as error:  # a ClientException
            return CANNOT_UNDERSTAND, error.message, False
        except ImportRefusedError as error:  # the site filter: the Importer's 400, or a 500
            status = CANNOT_UNDERSTAND if error.status == 400 else OUT_OF_RESOURCES
            return status, error.message, False
        except Exception as error:  # CStoreService: "anything else" is out of resources
            log.exception("C-STORE of %s failed", record.sop_instance_uid)
            return OUT_OF_RESOURCES, str(error) or type(error).__name__, False
        finally:
            temp.unlink(missing_ok=True)
        return SUCCESS, None, row is not None


def _on_echo(event: Event) -> int:
    return SUCCESS


def _answer(status: int, comment: str | None) -> Dataset:
    answer = Dataset()
    answer.Status = status
    if comment:
        answer.ErrorComment = comment[:64]  # LO
    return answer


def _abort_live(ae: AE) -> None:
    """Abort the established associations, as ``AE.shutdown`` would abort every one.

    pynetdicom queues primitives: an A-ABORT queued behind an A-ASSOCIATE-RJ or a release
    answer meets Sta13 (awaiting the peer's close), where it raises ``InvalidEventError`` in the
    reactor thread. So negotiations get a moment to settle, and only established associations are
    aborted; the others end when the peer closes.
    """
    deadline = time.monotonic() + 2.0
    while any(_negotiating(a) for a in ae.active_associations) and time.monotonic() < deadline:
        time.sleep(0.01)
    for assoc in ae.active_associations:
        if assoc.is_established and not (assoc.is_released or assoc.is_aborted):
            assoc.abort()


def _negotiating(assoc: Association) -> bool:
    return not (assoc.is_established or assoc.is_rejected or assoc.is_aborted or assoc.is_released)
