"""The reports written beside a finished session: text for people, JSON for machines. Pure."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timezone, tzinfo
from typing import Any

from xnat_drop.core.model import (
    FileKind,
    Outcome,
    Policy,
    Remedy,
    Session,
    Target,
    UploadReceipt,
    Verdict,
    Violation,
)
from xnat_drop.core.receipt import receipt_lines, wrap
from xnat_drop.core.shown import shown
from xnat_drop.core.text import iso, local, plural

SCHEMA = 1
MARK = "xnat-drop report"  # the JSON report's "report" key: a report the daemon wrote
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
    "wrong-depth": "Dropped at the wrong folder level",
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
    "series-import-filter": "Series XNAT's series import filter drops",
    "resource-conflict": "Resource files XNAT holds differently",
    "resource-mismatch": "Resource files that did not arrive intact",
    "resources-unsupported": "Resources this XNAT cannot take",
    "resource-layout": "Files outside a resource's folder",
    "resource-label": "Resource folders XNAT cannot use or the lab does not list",
    "resource-name": "Resource file names XNAT would not keep as they are",
    "dicom-in-resources": "DICOM files in the resources folder",
    "cstore-unsupported": "Objects XNAT's DICOM receiver does not accept",
    "cstore-unrouted": "Objects whose own headers do not route them to this session",
    "routing-failed": "Sent to XNAT's DICOM receiver, but not found in the project",
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
    "non-dicom": (
        "Only DICOM files go to XNAT's importer: remove these files (unpack an archive and "
        "decompress a compressed DICOM file first, if it holds the session's images) and drop "
        "it again. Files that belong with the session but are not images go in a folder below "
        "the resources folder, such as resources/logs/: they are then delivered as they are."
    ),
    "dicom-in-resources": (
        "Files in the resources folder go to XNAT as they are, past its DICOM importer, "
        "anonymisation and series filters: move these DICOM files out of it into the session's "
        "image folders (or remove them) and drop the session again."
    ),
    "resource-layout": (
        "Each folder in the resources folder is one resource: move these files into such a "
        "folder (such as resources/logs/) and drop the session again."
    ),
    "resource-name": (
        "Replace these names with names made of letters, digits, spaces and . _ - + only, and "
        "drop the session again."
    ),
    "unreadable-dicom": (
        "The copy is probably incomplete or damaged (an empty file is what an interrupted copy "
        "leaves): export these files again from the scanner or PACS and drop the session again."
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
RULE_UNITS = {
    "derived-series": "series",
    "incomplete-series": "series",
    "series-import-filter": "series",
}
# What a lab member does with the folder, by rule (a violation's own `remedy` wins). The
# "What to do" block follows it: a rule whose advice is to rename is never told "move it back
# as it is". tests/test_report_advice.py checks every rule of model.Rule is here.
RULE_REMEDIES: dict[str, Remedy] = {
    "nifti": Remedy.FIX,
    "derived-series": Remedy.FIX,
    "non-dicom": Remedy.FIX,
    "unreadable-dicom": Remedy.FIX,
    "unsafe-file": Remedy.FIX,
    "duplicate-instance": Remedy.FIX,
    "mixed-studies": Remedy.SPLIT,
    "phi": Remedy.FIX,
    "size-limit": Remedy.CHOICE,  # remove the file or split the session, or a higher limit
    "no-dicom": Remedy.FIX,
    "bad-label": Remedy.RENAME,  # routing.py sets another by the label's source
    "unknown-project": Remedy.CHOICE,  # the project folder's name, or XNAT's project
    "session-exists": Remedy.CHOICE,  # another label, or on_existing = "append"
    "already-delivered": Remedy.NONE,
    "count-mismatch": Remedy.AGAIN,  # ADMIN once the session is archived
    "delivery-failed": Remedy.ADMIN,
    "xnat-rejected": Remedy.FIX,
    "xnat-empty-answer": Remedy.AGAIN,
    "xnat-unassigned": Remedy.ADMIN,
    "incomplete-series": Remedy.FIX,  # copy the missing files in, then move it back
    "late-files": Remedy.ADMIN,  # on_existing = "append" is the administrator's, then back
    "wrong-depth": Remedy.RENAME,  # move it where the advice says; back as it is: no use
    "series-import-filter": Remedy.CHOICE,  # remove the series, or XNAT's filter changes
    "resource-conflict": Remedy.CHOICE,  # rename the file, or on_conflict = "overwrite"
    "resource-mismatch": Remedy.AGAIN,  # back as it is: the resources resume
    "resources-unsupported": Remedy.CHOICE,  # destination = "archive", or without resources/
    "resource-layout": Remedy.FIX,  # move the files into a label folder
    "resource-label": Remedy.FIX,  # another folder name (CHOICE when not in resources.labels)
    "resource-name": Remedy.FIX,
    "dicom-in-resources": Remedy.FIX,  # move it into the image folders
    "cstore-unsupported": Remedy.CHOICE,  # leave the files out, or the HTTP import
    "cstore-unrouted": Remedy.CHOICE,  # export with the routing, or cstore.routing = "comments"
    "routing-failed": Remedy.ADMIN,  # the session is in Unassigned: the administrator moves it
}
# The strongest remedy among a report's problems chooses the "What to do" text; the others'
# fixes are asked for in it (`{fix}`). Fields: {location}, {incoming}, {parent}.
_PRECEDENCE = (
    Remedy.SPLIT,
    Remedy.RENAME,
    Remedy.CHOICE,
    Remedy.ADMIN,
    Remedy.FIX,
    Remedy.AGAIN,
    Remedy.NONE,
)
WHAT_TO_DO = {
    Remedy.FIX: "Fix the problems above in {location}, then move the folder back to {incoming} "
    "to try again.",
    Remedy.AGAIN: "Nothing in the folder needs to change: move it back to {incoming} to try "
    "again. If it ends here the same way, tell the administrator.",
    Remedy.RENAME: "{fix}Rename or move the folder as the advice above asks, then put it back "
    "into incoming/ under its new name to try again. Moved back to {incoming} as it is, it "
    "would end here again.",
    Remedy.SPLIT: "{fix}Split the folder as the advice above says, then drop each part into "
    "{parent}/ as a session folder of its own, each under its own name.",
    Remedy.CHOICE: "{fix}The advice above offers a choice. If you fix what is in the folder, or "
    "the administrator makes the change the advice names, move it back to {incoming}; if you "
    "rename or split it instead, move it back into incoming/ under the new name or in the new "
    "place.",
    Remedy.ADMIN: "{fix}Tell the administrator about the problem above that only they can "
    "solve, and move the folder back to {incoming} once they say it is solved.",
    Remedy.NONE: "Nothing needs to be done: XNAT already has this session. Moved back, the "
    "folder would end here again; if it must be sent once more, ask the data manager to run "
    "`xnat-drop retry --force` on it.",
}
_FIX_FIRST = "Fix the other problems above in {location}. "
UNTOUCHED = "Nothing in the folder was changed or deleted by xnat-drop."


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
    zone: tzinfo = timezone.utc  # the lab's time zone, for the text report's times
    xnat_url: str = ""  # XNAT's base URL: the receipt's addresses are full, clickable URLs


def render_text(report: Report) -> str:
    """A report a lab member can read and act on."""
    when = local(report.decided_at, report.zone)
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
        lines += wrap(f"Note: {note}.", "", "           ")
    if report.target is not None:
        t = report.target
        lines.append(f"XNAT:      project {t.project}, subject {t.subject}, session {t.session}")
    resources = len(report.verdict.resources) if report.verdict is not None else 0
    lines.append(f"Contents:  {_contents(session, resources)}")
    rejections = [v for v in report.violations if v.policy is Policy.REJECT]
    exclusions = [v for v in report.violations if v.policy is Policy.EXCLUDE]
    if report.outcome is Outcome.FAILED:
        problems = plural(len(rejections), "problem")
        lines += ["", f"Why it was not uploaded ({problems}):", ""]
        lines += _grouped(rejections)
        advice = f"{what_to_do(report, rejections)} {UNTOUCHED}"
        lines += ["What to do:", *wrap(advice, "  ", "  ")]
    if exclusions:
        xnat = sum(v.rule == "series-import-filter" for v in exclusions)
        by = "the lab's rules" if not xnat else "XNAT's series import filter"
        if 0 < xnat < len(exclusions):
            by = "the lab's rules and XNAT's series import filter"
        lines += ["", f"Left out of the upload by {by} ({len(exclusions)}):", ""]
        lines += _grouped(exclusions)
    if report.receipt is not None:
        lines += receipt_lines(report.receipt, report.xnat_url)
    verdict = report.verdict
    if verdict is not None and verdict.duplicates:
        copies = plural(len(verdict.duplicates), "identical copy", "identical copies")
        lines += ["", f"Copies:    {copies} of other files, sent once"]
    if verdict is not None and verdict.ignored:
        ignored = plural(len(verdict.ignored), "operating-system file")
        lines += ["", f"Ignored:   {ignored} (e.g. .DS_Store)"]
    if verdict is not None and verdict.notes:
        lines += ["", "Labels:", *[f"  {note}" for note in verdict.notes]]
    # Names are data: whatever a line still holds that is not printable is shown escaped.
    return "\n".join(shown(line) for line in lines).rstrip() + "\n"


def remedy(v: Violation) -> Remedy:
    """What to do with the folder for this violation: its own, else its rule's (FIX for a
    rule not in the table: its sentence says how, and the folder keeps its name)."""
    return v.remedy or RULE_REMEDIES.get(v.rule, Remedy.FIX)


def what_to_do(report: Report, rejections: list[Violation]) -> str:
    """The "What to do" sentence for these problems, led by the strongest remedy among them."""
    remedies = {remedy(v) for v in rejections} or {Remedy.FIX}
    lead = next(r for r in _PRECEDENCE if r in remedies)
    incoming = report.incoming or f"incoming/{report.session.display}"
    fix = _FIX_FIRST if Remedy.FIX in remedies and lead is not Remedy.FIX else ""
    return (
        WHAT_TO_DO[lead]
        .replace("{fix}", fix)
        .replace("{location}", report.location)
        .replace("{incoming}", incoming)
        .replace("{parent}", incoming.rsplit("/", 1)[0] if "/" in incoming else "incoming")
    )


def render_json(report: Report) -> str:
    """The same report for scripts: stable keys, every file listed."""
    return "".join(json_pieces(report))


def json_pieces(report: Report) -> Iterator[str]:
    """render_json in pieces: the uploaded files (50,000 of them, maybe) one line at a time,
    never all in one string or list."""
    verdict = report.verdict
    listed = verdict is not None and report.outcome is Outcome.DONE and bool(verdict.upload)
    data = {
        "report": MARK,
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
        "uploaded": [],  # filled in below, one line a file
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
            "session_bytes": report.receipt.session_bytes,
            "packing": report.receipt.packing,
            "seconds": round(report.receipt.seconds, 3),
            "server_version": report.receipt.server_version,
            "destination": report.receipt.destination,
            "verified": [
                {"series": name, "sent": sent, "held": held}
                for name, sent, held in report.receipt.verified
            ],
            "notes": list(report.receipt.notes),
            "resources": [
                {
                    "label": resource.label,
                    "verified_by": resource.verified_by,
                    "files": [
                        {"name": name, "size": length, "md5": md5}
                        for name, length, md5 in resource.files
                    ],
                }
                for resource in report.receipt.resources
            ],
        },
    }
    text = json.dumps(_escaped(data), indent=2, ensure_ascii=False) + "\n"
    if not listed:
        yield text
        return
    assert verdict is not None
    # A quote inside a string value is escaped (\"), so this text is the key itself, once.
    head, tail = text.split('"uploaded": []', 1)
    yield head + '"uploaded": ['
    separator = "\n    "  # json.dumps(indent=2) puts a top-level list's items at 4 spaces
    for facts in verdict.upload:
        yield separator + json.dumps(shown(facts.path), ensure_ascii=False)
        separator = ",\n    "
    yield "\n  ]" + tail


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
                lines += wrap(v.sentence, "    ", "    ")
        else:
            lines.append(f"  [{rule}] {title}: {len(items)} {RULE_UNITS.get(rule, 'files')}")
            lines += wrap(RULE_ADVICE[rule], "    ", "    ")
            for v in items[:LIST_LIMIT]:
                lines += wrap(
                    f"{v.subject}: {v.detail}" if v.detail else v.subject, "    - ", "      "
                )
        if len(items) > LIST_LIMIT:
            more = len(items) - LIST_LIMIT
            lines.append(f"    ... and {more} more (all listed in the .report.json)")
        lines.append("")
    return lines


def _contents(session: Session, resources: int = 0) -> str:
    """The session in numbers; `resources` of its files are session resources."""
    counts = Counter(f.kind for f in session.files)
    dicom = counts[FileKind.DICOM] + counts[FileKind.DICOM_NO_PREAMBLE]
    parts = [plural(dicom, "DICOM file")]
    series = {f.header.series_instance_uid for f in session.files if f.header is not None}
    if series:
        parts[0] += f" in {len(series)} series"
    others = sum(
        n
        for kind, n in counts.items()
        if kind not in (FileKind.DICOM, FileKind.DICOM_NO_PREAMBLE, FileKind.JUNK)
    )
    if resources:
        parts.append(plural(resources, "resource file"))
    if others > resources:
        parts.append(plural(others - resources, "other file"))
    return ", ".join(parts)
