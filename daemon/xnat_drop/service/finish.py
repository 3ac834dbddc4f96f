"""Filing a decided session, run on the step thread: reports (a delivered session's old failure
reports to the history first), then the ledger's decision, then the move to done/ or failed/.
A crash between any two is finished by the next start (the loop's recovery), never decided
twice.

Raises OSError when the drop tree refuses (a read-only or full failed/, a link that keeps
reappearing): the session stays in the work folder and the loop tries again later. Raises
StorageError when the ledger cannot record the decision.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path

from xnat_drop.adapters import localzone
from xnat_drop.adapters.fs import claims, filing
from xnat_drop.core.config import PathsConfig
from xnat_drop.core.errors import StorageError
from xnat_drop.core.model import Outcome, Policy, Session, UploadReceipt, Verdict, Violation
from xnat_drop.core.report import Report, json_pieces, render_text
from xnat_drop.core.shown import shown
from xnat_drop.service import failpoints
from xnat_drop.service.attempt import Tools, journal_fields

log = logging.getLogger("xnat_drop.service")


@dataclass(frozen=True, slots=True)
class Filing:
    """A session to file, and everything its report says."""

    claim: claims.Claim
    outcome: Outcome
    violations: tuple[Violation, ...]
    session: Session | None
    verdict: Verdict | None
    receipt: UploadReceipt | None
    attempts: int  # this one included


def file_session(tools: Tools, work: claims.WorkArea, item: Filing) -> Path:
    """Report, record and move the session; returns where it is now.

    Under the work folder's filing lock: a daemon on another host sharing the tree may be
    choosing a free name in the same folder at the same moment.
    """
    with work.filing():
        dest, report = _file(tools, work, item)
    claim = item.claim
    fields = journal_fields(claim, item.verdict)
    if item.outcome is Outcome.DONE:
        uris = ", ".join(item.receipt.uris if item.receipt else ())
        log.info(
            "%s: delivered (%s) -> %s",
            claim.display,
            uris,
            report.location,
            extra=fields | {"XNAT_URI": uris},
        )
    else:
        log.info(
            "%s: not uploaded (%s) -> %s",
            claim.display,
            ", ".join(report_rules(item)),
            report.location,
            extra=fields | {"RULE": ", ".join(report_rules(item))},
        )
    return dest


def report_rules(item: Filing) -> list[str]:
    """The rules that rejected the session, sorted."""
    return sorted({v.rule for v in item.violations if v.policy is Policy.REJECT})


def _file(tools: Tools, work: claims.WorkArea, item: Filing) -> tuple[Path, Report]:
    """`file_session`'s steps: reports, the ledger's decision, the move."""
    paths = tools.config.paths
    claim = item.claim
    root = paths.done if item.outcome is Outcome.DONE else paths.failed
    other = paths.failed if item.outcome is Outcome.DONE else paths.done
    filing.discard_own_reports(other, claim.id, claim.relpath)
    zone = localzone.lab_zone(tools.config.time_zone, os.environ)
    decided = tools.wall()
    notes = _retire_stale_reports(paths, claim, decided, zone) if root == paths.done else []
    placement = filing.place(root, claim.id, claim.relpath)
    dest = placement.path
    session = item.session or Session(claim.relpath[-1], claim.relpath, ())
    report = Report(
        outcome=item.outcome,
        session=session,
        location=shown_in_tree(paths, dest),
        decided_at=decided,
        verdict=item.verdict,
        target=item.verdict.target if item.verdict else None,
        violations=item.violations,
        receipt=item.receipt,
        attempts=item.attempts,
        incoming=shown_in_tree(paths, paths.incoming.joinpath(*claim.relpath)),
        claim_id=claim.id,
        notes=placement.notes + tuple(notes),
        zone=zone,
        xnat_url=tools.config.xnat.url,
    )
    filing.write_reports(
        placement, {".report.txt": render_text(report), ".report.json": json_pieces(report)}
    )
    failpoints.hit("after-reports")
    rules = report_rules(item)
    sent: dict[str, float] = {}
    if item.outcome is Outcome.DONE and item.receipt is not None:  # for the metrics
        resources = sum(r.bytes for r in item.receipt.resources)
        sent = {
            "bytes_sent": item.receipt.bytes_sent + resources,
            "upload_seconds": item.receipt.seconds,
        }
    tools.ledger.update(
        claim.id,
        tools.wall(),
        state=item.outcome.value,
        outcome=item.outcome.value,
        reason=", ".join(rules),
        final_path=str(dest),
        **sent,
    )
    failpoints.hit("before-move")
    work.complete(claim, root, placement.relpath)
    return dest, report


def _retire_stale_reports(
    paths: PathsConfig, claim: claims.Claim, now: float, zone: tzinfo
) -> list[str]:
    """Move the "NOT uploaded" reports an earlier attempt left for this session to the
    history; the notes that say so in the receipt. A refusal is logged, never fatal: the
    delivery is what counts."""
    stamp = datetime.fromtimestamp(now, tz=zone).strftime("%Y%m%dT%H%M%S")  # as `retry` names
    try:
        moved = filing.retire_stale_reports(paths.failed, paths.incoming, claim.relpath, stamp)
    except OSError as exc:
        log.warning("%s: old failure reports not moved to the history: %s", claim.display, exc)
        return []
    history = shown_in_tree(paths, paths.failed)
    for where in moved:
        log.info("%s: old failure report moved to %s/%s", claim.display, history, where)
    return [
        f"the earlier “NOT uploaded” report of this session is out of date; it was moved to "
        f"{history}/{where}"
        for where in moved
    ]


def shown_in_tree(paths: PathsConfig, path: Path) -> str:
    """`path` as lab members know it: relative to the drop tree when there is one."""
    common = Path(os.path.commonpath([paths.incoming, paths.done, paths.failed]))
    try:
        text = str(path.relative_to(common)) if common != Path(common.anchor) else str(path)
    except ValueError:
        text = str(path)
    return shown(text)


def filed(tools: Tools, work: claims.WorkArea, item: Filing) -> Path | BaseException:
    """The filing step: where the session went, or the error that stopped it (returned, not
    raised: the loop decides)."""
    try:
        return file_session(tools, work, item)
    except (OSError, StorageError) as exc:
        return exc
