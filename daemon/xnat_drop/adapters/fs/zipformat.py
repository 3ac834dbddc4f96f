"""The zip format's records, as Java's `ZipInputStream` (hence XNAT) reads them, a central
directory, Zip64 only where a size, offset or count needs it. Pure: bytes in, bytes out (see
zipstream.py and zipdeflate.py for the files).

Two kinds of entry:

- STORED, with the CRC and sizes in the local header: the data must be read before its header
  goes out, so only for files that fit in a buffer.
- DEFLATED with a data descriptor (flag bit 3): the CRC and sizes follow the data, so a file is
  read once, as it is sent. Java refuses a descriptor on a STORED entry, never on a DEFLATED
  one. The deflate data may be *stored blocks* (RFC 1951 §3.2.4: the bytes as they are, five
  bytes of framing per 65,535), whose length is known in advance, or compressed pieces, each
  ending on a byte boundary (a sync flush), in any mix; a final empty block ends it.
"""

from __future__ import annotations

import functools
import hashlib
import stat
import struct
import time
from array import array
from pathlib import Path, PurePosixPath
from typing import NamedTuple

_LOCAL = struct.Struct("<IHHHHHIIIHH")  # local file header, 30 bytes
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")  # central directory file header, 46 bytes
ZIP64_END = struct.Struct("<IQHHIIQQQQ")  # zip64 end of central directory record, 56 bytes
ZIP64_LOCATOR = struct.Struct("<IIQI")  # zip64 end of central directory locator, 20 bytes
END = struct.Struct("<IHHHHIIH")  # end of central directory record, 22 bytes

_LOCAL_SIG = 0x04034B50
_CENTRAL_SIG = 0x02014B50
_ZIP64_END_SIG = 0x06064B50
_ZIP64_LOCATOR_SIG = 0x07064B50
_END_SIG = 0x06054B50

MAX32 = 0xFFFFFFFF  # also the "see the zip64 extra field" marker
MAX16 = 0xFFFF
_ZIP64_EXTRA_ID = 0x0001
_FLAG_UTF8 = 1 << 11  # general purpose bit 11: the name is UTF-8
_FLAG_DESCRIPTOR = 1 << 3  # general purpose bit 3: CRC and sizes in a descriptor after the data
STORED, DEFLATED = 0, 8  # compression methods
_DESCRIPTOR_SIG = 0x08074B50
STORED_BLOCK = 0xFFFF  # data bytes in a full stored deflate block
BLOCK_HEADER = 5  # a stored block's framing: its first byte, LEN, NLEN
FINAL_EMPTY = b"\x03\x00"  # a final, empty block of fixed codes: ends a deflate stream
_VERSION = 20  # 2.0: STORED files in folders
_VERSION_ZIP64 = 45  # 4.5: zip64 extensions
_MADE_BY_UNIX = 3 << 8
_EXTERNAL_ATTR = (stat.S_IFREG | 0o644) << 16  # a regular file, rw-r--r--, as Unix tools store it


def zip_name(arcname: str) -> str:
    """Return the name `arcname` gets inside the zip.

    A name that came from `os.fsdecode` of bytes that are not UTF-8 holds surrogate escapes
    and cannot be written as UTF-8. Java would reject it, so each such path component is
    replaced by `unnamed-<12 hex digits of its SHA-256>` plus its extension when that is ASCII
    (`b"\\xff.dcm"` becomes `unnamed-<hash>.dcm`). Every other name is returned unchanged.
    """
    try:
        arcname.encode("utf-8")
    except UnicodeEncodeError:
        return "/".join(_safe_component(part) for part in arcname.split("/"))
    return arcname


