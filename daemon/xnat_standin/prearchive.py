"""The prearchive: one row per session as its files arrive (XNAT's prearchive table), and the
folders they are filed in.

Disk layout (as XNAT's, xnat-api.md §3.5 step 6):
``<root>/prearchive/<project|Unassigned>/<yyyyMMdd_HHmmssSSS>/<folder>/SCANS/<scan>/DICOM/<file>``.
Files arrive already written to ``<root>/tmp`` and are renamed into place under the lock.
Archiving a row takes both sides, so it is the Store's (store.py).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from .dicomheader import DicomHeader
from .records import PrearchiveSession
from .scans import Scan, StoredFile, copy_scans, file_names

log = logging.getLogger("xnat_standin")

UNASSIGNED = "Unassigned"
RECEIVING = "RECEIVING"
RECEIVING_INTERRUPT = "RECEIVING_INTERRUPT"
READY = "READY"
CONFLICT = "CONFLICT"
ERROR = "ERROR"
_JOINABLE = frozenset({RECEIVING, RECEIVING_INTERRUPT})
_REOPENABLE = frozenset({READY, ERROR, CONFLICT})  # set back to RECEIVING by a new file


class UnknownSessionError(Exception):
    """No such prearchive session (404)."""


class StorageError(Exception):
    """A file could not be stored (XNAT reports these per object as a 400)."""


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


class Prearchive:
    """The prearchive's rows and folders. Every public method takes the one emulator lock, so
    each is atomic for concurrent requests; ``get``, ``detach`` and ``idle`` are for the Store,
    which holds the lock already."""

    def __init__(
        self, directory: Path, lock: threading.RLock, temp_path: Callable[[], Path]
    ) -> None:
        self.directory = directory
        self.lock = lock
        self._temp_path = temp_path  # a free name in <root>/tmp, for folders set aside
        self._rows: dict[tuple[str, str, str], PrearcRow] = {}
        self._last_timestamp = ""

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
            _apply_options(row, options)
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
            self.directory / project_label / timestamp / folder
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

    def row_dir(self, row: PrearcRow) -> Path:
        return self.directory / row.project_label / row.timestamp / row.folder

    # -- queries and actions ----------------------------------------------------------------

    def rows(
        self, projects: Iterable[str] | None = None, tag: str | None = None
    ) -> list[PrearcRow]:
        """Rows (copies) of the given project labels (all when None), optionally by UID."""
        wanted = None if projects is None else set(projects)
        with self.lock:
            found = [
                copy_row(row)
                for row in self._rows.values()
                if (wanted is None or row.project_label in wanted)
                and (tag is None or row.study_uid == tag)
            ]
        return sorted(found, key=lambda row: row.key)

    def row(self, project: str, timestamp: str, folder: str) -> PrearcRow:
        """A copy of one row; raises UnknownSessionError."""
        with self.lock:
            return copy_row(self.get(project, timestamp, folder))

    def get(self, project: str, timestamp: str, folder: str) -> PrearcRow:
        """The row itself (the caller holds the lock); raises UnknownSessionError."""
        row = self._rows.get((project, timestamp, folder))
        if row is None:
            raise UnknownSessionError(f"{project}/{timestamp}/{folder}")
        return row

    def build(self, project: str, timestamp: str, folder: str, options: UploadOptions) -> PrearcRow:
        """Build the session document: status READY, scans fixed as they are now."""
        with self.lock:
            row = self.get(project, timestamp, folder)
            _apply_options(row, options)
            mark_built(row)
            return copy_row(row)

    def delete(self, project: str, timestamp: str, folder: str) -> None:
        with self.lock:
            doomed = self.detach(self.get(project, timestamp, folder))
        if doomed is not None:
            shutil.rmtree(doomed, ignore_errors=True)

    def set_status(self, project: str, timestamp: str, folder: str, status: str) -> None:
        with self.lock:
            self.get(project, timestamp, folder).status = status

    def detach(self, row: PrearcRow) -> Path | None:
        """Forget the row and rename its folder into tmp (fast, under the lock); returns where
        it went, for the caller to remove."""
        del self._rows[row.key]
        directory = self.row_dir(row)
        if not directory.exists():
            return None
        doomed = self._temp_path()
        os.replace(directory, doomed)
        return doomed

    def idle(self, idle_seconds: float, now: float) -> list[PrearcRow]:
        """The rows XNAT's SessionXMLRebuilder builds at ``now`` (``time.monotonic()``):
        RECEIVING, idle ``idle_seconds``, neither kept back nor an uploader's."""
        return [
            row
            for row in self._rows.values()
            if row.status == RECEIVING
            and not row.prevent_auto_commit
            and row.source != "uploader"
            and now - row.last_activity >= idle_seconds
        ]

    def snapshot(self) -> list[PrearchiveSession]:
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
                scans=file_names(row.scans),
            )
            for row in self.rows()
        ]


def mark_built(row: PrearcRow) -> None:
    """The row's session document is built: READY, its scans fixed as they are now."""
    row.built_scans = copy_scans(row.scans)
    row.status = READY
    row.lastmod = datetime.now()
    row.last_activity = time.monotonic()


def copy_row(row: PrearcRow) -> PrearcRow:
    built = None if row.built_scans is None else copy_scans(row.built_scans)
    return replace(row, scans=copy_scans(row.scans), built_scans=built)


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
