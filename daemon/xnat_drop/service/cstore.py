"""The C-STORE transport: each accepted object to XNAT's DICOM receiver, routed by the line
in PatientComments, then found in the project's prearchive, where delivery builds it at once
(issue 19; xnat-api-round2.md §5).

    address private? ─► /xapi/dicomscp lists the receiver ─► C-STORE each object
        (ledger: how many XNAT took) ─► the prearchive row (project, StudyInstanceUID, label)
        ─► delivery builds it now, verifies and commits, as for every transport

- XNAT takes no parameters over DICOM: `Project: P Subject: S Session: E AA: false` in
  PatientComments routes each object; `AA: false` keeps the session in the prearchive even on
  an auto-archive project, so nothing is archived before it is verified. The line is set on
  the copy in memory; the user's files are never written.
- Sending an object again is idempotent (XNAT files it by its SOP Instance UID), so a send
  that broke off resumes after the objects the ledger says XNAT took, into the same row; a
  changed file list, or no row left, sends everything again (the partial row deleted first).
- XNAT builds a session idle for `sessionXmlRebuilderInterval` minutes: objects go back to
  back, and a half session XNAT built during a long stall is only built, never archived
  (AA: false); the rest joins it and it is built again.
- pynetdicom is the optional `cstore` extra: this module is imported only when
  xnat.transport = "cstore" (service/attempt.py, upkeep.py, loop.py).
"""

from __future__ import annotations

import hashlib
import logging
import time
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path

from xnat_drop.adapters.dicom import cstore as scu
from xnat_drop.adapters.ledger import Ledger, Shipment
from xnat_drop.adapters.xnat.receivercalls import DEFAULT_IDENTIFIER, ReceiverRow
from xnat_drop.core.cstore import CStoreConfig, routing_failed, routing_line, unrouted
from xnat_drop.core.cstore import unsupported as unsupported_violation
from xnat_drop.core.errors import ReceiverRefusedError, XnatRejectedError
from xnat_drop.core.model import FileFacts, Target
from xnat_drop.service import failpoints
from xnat_drop.service.delivery import XnatPort
from xnat_drop.service.transport import Parcel
from xnat_drop.service.transportcheck import PAUSED, address

log = logging.getLogger("xnat_drop.service")

RECORD_EVERY = 2.0  # seconds between the ledger's records of how many objects XNAT took
FIRST_POLL, MAX_POLL = 0.5, 10.0  # seconds between looks for the session in the prearchive


def receiver(config: CStoreConfig) -> scu.Receiver:
    """The receiver as the adapter reaches it, at the checked address."""
    return scu.Receiver(
        address(config), config.port, config.called_ae, config.calling_ae, config.timeout
    )


def echo(config: CStoreConfig) -> None:
    """The DICOM side's availability probe (C-ECHO). Raises ReceiverRefusedError or
    XnatTransientError."""
    scu.echo(receiver(config))


def receiver_problem(config: CStoreConfig, rows: list[ReceiverRow] | None) -> str | None:
    """Why XNAT's list of receivers (`GET /xapi/dicomscp`) says this one cannot be used as
    configured, or None (also when XNAT will not list them)."""
    if rows is None:
        return None
    named = [r for r in rows if r.ae_title == config.called_ae]
    if not named:
        listed = ", ".join(sorted(f"{r.ae_title}:{r.port}" for r in rows)) or "none"
        return (
            f"XNAT lists no DICOM receiver with the AE title {config.called_ae} (it lists "
            f"{listed}): set cstore.called_ae and cstore.port to one of them. {PAUSED}"
        )
    if not any(r.enabled for r in named):
        return (
            f"XNAT's DICOM receiver {config.called_ae} is disabled: ask the XNAT administrator "
            f"to enable it (Administer > Site Administration > DICOM SCP Receivers). {PAUSED}"
        )
    if all(r.direct_archive for r in named if r.enabled):
        return (
            f"XNAT's DICOM receiver {config.called_ae} archives directly, past the prearchive, "
            "so xnat-drop could not verify a session before it is archived: ask the XNAT "
            "administrator for a receiver without direct archiving, and set cstore.called_ae "
            f"to it. {PAUSED}"
        )
    return None


