"""The stand-in's data: projects, the prearchive (prearchive.py) and the archive (archive.py),
and what takes both: archiving a prearchive session (XNAT's commit) and the idle builder.

Everything shares the one emulator lock, so each method is atomic for concurrent requests.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .archive import Archive
from .archiving import NO_PROJECT, ArchiveError, ArchiveRequest, archive_labels, plan_merge
from .prearchive import CONFLICT, ERROR, UNASSIGNED, Prearchive, PrearcRow, mark_built
from .scans import session_type

log = logging.getLogger("xnat_standin")

AUTO_ARCHIVE_CODES = {0: "Manual", 4: "AutoArchive", 5: "AutoArchiveOverwrite"}


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


@dataclass(frozen=True, slots=True)
class Project:
    id: str
    prearchive_code: int = 0
    aliases: tuple[str, ...] = ()
    name: str = ""

    @property
    def auto_archives(self) -> bool:
        return self.prearchive_code in (4, 5)


class Store:
    """Projects, ``prearchive`` and ``archive``, guarded by the emulator lock."""

    def __init__(self, root: Path, lock: threading.RLock) -> None:
        self.root = root
        self.lock = lock
        self.tmp_dir = root / "tmp"
        self.prearchive = Prearchive(root / "prearchive", lock, self.temp_path)
        self.archive = Archive(root / "archive", lock)
        for directory in (self.prearchive.directory, self.archive.directory, self.tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._projects: dict[str, Project] = {}
        # Called with (prearchive session folder, archive session folder) as a session is
        # archived, before the prearchive folder goes: session resources move then (catalog.py).
        self.on_archive: Callable[[Path, Path], None] | None = None

    def temp_path(self) -> Path:
        return self.tmp_dir / uuid.uuid4().hex

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

    # -- sessions as tests look for them ---------------------------------------------------

    def rows(
        self, projects: Iterable[str] | None = None, tag: str | None = None
    ) -> list[PrearcRow]:
        """The prearchive's rows: tests ask the Store (``emulator.store.rows()``)."""
        return self.prearchive.rows(projects, tag)

    def row_dir(self, row: PrearcRow) -> Path:
        """The prearchive's, as ``rows`` is."""
        return self.prearchive.row_dir(row)

    def session_dir(self, label: str) -> tuple[Path, bool]:
        """(folder, archived?) of the archived session labelled ``label``, else of the
        prearchive session in folder ``label``; raises KeyError."""
        for experiment in self.archive.experiments():
            if experiment.label == label:
                return self.archive.experiment_dir(experiment), True
        for row in self.prearchive.rows():
            if row.folder == label:
                return self.prearchive.row_dir(row), False
        raise KeyError(f"no archived or prearchive session labelled {label!r}")

    # -- building and archiving -------------------------------------------------------------

    def commit(self, project: str, timestamp: str, folder: str, request: ArchiveRequest) -> str:
        """Build and archive one prearchive session; returns ``/archive/projects/...``.

        Merges into an existing session with the same label (XNAT >= 1.7.6 commits with
        ``allowSessionMerge``). Raises ArchiveError (the row becomes CONFLICT or ERROR) or
        UnknownSessionError.
        """
        with self.lock:
            row = self.prearchive.get(project, timestamp, folder)
            mark_built(row)
            try:
                return self._commit(row, request)
            except ArchiveError as error:
                row.status = CONFLICT if error.conflict else ERROR
                raise

    def auto_build(self, idle_seconds: float) -> None:
        """XNAT's SessionXMLRebuilder: build idle RECEIVING sessions, archive if auto-archive."""
        now = time.monotonic()
        with self.lock:
            for row in self.prearchive.idle(idle_seconds, now):
                mark_built(row)
                log.info("auto-built idle prearchive session %s", row.uri)
                if self.should_auto_archive(row):
                    request = ArchiveRequest(override=self.overwrites_on_auto_archive(row))
                    try:
                        self._commit(row, request)
                    except ArchiveError as error:
                        row.status = CONFLICT if error.conflict else ERROR
                        log.info("auto-archive of %s failed: %s", row.uri, error.message)

    def _commit(self, row: PrearcRow, request: ArchiveRequest) -> str:
        project = request.project or row.project
        if not project or project == UNASSIGNED or project not in self._projects:
            raise ArchiveError(NO_PROJECT, conflict=False)
        label, subject_label = archive_labels(row, request)
        archive = self.archive
        subject = archive.find_subject(project, subject_label)
        existing = archive.find_experiment(project, label)
        xsi_type = session_type(row.modality)
        moves = plan_merge(row, existing, subject, xsi_type, request)
        if subject is None:
            subject = archive.add_subject(project, subject_label)
        if existing is None:
            existing = archive.add_experiment(
                project,
                subject,
                label,
                uid=row.study_uid,
                modality=row.modality,
                xsi_type=xsi_type,
                scan_date=row.scan_date,
            )
        row_dir = self.prearchive.row_dir(row)
        archive.take_scans(existing, moves, row_dir)
        if self.on_archive is not None:
            self.on_archive(row_dir, archive.experiment_dir(existing))
        doomed = self.prearchive.detach(row)
        if doomed is not None:
            shutil.rmtree(doomed, ignore_errors=True)
        uri = f"/archive/projects/{project}/subjects/{subject.label}/experiments/{label}"
        log.info("archived %s as %s", row.uri, uri)
        return uri
