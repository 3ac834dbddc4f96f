"""Projects, prearchive and archive: the emulator's state and its layout on disk.

Disk layout (as XNAT's, xnat-api.md §3.5 step 6):
``<root>/prearchive/<project|Unassigned>/<yyyyMMdd_HHmmssSSS>/<folder>/SCANS/<scan>/DICOM/<file>``
and ``<root>/archive/<project>/arc001/<label>/SCANS/<scan>/DICOM/<file>``.

Every method takes the one emulator lock, so each is atomic for concurrent requests. Files
arrive already written to ``<root>/tmp`` and are renamed into place under the lock.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from .dicomheader import DicomHeader
from .labels import (
    EXPERIMENT_LABEL_INVALID,
    SUBJECT_LABEL_INVALID,
    clean_for_archive,
    is_valid_label,
)
from .records import ArchivedSession, PrearchiveSession

log = logging.getLogger("xnat_standin")

UNASSIGNED = "Unassigned"
RECEIVING = "RECEIVING"
RECEIVING_INTERRUPT = "RECEIVING_INTERRUPT"
READY = "READY"
CONFLICT = "CONFLICT"
ERROR = "ERROR"
_JOINABLE = frozenset({RECEIVING, RECEIVING_INTERRUPT})
_REOPENABLE = frozenset({READY, ERROR, CONFLICT})  # set back to RECEIVING by a new file

AUTO_ARCHIVE_CODES = {0: "Manual", 4: "AutoArchive", 5: "AutoArchiveOverwrite"}

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

_SESSION_TYPES = {
    "MR": "mr",
    "CT": "ct",
    "PT": "pet",
    "US": "us",
    "CR": "cr",
    "DX": "dx",
    "MG": "mg",
    "NM": "nm",
    "XA": "xa",
    "RF": "rf",
    "OPT": "opt",
}


def build_poll_seconds(idle_seconds: float) -> float:
    """How often the idle builder looks (``sessionXmlRebuilderRepeat``, scaled down)."""
    return min(1.0, max(0.05, idle_seconds / 5))


def rebuilder_preferences(idle_seconds: float) -> dict[str, Any]:
    """``sessionXmlRebuilderInterval`` (minutes: an int when whole, which XNAT's always is)
    and ``sessionXmlRebuilderRepeat`` (ms) for an idle build after ``idle_seconds``."""
    minutes = idle_seconds / 60
    return {
        "sessionXmlRebuilderInterval": int(minutes) if minutes.is_integer() else minutes,
        "sessionXmlRebuilderRepeat": round(build_poll_seconds(idle_seconds) * 1000),
    }


class UnknownSessionError(Exception):
    """No such prearchive session (404)."""


class StorageError(Exception):
    """A file could not be stored (XNAT reports these per object as a 400)."""


class ArchiveError(Exception):
    """Archiving failed; ``conflict`` says whether the row becomes CONFLICT (else ERROR)."""

    def __init__(self, message: str, *, conflict: bool) -> None:
        super().__init__(message)
        self.message = message
        self.conflict = conflict


@dataclass(frozen=True, slots=True)
class Project:
    id: str
    prearchive_code: int = 0
    aliases: tuple[str, ...] = ()
    name: str = ""

    @property
    def auto_archives(self) -> bool:
        return self.prearchive_code in (4, 5)


@dataclass(frozen=True, slots=True)
class UploadOptions:
    """Per-request session settings an upload records on the prearchive row."""

    prevent_auto_commit: bool | None = None  # None: parameter absent
    source: str | None = None
    visit: str | None = None
    protocol: str | None = None
    timezone: str | None = None
    prevent_anon: bool | None = None


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one DICOM object goes: project (None = Unassigned), subject and session label."""

    project: str | None
    subject: str
    label: str
    auto_archive_hint: bool | None = None  # "AA: true" in the DICOM comments


@dataclass(frozen=True, slots=True)
class StoredFile:
    name: str
    sop_instance_uid: str
    sop_class_uid: str
    size: int


@dataclass
class Scan:
    id: str
    series_uid: str
    series_description: str
    modality: str
    files: dict[str, StoredFile] = field(default_factory=dict)

    @property
    def file_size(self) -> int:
        return sum(stored.size for stored in self.files.values())


@dataclass
class PrearcRow:
    """One prearchive session (a row of XNAT's prearchive table)."""

    project: str | None
    timestamp: str
    folder: str
    requested_name: str  # the label uploads asked for; the folder may carry a _N suffix
    subject: str
    study_uid: str
    status: str
    uploaded: datetime
    lastmod: datetime
    last_activity: float  # time.monotonic() of the last file or status change
    scan_date: str
    modality: str
    prevent_auto_commit: bool = False
    prevent_anon: bool = False
    source: str = ""
    visit: str = ""
    protocol: str = ""
    timezone: str = ""
    auto_archive_hint: bool | None = None
    scans: dict[str, Scan] = field(default_factory=dict)
    built_scans: dict[str, Scan] | None = None  # the "session XML": None until first built

    @property
    def project_label(self) -> str:
        return self.project or UNASSIGNED

    @property
    def uri(self) -> str:
        return f"/prearchive/projects/{self.project_label}/{self.timestamp}/{self.folder}"

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.project_label, self.timestamp, self.folder)


