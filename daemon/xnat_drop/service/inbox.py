"""The inbox transport: XNAT imports hard links of the accepted files in place, from a folder
of the inbox it mounts too (xnat-api-round2.md §4; issue 18).

    path proven? ─► stage (hidden name, renamed) ─► ledger: staging ─► POST ─► ledger: request
        ─► poll /xapi/dicom/{id} ─► Processed/Completed ─► the prearchive session, READY

- The mapping is proven once per project (again after each start and reload) by a plain
  file XNAT must refuse for its missing archive extension: only a path it found, below its
  inboxPath, in a project the account may edit gets that far. Anything else pauses inbox
  delivery (an outage with the reason in the status and the log); the sessions wait in
  .work/, never in failed/.
- The POST says `cleanupAfterImport=false` (XNAT would delete the folder) and
  `prevent_auto_commit=true`; the staging folder goes once the images are verified.
- Killed between the POST and the ledger's record of XNAT's answer: the next attempt finds the
  request by its staging path in `/xapi/dicom/list/all` and carries on with it. One staging
  folder is never posted twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from xnat_drop.adapters.fs import inboxstage
from xnat_drop.adapters.ledger import Ledger, Shipment
from xnat_drop.adapters.xnat.client import InboxRequest
from xnat_drop.core.errors import (
    InboxUnusableError,
    SessionChangedError,
    XnatRejectedError,
)
from xnat_drop.core.inbox import (
    CANARY_PROOF,
    InboxConfig,
    canary_sentence,
    failed_sentence,
    phase,
    staging_name,
    staging_sentence,
    stalled_sentence,
)
from xnat_drop.core.model import Policy, Remedy, Target, Violation
from xnat_drop.service import failpoints
from xnat_drop.service.delivery import XnatPort
from xnat_drop.service.transport import Parcel

log = logging.getLogger("xnat_drop.service")

FIRST_POLL = 1.0  # seconds before the first look at a request, doubled up to MAX_POLL
MAX_POLL = 30.0
READY = "READY"
WITHDRAWN = "withdrawn"  # the ledger's status of a request whose session xnat-drop deleted


class ProvenPaths:
    """The (inbox, project) pairs whose path mapping XNAT confirmed since the daemon started;
    kept by the loop across attempts. A changed [inbox] is a new pair: proven again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proven: set[tuple[str, str, str]] = set()

    def has(self, config: InboxConfig, project: str) -> bool:
        with self._lock:
            return (str(config.root), config.server_path, project) in self._proven

    def add(self, config: InboxConfig, project: str) -> None:
        with self._lock:
            self._proven.add((str(config.root), config.server_path, project))

    def forget(self) -> None:
        """After a reload: every project's path is proven again at its next session."""
        with self._lock:
            self._proven.clear()


