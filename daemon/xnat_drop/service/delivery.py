"""One accepted session into XNAT, exactly once, verified: the delivery steps and their order.

    checked ─► uploading ─► uploaded ─► verified ─► committed ─► (done)

Each step is recorded in the ledger before it runs, so a retry or a restart resumes at the right
place: a session whose upload broke off is re-sent only after deleting the partial prearchive
session *this daemon* created (never anything else); a session already committed is only
verified again. Follows xnat-api.md §3, §6 and §8.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from xnat_drop.adapters.dicom.spill import sorted_texts
from xnat_drop.adapters.ledger import IMAGES_VERIFIED, Ledger
from xnat_drop.adapters.xnat.client import (
    Account,
    ArchivedRef,
    FilterRow,
    InboxRequest,
    PrearchiveRef,
)
from xnat_drop.adapters.xnat.connection import Body
from xnat_drop.adapters.xnat.receivercalls import ReceiverRow
from xnat_drop.core.counting import Expected, count_problem, expected, verified, without_dropped
from xnat_drop.core.errors import XnatRejectedError
from xnat_drop.core.importfilter import NO_PLAN, FilterPlan
from xnat_drop.core.model import (
    FileFacts,
    Policy,
    Remedy,
    Target,
    UploadReceipt,
    Verdict,
    Violation,
)
from xnat_drop.core.rules import unknown_project
from xnat_drop.core.text import plural
from xnat_drop.core.xnatconfig import XnatConfig
from xnat_drop.service import failpoints
from xnat_drop.service.resourcestep import ResourcePort
from xnat_drop.service.transport import Parcel, Transport, ZipImport

ARCHIVED_AT_ONCE = "archived-by-xnat"  # ledger event: XNAT archived it without our commit
AT_ONCE_WORDS = (
    "XNAT archived the session as soon as it was imported: its project archives "
    "automatically, and XNAT's inbox import cannot keep it in the prearchive. "
)

log = logging.getLogger(__name__)


class XnatPort(ResourcePort, Protocol):
    """What delivery needs from XNAT (xnat.XnatClient), the resources step's calls included."""

    on_request: Callable[[], None] | None  # called before each request (a sign of life)

    def server_version(self) -> str: ...
    def check(self) -> Account: ...
    def login(self) -> None: ...
    def probe(self) -> None: ...
    def project_exists(self, project: str) -> bool: ...
    def series_filter(self, project: str | None) -> FilterRow | None: ...
    def site_filter_preferences(self) -> tuple[bool, str, str]: ...
    def find_archived(self, project: str, label: str, study_uid: str) -> list[ArchivedRef]: ...
    def find_prearchive(self, project: str, study_uid: str) -> list[PrearchiveRef]: ...
    def delete_prearchive(self, uri: str) -> None: ...
    def upload(self, make_body: Callable[[], Body], target: Target) -> tuple[str, ...]: ...
    def import_inbox(self, server_path: str, project: str, target: Target | None) -> str: ...
    def inbox_request(self, request_id: str) -> InboxRequest: ...
    def inbox_requests(self) -> list[InboxRequest]: ...
    def build(self, uri: str) -> None: ...
    def dicom_receivers(self) -> list[ReceiverRow] | None: ...
    def idle_build_minutes(self) -> float: ...
    def archives_automatically(self, project: str) -> bool | None: ...
    def commit(self, uri: str, *, overwrite: bool = False) -> str: ...
    def scan_counts(self, uri: str) -> dict[str, int]: ...
    def close(self) -> None: ...


def content_key(target: Target, upload: Sequence[FileFacts], spill: Path | None = None) -> str:
    """What makes two drops the same delivery: the labels and the SOP instances sent (sorted
    in runs in an unnamed file in `spill` when there are many)."""
    digest = hashlib.sha256(f"{target.project}/{target.subject}/{target.session}\n".encode())
    uids = (f.header.sop_instance_uid for f in upload if f.header is not None)
    for uid in sorted_texts(uids, spill):
        digest.update(uid.encode() + b"\n")
    return digest.hexdigest()


