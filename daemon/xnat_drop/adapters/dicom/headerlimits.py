"""Hard limits on the work one DICOM file may cost inspection, and where such a file must end.

The drop share is written by lab members, and a crafted file must cost inspection a bounded
amount of memory and time: a sparse file can declare any length, and a deflated one can unpack
to a thousand times its size. pydicom trusts both: it reads a requested element's declared
length in one `read()`, and it inflates the whole rest of a deflated file in memory.

- `BoundedFile` is the file pydicom reads a header from when the first bytes were not enough:
  each `read(size)` is checked against the limits *before* anything is read.
- `InflatedSource` inflates the data set of a deflated file step by step, with `max_length`,
  so that no more than MAX_INFLATED_HEADER bytes are ever held for its header.
- `ending_problem` checks that a file ends with its pixel data (or its data set): nothing
  after it is judged, so nothing much may be there (a 50 GiB sparse "DICOM" file, say).

Past a limit, `HeaderLimitError` says why in words for a lab member (never a header value):
the file is then filed as unreadable DICOM. No pydicom here: pydicomheader.py drives it.
"""

from __future__ import annotations

import errno
import struct
import zlib
from collections.abc import Callable
from typing import Protocol

from xnat_drop.core.sopclasses import is_non_image

KiB, MiB, GiB = 1024, 1024 * 1024, 1024 * 1024 * 1024

# No single value pydicom reads for a header may be larger: the largest real ones (a Philips
# private block, the per-frame functional groups of a few thousand frames) are a few MiB, and
# a sparse file declaring a 1 GiB SeriesDescription must not make pydicom allocate it.
MAX_ELEMENT_BYTES = 16 * MiB
# Where a header must end: pydicom may not read (or skip past) more of a file than this before
# the pixel data. Real headers end within a few MiB; skipping is cheap, but what lies beyond
# this is not a header any scanner writes.
MAX_HEADER_BYTES = 256 * MiB
# Values pydicom may read into memory for one header, all values together (skipped elements
# cost nothing; nested sequences are read whole).
MAX_HEADER_MEMORY = 64 * MiB
# Deflated Explicit VR Little Endian: how much of the data set is inflated to find the header.
# Enough for any real header; a 1 MB crafted file would otherwise unpack to about 1 GiB.
MAX_INFLATED_HEADER = 64 * MiB
# How much a deflated file may unpack to in all (its end is checked like any other file's).
# DICOM lengths are 32-bit; real deflated files (rare: SR, some research exports) are far
# smaller, and inflating this much costs about a second.
MAX_INFLATED_FILE = 1 * GiB
# Bytes a file may hold after the end of its pixel data (or of its data set, without pixel
# data): room for trailing padding (FFFC,FFFC) and digital signatures (FFFA,FFFA). Nothing
# after the pixel data is judged, so a file carrying more is refused.
TRAILING_ALLOWANCE = 64 * KiB
# Items of encapsulated (compressed) pixel data followed to find its end: one per frame, plus
# the offset table; a million is far beyond any real multi-frame image.
MAX_FRAGMENTS = 1_000_000

DEFLATED_UID = b"1.2.840.10008.1.2.1.99"
# (group, element) of the pixel data tags, where pydicom stops reading a header.
PIXEL_TAGS = frozenset({(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)})
_WALK_BLOCK = 64 * KiB  # bytes read at once when following small items of compressed pixels
# A complete raw deflate stream holding nothing: what BoundedFile gives pydicom for the data
# set of a deflated file, which InflatedSource then inflates itself.
EMPTY_DEFLATE = b"\x03\x00"
_BUFFER = 64 * KiB  # read ahead by BoundedFile for pydicom's small reads
_INPUT = 64 * KiB  # compressed bytes fed to zlib at a time
_PIECE = 1 * MiB  # inflated bytes produced at a time when they are only counted


class HeaderLimitError(Exception):
    """A header past one of the limits; the message is a note for a report."""


def _size_words(count: int) -> str:
    return f"{count // GiB} GiB" if count >= GiB and count % GiB == 0 else f"{count // MiB} MiB"


