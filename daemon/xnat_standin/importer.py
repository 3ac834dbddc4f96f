"""The import handlers behind ``POST /data/services/import`` (xnat-api.md §3.3-§3.5, §4, §5).

``DICOM-zip`` reads the upload as it streams in (a zip with the reader in ``zipreader``, or a
tar/tgz on >= 1.8.3), writes every entry to disk, parses its header and files it into the
prearchive at once, so a failure or a dropped connection leaves the entries before it in place.
``gradual-DICOM`` takes one DICOM object. ``SI`` spools the whole upload first, skips what it
cannot parse and builds at once (a sketch of XNAT's external PrearcImporter). With
``Emulator(fast=True)`` (benchmarks only) DICOM-zip entries take the shortcut in ``fastpath``.
Every handler files each object through the per-object importer (``objectimporter``), where
the series import filters (``filterconfig``) may drop it, silently; the entries come from
``archiveentries``. The ``inbox`` handler is ``inbox``; its worker uses the same per-object path.
"""

from __future__ import annotations

from .archiveentries import ARCHIVE_READ_ERRORS, archive_entries, copy_stream, format_of
from .archiving import ArchiveError, ArchiveRequest
from .importjob import (
    Destination,
    EntryError,
    ImportJob,
    ImportRefusedError,
    parse_dest,
    upload_options,
)
from .objectimporter import import_object, import_object_fast
from .zipreader import Readable

HANDLERS = ("SI", "gradual-DICOM", "DICOM-zip", "inbox", "XAR")
IMPLEMENTED_HANDLERS = ("SI", "gradual-DICOM", "DICOM-zip", "inbox")


def run_dicom_zip(job: ImportJob, source: Readable) -> list[str]:
    """DICOM-zip: stream the archive entry by entry into the prearchive; returns data URIs."""
    commit, auto_archive = _prepare_zip_params(job)
    archive_format = "ZIP" if job.version.zip_only else format_of(job.file_name)
    if archive_format not in ("ZIP", "TAR", "TGZ"):
        raise ImportRefusedError(400, f"Unsupported format {archive_format}")
    ignore_unparsable = job.version.has_ignore_unparsable and job.flag("Ignore-Unparsable")
    timestamp = job.store.prearchive.new_timestamp()
    options = upload_options(job)
    last_error: EntryError | None = None
    entries = archive_entries(source, archive_format, nested=job.version.zip_importer_commits)
    while True:
        try:
            item = next(entries)
        except StopIteration:
            break
        except ARCHIVE_READ_ERRORS as error:
            message = "MALFORMED" if str(error) == "MALFORMED" else job.version.zip_read_failure
            raise ImportRefusedError(400, message) from error
        name, reader = item
        try:
            if job.fast:
                import_object_fast(job, name, reader, timestamp, options)
            else:
                import_object(job, name, reader, timestamp, options)
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
        import_object(
            job, job.file_name, source, job.store.prearchive.new_timestamp(), upload_options(job)
        )
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
        timestamp = job.store.prearchive.new_timestamp()
        options = upload_options(job)
        with spooled.open("rb") as stream:
            try:
                for name, reader in archive_entries(stream, archive_format, nested=False):
                    try:
                        import_object(job, name, reader, timestamp, options)
                    except EntryError:
                        continue  # PrearcImporter leaves out what it cannot parse
            except ARCHIVE_READ_ERRORS as error:
                raise ImportRefusedError(400, job.version.zip_read_failure) from error
    finally:
        spooled.unlink(missing_ok=True)
    if not job.rows:
        raise ImportRefusedError(
            400, "Upload did not include parsable files for session generation."
        )
    if dest is not None and not dest.archive:
        for key in job.rows:
            job.store.prearchive.build(*key, options)
        return job.uris
    if len(job.rows) > 1:
        raise ImportRefusedError(400, "Upload included files for multiple imaging sessions.")
    key = job.rows[0]
    row = job.store.prearchive.build(*key, options)
    wants_archive = (dest is not None and dest.archive) or job.flag("AA")
    if not (wants_archive or job.store.should_auto_archive(row)):
        return job.uris
    try:
        uri = job.store.commit(*key, _archive_request(job))
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
            experiment = job.store.archive.experiment(dest.experiment_id)
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
        row = job.store.prearchive.build(*key, options)
        if not auto_archive:
            uris.append("/data" + row.uri)
            continue
        try:
            uris.append("/data" + job.store.commit(*key, _archive_request(job)))
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
