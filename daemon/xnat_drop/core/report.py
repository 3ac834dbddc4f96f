"""The reports written beside a finished session: text for people, JSON for machines. Pure."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from xnat_drop.core.model import (
    FileKind,
    Outcome,
    Policy,
    Session,
    Target,
    UploadReceipt,
    Verdict,
    Violation,
)
from xnat_drop.core.shown import shown
from xnat_drop.core.text import iso, size

SCHEMA = 1
LIST_LIMIT = 20  # per rule, in the text report
# Per rule, in the JSON report: 100,000 bad files must not make a 30 MB report. The count of
# the rest is given, and every file is still listed in "excluded" or by the rules' `files`.
JSON_LIST_LIMIT = 1000

RULE_TITLES = {
    "nifti": "Converted data (NIfTI, Analyze, MINC, MGH, NRRD, side-cars)",
    "derived-series": "Scanner-derived series",
    "non-dicom": "Files that are not DICOM",
    "unreadable-dicom": "Damaged or incomplete DICOM",
    "unsafe-file": "Links and special files",
    "duplicate-instance": "Different files with the same SOP Instance UID",
    "mixed-studies": "More than one study in one session folder",
    "size-limit": "Larger than the lab allows",
    "phi": "Identifying information left in the headers",
    "no-dicom": "Nothing to upload",
    "bad-label": "Labels XNAT cannot use",
    "unknown-project": "Unknown XNAT project",
    "session-exists": "Already in XNAT",
    "already-delivered": "Delivered before",
    "count-mismatch": "XNAT does not hold what was sent",
    "delivery-failed": "Delivery failed repeatedly",
    "xnat-rejected": "Refused by XNAT",
    "xnat-empty-answer": "Nothing imported by XNAT",
    "xnat-unassigned": "Filed under the wrong XNAT project",
    "incomplete-series": "Series with images missing",
    "late-files": "Files that arrived after the session was delivered",
}
# What to do, said once for a rule broken by several files or series.
RULE_ADVICE = {
    "nifti": (
        "Only the scanner's raw DICOM may go to XNAT. Remove these converted files (keep them "
        "elsewhere) and drop the session again."
    ),
    "derived-series": (
        "These series were derived by the scanner, not acquired. Leave them out of the export "
        "and drop the session again."
    ),
    "non-dicom": "Only DICOM images may be in the session: remove these files and drop it again.",
    "unreadable-dicom": (
        "The copy is probably incomplete or damaged: export these files again from the scanner "
        "or PACS and drop the session again."
    ),
    "unsafe-file": (
        "xnat-drop never follows or opens links and special files: replace them with the real "
        "files and drop the session again."
    ),
    "phi": (
        "These attributes must be empty or hold the subject label. Export the session again "
        "with the lab's anonymisation profile and drop it again."
    ),
    "bad-label": "Fix the labels below and drop the session again.",
    "incomplete-series": (
        "The copy was probably interrupted or paused. Copy the missing files into the folder "
        "in failed/, then move it back to incoming/."
    ),
}
RULE_UNITS = {"derived-series": "series", "incomplete-series": "series"}


@dataclass(frozen=True, slots=True)
class Report:
    """Everything a report says about one finished session."""

    outcome: Outcome
    session: Session
    location: str  # where the folder now is, relative to the drop tree, e.g. "failed/P1/S1/E1"
    decided_at: float  # wall-clock seconds since the epoch
    verdict: Verdict | None
    target: Target | None
    violations: tuple[Violation, ...]
    receipt: UploadReceipt | None = None
    attempts: int = 1
    incoming: str = ""  # where the folder was dropped, e.g. "incoming/P1/S1/E1"
    claim_id: str = ""  # ties the report to the ledger
    notes: tuple[str, ...] = ()  # why the folder is not where it was expected (filing.py)


def render_text(report: Report) -> str:
    """A report a lab member can read and act on."""
    when = iso(report.decided_at)
    session = report.session
    lines = [
        "xnat-drop report: "
        + ("DELIVERED to XNAT" if report.outcome is Outcome.DONE else "NOT uploaded"),
        "",
        f"Session:   {session.display}",
        f"Folder:    {report.location}",
        f"Decided:   {when}",
    ]
    for note in report.notes:
        lines += _wrap(f"Note: {note}.", "", "           ")
    if report.target is not None:
        t = report.target
        lines.append(f"XNAT:      project {t.project}, subject {t.subject}, session {t.session}")
    lines.append(f"Contents:  {_contents(session)}")
    rejections = [v for v in report.violations if v.policy is Policy.REJECT]
    exclusions = [v for v in report.violations if v.policy is Policy.EXCLUDE]
    if report.outcome is Outcome.FAILED:
        lines += ["", f"Why it was not uploaded ({len(rejections)} problem{_s(rejections)}):", ""]
        lines += _grouped(rejections)
        advice = (
            f"Fix the problems above in {report.location}, then move the folder back to "
            f"{report.incoming or session.display} to try again. Nothing in the folder was "
            "changed or deleted by xnat-drop."
        )
        lines += ["What to do:", *_wrap(advice, "  ", "  ")]
    if exclusions:
        lines += ["", f"Left out of the upload by the lab's rules ({len(exclusions)}):", ""]
        lines += _grouped(exclusions)
    if report.receipt is not None:
        r = report.receipt
        lines += [
            "",
            f"Uploaded:  {r.files} DICOM file{'s' if r.files != 1 else ''}, "
            f"{size(r.bytes_sent)} in {r.seconds:.1f} s",
        ]
        lines += [f"XNAT URI:  {uri}" for uri in r.uris]
        if r.verified:
            where = (
                "archive" if r.destination == "archive" else "prearchive (built, ready for review)"
            )
            counts = ", ".join(f"{scan}: {n}" for scan, n in r.verified)
            lines += _wrap(f"Verified in the {where}: files per scan {counts}", "", "           ")
    verdict = report.verdict
    if verdict is not None and verdict.duplicates:
        count = len(verdict.duplicates)
        lines += [
            "",
            f"Copies:    {count} identical cop{'ies' if count != 1 else 'y'} "
            "of other files, sent once",
        ]
    if verdict is not None and verdict.ignored:
        count = len(verdict.ignored)
        lines += [
            "",
            f"Ignored:   {count} operating-system file{'s' if count != 1 else ''} (e.g. .DS_Store)",
        ]
    if verdict is not None and verdict.notes:
        lines += ["", "Labels:", *[f"  {note}" for note in verdict.notes]]
    # Names are data: whatever a line still holds that is not printable is shown escaped.
    return "\n".join(shown(line) for line in lines).rstrip() + "\n"


def render_json(report: Report) -> str:
    """The same report for scripts: stable keys, every file listed."""
    verdict = report.verdict
    data = {
        "schema": SCHEMA,
        "outcome": report.outcome.value,
        "session": report.session.display,
        "relpath": list(report.session.relpath),
        "location": report.location,
        "decided_at": iso(report.decided_at, "milliseconds"),
        "attempts": report.attempts,
        "claim": report.claim_id,
        "target": None
        if report.target is None
        else {
            "project": report.target.project,
            "subject": report.target.subject,
            "session": report.target.session,
        },
        "violations": [violation_json(v) for v in _listed(report.violations)],
        "unlisted_violations": _unlisted(report.violations),
        "notes": list(report.notes),
        "counts": dict(sorted(Counter(f.kind.value for f in report.session.files).items())),
        "uploaded": [f.path for f in verdict.upload]
        if verdict and report.outcome is Outcome.DONE
        else [],
        "excluded": list(verdict.excluded) if verdict else [],
        "duplicates": list(verdict.duplicates) if verdict else [],
        "ignored": list(verdict.ignored) if verdict else [],
        "labels": list(verdict.notes) if verdict else [],
        "xnat": None
        if report.receipt is None
        else {
            "uris": list(report.receipt.uris),
            "files": report.receipt.files,
            "bytes": report.receipt.bytes_sent,
            "seconds": round(report.receipt.seconds, 3),
            "server_version": report.receipt.server_version,
            "destination": report.receipt.destination,
            "verified": dict(report.receipt.verified),
        },
    }
    return json.dumps(_escaped(data), indent=2, ensure_ascii=False) + "\n"


def violation_json(v: Violation) -> dict[str, Any]:
    """A violation for scripts: the one shape of the JSON report and `check --json`."""
    return {
        "rule": v.rule,
        "policy": v.policy.value,
        "subject": v.subject,
        "message": v.sentence,
        "files": list(v.files),
    }


def _listed(violations: tuple[Violation, ...]) -> list[Violation]:
    """The violations the JSON report lists: the first JSON_LIST_LIMIT of each rule."""
    seen: Counter[str] = Counter()
    listed = []
    for v in violations:
        seen[v.rule] += 1
        if seen[v.rule] <= JSON_LIST_LIMIT:
            listed.append(v)
    return listed


def _unlisted(violations: tuple[Violation, ...]) -> dict[str, int]:
    counts = Counter(v.rule for v in violations)
    return {rule: n - JSON_LIST_LIMIT for rule, n in sorted(counts.items()) if n > JSON_LIST_LIMIT}


def _escaped(value: Any) -> Any:
    """`value` with every string `shown`: names that are not UTF-8 or hold control
    characters stay readable, and the JSON stays valid UTF-8 for any reader."""
    if isinstance(value, str):
        return shown(value)
    if isinstance(value, dict):
        return {shown(str(k)): _escaped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    return value


def _grouped(violations: list[Violation]) -> list[str]:
    """Violations by rule: one alone in full; several as the rule's advice and a list."""
    by_rule: dict[str, list[Violation]] = defaultdict(list)
    for v in violations:
        by_rule[v.rule].append(v)
    lines = []
    for rule, items in by_rule.items():
        title = RULE_TITLES.get(rule, rule)
        if len(items) == 1 or rule not in RULE_ADVICE:
            lines.append(f"  [{rule}] {title}")
            for v in items[:LIST_LIMIT]:
                lines += _wrap(v.sentence, "    ", "    ")
        else:
            lines.append(f"  [{rule}] {title}: {len(items)} {RULE_UNITS.get(rule, 'files')}")
            lines += _wrap(RULE_ADVICE[rule], "    ", "    ")
            for v in items[:LIST_LIMIT]:
                lines += _wrap(
                    f"{v.subject}: {v.detail}" if v.detail else v.subject, "    - ", "      "
                )
        if len(items) > LIST_LIMIT:
            more = len(items) - LIST_LIMIT
            lines.append(f"    ... and {more} more (all listed in the .report.json)")
        lines.append("")
    return lines


def _wrap(text: str, first: str, rest: str, width: int = 92) -> list[str]:
    words, lines, line = shown(text).split(), [], first
    for word in words:
        if len(line) + len(word) + 1 > width and line.strip():
            lines.append(line.rstrip())
            line = rest
        line += word + " "
    lines.append(line.rstrip())
    return lines


def _contents(session: Session) -> str:
    counts = Counter(f.kind for f in session.files)
    dicom = counts[FileKind.DICOM] + counts[FileKind.DICOM_NO_PREAMBLE]
    parts = [f"{dicom} DICOM file{'s' if dicom != 1 else ''}"]
    series = {f.header.series_instance_uid for f in session.files if f.header is not None}
    if series:
        parts[0] += f" in {len(series)} series"
    others = sum(
        n
        for kind, n in counts.items()
        if kind not in (FileKind.DICOM, FileKind.DICOM_NO_PREAMBLE, FileKind.JUNK)
    )
    if others:
        parts.append(f"{others} other file{'s' if others != 1 else ''}")
    return ", ".join(parts)


def _s(items: list[Violation]) -> str:
    return "" if len(items) == 1 else "s"