def trailing_note(count: int, image: bool) -> str:
    """The note for a file holding `count` bytes after the end of its image data (or of its
    DICOM data set, for a file without image data)."""
    what = "image data" if image else "DICOM data"
    return (
        f"it holds {count:,} bytes after the end of its {what}; a DICOM file ends with its "
        f"{what}, so export it again"
    )


class Readable(Protocol):
    """Bytes to check the end of a data set in: a file (openfile.OpenFile) or an InflatedSource."""

    @property
    def size(self) -> int: ...

    def read_at(self, offset: int, length: int) -> bytes: ...


def has_image_header(has_rows: bool, sop_class_uid: str) -> bool:
    """True when a data set with (`has_rows`) or without Rows (0028,0010) must carry pixel data
    (ending_problem): not for a non-image object (core/sopclasses.py), which may keep Rows, e.g.
    for the grid of a spectroscopy object, and hold its data in another element."""
    return has_rows and not is_non_image(sop_class_uid)


def ending_problem(source: Readable, start: int, is_image: bool) -> str:
    """Why the data does not end where the file does, or "" when the file is whole.

    pydicom stops reading at the Pixel Data tag (at `start`); its length (or, for encapsulated
    data, the chain of items) must fit in the file, and the file must end there, give or take
    TRAILING_ALLOWANCE bytes (padding, signatures): nothing after the pixel data is judged, so
    nothing much may be there. A file without pixel data ends where pydicom stopped reading
    its data set (at the end of the file, or where zeros begin). An image header with no
    pixel data ends too early.
    """
    size = source.size
    tag_bytes = source.read_at(start, 12)
    if len(tag_bytes) < 8 or tag_bytes[:2] == b"\0\0":  # the end, or zeros (see inspect)
        if is_image:
            return "the file ends before the image data"
        return _trailing(size - start, image=False)
    for order in "<>":
        group, element = struct.unpack(f"{order}HH", tag_bytes[:4])
        if (group, element) in PIXEL_TAGS:
            break
    else:
        return _trailing(size - start, image=False)
    vr = tag_bytes[4:6]
    if vr.isalpha() and vr.isupper():
        header_len, length = 12, struct.unpack(f"{order}I", tag_bytes[8:12])[0]
    else:
        header_len, length = 8, struct.unpack(f"{order}I", tag_bytes[4:8])[0]
    if length != 0xFFFFFFFF:
        end = start + header_len + length
        if end > size:
            return f"the image data is cut short by {end - size} bytes"
        return _trailing(size - end, image=True)
    problem, end = _encapsulated_end(source, start + header_len, order)
    return problem or _trailing(size - end, image=True)


def _trailing(count: int, image: bool) -> str:
    return trailing_note(count, image) if count > TRAILING_ALLOWANCE else ""


