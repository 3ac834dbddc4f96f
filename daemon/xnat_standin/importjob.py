"""One import request (``POST /data/services/import``, the inbox's, a DICOM receiver's): its
parameters, ``dest`` among them, the sessions it filled, and the two ways it fails."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .dicomheader import DicomHeader
from .filterconfig import SeriesFilters
from .prearchive import Placement, UploadOptions
from .store import Store
from .versions import XnatVersion

_PREARCHIVE_DEST = re.compile(r"/prearchive(?:/projects/([^/]+)(?:/([^/]+)(?:/([^/]+))?)?)?/?")
_ARCHIVE_DEST = re.compile(
    r"/archive(?:/projects/([^/]+)(?:/subjects/([^/]+)(?:/experiments/([^/]+))?"
    r"|/experiments/([^/]+))?|/experiments/([^/]+)|/subjects/([^/]+))?/?"
)


class ImportRefusedError(Exception):
    """The request fails with this status and message (an HTML status page); ``uncaught``:
    the Java exception escapes the Importer, so ``format=html`` does not turn it into a page."""

    def __init__(self, status: int, message: str, *, uncaught: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.uncaught = uncaught


class EntryError(Exception):
    """One object could not be imported; ``decode`` marks a DICOM decoding failure."""

    def __init__(self, message: str, *, decode: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.decode = decode


@dataclass(frozen=True, slots=True)
class Destination:
    """A parsed ``dest`` parameter."""

    archive: bool
    project: str | None = None
    subject: str | None = None
    experiment: str | None = None
    experiment_id: str | None = None


@dataclass
class ImportJob:
    """One import request: its parameters, the upload's file name, and what it produced."""

    store: Store
    version: XnatVersion
    params: dict[str, str]
    file_name: str
    fast: bool = False  # benchmark-only shortcut for DICOM-zip entries (fastpath.py)
    headers_only: bool = False  # with fast: store each object only up to its header
    filters: SeriesFilters | None = None  # the series import filters (filterconfig.py)
    # The identifier, when not route(): a DICOM receiver's routing expressions (scprouting).
    router: Callable[[ImportJob, DicomHeader, Path], Placement] | None = None
    uris: list[str] = field(default_factory=list)
    rows: list[tuple[str, str, str]] = field(default_factory=list)

    def param(self, name: str) -> str | None:
        value = self.params.get(name)
        return value if value else None

    def flag(self, name: str) -> bool:
        """Java ``Boolean.parseBoolean``: only "true" (any case) is true."""
        return (self.params.get(name) or "").lower() == "true"

    def optional_flag(self, name: str) -> bool | None:
        return None if self.params.get(name) is None else self.flag(name)


def parse_dest(value: str) -> Destination:
    """Parse a ``dest`` URI (with or without /data); raises ValueError when malformed."""
    path = value[len("/data") :] if value.startswith("/data/") else value
    if not path.startswith("/"):
        path = "/" + path
    match = _PREARCHIVE_DEST.fullmatch(path)
    if match is not None:
        return Destination(archive=False, project=match.group(1))
    match = _ARCHIVE_DEST.fullmatch(path)
    if match is None:
        raise ValueError(value)
    project, subject, experiment, project_experiment, experiment_id, lone_subject = match.groups()
    return Destination(
        archive=True,
        project=project,
        subject=subject or lone_subject,
        experiment=experiment,
        experiment_id=project_experiment or experiment_id,
    )


def upload_options(job: ImportJob) -> UploadOptions:
    """The session settings a request's parameters give (also the inbox's rebuild)."""
    return UploadOptions(
        prevent_auto_commit=job.optional_flag("prevent_auto_commit"),
        source=job.params.get("SOURCE"),
        visit=job.params.get("VISIT"),
        protocol=job.params.get("SUBTYPE"),
        timezone=job.params.get("TIMEZONE"),
        prevent_anon=job.optional_flag("prevent_anon"),
    )