class Delivery:
    """Carries sessions through the steps above; one instance per XNAT client."""

    def __init__(
        self, client: XnatPort, config: XnatConfig, ledger: Ledger, wall: Callable[[], float]
    ) -> None:
        self.client = client
        self.config = config
        self.ledger = ledger
        self.wall = wall

    def deliver(
        self,
        claim_id: str,
        verdict: Verdict,
        make_body: Callable[[], Body],
        *,
        bytes_sent: Callable[[], int] = lambda: 0,
        started: float = 0.0,
        monotonic: Callable[[], float] = lambda: 0.0,
        server_version: str = "",
        filter_plan: FilterPlan = NO_PLAN,
        transport: Transport | None = None,
    ) -> UploadReceipt:
        """Take an accepted session as far as XNAT goes; returns the receipt once verified.

        The receipt says how many bytes `bytes_sent()` counted and how long it took since `started`
        (by `monotonic`), and which XNAT version held it. `filter_plan` is what XNAT's series
        filter made of the session: `verdict` is already without what it drops; the series it
        names as unpredictable may be missing in XNAT, and the receipt says so. `transport`
        sends the files (default: the zip of `make_body` over HTTP); it is released once the
        images are verified, or when XNAT refuses the session for good.

        Raises XnatRejectedError (failed/), XnatTransientError / XnatServerError (retry) or
        XnatAuthError (pause).
        """
        if transport is None:
            transport = ZipImport(self.client.upload, make_body, self.ledger, self.wall)
        try:
            return self._deliver(
                claim_id,
                verdict,
                transport,
                bytes_sent=bytes_sent,
                started=started,
                monotonic=monotonic,
                server_version=server_version,
                filter_plan=filter_plan,
            )
        except XnatRejectedError:
            transport.release(claim_id)  # failed/ for good: nothing of it is kept
            raise

    def _deliver(
        self,
        claim_id: str,
        verdict: Verdict,
        transport: Transport,
        *,
        bytes_sent: Callable[[], int],
        started: float,
        monotonic: Callable[[], float],
        server_version: str,
        filter_plan: FilterPlan,
    ) -> UploadReceipt:
        assert verdict.target is not None
        target = verdict.target
        sent = expected(verdict.upload)
        maybe_dropped = frozenset(filter_plan.unsure_series)
        entry = self.ledger.entry(claim_id)
        assert entry is not None, "a claim is in the ledger before it is judged"
        state = entry.state
        if state in ("claimed", "checked"):
            self._check(claim_id, target, sent)
            state = "checked"
        if state in ("checked", "uploading"):
            self._upload(claim_id, verdict, sent, transport, resending=state == "uploading")
            failpoints.hit("after-upload")
            state = "uploaded"
        entry = self.ledger.entry(claim_id)
        assert entry is not None
        merged = bool(entry.existing)
        if entry.state == "committed":
            state = "committed"  # XNAT archived it at once (see _upload)
        if state == "uploaded":
            self._verify_prearchive(
                claim_id, entry.prearchive_uri, sent, merged, entry.owns_prearchive, maybe_dropped
            )
            failpoints.hit("after-verify")
            state = "verified"
        if state == "verified":
            self._commit(claim_id, entry.prearchive_uri, target, sent.study_uid)
            failpoints.hit("after-commit")
            state = "committed"
        entry = self.ledger.entry(claim_id)
        assert entry is not None
        at_once = bool(entry.archive_uri) and not entry.prearchive_uri  # see _upload
        if self.config.destination == "archive" or at_once:
            held = self.client.scan_counts(entry.archive_uri)
            problem = count_problem(
                without_dropped(sent, held, maybe_dropped)[0], held, merged=merged
            )
            if problem:
                before = AT_ONCE_WORDS if at_once else ""
                raise XnatRejectedError(
                    "count-mismatch",
                    f"{before}After archiving, XNAT does not hold what was sent ({problem}). "
                    f"The session is at {self.config.url}{entry.archive_uri}: ask the XNAT "
                    "administrator to check it.",
                    remedy=Remedy.ADMIN,  # it is archived: sent again, it would be refused
                )
            uris = (entry.archive_uri,)
        else:
            held = self.client.scan_counts(entry.prearchive_uri)
            uris = (entry.prearchive_uri,)
        # A retry after the resources failed carries on from here (ledger.images_in_xnat).
        self.ledger.event(claim_id, self.wall(), IMAGES_VERIFIED, uris[0])
        transport.release(claim_id)
        kept, tolerated = without_dropped(sent, held, maybe_dropped)
        notes = list(filter_plan.notes)
        if transport.note:
            notes.append(transport.note)
        if at_once:
            notes.append(AT_ONCE_WORDS + "It was verified in the archive, after archiving")
        if tolerated:
            notes.append(
                f"XNAT dropped {'; '.join(tolerated)}: its series import filter may drop these, "
                "so their absence was accepted"
            )
        per_series, others = verified(kept, held)
        if others:
            notes.append(
                f"XNAT's session also holds {plural(others, 'scan')} that this upload did not "
                "send (the session existed before)"
            )
        return UploadReceipt(
            uris=uris,
            files=len(verdict.upload),
            bytes_sent=bytes_sent(),
            seconds=monotonic() - started,
            server_version=server_version,
            verified=per_series,
            destination="archive" if at_once else self.config.destination,
            notes=tuple(notes),
        )

    # -- the steps --------------------------------------------------------------------------

    def _check(self, claim_id: str, target: Target, sent: Expected) -> None:
        """The project must exist; an existing session is refused unless on_existing says so."""
        if not self.client.project_exists(target.project):
            missing = unknown_project(target.project)
            raise XnatRejectedError(missing.rule, missing.sentence, violation=missing)
        archived = self.client.find_archived(target.project, target.session, sent.study_uid)
        staged = self._without_own_leftovers(
            claim_id, self.client.find_prearchive(target.project, sent.study_uid)
        )
        refused = session_exists(archived, staged, self.config)
        if refused is not None:
            raise XnatRejectedError(refused.rule, refused.sentence, violation=refused)
        if staged and self.config.on_existing == "replace":
            for row in staged:  # the operator asked: the prearchive copy gives way to this one
                log.info("%s: replacing prearchive session %s", target.session, row.uri)
                self.ledger.event(claim_id, self.wall(), "replaced", row.uri)
                self.client.delete_prearchive(row.uri)
            staged = []
        self.ledger.update(
            claim_id,
            self.wall(),
            state="checked",
            study_uid=sent.study_uid,
            project=target.project,
            subject=target.subject,
            label=target.session,
            existing=[a.uri for a in archived] + [p.uri for p in staged],
            # No prearchive session for this study before our first upload: whatever appears
            # there for it from now on was created by us and may be deleted by us.
            owns_prearchive=not staged,
        )

    def _without_own_leftovers(
        self, claim_id: str, staged: list[PrearchiveRef]
    ) -> list[PrearchiveRef]:
        """`staged` without the prearchive sessions an earlier failed attempt of ours left
        (a count mismatch, a refused commit, attempts used up): deleted first, as after a
        crash, so that sending the fixed session again is not refused as `session-exists`."""
        kept = []
        for row in staged:
            earlier = self.ledger.own_leftover(row.uri)
            if earlier is None:
                kept.append(row)
                continue
            log.info(
                "%s: deleting %s, left in the prearchive by the earlier failed attempt %s",
                row.name,
                row.uri,
                earlier.claim_id,
            )
            self.ledger.event(claim_id, self.wall(), "deleted-leftover", row.uri)
            self.client.delete_prearchive(row.uri)
        return kept

    def _upload(
        self,
        claim_id: str,
        verdict: Verdict,
        sent: Expected,
        transport: Transport,
        *,
        resending: bool,
    ) -> None:
        entry = self.ledger.entry(claim_id)
        assert entry is not None and verdict.target is not None
        target = verdict.target

        def begin() -> None:
            if resending:
                self._remove_partial(claim_id, target, sent, entry.owns_prearchive)
            self.ledger.update(claim_id, self.wall(), state="uploading")

        parcel = Parcel(claim_id, verdict, target, sent.study_uid, resending, begin)
        uris = transport.send(parcel)
        archive = (f"/data/archive/projects/{target.project}/", f"/data/projects/{target.project}/")
        if len(uris) == 1 and uris[0].startswith(archive):
            # The inbox on a project that archives automatically: XNAT archived it at once
            # (nothing can keep it in the prearchive). It is verified in the archive, after.
            self.ledger.update(claim_id, self.wall(), state="committed", archive_uri=uris[0])
            self.ledger.event(claim_id, self.wall(), ARCHIVED_AT_ONCE, uris[0])
            return
        prearchive = [
            u for u in uris if u.startswith(f"/data/prearchive/projects/{target.project}/")
        ]
        if len(prearchive) != 1 or len(uris) != 1:
            raise XnatRejectedError(
                "xnat-unassigned",
                f"XNAT filed the upload as {', '.join(uris)} instead of one session in project "
                f"{target.project}. Ask the XNAT administrator to move or delete it.",
            )
        self.ledger.update(claim_id, self.wall(), state="uploaded", prearchive_uri=prearchive[0])

    def withdraw_partial(self, claim_id: str) -> None:
        """An upload of this claim broke off and the session will not be sent again (judged
        anew and rejected): delete the partial prearchive session our upload created, so
        nothing unjudged stays in XNAT. Raises the Xnat*Error types (the caller retries)."""
        entry = self.ledger.entry(claim_id)
        if entry is None or entry.state != "uploading" or not entry.owns_prearchive:
            return
        target = Target(entry.project, entry.subject, entry.label)
        self._remove_partial(claim_id, target, Expected(entry.study_uid, ()), owned=True)
        self.ledger.update(claim_id, self.wall(), state="claimed")

    def _remove_partial(self, claim_id: str, target: Target, sent: Expected, owned: bool) -> None:
        """Before sending again: delete what our broken-off upload left in the prearchive."""
        rows = [
            r
            for r in self.client.find_prearchive(target.project, sent.study_uid)
            if r.name == target.session
        ]
        for row in rows:
            if not owned:
                log.warning(
                    "%s: not deleting %s: it existed before our upload", target.session, row.uri
                )
                continue
            log.info(
                "%s: deleting the partial prearchive session %s left by an earlier attempt",
                target.session,
                row.uri,
            )
            self.ledger.event(claim_id, self.wall(), "deleted-partial", row.uri)
            self.client.delete_prearchive(row.uri)

    def _verify_prearchive(
        self,
        claim_id: str,
        uri: str,
        sent: Expected,
        merged: bool,
        owned: bool,
        maybe_dropped: frozenset[str],
    ) -> None:
        self.client.build(uri)
        held = self.client.scan_counts(uri)
        problem = count_problem(without_dropped(sent, held, maybe_dropped)[0], held, merged=merged)
        if problem:
            note = ""
            if owned:
                self.ledger.event(claim_id, self.wall(), "deleted-mismatch", uri)
                self.client.delete_prearchive(uri)
                note = " The incomplete prearchive session was deleted; nothing was archived."
            raise XnatRejectedError(
                "count-mismatch",
                f"XNAT does not hold what was sent ({problem}).{note} Drop the session again; if "
                "it fails the same way, tell the XNAT administrator.",
            )
        self.ledger.update(claim_id, self.wall(), state="verified")

    def _commit(self, claim_id: str, uri: str, target: Target, study_uid: str) -> None:
        if self.config.destination == "prearchive":
            self.ledger.update(claim_id, self.wall(), state="committed")  # built, READY for review
            return
        try:
            archive_uri = self.client.commit(uri, overwrite=self.config.on_existing == "replace")
        except XnatRejectedError as exc:
            # The commit may have gone through just before a crash or a lost answer: then the
            # prearchive session is gone and ours is in the archive.
            found = [
                a
                for a in self.client.find_archived(target.project, target.session, study_uid)
                if a.uid == study_uid
            ]
            if exc.status != 404 or len(found) != 1:
                raise
            archive_uri = found[0].uri
        self.ledger.update(claim_id, self.wall(), state="committed", archive_uri=archive_uri)


