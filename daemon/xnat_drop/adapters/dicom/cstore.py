"""XNAT's DICOM receiver over C-STORE (pynetdicom): the one module that imports pynetdicom.

XNAT takes no parameters over DICOM: it routes each object by its headers, first by the
`Project: P Subject: S Session: E AA: false` line in PatientComments (0010,4000)
(xnat-api-round2.md §5). So each file is read, one at a time, that line set on the copy in
memory (the user's file is never written), and sent.

- One association per batch of at most 128 presentation contexts (pynetdicom's limit): one
  context per (SOP class, transfer syntax) the files hold. Every batch is negotiated before
  the first object goes out, so a context XNAT rejects refuses the session before anything
  is sent (`UnsupportedError`).
- XNAT accepts no Deflated Explicit VR Little Endian: such a file is inflated (pydicom does,
  reading it) and sent as Explicit VR Little Endian.
- Statuses: 0x0000 and the warnings (0xB000, 0xB006, 0xB007) are success; 0xA7xx (out of
  resources) or a broken association is transient (sending an object again is idempotent:
  XNAT files it by its SOP Instance UID); 0xC000, 0xA9xx and anything else is XNAT refusing
  the object, with its Error Comment (scrubbed of UIDs and quoted values).
- An association rejected for the calling or called AE title is `ReceiverRefusedError`: an
  administrator must add xnat-drop to the receiver's whitelist; delivery pauses meanwhile.
"""

from __future__ import annotations

import io
import logging
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import UID
from pynetdicom import AE, evt
from pynetdicom.association import Association

from xnat_drop.adapters.dicom.openfile import read_fully
from xnat_drop.adapters.dicom.pydicomsettings import lenient_reading
from xnat_drop.adapters.fs.beneath import Beneath, Dir, stamp
from xnat_drop.core.errors import (
    ReceiverRefusedError,
    SessionChangedError,
    XnatDropError,
    XnatRejectedError,
    XnatTransientError,
)
from xnat_drop.core.model import FileFacts
from xnat_drop.core.noheader import scrubbed

VERIFICATION = "1.2.840.10008.1.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
MAX_CONTEXTS = 128  # per association (PS3.8 allows 128 odd context ids)
WARNINGS = frozenset({0xB000, 0xB006, 0xB007})
CALLING_AE_NOT_RECOGNISED, CALLED_AE_NOT_RECOGNISED = 0x03, 0x07
_PERMANENT, _SERVICE_USER = 0x01, 0x01
# pynetdicom logs two INFO lines per object (and its PDUs at DEBUG): the daemon's own log
# says what matters, once per session.
logging.getLogger("pynetdicom").setLevel(logging.WARNING)


@dataclass(frozen=True, slots=True)
class Receiver:
    """Where XNAT's DICOM receiver listens, and the AE titles of both ends."""

    host: str
    port: int
    called_ae: str = "XNAT"
    calling_ae: str = "XNAT_DROP"
    timeout: float = 60.0  # seconds for the association, each answer and the network


@dataclass(frozen=True, slots=True)
class Context:
    """A presentation context as requested: SOP class and the transfer syntax sent."""

    sop_class: str
    syntax: str

    def words(self) -> tuple[str, str]:
        """Class and syntax by their standard names (a private class is not named: its UID
        is a vendor's, not a standard constant)."""
        return uid_words(self.sop_class, "SOP class"), uid_words(self.syntax, "transfer syntax")


@dataclass(frozen=True, slots=True)
class Sent:
    """What a store run did: the objects XNAT took, those with a warning status."""

    stored: int
    warnings: int


class UnsupportedError(XnatDropError):
    """XNAT's receiver rejected a presentation context the session needs: nothing was sent.
    `files` counts the session's files in that context."""

    def __init__(self, context: Context, files: int) -> None:
        self.context = context
        self.files = files
        sop_class, syntax = context.words()
        super().__init__(f"{sop_class} in {syntax}")


def uid_words(uid: str, what: str) -> str:
    """A standard UID's name ("MR Image Storage"); "a private <what>" otherwise."""
    name = UID(uid).name
    if not name or name == uid:
        return f"a private {what} (not in the DICOM standard)"
    return name


def sent_syntax(syntax: str) -> str:
    """The transfer syntax a file is sent in: its own, but Deflated is inflated."""
    return EXPLICIT_LE if syntax == DEFLATED else syntax


def echo(receiver: Receiver) -> None:
    """C-ECHO: the receiver's availability probe. Raises ReceiverRefusedError or
    XnatTransientError."""
    assoc = _associate(receiver, [Context(VERIFICATION, EXPLICIT_LE)])
    try:
        answer = assoc.send_c_echo()
        status = int(answer.Status) if "Status" in answer else -1
        if status != 0:
            raise XnatTransientError(f"XNAT's DICOM receiver answered C-ECHO with {_hex(status)}")
    finally:
        _end(assoc)


