"""The import handlers behind ``POST /data/services/import`` (xnat-api.md §3.3-§3.5, §4, §5).

``DICOM-zip`` reads the upload as it streams in (a zip with the reader in ``zipreader``, or a
tar/tgz on >= 1.8.3), writes every entry to disk, parses its header and files it into the
prearchive at once, so a failure or a dropped connection leaves the entries before it in place.
``gradual-DICOM`` takes one DICOM object. ``SI`` spools the whole upload first, skips what it
cannot parse and builds at once (a sketch of XNAT's external PrearcImporter). With
``Emulator(fast=True)`` (benchmarks only) DICOM-zip entries take the shortcut in ``fastpath``.
In every handler each object passes the series import filters (``filterconfig``) or is
dropped, silently. The ``inbox`` handler is ``inbox``; its worker files each object through
``import_stored_file``, the same per-object path.
"""

from __future__ import annotations

import logging
import re
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .dicomheader import DicomHeader, NotDicomError, read_header
from .fastpath import scan
from .filterconfig import FilterGate, SeriesFilters
from .labels import contained_value, to_label_chars
from .seriesfilter import JavaError
from .store import (
    ArchiveError,
    ArchiveRequest,
    Placement,
    PrearcRow,
    StorageError,
    Store,
    UploadOptions,
)
from .versions import XnatVersion
from .zipreader import EntryDataError, Readable, ZipReadError, ZipStreamReader

log = logging.getLogger("xnat_standin")

CHUNK = 1 << 20
FAST_ENTRY_LIMIT = 64 << 20  # fast path: larger entries are spooled to disk as usual
HANDLERS = ("SI", "gradual-DICOM", "DICOM-zip", "inbox", "XAR")
IMPLEMENTED_HANDLERS = ("SI", "gradual-DICOM", "DICOM-zip", "inbox")

# org.nrg.xft.utils.fileExtraction.Format: case-sensitive regexes on the upload's file name.
_FORMATS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("ZIP", re.compile(r".*\.(zip|zar)")),
    ("TGZ", re.compile(r".*\.(tgz|tar\.gz)")),
    ("TAR", re.compile(r".*\.(tar|xar)")),
    ("GZ", re.compile(r".*\.gz")),
)
_PREARCHIVE_DEST = re.compile(r"/prearchive(?:/projects/([^/]+)(?:/([^/]+)(?:/([^/]+))?)?)?/?")
_ARCHIVE_DEST = re.compile(
    r"/archive(?:/projects/([^/]+)(?:/subjects/([^/]+)(?:/experiments/([^/]+))?"
    r"|/experiments/([^/]+))?|/experiments/([^/]+)|/subjects/([^/]+))?/?"
)
_ARCHIVE_READ_ERRORS = (ZipReadError, tarfile.TarError, EOFError, zlib.error)


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


def format_of(file_name: str) -> str:
    """The archive format XNAT >= 1.8.3 infers from a file name: ZIP, TGZ, TAR, GZ or UNKNOWN."""
    for name, pattern in _FORMATS:
        if pattern.fullmatch(file_name):
            return name
    return "UNKNOWN"


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


def run_dicom_zip(job: ImportJob, source: Readable) -> list[str]:
    """DICOM-zip: stream the archive entry by entry into the prearchive; returns data URIs."""
    commit, auto_archive = _prepare_zip_params(job)
    archive_format = "ZIP" if job.version.zip_only else format_of(job.file_name)
    if archive_format not in ("ZIP", "TAR", "TGZ"):
        raise ImportRefusedError(400, f"Unsupported format {archive_format}")
    ignore_unparsable = job.version.has_ignore_unparsable and job.flag("Ignore-Unparsable")
    timestamp = job.store.new_timestamp()
    options = upload_options(job)
    last_error: EntryError | None = None
    entries = _archive_entries(source, archive_format, nested=job.version.zip_importer_commits)
    while True:
        try:
            item = next(entries)
        except StopIteration:
            break
        except _ARCHIVE_READ_ERRORS as error:
            message = "MALFORMED" if str(error) == "MALFORMED" else job.version.zip_read_failure
            raise ImportRefusedError(400, message) from error
        name, reader = item
        try:
            if job.fast:
                _import_object_fast(job, name, reader, timestamp, options)
            else:
                _import_object(job, name, reader, timestamp, options)
        except EntryError as failure:
            skippable = failure.decode or job.version.ignores_any_entry_error
            if not (ignore_unparsable and skippable):
                raise ImportRefusedError(400, failure.message) from None
            last_error = failure
    if not job.rows and last_error is not None:
        raise ImportRefusedError(400, last_error.message)
    if commit:
        _commit_rows(job, auto_archive)
    return job.uris


