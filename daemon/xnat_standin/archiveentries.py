"""The files of an uploaded zip or tar (an archive file, not XNAT's archive), one by one as
the stream arrives: zips with the reader in ``zipreader``, archives inside archives where the
version opens them, and XNAT's file-name rules for the format."""

from __future__ import annotations

import re
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from .zipreader import EntryDataError, Readable, ZipReadError, ZipStreamReader

CHUNK = 1 << 20

# org.nrg.xft.utils.fileExtraction.Format: case-sensitive regexes on the upload's file name.
_FORMATS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("ZIP", re.compile(r".*\.(zip|zar)")),
    ("TGZ", re.compile(r".*\.(tgz|tar\.gz)")),
    ("TAR", re.compile(r".*\.(tar|xar)")),
    ("GZ", re.compile(r".*\.gz")),
)

# Reading the archive itself fails with these (the whole import fails)...
ARCHIVE_READ_ERRORS = (ZipReadError, tarfile.TarError, EOFError, zlib.error)
# ...and reading one entry's data with these: Java throws them while the importer reads the
# entry, so they are that object's failure.
ENTRY_READ_ERRORS = (EntryDataError, tarfile.TarError, EOFError, zlib.error)


def format_of(file_name: str) -> str:
    """The archive format XNAT >= 1.8.3 infers from a file name: ZIP, TGZ, TAR, GZ or UNKNOWN."""
    for name, pattern in _FORMATS:
        if pattern.fullmatch(file_name):
            return name
    return "UNKNOWN"


class _EntryStream:
    """The current entry of a zip as a readable stream (for archives inside archives)."""

    def __init__(self, reader: ZipStreamReader) -> None:
        self._reader = reader

    def read(self, size: int = CHUNK, /) -> bytes:
        return self._reader.read(size)


def archive_entries(
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
                yield from archive_entries(_EntryStream(reader), inner, nested=nested)
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
                yield from archive_entries(data, inner, nested=nested)
            else:
                yield base_name, data


def copy_stream(source: Readable, target: Path) -> int:
    """Spool a stream to a file in 1 MiB chunks; returns the byte count."""
    total = 0
    with target.open("wb") as out:
        while chunk := source.read(CHUNK):
            out.write(chunk)
            total += len(chunk)
    return total