@dataclass
class Subject:
    id: str
    project: str
    label: str
    insert_date: datetime


@dataclass
class Experiment:
    id: str
    project: str
    subject_id: str
    label: str
    uid: str
    modality: str
    xsi_type: str
    date: str  # yyyy-MM-dd or ""
    time: str  # HH:mm:ss or ""
    insert_date: datetime
    scans: dict[str, Scan] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ArchiveRequest:
    """Archive-time parameters (xnat-api.md §3.4 "Archive-time / SI parameters")."""

    project: str | None = None
    subject: str | None = None
    label: str | None = None
    allow_merge: bool = True  # commits merge (>= 1.7.6); the importer's archiving may not
    override: bool = False  # overwrite=delete|override: skip UID/number checks, replace files
    overwrite_files: bool = False


class Store:
    """All prearchive and archive state, guarded by the emulator lock."""

    def __init__(self, root: Path, lock: threading.RLock) -> None:
        self.root = root
        self.lock = lock
        self.prearchive_dir = root / "prearchive"
        self.archive_dir = root / "archive"
        self.tmp_dir = root / "tmp"
        for directory in (self.prearchive_dir, self.archive_dir, self.tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._projects: dict[str, Project] = {}
        self._rows: dict[tuple[str, str, str], PrearcRow] = {}
        self._subjects: dict[str, Subject] = {}
        self._experiments: dict[str, Experiment] = {}
        self._next_subject = 1
        self._next_experiment = 1
        self._last_timestamp = ""
        # Called with (prearchive session folder, archive session folder) as a session is
        # archived, before the prearchive folder goes: session resources move then (catalog.py).
        self.on_archive: Callable[[Path, Path], None] | None = None

    # -- projects ---------------------------------------------------------------------------

    def add_project(
        self, project_id: str, prearchive_code: int = 0, aliases: Iterable[str] = ()
    ) -> Project:
        if prearchive_code not in AUTO_ARCHIVE_CODES:
            raise ValueError(f"prearchive code must be 0, 4 or 5, not {prearchive_code}")
        project = Project(project_id, prearchive_code, tuple(aliases), project_id)
        with self.lock:
            self._projects[project_id] = project
        return project

    def project(self, id_or_alias: str) -> Project | None:
        """The project with this ID or alias (IDs win), or None."""
        with self.lock:
            if id_or_alias in self._projects:
                return self._projects[id_or_alias]
            for project in self._projects.values():
                if id_or_alias in project.aliases:
                    return project
        return None

    def projects(self) -> list[Project]:
        with self.lock:
            return sorted(self._projects.values(), key=lambda project: project.id)

    # -- receiving files --------------------------------------------------------------------

    def new_timestamp(self) -> str:
        """A prearchive timestamp (yyyyMMdd_HHmmssSSS), distinct from the previous one."""
        with self.lock:
            while True:
                now = datetime.now()
                stamp = now.strftime("%Y%m%d_%H%M%S") + f"{now.microsecond // 1000:03d}"
                if stamp != self._last_timestamp:
                    self._last_timestamp = stamp
                    return stamp
                time.sleep(0.001)

    def temp_path(self) -> Path:
        return self.tmp_dir / uuid.uuid4().hex

    def place(
        self,
        placement: Placement,
        header: DicomHeader,
        source: Path | bytes,
        entry_name: str,
        *,
        timestamp: str,
        options: UploadOptions,
        rename: bool = False,
        size: int | None = None,
    ) -> PrearcRow:
        """Move the received file ``source`` into its prearchive session; returns the row.

        ``source`` may also be the object's bytes (the importer's fast path): they are written
        to the file's place directly. ``size``, if given, is recorded as the object's size
        instead of the stored file's (the fast path may store only the header).

        Joins the row with the same (project, StudyInstanceUID, requested label) when it is
        receiving or settled (READY/ERROR/CONFLICT go back to RECEIVING), else creates a row in
        ``timestamp``. Raises StorageError if the label cannot be a folder name.
        """
        if not _is_safe_name(placement.label):
            raise StorageError(f"invalid session folder name {placement.label!r}")
        with self.lock:
            row = self._joinable_row(placement, header.study_uid)
            if row is None:
                row = self._create_row(placement, header, timestamp)
            elif row.status in _REOPENABLE:
                row.status = RECEIVING
            self._apply_options(row, options)
            scan_id = header.series_number or str(abs(_java_hash(header.series_uid)))
            scan = row.scans.get(scan_id)
            if scan is None:
                scan = Scan(scan_id, header.series_uid, header.series_description, header.modality)
                row.scans[scan_id] = scan
            name = entry_name if (_is_safe_name(entry_name) and not rename) else ""
            existing = scan.files.get(name) if name else None
            if not name or (
                existing is not None and existing.sop_instance_uid != header.sop_instance_uid
            ):
                name = _template_name(header)  # XNAT's getSafeFile: never replace another SOP
            target = self.row_dir(row) / "SCANS" / scan_id / "DICOM" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(source, bytes):
                stored = len(source)
                with target.open("wb") as out:
                    out.write(source)
            else:
                stored = source.stat().st_size
                os.replace(source, target)
            size = stored if size is None else size
            scan.files[name] = StoredFile(name, header.sop_instance_uid, header.sop_class_uid, size)
            row.lastmod = datetime.now()
            row.last_activity = time.monotonic()
            return row

    def _joinable_row(self, placement: Placement, study_uid: str) -> PrearcRow | None:
        project_label = placement.project or UNASSIGNED
        for row in self._rows.values():
            if (
                row.project_label == project_label
                and row.study_uid == study_uid
                and row.requested_name == placement.label
                and (row.status in _JOINABLE or row.status in _REOPENABLE)
            ):
                return row
        return None

    def _create_row(self, placement: Placement, header: DicomHeader, timestamp: str) -> PrearcRow:
        project_label = placement.project or UNASSIGNED
        folder = placement.label
        suffix = 0
        while (project_label, timestamp, folder) in self._rows or (
            self.prearchive_dir / project_label / timestamp / folder
        ).exists():
            suffix += 1
            folder = f"{placement.label}_{suffix}"
        now = datetime.now()
        row = PrearcRow(
            project=placement.project,
            timestamp=timestamp,
            folder=folder,
            requested_name=placement.label,
            subject=placement.subject,
            study_uid=header.study_uid,
            status=RECEIVING,
            uploaded=now,
            lastmod=now,
            last_activity=time.monotonic(),
            scan_date=_scan_date(header),
            modality=header.modality,
            auto_archive_hint=placement.auto_archive_hint,
        )
        self._rows[row.key] = row
        log.info("prearchive session %s created", row.uri)
        return row

    @staticmethod
    def _apply_options(row: PrearcRow, options: UploadOptions) -> None:
        if options.prevent_auto_commit is not None:
            row.prevent_auto_commit = options.prevent_auto_commit
        if options.prevent_anon is not None:
            row.prevent_anon = options.prevent_anon
        if options.source is not None:
            row.source = options.source
        if options.visit is not None:
            row.visit = options.visit
        if options.protocol is not None:
            row.protocol = options.protocol
        if options.timezone is not None:
            row.timezone = options.timezone

    def row_dir(self, row: PrearcRow) -> Path:
        return self.prearchive_dir / row.project_label / row.timestamp / row.folder

    # -- prearchive queries and actions -----------------------------------------------------

    def rows(
        self, projects: Iterable[str] | None = None, tag: str | None = None
    ) -> list[PrearcRow]:
        """Rows (copies) of the given project labels (all when None), optionally by UID."""
        wanted = None if projects is None else set(projects)
        with self.lock:
            found = [
                _copy_row(row)
                for row in self._rows.values()
                if (wanted is None or row.project_label in wanted)
                and (tag is None or row.study_uid == tag)
            ]
        return sorted(found, key=lambda row: row.key)

    def row(self, project: str, timestamp: str, folder: str) -> PrearcRow:
        """A copy of one row; raises UnknownSessionError."""
        with self.lock:
            return _copy_row(self._row(project, timestamp, folder))

    def _row(self, project: str, timestamp: str, folder: str) -> PrearcRow:
        row = self._rows.get((project, timestamp, folder))
        if row is None:
            raise UnknownSessionError(f"{project}/{timestamp}/{folder}")
        return row

    def build(self, project: str, timestamp: str, folder: str, options: UploadOptions) -> PrearcRow:
        """Build the session document: status READY, scans fixed as they are now."""
        with self.lock:
            row = self._row(project, timestamp, folder)
            self._apply_options(row, options)
            self._build(row)
            return _copy_row(row)

    @staticmethod
    def _build(row: PrearcRow) -> None:
        row.built_scans = _copy_scans(row.scans)
        row.status = READY
        row.lastmod = datetime.now()
        row.last_activity = time.monotonic()

    def should_auto_archive(self, row: PrearcRow) -> bool:
        """The session's own AA hint, else the project's prearchive code (4/5)."""
        if row.project is None:
            return False
        if row.auto_archive_hint is not None:
            return row.auto_archive_hint
        project = self._projects.get(row.project)
        return project is not None and project.auto_archives

    def overwrites_on_auto_archive(self, row: PrearcRow) -> bool:
        project = self._projects.get(row.project or "")
        return project is not None and project.prearchive_code == 5

    def delete(self, project: str, timestamp: str, folder: str) -> None:
        with self.lock:
            row = self._row(project, timestamp, folder)
            del self._rows[row.key]
            doomed = self._set_aside(self.row_dir(row))
        if doomed is not None:
            shutil.rmtree(doomed, ignore_errors=True)

    def set_status(self, project: str, timestamp: str, folder: str, status: str) -> None:
        with self.lock:
            self._row(project, timestamp, folder).status = status

    def _set_aside(self, directory: Path) -> Path | None:
        """Rename a directory into tmp (fast, under the lock) so it can be removed later."""
        if not directory.exists():
            return None
        doomed = self.temp_path()
        os.replace(directory, doomed)
        return doomed

    def auto_build(self, idle_seconds: float) -> None:
        """XNAT's SessionXMLRebuilder: build idle RECEIVING sessions, archive if auto-archive."""
        now = time.monotonic()
        with self.lock:
            due = [
                row
                for row in self._rows.values()
                if row.status == RECEIVING
                and not row.prevent_auto_commit
                and row.source != "uploader"
                and now - row.last_activity >= idle_seconds
            ]
            for row in due:
                self._build(row)
                log.info("auto-built idle prearchive session %s", row.uri)
                if self.should_auto_archive(row):
                    request = ArchiveRequest(override=self.overwrites_on_auto_archive(row))
                    try:
                        self._archive(row, request)
                    except ArchiveError as error:
                        row.status = CONFLICT if error.conflict else ERROR
                        log.info("auto-archive of %s failed: %s", row.uri, error.message)

    # -- archiving ------------------------------------------------------------------------

    def archive(self, project: str, timestamp: str, folder: str, request: ArchiveRequest) -> str:
        """Build and archive one prearchive session; returns ``/archive/projects/...``.

        Merges into an existing session with the same label (XNAT >= 1.7.6 commits with
        ``allowSessionMerge``). Raises ArchiveError (the row becomes CONFLICT or ERROR) or
        UnknownSessionError.
        """
        with self.lock:
            row = self._row(project, timestamp, folder)
            self._build(row)
            try:
                return self._archive(row, request)
            except ArchiveError as error:
                row.status = CONFLICT if error.conflict else ERROR
                raise

    def _archive(self, row: PrearcRow, request: ArchiveRequest) -> str:
        project = request.project or row.project
        if not project or project == UNASSIGNED or project not in self._projects:
            raise ArchiveError(NO_PROJECT, conflict=False)
        label = clean_for_archive(request.label or row.folder)
        subject_label = clean_for_archive(request.subject or row.subject)
        if not subject_label:
            raise ArchiveError(NO_SUBJECT, conflict=False)
        if not is_valid_label(label):
            raise ArchiveError(EXPERIMENT_LABEL_INVALID, conflict=False)
        if not is_valid_label(subject_label):
            raise ArchiveError(SUBJECT_LABEL_INVALID, conflict=False)
        subject = self._find_subject(project, subject_label)
        existing = self._find_experiment(project, label)
        xsi_type = _session_type(row.modality)
        moves = self._plan_merge(row, existing, subject, xsi_type, request)
        if subject is None:
            subject = Subject(
                f"XNAT_S{self._next_subject:05d}", project, subject_label, datetime.now()
            )
            self._next_subject += 1
            self._subjects[subject.id] = subject
        if existing is None:
            date, time_of_day = _date_and_time(row.scan_date)
            existing = Experiment(
                id=f"XNAT_E{self._next_experiment:05d}",
                project=project,
                subject_id=subject.id,
                label=label,
                uid=row.study_uid,
                modality=row.modality,
                xsi_type=xsi_type,
                date=date,
                time=time_of_day,
                insert_date=datetime.now(),
            )
            self._next_experiment += 1
            self._experiments[existing.id] = existing
        session_dir = self.experiment_dir(existing)
        for source_scan, target_id in moves:
            target = existing.scans.get(target_id)
            if target is None:
                target = Scan(
                    target_id,
                    source_scan.series_uid,
                    source_scan.series_description,
                    source_scan.modality,
                )
                existing.scans[target_id] = target
            target_dir = session_dir / "SCANS" / target_id / "DICOM"
            target_dir.mkdir(parents=True, exist_ok=True)
            source_dir = self.row_dir(row) / "SCANS" / source_scan.id / "DICOM"
            for name, stored in source_scan.files.items():
                os.replace(source_dir / name, target_dir / name)
                target.files[name] = stored
        if self.on_archive is not None:
            self.on_archive(self.row_dir(row), session_dir)
        del self._rows[row.key]
        doomed = self._set_aside(self.row_dir(row))
        if doomed is not None:
            shutil.rmtree(doomed, ignore_errors=True)
        uri = f"/archive/projects/{project}/subjects/{subject.label}/experiments/{label}"
        log.info("archived %s as %s", row.uri, uri)
        return uri

    def _plan_merge(
        self,
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

    def _find_subject(self, project: str, label: str) -> Subject | None:
        # XNAT matches an existing subject case-insensitively within the project.
        for subject in self._subjects.values():
            if subject.project == project and subject.label.lower() == label.lower():
                return subject
        return None

    def _find_experiment(self, project: str, label: str) -> Experiment | None:
        for experiment in self._experiments.values():
            if experiment.project == project and experiment.label == label:
                return experiment
        return None

    def experiment_dir(self, experiment: Experiment) -> Path:
        return self.archive_dir / experiment.project / "arc001" / experiment.label

    # -- archive queries --------------------------------------------------------------------

    def subjects(self, project: str) -> list[Subject]:
        with self.lock:
            found = [copy.copy(s) for s in self._subjects.values() if s.project == project]
        return sorted(found, key=lambda subject: subject.id)

    def subject(self, project: str, id_or_label: str) -> Subject | None:
        with self.lock:
            for subject in self._subjects.values():
                if subject.project == project and id_or_label in (subject.id, subject.label):
                    return copy.copy(subject)
        return None

    def subject_by_id(self, subject_id: str) -> Subject | None:
        with self.lock:
            found = self._subjects.get(subject_id)
            return copy.copy(found) if found is not None else None

    def experiments(self, project: str | None = None) -> list[Experiment]:
        with self.lock:
            found = [
                _copy_experiment(experiment)
                for experiment in self._experiments.values()
                if project is None or experiment.project == project
            ]
        return sorted(found, key=lambda experiment: experiment.id)

    def experiment(self, id_or_label: str, project: str | None = None) -> Experiment | None:
        """By accession ID, or by exact label within ``project``."""
        with self.lock:
            found = self._experiments.get(id_or_label)
            if found is not None and (project is None or found.project == project):
                return _copy_experiment(found)
            if project is not None:
                labelled = self._find_experiment(project, id_or_label)
                if labelled is not None:
                    return _copy_experiment(labelled)
        return None

    def file_digest(self, experiment: Experiment, scan_id: str, name: str) -> str:
        path = self.experiment_dir(experiment) / "SCANS" / scan_id / "DICOM" / name
        digest = hashlib.md5(usedforsecurity=False)
        with path.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()

    # -- snapshots for tests ----------------------------------------------------------------

    def prearchive_snapshot(self) -> list[PrearchiveSession]:
        return [
            PrearchiveSession(
                project=row.project_label,
                timestamp=row.timestamp,
                folder=row.folder,
                name=row.folder,
                subject=row.subject,
                tag=row.study_uid,
                status=row.status,
                uri=row.uri,
                prevent_auto_commit=row.prevent_auto_commit,
                source=row.source,
                scans=_file_names(row.scans),
            )
            for row in self.rows()
        ]

    def archive_snapshot(self) -> list[ArchivedSession]:
        with self.lock:
            subjects = {subject.id: subject.label for subject in self._subjects.values()}
            return [
                ArchivedSession(
                    project=experiment.project,
                    subject=subjects.get(experiment.subject_id, ""),
                    label=experiment.label,
                    id=experiment.id,
                    uid=experiment.uid,
                    scans=_file_names(experiment.scans),
                )
                for experiment in self.experiments()
            ]


# Copies handed out of the lock. StoredFile is frozen and everything else in a row or an
# experiment is immutable except the scan and file dicts, so copying those is a full copy, and
# far cheaper than deepcopy for sessions of thousands of files (the benchmark's 16,000).


def _copy_scans(scans: dict[str, Scan]) -> dict[str, Scan]:
    return {key: replace(scan, files=dict(scan.files)) for key, scan in scans.items()}


def _copy_row(row: PrearcRow) -> PrearcRow:
    built = None if row.built_scans is None else _copy_scans(row.built_scans)
    return replace(row, scans=_copy_scans(row.scans), built_scans=built)


def _copy_experiment(experiment: Experiment) -> Experiment:
    return replace(experiment, scans=_copy_scans(experiment.scans))


def _file_names(scans: dict[str, Scan]) -> dict[str, tuple[str, ...]]:
    return {scan_id: tuple(sorted(scan.files)) for scan_id, scan in sorted(scans.items())}


def _is_safe_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\x00" not in name


def _java_hash(text: str) -> int:
    """Java's ``String.hashCode`` (XNAT names scan folders and files with it)."""
    value = 0
    for char in text:
        value = (31 * value + ord(char)) & 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _template_name(header: DicomHeader) -> str:
    """XNAT's default ``${StudyInstanceUID}-${SeriesNumber}-${InstanceNumber}-${Hash...}``."""
    sop_hash = _java_hash(header.sop_class_uid + header.sop_instance_uid) & 0xFFFFFFFF
    return f"{header.study_uid}-{header.series_number}-{header.instance_number}-{sop_hash:x}.dcm"


def _scan_date(header: DicomHeader) -> str:
    """StudyDate/StudyTime as ``java.sql.Timestamp.toString()`` (e.g. 2023-12-01 08:52:11.0)."""
    date = header.study_date
    if len(date) != 8 or not date.isdigit():
        return ""
    clock = (header.study_time.split(".")[0] + "000000")[:6]
    if not clock.isdigit():
        clock = "000000"
    return f"{date[:4]}-{date[4:6]}-{date[6:]} {clock[:2]}:{clock[2:4]}:{clock[4:]}.0"


def _date_and_time(scan_date: str) -> tuple[str, str]:
    if not scan_date:
        return "", ""
    day, clock = scan_date.split(" ")
    return day, clock.split(".")[0]


def _session_type(modality: str) -> str:
    prefix = _SESSION_TYPES.get(modality.upper())
    return f"xnat:{prefix}SessionData" if prefix else "xnat:otherDicomSessionData"


def scan_type(modality: str) -> str:
    prefix = _SESSION_TYPES.get(modality.upper())
    return f"xnat:{prefix}ScanData" if prefix else "xnat:otherDicomScanData"