def _safe_component(part: str) -> str:
    try:
        part.encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        return part
    # Hash the original bytes so that two different bad names stay two different entries.
    digest = hashlib.sha256(part.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    suffix = PurePosixPath(part).suffix
    if not suffix.isascii() or not suffix[1:].isprintable():
        suffix = ""
    return f"unnamed-{digest}{suffix}"


class Planned(NamedTuple):
    """Where one entry sits in the archive; everything but its CRC and date is known up front.

    Made from the entry and its offset when needed, never stored: see ZipStream._planned.
    """

    source: Path | str
    arcname: str  # as given, for messages
    name: bytes  # UTF-8 name written in the zip
    size: int
    offset: int  # of the local header
    stamp: int = 0  # as inspected, 0: not checked
    # DEFLATED as stored blocks with a data descriptor: read once, as it is sent.
    blocks: bool = False

    @property
    def flags(self) -> int:
        utf8 = 0 if self.name.isascii() else _FLAG_UTF8
        return utf8 | _FLAG_DESCRIPTOR if self.blocks else utf8

    @property
    def zip64_local(self) -> bool:
        """Sizes do not fit in 32 bits: zip64 extra in the local header (a descriptor entry
        has none: its sizes follow the data)."""
        return self.size >= MAX32 and not self.blocks

    @property
    def data_len(self) -> int:
        """Bytes of the entry's data in the archive."""
        return stored_blocks_len(self.size) if self.blocks else self.size

    @property
    def version(self) -> int:
        """Version needed to extract."""
        return version_needed(self.size, self.data_len, self.offset)

    @property
    def header_len(self) -> int:
        return _LOCAL.size + len(self.name) + (20 if self.zip64_local else 0)

    @property
    def end(self) -> int:
        """Offset just past this entry's data (and descriptor)."""
        tail = descriptor_len(self.size, self.data_len) if self.blocks else 0
        return self.offset + self.header_len + self.data_len + tail


def version_needed(size: int, csize: int, offset: int) -> int:
    """Version needed to extract: 4.5 where a size or the offset needs zip64."""
    return _VERSION_ZIP64 if max(size, csize, offset) >= MAX32 else _VERSION


def stored_blocks_len(size: int) -> int:
    """The length of `size` bytes as stored deflate blocks, the final one included."""
    return size + BLOCK_HEADER * max(1, -(-size // STORED_BLOCK))


def block_header(length: int, final: bool) -> bytes:
    """The framing before `length` (<= 65,535) bytes of a stored block (byte-aligned)."""
    return struct.pack("<BHH", 1 if final else 0, length, length ^ 0xFFFF)


def descriptor_len(size: int, csize: int) -> int:
    # Java reads 8-byte sizes only when more than 4 GiB went through (ZipInputStream.readEnd).
    return 24 if max(size, csize) > MAX32 else 16


def descriptor(crc: int, size: int, csize: int) -> bytes:
    """The data descriptor after a DEFLATED entry's data, with its signature."""
    if descriptor_len(size, csize) == 24:
        return struct.pack("<IIQQ", _DESCRIPTOR_SIG, crc, csize, size)
    return struct.pack("<IIII", _DESCRIPTOR_SIG, crc, csize, size)


def _central_zip64_fields(size: int, csize: int, offset: int) -> list[int]:
    # APPNOTE 4.5.3: only the fields whose fixed slot holds the marker, in this order.
    fields = [size] if size >= MAX32 else []
    if csize >= MAX32:
        fields.append(csize)
    if offset >= MAX32:
        fields.append(offset)
    return fields


def central_len(name: bytes, size: int, offset: int, csize: int | None = None) -> int:
    fields = _central_zip64_fields(size, size if csize is None else csize, offset)
    return _CENTRAL.size + len(name) + (4 + 8 * len(fields) if fields else 0)


def encoded_name(arcname: str) -> bytes:
    return zip_name(arcname).encode("utf-8")


@functools.lru_cache(maxsize=4096)
def dos_datetime(mtime: float) -> tuple[int, int]:
    """Return (time, date) in MS-DOS format, local time, clamped to the years 1980..2107.

    Cached: the files of one series share their mtime second, and localtime() per file costs
    more than the rest of opening it.
    """
    try:
        t = time.localtime(mtime)
    except (OverflowError, OSError, ValueError):  # far outside what localtime handles
        return _DOS_FIRST if mtime < 0 else _DOS_LAST
    if t.tm_year < 1980:
        return _DOS_FIRST
    if t.tm_year > 2107:
        return _DOS_LAST
    return (
        (t.tm_hour << 11) | (t.tm_min << 5) | min(t.tm_sec // 2, 29),  # a leap second is 60
        ((t.tm_year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday,
    )


_DOS_FIRST = (0, (1 << 5) | 1)  # 1980-01-01 00:00:00
_DOS_LAST = ((23 << 11) | (59 << 5) | 29, (127 << 9) | (12 << 5) | 31)  # 2107-12-31 23:59:58


def local_header(p: Planned, crc: int, dos: int) -> bytes:
    """The local file header of a planned entry, with its CRC and MS-DOS date (date << 16 |
    time); a zip64 extra field where the size needs one. A descriptor entry's header holds
    neither CRC nor sizes."""
    dt, tm = divmod(dos, 1 << 16)
    if p.blocks:
        return _LOCAL.pack(
            _LOCAL_SIG, p.version, p.flags, DEFLATED, tm, dt, 0, 0, 0, len(p.name), 0,
        ) + p.name  # fmt: skip
    size32 = MAX32 if p.zip64_local else p.size
    extra = struct.pack("<HHQQ", _ZIP64_EXTRA_ID, 16, p.size, p.size) if p.zip64_local else b""
    head = _LOCAL.pack(
        _LOCAL_SIG, p.version, p.flags, STORED, tm, dt, crc, size32, size32, len(p.name),
        len(extra),
    )  # fmt: skip
    return head + p.name + extra


def deflated_header(name: bytes, offset: int, dos: int, zip64: bool) -> bytes:
    """The local header of a DEFLATED entry whose CRC and sizes follow in a descriptor
    (`zip64`: it may exceed 4 GiB, or starts past it)."""
    dt, tm = divmod(dos, 1 << 16)
    version = _VERSION_ZIP64 if zip64 or offset >= MAX32 else _VERSION
    return _LOCAL.pack(
        _LOCAL_SIG, version, descriptor_flags(name), DEFLATED, tm, dt, 0, 0, 0, len(name), 0,
    ) + name  # fmt: skip


def central_entry(p: Planned, crc: int, dos: int) -> bytes:
    """The central directory's record of a planned entry."""
    method = DEFLATED if p.blocks else STORED
    return central_record(p.name, p.flags, method, crc, p.size, p.data_len, p.offset, dos)


def central_record(
    name: bytes, flags: int, method: int, crc: int, size: int, csize: int, offset: int, dos: int
) -> bytes:
    """One record of the central directory."""
    fields = _central_zip64_fields(size, csize, offset)
    extra = (
        struct.pack(f"<HH{len(fields)}Q", _ZIP64_EXTRA_ID, 8 * len(fields), *fields)
        if fields
        else b""
    )
    version = version_needed(size, csize, offset)
    dt, tm = divmod(dos, 1 << 16)
    record = _CENTRAL.pack(
        _CENTRAL_SIG, _MADE_BY_UNIX | version, version, flags, method, tm, dt,
        crc, min(csize, MAX32), min(size, MAX32), len(name), len(extra), 0, 0, 0,
        _EXTERNAL_ATTR, min(offset, MAX32),
    )  # fmt: skip
    return record + name + extra


def descriptor_flags(name: bytes) -> int:
    """The general purpose flags of a DEFLATED entry with a descriptor named `name`."""
    return _FLAG_DESCRIPTOR | (0 if name.isascii() else _FLAG_UTF8)


def end_records(count: int, cd_size: int, cd_offset: int, zip64: bool) -> bytes:
    """The end of central directory record, after the Zip64 ones when `zip64`."""
    records = b""
    if zip64:
        zip64_end_offset = cd_offset + cd_size
        records = ZIP64_END.pack(
            _ZIP64_END_SIG, ZIP64_END.size - 12, _MADE_BY_UNIX | _VERSION_ZIP64,
            _VERSION_ZIP64, 0, 0, count, count, cd_size, cd_offset,
        ) + ZIP64_LOCATOR.pack(_ZIP64_LOCATOR_SIG, 0, zip64_end_offset, 1)  # fmt: skip
    # A field too small for its value holds the marker; readers then use the zip64 record.
    return records + END.pack(
        _END_SIG, 0, 0, min(count, MAX16), min(count, MAX16), min(cd_size, MAX32),
        min(cd_offset, MAX32), 0,
    )  # fmt: skip


def zeros(count: int) -> array[int]:
    """`count` unsigned integers of at least 32 bits, all 0 (CRCs and dates of the entries)."""
    return array("I" if array("I").itemsize >= 4 else "L", [0]) * count