def run_gradual_dicom(job: ImportJob, source: Readable) -> list[str]:
    """gradual-DICOM: the body is one DICOM object."""
    try:
        _import_object(job, job.file_name, source, job.store.new_timestamp(), upload_options(job))
    except EntryError as failure:
        raise ImportRefusedError(400, failure.message) from None
    return job.uris


def run_session_importer(job: ImportJob, source: Readable) -> list[str]:
    """SI: spool the upload, import what parses, build, archive when asked (or auto-archive)."""
    _map_session_params(job)
    dest = _dest_of(job)
    if dest is not None and dest.project and not job.param("PROJECT_ID"):
        job.params["PROJECT_ID"] = dest.project
    spooled = job.store.temp_path()
    try:
        copy_stream(source, spooled)
        archive_format = format_of(job.file_name)
        archive_format = archive_format if archive_format in ("TAR", "TGZ") else "ZIP"
        timestamp = job.store.new_timestamp()
        options = upload_options(job)
        with spooled.open("rb") as stream:
            try:
                for name, reader in _archive_entries(stream, archive_format, nested=False):
                    try:
                        _import_object(job, name, reader, timestamp, options)
                    except EntryError:
                        continue  # PrearcImporter leaves out what it cannot parse
            except _ARCHIVE_READ_ERRORS as error:
                raise ImportRefusedError(400, job.version.zip_read_failure) from error
    finally:
        spooled.unlink(missing_ok=True)
    if not job.rows:
        raise ImportRefusedError(
            400, "Upload did not include parsable files for session generation."
        )
    if dest is not None and not dest.archive:
        for key in job.rows:
            job.store.build(*key, options)
        return job.uris
    if len(job.rows) > 1:
        raise ImportRefusedError(400, "Upload included files for multiple imaging sessions.")
    key = job.rows[0]
    row = job.store.build(*key, options)
    wants_archive = (dest is not None and dest.archive) or job.flag("AA")
    if not (wants_archive or job.store.should_auto_archive(row)):
        return job.uris
    try:
        uri = job.store.archive(*key, _archive_request(job))
    except ArchiveError as error:
        raise ImportRefusedError(409, error.message) from None
    return ["/data" + uri]


def _prepare_zip_params(job: ImportJob) -> tuple[bool, bool]:
    """Apply dest and the >= 1.8.10 aliases; returns (commit after import, archive)."""
    dest = _dest_of(job)
    if dest is not None and dest.project and not job.param("PROJECT_ID"):
        job.params["PROJECT_ID"] = dest.project  # every version uses dest's project part
    if not job.version.zip_importer_commits:
        return False, False
    explicit_commit = job.params.get("action") == "commit"
    if explicit_commit and "Ignore-Unparsable" not in job.params:
        job.params["Ignore-Unparsable"] = "true"
    _map_session_params(job)
    auto_archive = job.flag("AA") or job.flag("auto-archive")
    if dest is not None:
        if dest.experiment_id:
            experiment = job.store.experiment(dest.experiment_id)
            if experiment is not None:
                job.params.setdefault("EXPT_LABEL", experiment.label)
                job.params.setdefault("PROJECT_ID", experiment.project)
            else:
                job.params.setdefault("EXPT_LABEL", dest.experiment_id)
        if dest.subject and not job.param("SUBJECT_ID"):
            job.params["SUBJECT_ID"] = dest.subject
        if dest.experiment and not job.param("EXPT_LABEL"):
            job.params["EXPT_LABEL"] = dest.experiment
        auto_archive = auto_archive or dest.archive
    return explicit_commit or dest is not None, auto_archive


def _map_session_params(job: ImportJob) -> None:
    aliases = (("project", "PROJECT_ID"), ("subject", "SUBJECT_ID"), ("session", "EXPT_LABEL"))
    for alias, name in aliases:
        if job.param(alias) and not job.param(name):
            job.params[name] = job.params[alias]