def session_exists(
    archived: list[ArchivedRef], staged: list[PrearchiveRef], config: XnatConfig
) -> Violation | None:
    """The refusal when XNAT already holds the session and on_existing is "reject"."""
    if not (archived or staged) or config.on_existing != "reject":
        return None
    where = "; ".join(_describe(a, p, config.url) for a, p in _pairs(archived, staged))
    sentence = (
        f"XNAT already holds this session ({where}). Uploading would merge into it, so "
        "nothing was sent. If the new files belong to it, ask the administrator to set "
        'xnat.on_existing = "append" (or "replace"); otherwise give the session '
        "another label and drop it again."
    )
    return Violation("session-exists", Policy.REJECT, "XNAT", sentence)


def _pairs(
    archived: list[ArchivedRef], staged: list[PrearchiveRef]
) -> list[tuple[ArchivedRef | None, PrearchiveRef | None]]:
    return [(a, None) for a in archived] + [(None, p) for p in staged]


def _describe(archived: ArchivedRef | None, staged: PrearchiveRef | None, base: str) -> str:
    if archived is not None:
        where = f"in the archive as {archived.label} of subject {archived.subject}"
        return f"{where}: {base}{archived.uri}"
    assert staged is not None
    return f"in the prearchive as {staged.name} ({staged.status}): {base}{staged.uri}"
