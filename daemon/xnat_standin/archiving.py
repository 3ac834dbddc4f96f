"""What archiving a prearchive session asks and checks: the archive-time parameters, the
labels it is archived under, and whether it may merge into an archived session of that label
(XNAT's ``PrearcSessionArchiver``, ``checkForConflicts``). The Store (store.py) carries it out."""

from __future__ import annotations

from dataclasses import dataclass

from .archive import Experiment, Subject
from .labels import (
    EXPERIMENT_LABEL_INVALID,
    SUBJECT_LABEL_INVALID,
    clean_for_archive,
    is_valid_label,
)
from .prearchive import PrearcRow
from .scans import Scan

# PrearcSessionArchiver messages (checkForConflicts).
SUBJECT_MOD = "Invalid modification of session subject via archive process."
UID_MOD = "Invalid modification of session UID via archive process."
MODALITY_MOD = (
    "Invalid modification of session modality via archive process.  "
    "Data may require a manual merge."
)
MATCHING_FILES = "Session already exists with matching files."
PRE_EXISTS = "Session already exists, retry with overwrite enabled"
NO_PROJECT = "unable to identify destination project"
NO_SUBJECT = "Unable to identify subject."


class ArchiveError(Exception):
    """Archiving failed; ``conflict`` says whether the row becomes CONFLICT (else ERROR)."""

    def __init__(self, message: str, *, conflict: bool) -> None:
        super().__init__(message)
        self.message = message
        self.conflict = conflict


@dataclass(frozen=True, slots=True)
class ArchiveRequest:
    """Archive-time parameters (xnat-api.md §3.4 "Archive-time / SI parameters")."""

    project: str | None = None
    subject: str | None = None
    label: str | None = None
    allow_merge: bool = True  # commits merge (>= 1.7.6); the importer's archiving may not
    override: bool = False  # overwrite=delete|override: skip UID/number checks, replace files
    overwrite_files: bool = False


def archive_labels(row: PrearcRow, request: ArchiveRequest) -> tuple[str, str]:
    """(session label, subject label) as archived: cleaned, then checked; raises ArchiveError."""
    label = clean_for_archive(request.label or row.folder)
    subject_label = clean_for_archive(request.subject or row.subject)
    if not subject_label:
        raise ArchiveError(NO_SUBJECT, conflict=False)
    if not is_valid_label(label):
        raise ArchiveError(EXPERIMENT_LABEL_INVALID, conflict=False)
    if not is_valid_label(subject_label):
        raise ArchiveError(SUBJECT_LABEL_INVALID, conflict=False)
    return label, subject_label


def plan_merge(
    row: PrearcRow,
    existing: Experiment | None,
    subject: Subject | None,
    xsi_type: str,
    request: ArchiveRequest,
) -> list[tuple[Scan, str]]:
    """Check a merge as ``checkForConflicts`` does; returns (new scan, target scan id)."""
    if existing is None:
        return [(scan, scan.id) for scan in row.scans.values()]
    if not request.allow_merge:
        raise ArchiveError(PRE_EXISTS, conflict=True)
    if existing.xsi_type != xsi_type:
        raise ArchiveError(MODALITY_MOD, conflict=True)
    if subject is None or existing.subject_id != subject.id:
        raise ArchiveError(
            f"{SUBJECT_MOD}: {existing.label} Already Exists for another Subject", conflict=True
        )
    uid_changed = bool(existing.uid and row.study_uid and existing.uid != row.study_uid)
    if uid_changed and not request.override:
        raise ArchiveError(UID_MOD, conflict=True)
    used_ids = set(existing.scans)
    moves: list[tuple[Scan, str]] = []
    for scan in row.scans.values():
        by_id = existing.scans.get(scan.id)
        by_uid = next(
            (old for old in existing.scans.values() if old.series_uid == scan.series_uid), None
        )
        target_id = scan.id
        if by_uid is not None and (by_id is None or by_id.id != by_uid.id):
            if not request.override:
                raise ArchiveError(
                    "Session already contains a scan with the same UID, but a different "
                    f"number ({by_uid.id}).",
                    conflict=True,
                )
            target_id = by_uid.id
        elif by_id is not None and by_id.series_uid != scan.series_uid and by_id.series_uid:
            count = 1  # correctScanID: the new scan gets a fresh id such as "4-MR1"
            while f"{scan.id}-{scan.modality}{count}" in used_ids:
                count += 1
            target_id = f"{scan.id}-{scan.modality}{count}"
        used_ids.add(target_id)
        target = existing.scans.get(target_id)
        if target is not None and not (request.override or request.overwrite_files):
            overlap = sorted(set(target.files) & set(scan.files))
            if overlap:
                raise ArchiveError(MATCHING_FILES, conflict=True)
        moves.append((scan, target_id))
    return moves
