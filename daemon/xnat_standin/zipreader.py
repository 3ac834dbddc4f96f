"""A streaming zip reader that behaves like Java's ``java.util.zip.ZipInputStream``.

XNAT's DICOM-zip importer reads the request body with ``ZipInputStream``: local file headers
only, front to back, the central directory never consulted. The quirks that matter to an upload
client follow from that and are reproduced here (OpenJDK ``ZipInputStream.readLOC/read/readEnd``):

- a STORED entry with general-purpose flag bit 3 (sizes in a trailing data descriptor) is
  refused with "only DEFLATED entries can have EXT descriptor": a streaming reader cannot know
  where stored data ends. Python's ``zipfile`` writes exactly that when it streams STORED
  entries to an unseekable file;
- encrypted entries are refused, names are decoded as strict UTF-8 ("MALFORMED" otherwise);
- a compression method other than STORED/DEFLATED only fails once the entry's data is read;
- DEFLATED data is inflated until the deflate stream ends, then sizes and CRC are checked
  against the local header or the data descriptor (4-byte sizes unless more than 4 GiB were
  read or written, signature optional);
- sizes of 0xFFFFFFFF in the local header are replaced from a Zip64 extra field of >= 16 bytes;
- reading stops at the first signature that is not a local file header (normally the central
  directory) or when fewer than 30 bytes remain; whatever follows is ignored.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Protocol

LOCAL_HEADER_SIGNATURE = 0x04034B50
DESCRIPTOR_SIGNATURE = 0x08074B50
STORED = 0
DEFLATED = 8
_ZIP64_MAGIC = 0xFFFFFFFF
_FLAG_ENCRYPTED = 0x0001
_FLAG_DESCRIPTOR = 0x0008
_FLAG_UTF8 = 0x0800
_ZIP64_EXTRA_ID = 0x0001
_INPUT_CHUNK = 256 * 1024


class Readable(Protocol):
    """Anything with a ``read(n)`` that returns at most n bytes and ``b""`` at the end."""

    def read(self, size: int, /) -> bytes: ...


class ZipReadError(Exception):
    """What ``ZipInputStream`` throws: a ``ZipException``/``EOFException`` (an ``IOException``)."""


class MalformedNameError(ZipReadError):
    """An entry name that is not valid UTF-8 (Java: ``IllegalArgumentException("MALFORMED")``)."""

    def __init__(self) -> None:
        super().__init__("MALFORMED")


class EntryDataError(ZipReadError):
    """The entry's data is bad (CRC, sizes, method, truncation).

    Java raises these from ``read()``, that is inside XNAT's per-entry DICOM import rather than
    from ``getNextEntry()``, which is why the importer reports them per entry.
    """


@dataclass(frozen=True, slots=True)
class ZipEntry:
    """One local file header as Java's ``ZipEntry`` sees it."""

    name: str
    method: int
    flags: int
    crc: int | None  # None when the sizes come later in a data descriptor
    compressed_size: int | None
    size: int | None

    @property
    def is_directory(self) -> bool:
        return self.name.endswith("/")

    @property
    def base_name(self) -> str:
        """The last path component, as XNAT names the entry (``new File(name).getName()``)."""
        return self.name.rsplit("/", 1)[-1]


class _PushbackInput:
    """The ``PushbackInputStream`` Java puts under ``ZipInputStream``."""

    def __init__(self, source: Readable) -> None:
        self._source = source
        self._pending = b""

    def read(self, size: int) -> bytes:
        if self._pending:
            data, self._pending = self._pending[:size], self._pending[size:]
            return data
        return self._source.read(size)

    def read_fully(self, size: int) -> bytes:
        """Exactly ``size`` bytes; ``EOFError`` if the stream ends first."""
        parts: list[bytes] = []
        missing = size
        while missing > 0:
            data = self.read(missing)
            if not data:
                raise EOFError
            parts.append(data)
            missing -= len(data)
        return b"".join(parts)

    def unread(self, data: bytes) -> None:
        self._pending = data + self._pending