def _dest_of(job: ImportJob) -> Destination | None:
    value = job.param("dest")
    if value is None:
        return None
    try:
        return parse_dest(value)
    except ValueError:
        raise ImportRefusedError(400, "Parameter dest format error") from None


def _commit_rows(job: ImportJob, auto_archive: bool) -> None:
    """>= 1.8.10 ``action=commit``: build each session; archive it when AA is true."""
    options = upload_options(job)
    uris: list[str] = []
    for key in job.rows:
        row = job.store.build(*key, options)
        if not auto_archive:
            uris.append("/data" + row.uri)
            continue
        try:
            uris.append("/data" + job.store.archive(*key, _archive_request(job)))
        except ArchiveError:
            raise ImportRefusedError(400, "unable to archive for the Prearchive session") from None
    job.uris[:] = list(dict.fromkeys(uris))


def _archive_request(job: ImportJob) -> ArchiveRequest:
    overwrite = job.param("overwrite")
    return ArchiveRequest(
        allow_merge=overwrite is not None,
        override=overwrite in ("delete", "override"),
        overwrite_files=job.flag("overwrite_files"),
    )


def import_stored_file(
    job: ImportJob, path: Path, timestamp: str, name: str | None = None
) -> PrearcRow | None:
    """Hook for the inbox worker (inboxworker.py) and the DICOM receiver (dicomscp.py): one
    file already on the server through the per-object importer, as ``GradualDicomImporter``
    over a ``StoredFile``, named ``name`` (default: its base name). None: a series import
    filter dropped it. Raises EntryError (the object failed), OSError (the file cannot be read)
    or ImportRefusedError (the site filter cannot be built)."""
    with path.open("rb") as stream:
        name = path.name if name is None else name
        return _import_object(job, name, stream, timestamp, upload_options(job))


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


class _EntryStream:
    """The current entry of a zip as a readable stream (for archives inside archives)."""

    def __init__(self, reader: ZipStreamReader) -> None:
        self._reader = reader

    def read(self, size: int = CHUNK, /) -> bytes:
        return self._reader.read(size)


def _archive_entries(
    source: Readable, archive_format: str, *, nested: bool
) -> Iterator[tuple[str, Readable]]:
    """(entry base name, entry data) for each file of the archive, in stream order.

    Raises the reader's errors from the iteration itself; errors while reading one entry's data
    come from that entry's ``read``.
    """
    if archive_format == "ZIP":
        reader = ZipStreamReader(source)
        while (entry := reader.next_entry()) is not None:
            if entry.is_directory:
                continue
            inner = format_of(entry.base_name) if nested else "UNKNOWN"
            if inner in ("ZIP", "TAR", "TGZ"):
                yield from _archive_entries(_EntryStream(reader), inner, nested=nested)
            else:
                yield entry.base_name, _EntryStream(reader)
        return
    mode = "r|gz" if archive_format == "TGZ" else "r|"
    with tarfile.open(fileobj=source, mode=mode) as tar:  # type: ignore[call-overload]
        for member in tar:
            if not member.isfile():
                continue
            data = tar.extractfile(member)
            if data is None:
                continue
            base_name = member.name.rsplit("/", 1)[-1]
            inner = format_of(base_name) if nested else "UNKNOWN"
            if inner in ("ZIP", "TAR", "TGZ"):
                yield from _archive_entries(data, inner, nested=nested)
            else:
                yield base_name, data


def _import_object(
    job: ImportJob, name: str, reader: Readable, timestamp: str, options: UploadOptions
) -> PrearcRow | None:
    """Write one object to disk, parse it, file it into the prearchive (GradualDicomImporter).
    None: a series import filter dropped it, silently."""
    gate = _filter_gate(job)
    temp = job.store.temp_path()
    try:
        try:
            copy_stream(reader, temp)
        except (EntryDataError, tarfile.TarError, EOFError, zlib.error) as error:
            # Java throws these while the importer reads the entry: reported per object.
            raise EntryError(f"unable to read DICOM object {name}") from error
        try:
            header = read_header(temp)
        except NotDicomError:
            raise EntryError(f"unable to read DICOM object {name}", decode=True) from None
        placement = route(job, header) if job.router is None else job.router(job, header, temp)
        if gate is not None and not _filter_keeps(gate, temp, placement.project, name):
            return None  # before the SOP UID checks, as in XNAT
        if not header.sop_class_uid:
            raise EntryError(f"object {name} contains no SOP Class UID")
        if not header.sop_instance_uid:
            raise EntryError(f"object {name} contains no SOP Instance UID")
        try:
            row = job.store.place(
                placement,
                header,
                temp,
                name,
                timestamp=timestamp,
                options=options,
                rename=job.flag("rename"),
            )
        except (StorageError, OSError) as error:
            raise EntryError(f"unable to read DICOM object {name}") from error
    finally:
        temp.unlink(missing_ok=True)
    _note_row(job, row)
    return row


