"""The archive: subjects and experiments (archived sessions) and their folders.

Disk layout (as XNAT's): ``<root>/archive/<project>/arc001/<label>/SCANS/<scan>/DICOM/<file>``.
Sessions come in only from the prearchive, by the Store's commit (store.py).
"""

from __future__ import annotations

import copy
import hashlib
import os
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from .records import ArchivedSession
from .scans import Scan, copy_scans, file_names


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


class Archive:
    """Archived subjects and experiments. The queries take the one emulator lock and hand out
    copies; ``find_*``, ``add_*`` and ``take_scans`` are the Store's commit, which holds it."""

    def __init__(self, directory: Path, lock: threading.RLock) -> None:
        self.directory = directory
        self.lock = lock
        self._subjects: dict[str, Subject] = {}
        self._experiments: dict[str, Experiment] = {}
        self._next_subject = 1
        self._next_experiment = 1

    # -- the commit's side ------------------------------------------------------------------

    def find_subject(self, project: str, label: str) -> Subject | None:
        # XNAT matches an existing subject case-insensitively within the project.
        for subject in self._subjects.values():
            if subject.project == project and subject.label.lower() == label.lower():
                return subject
        return None

    def find_experiment(self, project: str, label: str) -> Experiment | None:
        for experiment in self._experiments.values():
            if experiment.project == project and experiment.label == label:
                return experiment
        return None

    def add_subject(self, project: str, label: str) -> Subject:
        subject = Subject(f"XNAT_S{self._next_subject:05d}", project, label, datetime.now())
        self._next_subject += 1
        self._subjects[subject.id] = subject
        return subject

    def add_experiment(
        self,
        project: str,
        subject: Subject,
        label: str,
        *,
        uid: str,
        modality: str,
        xsi_type: str,
        scan_date: str,
    ) -> Experiment:
        """A new, empty experiment; ``scan_date`` as the prearchive writes it."""
        date, time_of_day = _date_and_time(scan_date)
        experiment = Experiment(
            id=f"XNAT_E{self._next_experiment:05d}",
            project=project,
            subject_id=subject.id,
            label=label,
            uid=uid,
            modality=modality,
            xsi_type=xsi_type,
            date=date,
            time=time_of_day,
            insert_date=datetime.now(),
        )
        self._next_experiment += 1
        self._experiments[experiment.id] = experiment
        return experiment

    def take_scans(
        self, experiment: Experiment, moves: list[tuple[Scan, str]], session_dir: Path
    ) -> None:
        """Move each (scan, target scan id)'s files out of the prearchive ``session_dir`` into
        the experiment, creating target scans that are missing."""
        archive_dir = self.experiment_dir(experiment)
        for source_scan, target_id in moves:
            target = experiment.scans.get(target_id)
            if target is None:
                target = Scan(
                    target_id,
                    source_scan.series_uid,
                    source_scan.series_description,
                    source_scan.modality,
                )
                experiment.scans[target_id] = target
            target_dir = archive_dir / "SCANS" / target_id / "DICOM"
            target_dir.mkdir(parents=True, exist_ok=True)
            source_dir = session_dir / "SCANS" / source_scan.id / "DICOM"
            for name, stored in source_scan.files.items():
                os.replace(source_dir / name, target_dir / name)
                target.files[name] = stored

    def experiment_dir(self, experiment: Experiment) -> Path:
        return self.directory / experiment.project / "arc001" / experiment.label

    # -- queries ----------------------------------------------------------------------------

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
                labelled = self.find_experiment(project, id_or_label)
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

    def snapshot(self) -> list[ArchivedSession]:
        with self.lock:
            subjects = {subject.id: subject.label for subject in self._subjects.values()}
            return [
                ArchivedSession(
                    project=experiment.project,
                    subject=subjects.get(experiment.subject_id, ""),
                    label=experiment.label,
                    id=experiment.id,
                    uid=experiment.uid,
                    scans=file_names(experiment.scans),
                )
                for experiment in self.experiments()
            ]


def _copy_experiment(experiment: Experiment) -> Experiment:
    return replace(experiment, scans=copy_scans(experiment.scans))


def _date_and_time(scan_date: str) -> tuple[str, str]:
    """The experiment's date and time from a ``java.sql.Timestamp`` text (or "")."""
    if not scan_date:
        return "", ""
    day, clock = scan_date.split(" ")
    return day, clock.split(".")[0]
