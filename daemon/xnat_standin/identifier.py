"""XNAT's default DICOM object identifier: the project, subject and session label an object
goes to, from the request's parameters and the object's own attributes (xnat-api.md §5.4). A
DICOM receiver's routing expressions come first (``scprouting``)."""

from __future__ import annotations

from .dicomheader import DicomHeader
from .importjob import ImportJob
from .labels import contained_value, to_label_chars
from .prearchive import Placement


def route(job: ImportJob, header: DicomHeader) -> Placement:
    """Project, subject and session label for one object (xnat-api.md §5.4)."""
    store = job.store
    project = None
    requested = job.param("PROJECT_ID")
    if requested is not None:
        found = store.project(requested)
        project = found.id if found is not None else None
    if project is None:
        candidates = [contained_value(text, "Project") for text in header.comments]
        candidates += [header.study_description, header.accession_number]
        for candidate in candidates:
            found = store.project(candidate) if candidate else None
            if found is not None:
                project = found.id
                break
    subject = job.param("SUBJECT_ID") or _from_comments(header, "Subject")
    if subject is None:
        subject = to_label_chars(header.patient_name)
    label = job.param("EXPT_LABEL") or _from_comments(header, "Session")
    if label is None:
        label = to_label_chars(header.patient_id) or "dicom_upload"
    hint = (_from_comments(header, "AA") or "").lower()
    auto_archive = True if hint in ("true", "t") else False if hint in ("false", "f") else None
    return Placement(project, subject, label, auto_archive)


def _from_comments(header: DicomHeader, key: str) -> str | None:
    for text in header.comments:
        value = contained_value(text, key)
        if value:
            return value
    return None
