"""Session resources over HTTP, archive and prearchive (xnat-api-round2.md §3).

Archive (``CatalogResourceList``, ``CatalogResource``, ``FileList``), under
``/data/experiments/{ID}/resources`` and ``/data/projects/{P}/subjects/{S}/experiments/{E}/
resources`` (and ``/data/archive/...``): ``PUT``/``POST .../resources/{LABEL}`` creates (409
when it exists); ``PUT``/``POST .../resources/{LABEL}/files/{path}`` stores an in-body or
multipart upload, creating the resource. The traps, as XNAT's source has them: an empty in-body
upload not typed exactly ``application/zip`` is a 500; an existing file (on disk) without
``overwrite=true`` is not written and answers 200 ``{"duplicates":[...]}`` as ``text/html``;
``*_catalog.xml`` and ``.~lock-*`` names are a 500; the URL remainder is decoded (as Java's
``URLDecoder``, ``+`` too) only when it holds ``%2B`` or ``%20``; a second writer on one
catalog is a 500 ``ConcurrentModificationException``; a label with ``'`` is a 500.

Prearchive (``PrearcSessionResourceCatalogFiles``, XNAT >= 1.8.4): ``PUT .../prearchive/
projects/{P}/{TS}/{FOLDER}/resources/{LABEL}/files/{path}`` overwrites silently, needs the
built session (404 "Unable to locate prearc resource."), lists ``Name, Size, URI`` only.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.parse
from collections.abc import Iterable
from email.message import Message
from pathlib import Path

from . import pages
from .archive import Experiment
from .call import (
    SUPPORTED_UPLOAD_TYPES,
    Call,
    form_parts,
    media_type,
    no_length_message,
)
from .catalog import Catalog, ConcurrentCatalogError, ResourceCatalogs
from .filterconfig import SeriesFilters
from .httpbody import CHUNK, FormPart
from .pages import Reply
from .prearchive import PrearcRow
from .store import Store
from .versions import XnatVersion

log = logging.getLogger("xnat_standin")

EXISTS = "Specified resource already exists."
NO_PERMISSION = "User account doesn't have permission to modify this session."
NO_PREARC_RESOURCE = "Unable to locate prearc resource."
RESOURCE_COLUMNS = (
    "xnat_abstractresource_id",
    "label",
    "element_name",
    "category",
    "cat_id",
    "cat_desc",
    "file_count",
    "file_size",
    "tags",
    "content",
    "format",
)
FILE_COLUMNS = (
    "Name",
    "Size",
    "URI",
    "collection",
    "file_tags",
    "file_format",
    "file_content",
    "cat_ID",
    "digest",
)
PREARC_FILE_COLUMNS = ("Name", "Size", "URI")
_SPECIAL = frozenset({"NULL", "SNAPSHOTS"})


class _RefusedError(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


class ResourceRoutes:
    """The session resource routes; the catalogs and the files are in ``catalog``."""

    def __init__(
        self,
        store: Store,
        catalogs: ResourceCatalogs,
        version: XnatVersion,
        filters: SeriesFilters,
    ) -> None:
        self.store = store
        self.catalogs = catalogs
        self.version = version
        self.filters = filters

    # -- the archive ----------------------------------------------------------------------

    def archive(self, call: Call, experiment: Experiment, rest: list[str]) -> Reply:
        """``rest``: the path after ``.../experiments/{E}/resources``."""
        session_dir = self.store.archive.experiment_dir(experiment)
        if not rest:
            if call.method != "GET":
                return pages.status_page(405)
            rows = [
                _resource_row(catalog, experiment.id)
                for _, catalog in self.catalogs.resources(session_dir)
            ]
            return pages.table(
                RESOURCE_COLUMNS, rows, call.format, extra={"totalRecords": len(rows)}
            )
        label, tail = rest[0], rest[1:]
        if "'" in label:  # XNATTemplate: "Possible SQL Injection attempt", uncaught
            return pages.status_page(500)
        if tail and tail[0] != "files":
            return pages.status_page(404)
        if call.method in ("PUT", "POST"):
            if not self.filters.can_read(call.user, experiment.project):
                return pages.status_page(403, NO_PERMISSION)
            if label in _SPECIAL:
                return _not_emulated(label)
            if not tail:
                return self._create(call, session_dir, label)
            return self._upload(call, session_dir, label, _remainder(call, len(tail) - 1))
        if call.method != "GET":
            return pages.status_page(405)
        found = self.catalogs.find(session_dir, label)
        if found is None:
            return pages.status_page(404)
        directory, catalog = found
        if not tail:
            rows = [_resource_row(catalog, experiment.id)]
            return pages.table(RESOURCE_COLUMNS, rows, call.format)
        relpath = _remainder(call, len(tail) - 1)
        if relpath:
            return _file_reply(directory, catalog, relpath)
        base = f"/data/experiments/{experiment.id}/resources/{catalog.label}/files/"
        rows = [
            {
                "Name": entry.relpath.rsplit("/", 1)[-1],
                "Size": entry.size,
                "URI": base + entry.relpath,
                "collection": catalog.label,
                "file_tags": "",
                "file_format": "",
                "file_content": "",
                "cat_ID": catalog.id,
                "digest": entry.digest,
            }
            for entry in catalog.entries.values()
        ]
        return pages.table(FILE_COLUMNS, rows, call.format, extra={"totalRecords": len(rows)})

    # -- the prearchive -------------------------------------------------------------------

    def prearchive(self, call: Call, row: PrearcRow, rest: list[str]) -> Reply:
        """``rest``: the path after ``.../prearchive/projects/{P}/{TS}/{FOLDER}/resources``,
        at least the label."""
        writes = call.method in ("PUT", "POST")
        if not self.version.has_prearchive_resources:
            return pages.status_page(405 if writes else 404)
        if row.built_scans is None:
            return pages.status_page(404, NO_PREARC_RESOURCE)
        session_dir = self.store.prearchive.row_dir(row)
        label, tail = rest[0], rest[1:]
        if "'" in label:
            return pages.status_page(500)
        if tail and tail[0] != "files":
            return pages.status_page(404)
        if writes:
            if row.project is not None and not self.filters.can_read(call.user, row.project):
                return pages.status_page(403)
            if label in _SPECIAL:
                return _not_emulated(label)
            if not tail:
                return self._create(call, session_dir, label)
            if call.method != "PUT":
                return pages.status_page(405)
            relpath = _remainder(call, len(tail) - 1)
            return self._upload(call, session_dir, label, relpath, prearchive=True)
        if call.method != "GET":
            return pages.status_page(405)
        found = self.catalogs.find(session_dir, label)
        if found is None:
            return pages.status_page(404)
        directory, catalog = found
        relpath = _remainder(call, len(tail) - 1) if tail else ""
        if relpath:
            return _file_reply(directory, catalog, relpath)
        if not tail:
            return pages.table(
                ("label", "file_count", "file_size"),
                [prearchive_row(catalog)],
                call.format,
            )
        base = f"/data{row.uri}/resources/{catalog.label}/files/"
        rows = [
            {
                "Name": entry.relpath.rsplit("/", 1)[-1],
                "Size": entry.size,
                "URI": base + entry.relpath,
            }
            for entry in catalog.entries.values()
        ]
        return pages.table(PREARC_FILE_COLUMNS, rows, call.format)

    def prearchive_rows(self, row: PrearcRow) -> list[dict[str, object]]:
        """Rows of the prearchive session's resource listing for its session resources."""
        if not self.version.has_prearchive_resources:
            return []
        return [
            {"category": "resources", "cat_id": "", **prearchive_row(catalog)}
            for _, catalog in self.catalogs.resources(self.store.prearchive.row_dir(row))
        ]

    # -- creating and uploading -----------------------------------------------------------

    def _create(self, call: Call, session_dir: Path, label: str) -> Reply:
        if self.catalogs.find(session_dir, label) is not None:
            return pages.status_page(409, EXISTS)
        tags = tuple(t.strip() for t in call.query.get("tags", "").split(",") if t.strip())
        self.catalogs.create(
            session_dir,
            label,
            format_=call.query.get("format", ""),
            content=call.query.get("content", ""),
            description=call.query.get("description", ""),
            tags=tags,
        )
        return pages.text(200, "")

    def _upload(
        self, call: Call, session_dir: Path, label: str, relpath: str, *, prearchive: bool = False
    ) -> Reply:
        parts: list[FormPart] = []
        try:
            try:
                destinations, parts = self._writers(call, relpath)
            except _RefusedError as refused:
                return refused.reply
            found = self.catalogs.find(session_dir, label)
            directory = found[0] if found else self.catalogs.create(session_dir, label)
            overwrite = prearchive or _true(call.query.get("overwrite"))
            sources: list[Path | None] = [part.path for part in parts]
            if not parts:
                sources = [None] * len(destinations)
            try:
                with self.catalogs.writing(directory):
                    uploads = zip(destinations, sources, strict=True)
                    return self._store(call, directory, uploads, overwrite, not prearchive)
            except ConcurrentCatalogError:
                log.info("concurrent write to the catalog of %s refused", directory)
                return pages.status_page(
                    500,
                    f"java.util.ConcurrentModificationException: {label}_catalog.xml is being "
                    "modified by another request",
                )
        finally:
            for part in parts:
                if part.path is not None:
                    part.path.unlink(missing_ok=True)

    def _writers(self, call: Call, relpath: str) -> tuple[list[str], list[FormPart]]:
        """The destination of each uploaded file, and the spooled multipart parts if any."""
        media, exact = media_type(call.headers.get("Content-Type"))
        if _true(call.query.get("inbody")) or exact in SUPPORTED_UPLOAD_TYPES:
            length = _content_length(call.headers)
            size = -1 if length is None else length
            if size < 1 and exact != "application/zip":
                # SecureResource.getFileWritersAndLoadParams' FileUploadException; FileList: 500
                raise _RefusedError(pages.status_page(500, no_length_message(size)))
            if not relpath:
                raise _RefusedError(
                    pages.status_page(
                        400, "The XNAT stand-in needs the file's path in the URL (after /files/)."
                    )
                )
            return [_checked(relpath)], []
        if not media.startswith("multipart/"):
            return [], []  # no file: XNAT reads the body as form parameters (if any)
        parts = _read_parts(call)
        files = [part for part in parts if part.filename is not None]
        names = []
        for part in files:
            name = part.filename or ""
            if not relpath:
                names.append(name)
            elif len(files) > 1 or relpath.endswith("/"):
                names.append(relpath.rstrip("/") + "/" + name)
            else:
                names.append(relpath)
        try:
            return [_checked(name) for name in names], files
        except _RefusedError:
            for part in parts:
                if part.path is not None:
                    part.path.unlink(missing_ok=True)
            raise

    def _store(
        self,
        call: Call,
        directory: Path,
        uploads: Iterable[tuple[str, Path | None]],
        overwrite: bool,
        digests: bool,
    ) -> Reply:
        """``CatalogUtils.storeCatalogEntry``: refuse uncatalogable names, skip files on disk
        (duplicates) unless overwriting, write the rest, then record them in the catalog."""
        duplicates: list[str] = []
        written: list[str] = []
        try:
            for relpath, source in uploads:
                name = relpath.rsplit("/", 1)[-1]
                if name.endswith("_catalog.xml") or name.startswith(".~lock-"):
                    return pages.status_page(500, f"XNAT cannot catalog {name}")
                target = directory / relpath
                if target.exists() and not overwrite:
                    duplicates.append(relpath)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                if source is not None:
                    os.replace(source, target)
                else:  # streamed as it arrives: a cut connection leaves a partial file
                    with target.open("wb") as out:
                        while chunk := call.body.read(CHUNK):
                            out.write(chunk)
                written.append(relpath)
        finally:
            self.catalogs.record(directory, written, digests=digests)
        if duplicates:  # FileList.handlePost: status 200 all the same
            body = json.dumps({"duplicates": duplicates}, separators=(",", ":"))
            return pages.text(200, body, "text/html;charset=UTF-8")
        return pages.text(200, "")