class ZipStreamReader:
    """Iterate a zip stream entry by entry, without seeking, as ``ZipInputStream`` does.

    ``next_entry()`` skips (and so validates) the rest of the current entry, then returns the
    next entry or None at the end. ``read(n)`` returns up to n bytes of the current entry's
    uncompressed data and ``b""`` at its end, after the size and CRC checks passed.
    """

    def __init__(self, source: Readable) -> None:
        self._input = _PushbackInput(source)
        self._entry: ZipEntry | None = None
        self._entry_done = True
        self._broken: ZipReadError | None = None
        self._crc = 0
        self._remaining = 0  # STORED: bytes still to read
        self._inflater: zlib._Decompress | None = None
        self._fed = 0  # DEFLATED: compressed bytes handed to the inflater
        self._written = 0  # DEFLATED: bytes produced by the inflater

    def next_entry(self) -> ZipEntry | None:
        """Advance to the next entry; raises ``ZipReadError`` where Java's would throw."""
        if self._broken is not None:
            raise self._broken
        if self._entry is not None:
            while self.read(_INPUT_CHUNK):
                pass
        self._entry = None
        entry = self._read_local_header()
        if entry is None:
            return None
        self._entry = entry
        self._entry_done = False
        self._crc = 0
        self._remaining = entry.size or 0
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._fed = 0
        self._written = 0
        return entry

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of the current entry; ``b""`` at its end (or with no entry)."""
        entry = self._entry
        if entry is None or self._entry_done:
            return b""
        try:
            if entry.method == STORED:
                return self._read_stored(entry, size)
            if entry.method == DEFLATED:
                return self._read_deflated(entry, size)
            raise EntryDataError("invalid compression method")
        except EntryDataError as error:
            self._fail_entry(entry, error)
            raise

    def _fail_entry(self, entry: ZipEntry, error: EntryDataError) -> None:
        # After a data error Java's stream is only usable again in one case: a STORED entry
        # whose bytes were all read (CRC mismatch); then closeEntry() finds nothing left.
        self._entry_done = True
        if not (entry.method == STORED and self._remaining == 0):
            self._broken = ZipReadError(str(error))

    def _read_local_header(self) -> ZipEntry | None:
        try:
            header = self._input.read_fully(30)
        except EOFError:
            return None  # Java: fewer than 30 bytes left means "no more entries"
        fields = struct.unpack("<IHHHHHIIIHH", header)
        signature, flags, method, crc, csize, size, name_len, extra_len = (
            fields[0],
            fields[2],
            fields[3],
            *fields[6:],
        )
        if signature != LOCAL_HEADER_SIGNATURE:
            return None
        try:
            raw_name = self._input.read_fully(name_len)
        except EOFError:
            raise ZipReadError("EOF reading entry name") from None
        try:
            name = raw_name.decode("utf-8")  # Java decodes as UTF-8 with or without flag bit 11
        except UnicodeDecodeError:
            raise MalformedNameError() from None
        if flags & _FLAG_ENCRYPTED:
            raise ZipReadError("encrypted ZIP entry not supported")
        entry_crc: int | None = None
        entry_csize: int | None = None
        entry_size: int | None = None
        if flags & _FLAG_DESCRIPTOR:
            if method != DEFLATED:
                raise ZipReadError("only DEFLATED entries can have EXT descriptor")
        else:
            entry_crc, entry_csize, entry_size = crc, csize, size
        if extra_len:
            try:
                extra = self._input.read_fully(extra_len)
            except EOFError:
                raise ZipReadError("EOF reading extra field") from None
            if _ZIP64_MAGIC in (entry_csize, entry_size):
                zip64 = _zip64_sizes(extra)
                if zip64 is not None:
                    entry_size, entry_csize = zip64
        return ZipEntry(name, method, flags, entry_crc, entry_csize, entry_size)

    def _read_stored(self, entry: ZipEntry, size: int) -> bytes:
        if self._remaining <= 0:
            self._entry_done = True
            return b""
        data = self._input.read(min(size, self._remaining))
        if not data:
            raise EntryDataError("unexpected EOF")
        self._crc = zlib.crc32(data, self._crc)
        self._remaining -= len(data)
        if self._remaining == 0 and entry.crc != self._crc:
            raise EntryDataError(_crc_message(entry.crc or 0, self._crc))
        return data

    def _read_deflated(self, entry: ZipEntry, size: int) -> bytes:
        inflater = self._inflater
        assert inflater is not None
        while True:
            if inflater.eof:
                self._finish_deflated(entry, inflater)
                return b""
            pending = inflater.unconsumed_tail
            if not pending:
                pending = self._input.read(_INPUT_CHUNK)
                if not pending:
                    raise EntryDataError("Unexpected end of ZLIB input stream")
                self._fed += len(pending)
            try:
                data = inflater.decompress(pending, size)
            except zlib.error as error:
                raise EntryDataError(str(error)) from None
            if data:
                self._written += len(data)
                self._crc = zlib.crc32(data, self._crc)
                return data

    def _finish_deflated(self, entry: ZipEntry, inflater: zlib._Decompress) -> None:
        # At the end of the deflate stream every unconsumed input byte is in unused_data
        # (unconsumed_tail then holds the same bytes): they belong to what follows.
        leftover = inflater.unused_data
        compressed = self._fed - len(leftover)
        if leftover:
            self._input.unread(leftover)
        crc, csize, size = entry.crc, entry.compressed_size, entry.size
        if entry.flags & _FLAG_DESCRIPTOR:
            crc, csize, size = self._read_descriptor(compressed)
        self._entry_done = True
        if size != self._written:
            raise EntryDataError(
                f"invalid entry size (expected {size} but got {self._written} bytes)"
            )
        if csize != compressed:
            raise EntryDataError(
                f"invalid entry compressed size (expected {csize} but got {compressed} bytes)"
            )
        if crc != self._crc:
            raise EntryDataError(_crc_message(crc or 0, self._crc))

    def _read_descriptor(self, compressed: int) -> tuple[int, int, int]:
        # Java reads 8-byte sizes only when more than 4 GiB actually went through the inflater;
        # a Zip64 descriptor on a small entry is therefore misread (and then fails the checks).
        wide = self._written > _ZIP64_MAGIC or compressed > _ZIP64_MAGIC
        length = 24 if wide else 16
        try:
            raw = self._input.read_fully(length)
        except EOFError:
            raise EntryDataError("EOF reading data descriptor") from None
        size_format = "<QQ" if wide else "<II"
        (signature,) = struct.unpack_from("<I", raw)
        if signature == DESCRIPTOR_SIGNATURE:
            (crc,) = struct.unpack_from("<I", raw, 4)
            csize, size = struct.unpack_from(size_format, raw, 8)
        else:  # no signature: the descriptor starts with the CRC, 4 bytes go back
            crc = signature
            csize, size = struct.unpack_from(size_format, raw, 4)
            self._input.unread(raw[length - 4 :])
        return int(crc), int(csize), int(size)


def _zip64_sizes(extra: bytes) -> tuple[int, int] | None:
    """(size, compressed size) from a local-header Zip64 extra field, as ``ZipEntry.setExtra0``."""
    offset = 0
    while offset + 4 < len(extra):
        tag, length = struct.unpack_from("<HH", extra, offset)
        offset += 4
        if offset + length > len(extra):
            return None
        if tag == _ZIP64_EXTRA_ID:
            if length >= 16:
                size, csize = struct.unpack_from("<QQ", extra, offset)
                return int(size), int(csize)
            return None
        offset += length
    return None


def _crc_message(expected: int, actual: int) -> str:
    return f"invalid entry CRC (expected 0x{expected:x} but got 0x{actual:x})"