def routing_warnings(config: CStoreConfig, rows: list[ReceiverRow] | None) -> list[str]:
    """What in the receiver may route objects past PatientComments (check-config and the log
    say it; a session it sends elsewhere ends as routing-failed)."""
    warnings = []
    named = [r for r in rows or () if r.ae_title == config.called_ae and r.enabled]
    if named and all(r.port != config.port for r in named):
        warnings.append(
            f"XNAT lists its DICOM receiver {config.called_ae} on port "
            f"{', '.join(str(r.port) for r in named)}, not on cstore.port {config.port}: "
            "right only through a tunnel or a port forward"
        )
    for row in named:
        if row.routing_expressions:
            warnings.append(
                f"XNAT's DICOM receiver {row.ae_title} has routing expressions of its own, "
                "which XNAT applies before PatientComments: sessions may land elsewhere"
            )
        if row.identifier != DEFAULT_IDENTIFIER or row.custom_processing:
            warnings.append(
                f"XNAT's DICOM receiver {row.ae_title} uses its own object identifier or custom "
                "processing: it may ignore the routing line in PatientComments"
            )
    return warnings


def order_key(files: Sequence[FileFacts]) -> str:
    """What the objects of one send are, in order: a resumed send may skip the first objects
    only when this is unchanged."""
    digest = hashlib.blake2b(digest_size=16)
    for facts in files:
        digest.update(f"{facts.path}\0{facts.size}\0{facts.stamp}\n".encode())
    return digest.hexdigest()


