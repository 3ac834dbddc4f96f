"""The per-object importer (XNAT's ``GradualDicomImporter``): one DICOM object written to
disk, parsed, passed through the series import filters (``filterconfig``) and filed into the
prearchive; every handler goes through it, and so do the inbox's worker and the DICOM receiver
(``import_stored_file``). ``Emulator(fast=True)`` (benchmarks only) takes the shortcut in
``fastpath`` where it can."""

from __future__ import annotations

import logging
from pathlib import Path

from .archiveentries import CHUNK, ENTRY_READ_ERRORS, copy_stream
from .dicomheader import NotDicomError, read_header
from .fastpath import scan
from .filterconfig import FilterGate
from .identifier import route
from .importjob import EntryError, ImportJob, ImportRefusedError, upload_options
from .prearchive import PrearcRow, StorageError, UploadOptions
from .seriesfilter import JavaError
from .zipreader import Readable

log = logging.getLogger("xnat_standin")

FAST_ENTRY_LIMIT = 64 << 20  # fast path: larger entries are spooled to disk as usual


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
        return import_object(job, name, stream, timestamp, upload_options(job))


def import_object(
    job: ImportJob, name: str, reader: Readable, timestamp: str, options: UploadOptions
) -> PrearcRow | None:
    """Write one object to disk, parse it, file it into the prearchive (GradualDicomImporter).
    None: a series import filter dropped it, silently."""
    gate = _filter_gate(job)
    temp = job.store.temp_path()
    try:
        try:
            copy_stream(reader, temp)
        except ENTRY_READ_ERRORS as error:  # reported per object
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
            row = job.store.prearchive.place(
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


def import_object_fast(
    job: ImportJob, name: str, reader: Readable, timestamp: str, options: UploadOptions
) -> PrearcRow | None:
    """``import_object`` for ``Emulator(fast=True)``: the entry is read into memory, its
    attributes picked out by ``fastpath.scan`` and its bytes (or, with ``headers_only``, their
    start) written straight to their place in the prearchive. Whatever ``scan`` does not vouch
    for (and entries over FAST_ENTRY_LIMIT) goes the faithful way, so refusals are worded
    exactly as there; so does every entry while a series import filter is configured."""
    if job.filters is not None and job.filters.active():
        return import_object(job, name, reader, timestamp, options)
    chunks: list[bytes] = []
    size = 0
    try:
        while size <= FAST_ENTRY_LIMIT and (chunk := reader.read(CHUNK)):
            chunks.append(chunk)
            size += len(chunk)
    except ENTRY_READ_ERRORS as error:
        raise EntryError(f"unable to read DICOM object {name}") from error
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    found = scan(data) if size <= FAST_ENTRY_LIMIT else None
    if found is None:
        return import_object(job, name, _Prefixed(data, reader), timestamp, options)
    header, header_end = found
    placement = route(job, header)
    try:
        row = job.store.prearchive.place(
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