def prearchive_row(catalog: Catalog) -> dict[str, object]:
    return {
        "label": catalog.label,
        "file_count": len(catalog.entries),
        "file_size": catalog.file_size,
    }


def _resource_row(catalog: Catalog, experiment_id: str) -> dict[str, object]:
    return {
        "xnat_abstractresource_id": catalog.id,
        "label": catalog.label,
        "element_name": "xnat:resourceCatalog",
        "category": "resources",
        "cat_id": experiment_id,
        "cat_desc": catalog.description,
        "file_count": len(catalog.entries),
        "file_size": catalog.file_size,
        "tags": ",".join(catalog.tags),
        "content": catalog.content,
        "format": catalog.format,
    }


def _file_reply(directory: Path, catalog: Catalog, relpath: str) -> Reply:
    """A catalogued file's bytes (a file on disk but not in the catalog is not found)."""
    path = directory / relpath
    if relpath not in catalog.entries or not path.is_file():
        return pages.status_page(404)
    return Reply(200, path.read_bytes(), "application/octet-stream")


def _remainder(call: Call, count: int) -> str:
    """The last ``count`` path segments as sent, decoded (``URLDecoder``: ``+`` is a space)
    only when they hold ``%2B`` or ``%20`` (``FileList``'s constructor), else kept escaped."""
    if count <= 0:
        return ""
    raw = call.raw_segments if len(call.raw_segments) == len(call.segments) else call.segments
    text = "/".join(raw[-count:])
    if "%2B" in text or "%20" in text:
        return urllib.parse.unquote_plus(text)
    return text


def _checked(relpath: str) -> str:
    """The stand-in keeps every file inside its resource folder."""
    parts = relpath.rstrip("/").split("/")
    if not relpath or any(part in ("", ".", "..") or "\x00" in part for part in parts):
        raise _RefusedError(
            pages.status_page(400, f"The XNAT stand-in refuses the file path {relpath!r}.")
        )
    return "/".join(parts)


def _read_parts(call: Call) -> list[FormPart]:
    parts = form_parts(call)
    if isinstance(parts, Reply):
        raise _RefusedError(parts)
    return parts


def _not_emulated(label: str) -> Reply:
    return pages.status_page(
        501, f"The XNAT stand-in does not emulate writes to the special resource {label}."
    )


def _true(value: str | None) -> bool:
    """``isQueryVariableTrue``: present and neither "false" nor "0" (any case)."""
    return value is not None and value.lower() not in ("false", "0")


def _content_length(headers: Message) -> int | None:
    if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
        return None
    value = headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