class InboxTransport:
    """Sends one claim through the inbox. `beat` is a sign of life while XNAT works."""

    name = "inbox"
    note = ""

    def __init__(
        self,
        client: XnatPort,
        ledger: Ledger,
        config: InboxConfig,
        claimed: Path,
        proven: ProvenPaths,
        *,
        wall: Callable[[], float],
        monotonic: Callable[[], float],
        beat: Callable[[], None],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.ledger = ledger
        self.config = config
        self.claimed = claimed  # the claimed session folder, whose files are staged
        self.proven = proven
        self.wall = wall
        self.monotonic = monotonic
        self.beat = beat
        self.sleep = sleep

    def send(self, parcel: Parcel) -> tuple[str, ...]:
        target, claim_id = parcel.target, parcel.claim_id
        staging = self.config.server(target.project, staging_name(claim_id))
        known = self.ledger.shipment(claim_id)
        if known is None or known.transport != self.name:
            known = Shipment(self.name)
        withdrawn = known.request if known.status == WITHDRAWN else ""
        request = "" if withdrawn else known.request
        staged = ""  # the staged files' state when this call staged them
        if not request and parcel.resending:
            request = self._posted_before(staging, after=withdrawn)
            if request:
                log.info("%s: adopting XNAT's inbox import request %s", staging, request)
                self._record(claim_id, staging, request)
        if not request:
            self.prove(target.project)
            self._stage(parcel)
            staged = inboxstage.state(
                self.config.root, target.project, claim_id, parcel.verdict.upload
            )
            parcel.begin()
            self._record(claim_id, staging, "")
            request = self.client.import_inbox(staging, target.project, target)
            failpoints.hit("after-inbox-post")
            self._record(claim_id, staging, request)
            log.info("%s: XNAT queued inbox import request %s", staging, request)
        finished = self._wait(claim_id, staging, request)
        uri = self._session(target, parcel.study_uid, finished)
        if staged and staged != inboxstage.state(
            self.config.root, target.project, claim_id, parcel.verdict.upload
        ):
            self._withdraw(claim_id, staging, request, uri)
        return (uri,)

    def _withdraw(self, claim_id: str, staging: str, request: str, uri: str) -> None:
        """A staged file was written while XNAT imported it (a hard link is the dropped file
        itself: a writer that kept it open after the claim): what XNAT holds may be bytes
        nobody judged. Its session is deleted, the request set aside, and the session judged
        again (SessionChangedError); the next attempt stages and posts anew."""
        if not uri.startswith("/data/prearchive/"):
            raise XnatRejectedError(
                "xnat-rejected",
                "A file of the session was written while XNAT imported it through the inbox, "
                f"and XNAT archived it at once ({uri}): it may hold bytes xnat-drop never "
                "checked. Ask the XNAT administrator to delete that session, then move the "
                "folder back to try again.",
                remedy=Remedy.ADMIN,
            )
        log.warning("%s: a staged file changed while XNAT imported it; deleting %s", staging, uri)
        self.client.delete_prearchive(uri)
        self._record(claim_id, staging, request, WITHDRAWN)
        inboxstage.remove(self.config.root, uri.split("/")[4], claim_id)
        raise SessionChangedError("a file was written while XNAT imported it")

    def release(self, claim_id: str) -> None:
        known = self.ledger.shipment(claim_id)
        entry = self.ledger.entry(claim_id)
        if known is None or known.transport != self.name or entry is None or not entry.project:
            return
        inboxstage.remove(self.config.root, entry.project, claim_id)

    # -- the path check ----------------------------------------------------------------------

    def prove(self, project: str) -> None:
        """prove_path for this transport's client and inbox."""
        prove_path(self.client, self.config, self.proven, project)

    # -- staging -----------------------------------------------------------------------------

    def _stage(self, parcel: Parcel) -> None:
        target = parcel.target
        log.info(
            "%s: staging %d files in XNAT's inbox (%s links) for %s/%s/%s",
            parcel.claim_id,
            len(parcel.verdict.upload),
            "hard" if self.config.link == "hardlink" else "copied, no",
            target.project,
            target.subject,
            target.session,
        )
        try:
            inboxstage.stage(
                self.claimed,
                parcel.verdict.upload,
                self.config.root,
                parcel.target.project,
                parcel.claim_id,
                self.config.link,
                self.beat,
            )
        except SessionChangedError:
            raise
        except OSError as exc:
            config = self.config
            sentence = staging_sentence(config.root, config.link, exc.errno or 0, str(exc))
            log.error("%s", sentence)
            raise InboxUnusableError(sentence) from exc

    # -- XNAT's request ----------------------------------------------------------------------

    def _posted_before(self, staging: str, after: str = "") -> str:
        """XNAT's request for this staging folder, if an earlier attempt posted it (one newer
        than the request `after`, which was set aside)."""
        found = [
            r.id
            for r in self.client.inbox_requests()
            if r.session_path == staging and _newer(r.id, after)
        ]
        return found[-1] if found else ""

    def _record(self, claim_id: str, staging: str, request: str, status: str = "") -> None:
        shipment = Shipment(self.name, staging, request, status)
        self.ledger.record_shipment(claim_id, self.wall(), shipment)

    def _wait(self, claim_id: str, staging: str, request: str) -> InboxRequest:
        """Poll the request until XNAT imported or failed it. Raises XnatRejectedError (Failed)
        or InboxUnusableError once it waited stall_seconds (the queue pauses)."""
        since, pause, status = self.monotonic(), FIRST_POLL, ""
        while True:
            found = self.client.inbox_request(request)
            if found.status != status:
                status = found.status
                self._record(claim_id, staging, request, status)
            step = phase(found.status)
            if step == "imported":
                return found
            if step == "failed":
                sentence = failed_sentence(found.resolution)
                violation = Violation(
                    "xnat-rejected", Policy.REJECT, "XNAT", sentence, remedy=Remedy.ADMIN
                )
                raise XnatRejectedError("xnat-rejected", sentence, violation=violation)
            self._pace(since, stalled_sentence(request, found.status, self.monotonic() - since))
            self.sleep(pause)
            pause = min(pause * 2, MAX_POLL)

    def _pace(self, since: float, stalled: str) -> None:
        if self.monotonic() - since >= self.config.stall_seconds:
            log.warning("%s", stalled)
            raise InboxUnusableError(stalled)  # the inbox pause: XNAT itself answers
        self.beat()

    def _session(self, target: Target, study_uid: str, request: InboxRequest) -> str:
        """The prearchive session the import made, once XNAT built it (READY)."""
        since, pause = self.monotonic(), FIRST_POLL
        while True:
            rows = [
                r
                for r in self.client.find_prearchive(target.project, study_uid)
                if r.name == target.session
            ]
            ready = [r for r in rows if r.status == READY]
            if ready:
                return ready[0].uri
            if not rows and request.status == "Completed":
                # An auto-archive project: XNAT built and archived it at once; the resolution
                # is the archive's URI (delivery verifies it there and says so).
                archived = [
                    a
                    for a in self.client.find_archived(target.project, target.session, study_uid)
                    if a.label == target.session
                ]
                if archived:
                    return archived[0].uri
                raise XnatRejectedError(
                    "xnat-rejected",
                    "XNAT says it archived the session (its project archives automatically, "
                    "which the inbox import cannot prevent), but it is not in the project's "
                    "archive under its label. Ask the XNAT administrator to look for it.",
                    remedy=Remedy.ADMIN,
                )
            waited = self.monotonic() - since
            what = rows[0].status if rows else "not in the prearchive yet"
            self._pace(since, stalled_sentence(request.id, f"built ({what})", waited))
            self.sleep(pause)
            pause = min(pause * 2, MAX_POLL)


def prove_path(client: XnatPort, config: InboxConfig, proven: ProvenPaths, project: str) -> None:
    """Have XNAT refuse a plain file in the project's inbox folder for its extension, once
    per project. Raises InboxUnusableError (inbox delivery pauses) for any other answer."""
    if proven.has(config, project):
        return
    try:
        with inboxstage.canary(config.root, project) as name:
            server_path = config.server(project, name)
            try:
                request = client.import_inbox(server_path, project, None)
            except XnatRejectedError as exc:
                if exc.status == 400 and CANARY_PROOF in str(exc):
                    proven.add(config, project)
                    log.info("XNAT sees inbox.root as %s (project %s)", server_path, project)
                    return
                answer = str(exc)
            else:
                answer = f"an import request ({request}) for a file it should have refused"
    except OSError as exc:
        answer = f"(none: xnat-drop could not make the file: {exc.strerror})"
    sentence = canary_sentence(config, project, answer)
    log.error("%s", sentence)
    raise InboxUnusableError(sentence)


def _newer(request: str, than: str) -> bool:
    """True when XNAT's request id `request` came after `than` ("" : any does)."""
    if not than:
        return True
    if request.isdigit() and than.isdigit():
        return int(request) > int(than)
    return request != than