def _import_object_fast(
    job: ImportJob, name: str, reader: Readable, timestamp: str, options: UploadOptions
) -> PrearcRow | None:
    """``_import_object`` for ``Emulator(fast=True)``: the entry is read into memory, its
    attributes picked out by ``fastpath.scan`` and its bytes (or, with ``headers_only``, their
    start) written straight to their place in the prearchive. Whatever ``scan`` does not vouch
    for (and entries over FAST_ENTRY_LIMIT) goes the faithful way, so refusals are worded
    exactly as there; so does every entry while a series import filter is configured."""
    if job.filters is not None and job.filters.active():
        return _import_object(job, name, reader, timestamp, options)
    chunks: list[bytes] = []
    size = 0
    try:
        while size <= FAST_ENTRY_LIMIT and (chunk := reader.read(CHUNK)):
            chunks.append(chunk)
            size += len(chunk)
    except (EntryDataError, tarfile.TarError, EOFError, zlib.error) as error:
        raise EntryError(f"unable to read DICOM object {name}") from error
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    found = scan(data) if size <= FAST_ENTRY_LIMIT else None
    if found is None:
        return _import_object(job, name, _Prefixed(data, reader), timestamp, options)
    header, header_end = found
    placement = route(job, header)
    try:
        row = job.store.place(
            placement,
            header,
            data[:header_end] if job.headers_only else data,
            name,
            timestamp=timestamp,
            options=options,
            rename=job.flag("rename"),
            size=size,
        )
    except (StorageError, OSError) as error:
        raise EntryError(f"unable to read DICOM object {name}") from error
    _note_row(job, row)
    return row


def _filter_gate(job: ImportJob) -> FilterGate | None:
    """The site filter, built before the object is read. XNAT builds it outside the importer's
    catch-all, so a failure escapes: an IllegalArgumentException is the Importer's 400, any
    other exception an uncaught 500 (xnat-api-round2.md §2)."""
    if job.filters is None or not job.filters.active():
        return None
    try:
        return job.filters.gate()
    except JavaError as error:
        log.warning("the site's series import filter cannot be built: %s", error)
        # ``from error``: the inbox worker fails its request with the Java class (inboxworker).
        if error.illegal_argument:
            raise ImportRefusedError(400, error.message or "") from error
        raise ImportRefusedError(500, error.message or "", uncaught=True) from error


def _filter_keeps(gate: FilterGate, path: Path, project: str | None, name: str) -> bool:
    """The project filter is built, and both are evaluated, inside the importer's catch-all:
    a failure is that object's 400 "unable to read DICOM object"."""
    try:
        return gate.keeps(path, project)
    except JavaError as error:
        log.warning("series import filter failed on %s (project %s): %s", name, project, error)
        raise EntryError(f"unable to read DICOM object {name}") from None


def _note_row(job: ImportJob, row: PrearcRow) -> None:
    if row.key not in job.rows:
        job.rows.append(row.key)
        job.uris.append("/data" + row.uri)


class _Prefixed:
    """`data`, then whatever `rest` still holds: an entry already partly read, as a stream."""

    def __init__(self, data: bytes, rest: Readable) -> None:
        self._data = memoryview(data)
        self._rest = rest

    def read(self, size: int = CHUNK, /) -> bytes:
        if self._data:
            piece, self._data = self._data[:size], self._data[size:]
            return bytes(piece)
        return self._rest.read(size)


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


def copy_stream(source: Readable, target: Path) -> int:
    """Spool a stream to a file in 1 MiB chunks; returns the byte count."""
    total = 0
    with target.open("wb") as out:
        while chunk := source.read(CHUNK):
            out.write(chunk)
            total += len(chunk)
    return total
