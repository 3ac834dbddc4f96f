"""Session resources: their folders on disk and their catalogs (xnat-api-round2.md §3).

A session's resource ``LABEL`` lives in ``<session>/RESOURCES/<LABEL>/`` (the archive's and the
prearchive's session folders alike). Its catalog (XNAT's ``<LABEL>_catalog.xml``) is kept in
memory, keyed by that folder: the entries a finished upload recorded, with the MD5 digest
``writeCatalogToFile`` stores when the site preference ``checksums`` is on. The disk and the
catalog can disagree, as on a real XNAT: a file cut off mid-upload is on disk (and blocks a
re-upload without ``overwrite=true``, which tests the disk) but not in the catalog (so not in
the listing). Prearchive catalogs record names and sizes only; digests are filled in when the
session is archived.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

RESOURCES = "RESOURCES"


class ConcurrentCatalogError(Exception):
    """Another request writes this catalog (XNAT: ConcurrentModificationException)."""


@dataclass
class CatalogEntry:
    relpath: str
    size: int
    digest: str = ""  # "" until computed (checksums off, or still in the prearchive)


@dataclass
class Catalog:
    """One resource: ``xnat_abstractresource_id``, label, catalog attributes and entries."""

    id: int
    label: str
    format: str = ""
    content: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()
    entries: dict[str, CatalogEntry] = field(default_factory=dict)

    @property
    def file_size(self) -> int:
        return sum(entry.size for entry in self.entries.values())


def resource_dir(session_dir: Path, label: str) -> Path:
    return session_dir / RESOURCES / label


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def disk_files(directory: Path) -> dict[str, Path]:
    """Every file under a resource folder, by its path relative to the folder."""
    if not directory.is_dir():
        return {}
    return {
        path.relative_to(directory).as_posix(): path
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


class ResourceCatalogs:
    """All session resources' catalogs, the ``checksums`` preference and the catalog locks."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock  # the emulator's lock: catalogs change under it, briefly
        self._catalogs: dict[Path, Catalog] = {}
        self._ids = itertools.count(1)
        self._writing: set[Path] = set()
        self.checksums = True  # SiteConfigPreferences default

    def set_checksums(self, on: bool) -> None:
        with self._lock:
            self.checksums = on

    # -- lookups --------------------------------------------------------------------------

    def resources(self, session_dir: Path) -> list[tuple[Path, Catalog]]:
        """(folder, catalog copy) of each resource of a session, oldest first."""
        parent = session_dir / RESOURCES
        with self._lock:
            found = [
                (path, _copy(catalog))
                for path, catalog in self._catalogs.items()
                if path.parent == parent
            ]
        return sorted(found, key=lambda item: item[1].id)

    def find(self, session_dir: Path, ident: str) -> tuple[Path, Catalog] | None:
        """The resource named ``ident``: by label, or by ``xnat_abstractresource_id`` when all
        digits (XNAT's ``getResourceIdsWhereClause``). ``NULL`` matches no labelled resource."""
        if ident == "NULL":
            return None
        resources = self.resources(session_dir)
        for path, catalog in resources:
            if catalog.label == ident:
                return path, catalog
        if ident.isdigit():
            for path, catalog in resources:
                if str(catalog.id) == ident:
                    return path, catalog
        return None

    # -- changes --------------------------------------------------------------------------

    def create(
        self,
        session_dir: Path,
        label: str,
        *,
        format_: str = "",
        content: str = "",
        description: str = "",
        tags: tuple[str, ...] = (),
    ) -> Path:
        """A new resource (its folder made); returns the folder."""
        directory = resource_dir(session_dir, label)
        with self._lock:
            if directory not in self._catalogs:
                self._catalogs[directory] = Catalog(
                    next(self._ids), label, format_, content, description, tags
                )
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    @contextmanager
    def writing(self, directory: Path) -> Iterator[None]:
        """Hold the resource's catalog for one request; a second writer is refused at once."""
        with self._lock:
            if directory in self._writing:
                raise ConcurrentCatalogError(str(directory))
            self._writing.add(directory)
        try:
            yield
        finally:
            with self._lock:
                self._writing.discard(directory)

    def record(self, directory: Path, relpaths: list[str], *, digests: bool) -> None:
        """``writeCatalogToFile`` after files were stored: entries for ``relpaths`` (sizes
        from disk), then, with ``digests`` and checksums on, the MD5 of every entry lacking one."""
        with self._lock:
            catalog = self._catalogs.get(directory)
            if catalog is None:
                return
            for relpath in relpaths:
                path = directory / relpath
                catalog.entries[relpath] = CatalogEntry(relpath, path.stat().st_size)
            if digests and self.checksums:
                self._fill_digests(directory, catalog)

    def _fill_digests(self, directory: Path, catalog: Catalog) -> None:
        for entry in catalog.entries.values():
            path = directory / entry.relpath
            if not entry.digest and path.is_file():
                entry.digest = md5_of(path)

    def carry(self, source_session: Path, target_session: Path) -> None:
        """Move a prearchive session's resources into its archived session (on commit).

        A resource new to the target moves whole; into an existing one, files are moved one by
        one (replacing) and the entries merged (what XNAT does then is unconfirmed). Digests
        are computed on arrival when checksums are on.
        """
        with self._lock:
            for source, catalog in self.resources(source_session):
                target = resource_dir(target_session, catalog.label)
                existing = self._catalogs.get(target)
                del self._catalogs[source]
                if existing is None:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if source.is_dir():
                        os.replace(source, target)
                    else:
                        target.mkdir(parents=True, exist_ok=True)
                    self._catalogs[target] = catalog
                    existing = catalog
                else:
                    for relpath, path in disk_files(source).items():
                        destination = target / relpath
                        destination.parent.mkdir(parents=True, exist_ok=True)
                        os.replace(path, destination)
                        entry = catalog.entries.get(relpath)
                        if entry is not None:
                            existing.entries[relpath] = CatalogEntry(relpath, entry.size)
                    shutil.rmtree(source, ignore_errors=True)
                if self.checksums:
                    self._fill_digests(target, existing)

    def files(self, session_dir: Path) -> dict[str, dict[str, bytes]]:
        """Resource label -> {relative path: bytes} of every file on disk (catalogued or not)."""
        result: dict[str, dict[str, bytes]] = {}
        for directory, catalog in self.resources(session_dir):
            result[catalog.label] = {
                relpath: path.read_bytes() for relpath, path in disk_files(directory).items()
            }
        return result

    def put_file(
        self,
        session_dir: Path,
        label: str,
        relpath: str,
        data: bytes,
        *,
        catalogued: bool,
        digests: bool,
    ) -> None:
        """Write one resource file as a test sets it up (the resource is created if missing);
        not ``catalogued``: on disk only, as a cut upload leaves one."""
        found = self.find(session_dir, label)
        folder = found[0] if found else self.create(session_dir, label)
        path = folder / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if catalogued:
            self.record(folder, [relpath], digests=digests)


def _copy(catalog: Catalog) -> Catalog:
    return Catalog(
        catalog.id,
        catalog.label,
        catalog.format,
        catalog.content,
        catalog.description,
        catalog.tags,
        {key: CatalogEntry(e.relpath, e.size, e.digest) for key, e in catalog.entries.items()},
    )