class CStoreTransport:
    """Sends one claim's objects to XNAT's DICOM receiver. `beat` is a sign of life;
    `progress(objects, bytes)` is told how far the send is."""

    name = "cstore"

    def __init__(
        self,
        client: XnatPort,
        ledger: Ledger,
        config: CStoreConfig,
        claimed: Path,
        *,
        wall: Callable[[], float],
        monotonic: Callable[[], float],
        beat: Callable[[], None],
        progress: Callable[[int, int], None] = lambda objects, size: None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.ledger = ledger
        self.config = config
        self.claimed = claimed
        self.wall = wall
        self.monotonic = monotonic
        self.beat = beat
        self.progress = progress
        self.sleep = sleep
        self.note = ""

    def _note(self, target: Target) -> str:
        if self.config.routing == "as-is":
            return (
                f"Sent by C-STORE to XNAT's DICOM receiver {self.config.called_ae}, each object "
                'unchanged (cstore.routing = "as-is"): their own headers route them to this '
                "project, subject and session"
            )
        return (
            f"Sent by C-STORE to XNAT's DICOM receiver {self.config.called_ae}. On each object "
            f'sent, PatientComments (0010,4000) was set to "{routing_line(target)}", which '
            "tells XNAT the project, subject and session and keeps the session in the "
            "prearchive until it was verified; XNAT stores that value. The files in this "
            "folder were not changed"
        )

    def send(self, parcel: Parcel) -> tuple[str, ...]:
        target, files = parcel.target, parcel.verdict.upload
        self.note = self._note(target)
        rows = self.client.dicom_receivers()
        problem = receiver_problem(self.config, rows)
        if problem is not None:
            log.error("%s", problem)
            raise ReceiverRefusedError(problem)
        for warning in routing_warnings(self.config, rows):
            log.warning("%s", warning)
        comment = self._comment(target, files)
        where = receiver(self.config)
        order = order_key(files)
        skip = self._taken_before(parcel, order)
        needed = scu.contexts(self.claimed, files, self.beat)  # a sign of life per file
        idle = self.client.idle_build_minutes() * 60
        if not skip:
            parcel.begin()
        self._record(parcel.claim_id, order, skip)
        log.info(
            "%s: sending %d objects by C-STORE to %s at %s:%d for %s/%s/%s%s",
            parcel.claim_id,
            len(files),
            self.config.called_ae,
            self.config.host,
            self.config.port,
            target.project,
            target.subject,
            target.session,
            f", resuming after the {skip} XNAT took before" if skip else "",
        )
        sent = self._store(parcel.claim_id, where, files, needed, comment, order, skip, idle)
        self._record(parcel.claim_id, order, sent.stored)
        if sent.warnings:
            log.info("%s: XNAT took %d objects with a warning", parcel.claim_id, sent.warnings)
        # Delivery's verification builds it at once (XNAT's idle builder would wait).
        return (self._session(target, parcel.study_uid, len(files)),)

    def release(self, claim_id: str) -> None:
        pass  # nothing kept outside the drop tree

    # -- sending -----------------------------------------------------------------------------

    def _comment(self, target: Target, files: Sequence[FileFacts]) -> str | None:
        """What PatientComments says on the objects sent; None: as they are, once their own
        headers are checked to route them to `target` (cstore.routing = "as-is")."""
        if self.config.routing == "comments":
            return routing_line(target)
        auto_archive = self.client.archives_automatically(target.project) is not False
        problem = unrouted(files, target, auto_archive)
        if problem is not None:
            raise XnatRejectedError(problem.rule, problem.sentence, violation=problem)
        return None

    def _taken_before(self, parcel: Parcel, order: str) -> int:
        """How many objects, in this order, XNAT took before a send of this claim broke off;
        0 when there is nothing to resume (the send starts again, its partial row deleted)."""
        known = self.ledger.shipment(parcel.claim_id)
        if not parcel.resending or known is None or known.transport != self.name:
            return 0
        taken = int(known.status) if known.status.isdigit() else 0
        if known.staging != order or not 0 < taken < len(parcel.verdict.upload):
            return 0
        target = parcel.target
        rows = self.client.find_prearchive(target.project, parcel.study_uid)
        return taken if any(r.name == target.session for r in rows) else 0

    def _store(
        self,
        claim_id: str,
        where: scu.Receiver,
        files: Sequence[FileFacts],
        needed: dict[scu.Context, int],
        comment: str | None,
        order: str,
        skip: int,
        idle: float,
    ) -> scu.Sent:
        sizes = array("q", (f.size for f in files))  # 8 bytes a file, for the progress line
        half = len(files) // 2
        recorded = last = self.monotonic()
        done = sum(sizes[:skip])
        longest = 0.0

        def taken(count: int) -> None:
            nonlocal recorded, last, done, longest
            now = self.monotonic()
            longest, last = max(longest, now - last), now
            done += sizes[count - 1]
            self.progress(count, done)
            self.beat()
            if now - recorded >= RECORD_EVERY or count == half:
                self._record(claim_id, order, count)
                recorded = now
            if count == half:
                failpoints.hit("mid-cstore")

        try:
            sent = scu.store(where, self.claimed, files, needed, comment, taken, skip=skip)
        except scu.UnsupportedError as exc:
            sop_class, syntax = exc.context.words()
            violation = unsupported_violation(sop_class, syntax, exc.files)
            rule, sentence = violation.rule, violation.sentence
            raise XnatRejectedError(rule, sentence, violation=violation) from exc
        if longest >= idle:
            log.warning(
                "%s: %.0f s passed between two objects, longer than XNAT's idle interval "
                "(%.0f s): XNAT may have built part of the session meanwhile; the rest joined "
                "it (AA: false kept it in the prearchive) and it is built again",
                claim_id,
                longest,
                idle,
            )
        return sent

    def _record(self, claim_id: str, order: str, taken: int) -> None:
        """The ledger: which objects (`order`) and how many XNAT took so far."""
        shipment = Shipment(self.name, order, "", str(taken))
        self.ledger.record_shipment(claim_id, self.wall(), shipment)

    # -- after the last object ---------------------------------------------------------------

    def _session(self, target: Target, study_uid: str, objects: int) -> str:
        """The prearchive row the objects made in the project; routing-failed when none shows
        within session_wait (XNAT files each object before it answers, so this is quick)."""
        since, pause = self.monotonic(), FIRST_POLL
        while True:
            rows = [
                r
                for r in self.client.find_prearchive(target.project, study_uid)
                if r.name == target.session
            ]
            if rows:
                return rows[0].uri
            if self.monotonic() - since >= self.config.session_wait:
                violation = routing_failed(objects, target.project)
                log.error("%s", violation.sentence)
                raise XnatRejectedError(violation.rule, violation.sentence, violation=violation)
            self.beat()
            self.sleep(pause)
            pause = min(pause * 2, MAX_POLL)