def contexts(
    folder: Path, files: Iterable[FileFacts], read: Callable[[], None] = lambda: None
) -> dict[Context, int]:
    """The presentation contexts `files` (below `folder`) need, with their file counts. Reads
    each file's header up to its pixel data (`read()` told after each). Raises
    SessionChangedError."""
    found: dict[Context, int] = {}
    with Dir.open(folder) as root, Beneath(root) as below:
        for facts in files:
            context = _context_of(_read(below, facts, head_only=True))
            found[context] = found.get(context, 0) + 1
            read()
    return found


def batches(needed: Iterable[Context]) -> list[tuple[Context, ...]]:
    """The contexts in associations of at most MAX_CONTEXTS each (sorted: the same batches on
    every attempt)."""
    ordered = sorted(needed, key=lambda c: (c.sop_class, c.syntax))
    return [tuple(ordered[i : i + MAX_CONTEXTS]) for i in range(0, len(ordered), MAX_CONTEXTS)]


def store(
    receiver: Receiver,
    folder: Path,
    files: Iterable[FileFacts],
    needed: dict[Context, int],
    comment: str | None,
    sent: Callable[[int], None],
    skip: int = 0,
) -> Sent:
    """C-STORE `files` (below `folder`; iterated once per batch of contexts) to `receiver`,
    each with PatientComments set to `comment` (None: unchanged). `needed` is what
    `contexts` found; `sent(n)` is told after each object XNAT took, counted from the start.
    The first `skip` objects, in the same order, are those XNAT took before (a resumed send).

    Raises UnsupportedError before anything is sent, ReceiverRefusedError, XnatTransientError
    (retry), XnatRejectedError ("xnat-rejected": XNAT refused an object) or
    SessionChangedError.
    """
    groups = batches(needed)
    if len(groups) > 1:  # every association's contexts accepted, before the first store
        for group in groups:
            _end(_accepted(receiver, group, needed))
    stored = warned = 0
    for group in groups:
        assoc = _accepted(receiver, group, needed)
        try:
            with Dir.open(folder) as root, Beneath(root) as below:
                for facts in files:
                    if stored < skip and len(groups) == 1:
                        stored += 1  # taken before: one batch needs no look at its context
                        continue
                    dataset = _read(below, facts, head_only=stored < skip)
                    if _context_of(dataset) not in group:
                        continue
                    if stored < skip:
                        stored += 1
                        continue
                    _prepare(dataset, comment)
                    warned += _store(assoc, dataset, facts.path)
                    stored += 1
                    sent(stored)
                    del dataset  # one file in memory at a time
        finally:
            _end(assoc)
    return Sent(stored, warned)


# -- the association ------------------------------------------------------------------------