def _encapsulated_end(source: Readable, position: int, order: str) -> tuple[str, int]:
    """Follow the items of compressed pixel data up to the sequence delimiter: (why that
    fails, or "", and the offset after the delimiter). At most MAX_FRAGMENTS items.

    Small items (the offset table, the frames of small images) are read 64 KiB at a time;
    after a large one, only the next item's 8 bytes.
    """
    item = struct.Struct(f"{order}HHI")
    size = source.size
    block, block_at, length = b"", position, 0
    for _ in range(MAX_FRAGMENTS + 1):
        at = position - block_at
        if at + 8 > len(block):
            block = source.read_at(position, 8 if length > _WALK_BLOCK // 8 else _WALK_BLOCK)
            block_at, at = position, 0
        if at + 8 > len(block):
            return "the compressed image data ends without its closing delimiter", 0
        group, element, length = item.unpack_from(block, at)
        position += 8
        if (group, element) == (0xFFFE, 0xE0DD):
            return "", position
        if (group, element) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
            return "the compressed image data is damaged", 0
        if position + length > size:
            return "the compressed image data is cut short", 0
        position += length
    return f"its compressed image data is split into more than {MAX_FRAGMENTS:,} parts", 0


class _Positioned:
    """`tell` and `seek` over something `_length()` bytes long (pydicom needs both)."""

    _pos = 0

    def _length(self) -> int:
        raise NotImplementedError

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = (0, self._pos, self._length())[whence]
        if base + offset < 0:
            raise OSError(errno.EINVAL, "negative seek position")
        self._pos = base + offset
        return self._pos


class BoundedFile(_Positioned):
    """A file-like over `read_at` (a file of `size` bytes) that pydicom reads a header from.

    pydicom uses only `read`, `seek` and `tell`. It skips the elements it was not asked for
    with a seek (free) and reads the others, and everything nested in a sequence of undefined
    length, with `read(length)`. Each read is checked against the limits before it is made:
    past one, HeaderLimitError is raised and also kept in `exceeded`, because pydicom turns
    some exceptions into others (see `check`). Reads never go past `size`.

    `read()` without a size is pydicom inflating a deflated data set: the offset where it
    starts is kept in `deflated_at`, and an empty stream is handed back instead (see
    InflatedSource).
    """

    def __init__(self, read_at: Callable[[int, int], bytes], size: int) -> None:
        self._read_at = read_at
        self._size = size
        self._pos = 0
        self._buffer = b""
        self._buffer_at = 0
        self.memory = 0  # bytes handed to pydicom so far
        self.exceeded: HeaderLimitError | None = None
        self.deflated_at: int | None = None

    def check(self) -> None:
        """Raise the HeaderLimitError a read raised, whatever pydicom made of it."""
        if self.exceeded is not None:
            raise self.exceeded

    def _length(self) -> int:
        return self._size

    def read(self, size: int | None = -1, /) -> bytes:
        pos = self._pos
        if size is None or size < 0:
            if self.deflated_at is None:
                self.deflated_at = pos
            return EMPTY_DEFLATE
        end = min(pos + size, self._size)
        count = end - pos
        if count > MAX_ELEMENT_BYTES:
            self._refuse(
                f"a value in its header is larger than {_size_words(MAX_ELEMENT_BYTES)}, "
                "far more than any scanner writes"
            )
        if end > MAX_HEADER_BYTES:  # also after a skip to the end of a larger file
            self._refuse(
                f"its header goes on past the first {_size_words(MAX_HEADER_BYTES)}, "
                "far more than any scanner writes"
            )
        if count <= 0:
            return b""
        self.memory += count
        if self.memory > MAX_HEADER_MEMORY:
            self._refuse(
                f"its header holds more than {_size_words(MAX_HEADER_MEMORY)} of values, "
                "far more than any scanner writes"
            )
        start = self._buffer_at
        if start <= pos and end <= start + len(self._buffer):
            data = self._buffer[pos - start : end - start]
        elif count >= _BUFFER:
            data = self._read_at(pos, count)
        else:
            self._buffer = self._read_at(pos, _BUFFER)
            self._buffer_at = pos
            data = self._buffer[:count]
        self._pos = pos + len(data)
        return data

    def _refuse(self, note: str) -> None:
        self.exceeded = HeaderLimitError(note)
        raise self.exceeded


class _Stream:
    """A raw deflate stream read from a file from an offset on, inflated piece by piece."""

    def __init__(self, read_at: Callable[[int, int], bytes], start: int) -> None:
        self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
        self._read_at = read_at
        self._start = start
        self.at = start  # the next compressed byte of the file to feed

    def copy(self) -> _Stream:
        twin = _Stream(self._read_at, self._start)
        twin._inflate, twin.at = self._inflate.copy(), self.at
        return twin

    @property
    def ended(self) -> bool:
        """The stream's last block was inflated."""
        return self._inflate.eof

    def after_end(self, file_size: int) -> int:
        """Bytes of the file after the end of the stream (once `ended`)."""
        return len(self._inflate.unused_data) + max(0, file_size - self.at)

    def piece(self, room: int) -> bytes:
        """Up to `room` (> 0) more inflated bytes; b"" once the stream or the file ended.

        Raises zlib.error for data that is not deflate, HeaderLimitError when more than
        MAX_INFLATED_FILE compressed bytes would be read.
        """
        inflate = self._inflate
        while not inflate.eof:
            data = inflate.unconsumed_tail
            if not data:
                if self.at - self._start > MAX_INFLATED_FILE:
                    raise HeaderLimitError(_TOO_LARGE)
                data = self._read_at(self.at, _INPUT)
                self.at += len(data)
            out = inflate.decompress(data, room)
            if out:
                return out
            if not data:  # the file ended; nothing was pending in zlib either
                return b""
        return b""


_TOO_LARGE = (
    f"it is deflated and unpacks to more than {_size_words(MAX_INFLATED_FILE)}, "
    "far more than any scanner writes"
)


class Window(_Positioned):
    """A file pydicom reads (`read`, `seek`, `tell`) over bytes held elsewhere, noting in
    `short` whether a read ran into their end (as pydicomheader's _Head does)."""

    def __init__(self, data: bytearray) -> None:
        self._data = data
        self._pos = 0
        self.short = False

    def _length(self) -> int:
        return len(self._data)

    def read(self, size: int | None = -1, /) -> bytes:
        pos = self._pos
        end = len(self._data) if size is None or size < 0 else pos + size
        with memoryview(self._data) as view:  # released at once: the bytearray may grow later
            data = view[pos:end].tobytes()
        if end > len(self._data) or size is None or size < 0:
            self.short = True
        self._pos = pos + len(data)
        return data


class InflatedSource:
    """The data set of a deflated file (Deflated Explicit VR Little Endian), inflated as far
    as it is read. Raises zlib.error for damaged data and HeaderLimitError past the limits.

    `inflate_to` keeps everything inflated (the header, at most MAX_INFLATED_HEADER bytes, as
    `data`). `read_at` and `size` make it a source for `ending_problem`: reads go forward only
    from the header on, and `size` (the inflated length) is measured by inflating a copy of
    the stream to its end, counting without keeping.
    """

    def __init__(self, read_at: Callable[[int, int], bytes], file_size: int, start: int) -> None:
        self._stream = _Stream(read_at, start)
        self._file_size = file_size
        self.data = bytearray()  # inflated bytes from `base` on
        self.base = 0
        self.dry = False  # the stream gives no more (it ended, or the file did)
        self._measured: tuple[int, bool, int] | None = None  # size, ended, bytes after the end

    @property
    def produced(self) -> int:
        return self.base + len(self.data)

    def reader(self) -> Window:
        """The bytes inflated so far (from offset 0) as a file for pydicom, without a copy."""
        assert self.base == 0, "read forward already"
        return Window(self.data)

    def inflate_to(self, limit: int) -> None:
        """Inflate (keeping) until `limit` bytes of the data set were produced or it ended."""
        while self.produced < limit and not self.dry:
            piece = self._stream.piece(limit - self.produced)
            if not piece:
                self.dry = True
            self.data += piece
            if self.produced > MAX_INFLATED_FILE:
                raise HeaderLimitError(_TOO_LARGE)

    def read_at(self, offset: int, length: int) -> bytes:
        """Up to `length` inflated bytes from `offset` (fewer only at the end), forgetting
        everything before `offset`: offsets may only grow."""
        if offset < self.base:
            raise ValueError("InflatedSource reads forward only")
        if offset > self.produced:  # skip: inflate and drop (a piece never passes `offset`)
            self.base = self.produced
            self.data.clear()
            while self.base < offset and not self.dry:
                piece = self._stream.piece(min(offset - self.base, _PIECE))
                self.dry = not piece
                self.base += len(piece)
                if self.base > MAX_INFLATED_FILE:
                    raise HeaderLimitError(_TOO_LARGE)
            if self.base < offset:  # the data set ended before `offset`
                return b""
        else:
            del self.data[: offset - self.base]
            self.base = offset
        self.inflate_to(offset + length)
        return bytes(self.data[:length])

    @property
    def size(self) -> int:
        """The inflated length of the data set."""
        return self._measure()[0]

    def problem(self) -> str:
        """Why the file does not end where its deflated data set does, or ""."""
        _, ended, after = self._measure()
        if not ended:
            return "its deflated data is cut short"
        if after > TRAILING_ALLOWANCE:
            return trailing_note(after, image=False)
        return ""

    def _measure(self) -> tuple[int, bool, int]:
        if self._measured is None:
            stream, total = self._stream, self.produced
            if not self.dry:
                stream = stream.copy()
                while piece := stream.piece(_PIECE):
                    total += len(piece)
                    if total > MAX_INFLATED_FILE:
                        raise HeaderLimitError(_TOO_LARGE)
            self._measured = (total, stream.ended, stream.after_end(self._file_size))
        return self._measured
