"""One attempt at one claimed session, run on the step thread: judge it (if it was not yet),
then deliver it. Returns an AttemptResult and changes nothing the loop owns; what happens next
is core.policy's decision, applied by the loop.

An attempt does its own I/O (the session's files, XNAT, the ledger rows of this claim), and
keeps the watchdog fed through the Heartbeat and the status line through Progress.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

from xnat_drop.adapters import memory
from xnat_drop.adapters.fs import claims
from xnat_drop.adapters.ledger import Ledger
from xnat_drop.adapters.workers import InspectionPool
from xnat_drop.core.completeness import RULE as INCOMPLETE
from xnat_drop.core.config import Config
from xnat_drop.core.errors import (
    InboxUnusableError,
    ReceiverRefusedError,
    SessionChangedError,
    StorageError,
    XnatAuthError,
    XnatRejectedError,
    XnatServerError,
    XnatTransientError,
    XnatUnexpectedAnswerError,
)
from xnat_drop.core.importfilter import NO_PLAN, FilterPlan, applied
from xnat_drop.core.model import Policy, Session, UploadReceipt, Verdict, Violation
from xnat_drop.core.noheader import scrubbed
from xnat_drop.core.policy import AttemptResult, Result
from xnat_drop.core.receipt import xnat_page
from xnat_drop.core.shown import shown
from xnat_drop.core.text import iso
from xnat_drop.service import failpoints, latefiles
from xnat_drop.service.delivery import Delivery, XnatPort, content_key
from xnat_drop.service.depth import check_siblings
from xnat_drop.service.inbox import InboxTransport, ProvenPaths
from xnat_drop.service.judge import judge
from xnat_drop.service.resourcestep import ResourceStep, Where, resources_unsupported
from xnat_drop.service.steps import Heartbeat, Progress
from xnat_drop.service.transport import Transport
from xnat_drop.service.unchanged import unchanged_since_inspection
from xnat_drop.service.xnatfilter import FilterCache, mismatch_note, planned
from xnat_drop.service.zipbody import Body, UploadEntries, ZipBodies

log = logging.getLogger("xnat_drop.service")

PROGRESS_QUIET = 120.0  # seconds judging may go on after a sign of progress (a file read)


@dataclass(frozen=True, slots=True)
class Tools:
    """What a step may use. The loop owns them, and never closes one under a live step."""

    config: Config
    client: XnatPort
    ledger: Ledger
    pool: InspectionPool
    heartbeat: Heartbeat
    progress: Progress
    monotonic: Callable[[], float]
    wall: Callable[[], float]
    filters: FilterCache
    server_version: str = ""
    proven: ProvenPaths = dataclasses.field(default_factory=ProvenPaths)  # the inbox's paths

    def delivery(self) -> Delivery:
        return Delivery(self.client, self.config.xnat, self.ledger, self.wall)


@dataclass(frozen=True, slots=True)
class Attempt:
    """The session as the loop knows it when the attempt starts."""

    claim: claims.Claim
    session: Session | None
    verdict: Verdict | None
    forced: bool  # sent back with `retry --force`: upload even if delivered before
    xnat_paused: bool  # an outage or refused credentials: judge, but send nothing
    others: tuple[claims.Claim, ...] = ()  # the loop's other claims (for service/depth.py)
    arrived_at: float | None = None  # wall clock: when its files were first seen in incoming/


def attempt(tools: Tools, job: Attempt) -> AttemptResult:
    """Take the session one step further. Never raises for anything a session, XNAT or the
    state directory can do: each ends as a Result."""
    session, verdict = job.session, job.verdict
    filter_plan: FilterPlan | None = None
    try:
        if session is None or verdict is None:
            session, verdict = _judge(tools, job.claim, job.others)
            failpoints.hit("after-judge")
        if not verdict.accepted:
            # Judged again after it changed mid-upload: what went out must not stay.
            tools.delivery().withdraw_partial(job.claim.id)
            if any(v.rule == INCOMPLETE for v in verdict.rejections):
                return _judged(Result.INCOMPLETE, session, verdict, "")  # held, not split
            return _judged(Result.REJECTED, session, verdict, "")
        earlier = None if job.forced else _delivered_before(tools, job.claim.id, verdict)
        if earlier is None and not job.forced and tools.config.xnat.on_existing == "reject":
            arrived = job.arrived_at if job.arrived_at is not None else job.claim.claimed_at
            earlier = latefiles.late_files(
                tools.ledger, tools.config, job.claim.id, verdict, arrived, tools.wall()
            )
        if earlier is not None:
            return _judged(Result.REJECTED, session, verdict, "", also=(earlier,))
        if job.xnat_paused:
            return _judged(Result.WAITING, session, verdict, "")
        unsupported = resources_unsupported(tools.config.xnat, tools.server_version, verdict)
        if unsupported is not None:
            return _judged(Result.REJECTED, session, verdict, "", also=(unsupported,))
        _resume_after_resources(tools, job.claim, verdict)
        filter_plan = _filter_plan(tools, job.claim, verdict)
        failpoints.hit("after-filter")
        filtered = applied(verdict, filter_plan)
        if not filtered.accepted:
            return _judged(Result.REJECTED, session, filtered, "")
        receipt = _deliver(tools, job.claim, filtered, filter_plan)
        memory.trim()  # what sending it made and dropped
        latefiles.record(tools.ledger, job.claim.id, filtered, tools.wall())
        return _judged(Result.DELIVERED, session, filtered, "", receipt=receipt)
    except SessionChangedError as exc:
        # A writer kept an open file after the claim: judge again once it is quiet.
        return AttemptResult(Result.CHANGED, reason=shown(str(exc)))
    except InboxUnusableError as exc:  # these two before XnatTransientError, which they are
        return _judged(Result.INBOX, session, verdict, str(exc))
    except ReceiverRefusedError as exc:
        return _judged(Result.RECEIVER, session, verdict, str(exc))
    except XnatUnexpectedAnswerError as exc:
        return _judged(Result.WEB_PAGES, session, verdict, str(exc), retry_after=exc.retry_after)
    except XnatTransientError as exc:
        return _judged(Result.UNREACHABLE, session, verdict, str(exc), retry_after=exc.retry_after)
    except XnatServerError as exc:
        # A 500: an outage (the probe fails too) or something about this session.
        if _xnat_is_down(tools.client):
            return _judged(Result.UNREACHABLE, session, verdict, str(exc))
        reason = f"XNAT answered with an error: {exc}"
        return _judged(Result.FAILED_ATTEMPT, session, verdict, reason)
    except XnatAuthError as exc:
        return _judged(Result.CREDENTIALS, session, verdict, str(exc))
    except XnatRejectedError as exc:
        violation = _with_filter_note(tools, verdict, filter_plan, exc.violation)
        return _judged(Result.REFUSED, session, verdict, str(exc), also=(violation,))
    except StorageError as exc:
        return _judged(Result.STORAGE, session, verdict, str(exc))
    except Exception as exc:
        log.exception("%s: unexpected error", job.claim.display)
        reason = f"unexpected error: {type(exc).__name__}: {scrubbed(str(exc))}"
        return _judged(Result.FAILED_ATTEMPT, session, verdict, reason)


def _judged(
    result: Result,
    session: Session | None,
    verdict: Verdict | None,
    reason: str,
    *,
    also: tuple[Violation, ...] = (),
    receipt: UploadReceipt | None = None,
    retry_after: float | None = None,
) -> AttemptResult:
    """A result that keeps what was judged (and the rules' violations, plus `also`) for the
    decision and the next attempt."""
    violations = verdict.violations if verdict is not None else ()
    return AttemptResult(
        result,
        (*violations, *also),
        receipt,
        reason=shown(reason),
        retry_after=retry_after,
        session=session,
        verdict=verdict,
    )


def _judge(
    tools: Tools, claim: claims.Claim, others: tuple[claims.Claim, ...]
) -> tuple[Session, Verdict]:
    quiet = PROGRESS_QUIET
    judgement = judge(
        claim.folder,
        claim.relpath,
        tools.config,
        tools.pool,
        progress=lambda: tools.heartbeat.beat(quiet),
        spill=tools.config.paths.state,  # the service's own disk, never the share or /tmp
    )
    failpoints.hit("after-inspect")
    unchanged_since_inspection(claim.folder, judgement.session)
    memory.trim()  # what judging a large session made and dropped
    session = judgement.session
    verdict = check_siblings(
        tools.config, tools.ledger, claim, others, session, judgement.verdict, tools.wall()
    )
    rules = ", ".join(sorted({v.rule for v in verdict.violations}))
    dicom = sum(1 for f in session.files if f.is_dicom)
    found = f"inspected {len(session.files)} files ({dicom} DICOM)"
    fields = journal_fields(claim, verdict)
    if verdict.accepted:
        broken = f"; left out by the rules: {rules}" if rules else ""
        log.info(
            "%s: %s: accepted, %d to upload%s",
            claim.display,
            found,
            len(verdict.upload),
            broken,
            extra=fields,
        )
    else:
        log.info(
            "%s: %s: rejected (%s)", claim.display, found, rules, extra=fields | {"RULE": rules}
        )
    return session, verdict


def _delivered_before(tools: Tools, claim_id: str, verdict: Verdict) -> Violation | None:
    """The same instances, same labels, already delivered (per the ledger): a re-drop."""
    assert verdict.target is not None
    key = content_key(verdict.target, verdict.upload, tools.config.paths.state)
    tools.ledger.update(claim_id, tools.wall(), content_key=key)
    earlier = tools.ledger.delivered(key)
    if earlier is None or earlier.claim_id == claim_id:
        return None
    where = earlier.archive_uri or earlier.prearchive_uri
    sentence = (
        f"This session was already delivered on {iso(earlier.updated_at)} "
        f"({tools.config.xnat.url}{where}); it was not uploaded again. If it must be sent "
        "again anyway, ask the data manager to run `xnat-drop retry --force` on this folder."
    )
    return Violation(
        "already-delivered", Policy.REJECT, "the whole session", sentence, detail=where
    )


def _filter_plan(tools: Tools, claim: claims.Claim, verdict: Verdict) -> FilterPlan:
    """What XNAT's series import filter makes of the session (recorded in the ledger)."""
    quiet = PROGRESS_QUIET
    return planned(
        tools.filters,
        tools.client,
        tools.ledger,
        claim.id,
        claim.folder,
        verdict,
        policy=tools.config.rules.series_import_filter,
        wall=tools.wall(),
        progress=lambda: tools.heartbeat.beat(quiet),
    )


def _with_filter_note(
    tools: Tools, verdict: Verdict | None, filter_plan: FilterPlan | None, violation: Violation
) -> Violation:
    """A count mismatch or an empty import, with XNAT's series filter named when it may be
    why (it changed since the check, or its decisions could not be predicted)."""
    if violation.rule not in ("count-mismatch", "xnat-empty-answer"):
        return violation
    if verdict is None or verdict.target is None or filter_plan is None:
        return violation
    if tools.config.rules.series_import_filter == "off":
        return violation
    note = mismatch_note(tools.filters, tools.client, verdict.target.project, filter_plan)
    return dataclasses.replace(violation, sentence=violation.sentence + note) if note else violation


def _deliver(
    tools: Tools, claim: claims.Claim, verdict: Verdict, filter_plan: FilterPlan = NO_PLAN
) -> UploadReceipt:
    """Stream the zip to XNAT and see it verified there. Raises the Xnat*Error types."""
    target = verdict.target
    assert target is not None
    entries = UploadEntries(verdict.upload)
    total = sum(f.size for f in verdict.upload)
    quiet = tools.config.xnat.read_timeout + 30
    half = total // 2

    def progress(done: int, rate: float, packing: str) -> None:
        tools.progress.uploading(claim.id, done, total, rate, packing)
        tools.heartbeat.beat(quiet)
        if done >= half:
            failpoints.hit("mid-upload")

    bodies = ZipBodies(
        entries,
        claim.folder,
        tools.config.zip,
        tools.server_version,
        progress=progress,
        monotonic=tools.monotonic,
        last=tools.progress.last_link(),
        remember=tools.progress.remember_link,
    )

    def make_body() -> Body:
        log.info(
            "%s: uploading %d files (%.1f MB, %s) to XNAT %s/%s/%s",
            claim.display,
            len(entries),
            total / 1e6,
            bodies.kind,
            target.project,
            target.subject,
            target.session,
            extra=journal_fields(claim, verdict),
        )
        return bodies()

    started = tools.monotonic()
    try:
        receipt = tools.delivery().deliver(
            claim.id,
            verdict,
            make_body,
            # The zip's bytes on the wire; or the objects' bytes C-STORE sent (its progress).
            bytes_sent=lambda: bodies.bytes_sent or tools.progress.read()[1],
            started=started,
            monotonic=tools.monotonic,
            server_version=tools.server_version,
            filter_plan=filter_plan,
            transport=_transport(tools, claim, total),
        )
        packing = bodies.packing() or tools.progress.pace()[1]  # "C-STORE", or the zip's
        receipt = dataclasses.replace(receipt, packing=packing, session_bytes=total)
    finally:
        bodies.close()
        tools.progress.clear()
    if not verdict.resources:
        return receipt
    where = Where(
        receipt.uris[0],
        xnat_page(tools.config.xnat.url, receipt.uris[0]),
        prearchive=tools.config.xnat.destination == "prearchive",
    )
    log.info(
        "%s: sending %d resource files",
        claim.display,
        len(verdict.resources),
        extra=journal_fields(claim, verdict),
    )
    step = ResourceStep(
        tools.client,
        tools.ledger,
        claim.folder,
        where,
        overwrite=tools.config.resources.on_conflict == "overwrite",
        wall=tools.wall,
        beat=lambda: tools.heartbeat.beat(quiet),
    )
    return dataclasses.replace(receipt, resources=step.run(verdict.resources))


def _transport(tools: Tools, claim: claims.Claim, total: int) -> Transport | None:
    """XNAT's inbox (issue 18, service/inbox.py) or DICOM receiver (issue 19,
    service/cstore.py) when configured; None: the zip over HTTP."""
    quiet = tools.config.xnat.read_timeout + 30
    if tools.config.cstore is not None:
        from xnat_drop.service.cstore import CStoreTransport  # noqa: PLC0415 (an extra)

        def sending(objects: int, done: int) -> None:
            tools.progress.uploading(claim.id, done, total, 0.0, "C-STORE")

        return CStoreTransport(
            tools.client,
            tools.ledger,
            tools.config.cstore,
            claim.folder,
            wall=tools.wall,
            monotonic=tools.monotonic,
            beat=lambda: tools.heartbeat.beat(quiet),
            progress=sending,
        )
    if tools.config.inbox is None:
        return None
    return InboxTransport(
        tools.client,
        tools.ledger,
        tools.config.inbox,
        claim.folder,
        tools.proven,
        wall=tools.wall,
        monotonic=tools.monotonic,
        beat=lambda: tools.heartbeat.beat(quiet),
    )


def _resume_after_resources(tools: Tools, claim: claims.Claim, verdict: Verdict) -> None:
    """A session sent back after its resources failed: XNAT holds its images, verified (the
    ledger says so): this claim carries on from there, at the resources, and never sends the
    images again."""
    entry = tools.ledger.entry(claim.id)
    if entry is None or entry.state != "claimed" or verdict.target is None:
        return
    key = entry.content_key or content_key(verdict.target, verdict.upload, tools.config.paths.state)
    earlier = tools.ledger.images_in_xnat(key)
    if earlier is None or earlier.claim_id == claim.id:
        return
    log.info(
        "%s: XNAT holds its images since claim %s (%s); resuming at the resource files",
        claim.display,
        earlier.claim_id,
        earlier.archive_uri or earlier.prearchive_uri,
    )
    tools.ledger.adopt(claim.id, earlier, tools.wall())


def _xnat_is_down(client: XnatPort) -> bool:
    """Ask XNAT once whether it is answering at all (after a 500)."""
    try:
        client.probe()
    except (XnatTransientError, XnatServerError):
        return True
    except XnatAuthError:
        return False
    return False


def journal_fields(claim: claims.Claim, verdict: Verdict | None, **more: str) -> dict[str, str]:
    """Journal fields for a log line about a session (`journalctl -u xnat-drop SESSION=...`)."""
    fields = {"SESSION": shown(claim.relpath[-1])}
    if verdict is not None and verdict.target is not None:
        fields["PROJECT"] = verdict.target.project
    fields.update(more)
    return fields