def _associate(receiver: Receiver, wanted: Iterable[Context]) -> Association:
    ae = AE(ae_title=receiver.calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = receiver.timeout
    ae.connection_timeout = receiver.timeout
    for context in wanted:
        ae.add_requested_context(context.sop_class, [context.syntax])
    try:
        assoc = ae.associate(
            receiver.host,
            receiver.port,
            ae_title=receiver.called_ae,
            evt_handlers=[(evt.EVT_CONN_OPEN, _no_delay)],
        )
    except (OSError, RuntimeError, ValueError) as exc:
        raise XnatTransientError(
            f"cannot reach XNAT's DICOM receiver: {scrubbed(str(exc))}"
        ) from exc
    if assoc.is_established:
        return assoc
    where = f"{receiver.host}:{receiver.port}"
    if assoc.is_rejected:
        primitive: Any = assoc.acceptor.primitive
        result, source, reason = primitive.result, primitive.result_source, primitive.diagnostic
        ae_titles = (CALLING_AE_NOT_RECOGNISED, CALLED_AE_NOT_RECOGNISED)
        if (result, source) == (_PERMANENT, _SERVICE_USER) and reason in ae_titles:
            raise ReceiverRefusedError(_refusal(receiver, reason == CALLING_AE_NOT_RECOGNISED))
        raise XnatTransientError(
            f"XNAT's DICOM receiver at {where} rejected the association "
            f"(result {result}, source {source}, reason {reason})"
        )
    raise XnatTransientError(f"XNAT's DICOM receiver at {where} did not accept an association")


def _no_delay(event: Any) -> None:
    """TCP_NODELAY on the association's socket: each C-STORE goes out as a command and data
    PDUs, and with Nagle's algorithm the last small write waits for the receiver's delayed
    ACK, about 40 ms an object, whatever the link (dcm4che, XNAT's side, sets it too)."""
    raw = event.assoc.dul.socket.socket
    if raw is not None:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _refusal(receiver: Receiver, calling: bool) -> str:
    if calling:
        return (
            f"XNAT's DICOM receiver {receiver.called_ae} at {receiver.host}:{receiver.port} "
            f"refuses xnat-drop's calling AE title {receiver.calling_ae} (not on its "
            "whitelist): ask the XNAT administrator to add it (or this server's address), or "
            "set cstore.calling_ae to a title it accepts. Delivery is paused; the sessions "
            "wait in the work folder."
        )
    return (
        f"XNAT's DICOM receiver at {receiver.host}:{receiver.port} has no enabled AE title "
        f"{receiver.called_ae}: set cstore.called_ae (and cstore.port) to a receiver XNAT "
        "lists under Administer > Site Administration > DICOM SCP Receivers. Delivery is "
        "paused; the sessions wait in the work folder."
    )


def _accepted(receiver: Receiver, group: tuple[Context, ...], needed: dict[Context, int]) -> Any:
    """An association with every context of `group` accepted; else UnsupportedError."""
    assoc = _associate(receiver, group)
    taken = {(str(c.abstract_syntax), str(c.transfer_syntax[0])) for c in assoc.accepted_contexts}
    for context in group:
        if (context.sop_class, context.syntax) not in taken:
            _end(assoc)
            raise UnsupportedError(context, needed.get(context, 0))
    return assoc


def _end(assoc: Association) -> None:
    if assoc.is_established:
        assoc.release()


# -- one object -----------------------------------------------------------------------------


def _read(below: Beneath, facts: FileFacts, *, head_only: bool) -> Any:
    """The file as pydicom reads it (whole, or `head_only` up to its pixel data), opened
    through no link and checked to be the file inspection judged, before and after the read
    (as the zip stream checks it)."""
    try:
        fd = below.open(facts.path)
    except OSError as exc:
        raise SessionChangedError(f"{facts.path}: cannot be opened ({exc.strerror})") from exc
    try:
        st = os.fstat(fd)
        if facts.stamp and stamp(st) != facts.stamp:
            raise SessionChangedError(f"{facts.path}: changed after it was inspected")
        data = read_fully(fd, st.st_size, 0)
        if facts.stamp and stamp(os.fstat(fd)) != facts.stamp:  # written while it was read
            raise SessionChangedError(f"{facts.path}: changed after it was inspected")
    finally:
        os.close(fd)
    if len(data) != facts.size:
        raise SessionChangedError(f"{facts.path}: its size changed after it was inspected")
    with lenient_reading:
        return pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=head_only)


def _context_of(dataset: Any) -> Context:
    meta = getattr(dataset, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if not syntax:
        implicit, little = dataset.original_encoding
        syntax = IMPLICIT_LE if implicit else (EXPLICIT_LE if little else EXPLICIT_BE)
    return Context(str(dataset.SOPClassUID), sent_syntax(syntax))


def _prepare(dataset: Any, comment: str | None) -> None:
    """The copy in memory as XNAT is to get it: routed by `comment`, inflated."""
    if comment is not None:
        dataset.PatientComments = comment
    syntax = _context_of(dataset).syntax
    dataset.file_meta.TransferSyntaxUID = syntax  # a Deflated file goes out inflated
    dataset.set_original_encoding(syntax == IMPLICIT_LE, syntax != EXPLICIT_BE)


def _store(assoc: Association, dataset: Any, name: str) -> int:
    """C-STORE one object; returns 1 for a warning status, 0 for success."""
    try:
        answer = assoc.send_c_store(dataset)
    except (OSError, RuntimeError) as exc:
        raise XnatTransientError(
            f"the association with XNAT's DICOM receiver broke off: {scrubbed(str(exc))}"
        ) from exc
    status = int(answer.Status) if "Status" in answer else -1
    if status == 0:
        return 0
    if status in WARNINGS:
        return 1
    if status == -1 or status >> 8 == 0xA7:  # no answer (aborted), or out of resources
        what = "no answer" if status == -1 else f"status {_hex(status)} (out of resources)"
        raise XnatTransientError(f"XNAT's DICOM receiver gave {what} for {name}")
    comment = scrubbed(str(answer.get("ErrorComment", ""))) or "no reason given"
    raise XnatRejectedError(
        "xnat-rejected",
        f'XNAT\'s DICOM receiver refused {name} with status {_hex(status)}: "{comment}".',
    )


def _hex(status: int) -> str:
    return f"0x{status:04X}"
