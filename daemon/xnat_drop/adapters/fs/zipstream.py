"""Stream a session's files as a zip archive that Java's `ZipInputStream` (hence XNAT) reads.

XNAT reads the upload with `ZipInputStream`: local headers only, and a STORED entry with a
data descriptor (flag bit 3) is refused. Every file is read once (zipformat.py):

- files up to `buffer_limit` bytes are STORED with their CRC-32 and sizes in the local header:
  read into a bounded buffer (several small files share one buffer), their CRCs computed,
  and the buffer is sent;
- larger files are DEFLATED as stored blocks (their bytes as they are, 5 bytes of framing per
  65,535), read and sent in `chunk_size` pieces, their CRC in a data descriptor after them.

All sizes come from the entry list, so the whole layout, and the exact length that goes in
Content-Length, is known before a byte is read. A file that changed anyway raises
`SessionChangedError`: each file's stamp (device, inode, size, mtime, ctime) must still be the
one it had when it was inspected, when it is opened and again once it has been read, so a file
rewritten since (even to the same size, with its mtime set back) never goes out. Given a
`root`, files are opened below it through no link at all (beneath.py): a folder swapped for a
link to another patient's study is never followed. The central directory is written at the
end so ordinary unzip tools read the archive too. Zip64 records are written only where a
size, offset or count needs them.

The plan of a large session is kept small: per entry, the archive holds its offset, CRC and
date in arrays (16 bytes) and refers to the caller's entries; names are encoded again when
they are written. Sources may be `str` paths, which cost less than `Path` objects.
"""

from __future__ import annotations

import os
import zlib
from array import array
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from xnat_drop.adapters.fs.beneath import Dir
from xnat_drop.adapters.fs.zipformat import (
    END,
    MAX16,
    MAX32,
    STORED_BLOCK,
    ZIP64_END,
    ZIP64_LOCATOR,
    Planned,
    block_header,
    central_entry,
    central_len,
    descriptor,
    encoded_name,
    end_records,
    local_header,
    zeros,
    zip_name,
)
from xnat_drop.adapters.fs.zipsource import EntryFiles, check_unchanged, read_into, shrank

__all__ = ["BundleEntry", "ZipStream", "write_zip", "zip_name"]


@dataclass(frozen=True, slots=True)
class BundleEntry:
    """One file to put in the zip."""

    # The regular file inspection vetted: an absolute path, or with ZipStream's `root` a
    # "/"-separated path below it.
    source: Path | str
    arcname: str  # name inside the zip, "/" separators, may be non-ASCII
    size: int  # size seen at inspection
    stamp: int = 0  # beneath.stamp of the file as inspected; 0: not checked (tests, benchmarks)


@dataclass(frozen=True, slots=True)
class _Segment:
    """Entries `first` to `stop - 1`, either sharing one buffer or one file in stored blocks."""

    first: int
    stop: int
    nbytes: int  # headers and data
    buffered: bool


class ZipStream:
    """A zip archive produced on the fly from files on disk, readable by ZipInputStream.

    `len()` is the exact byte length, known before anything is read. Read it with `read(n)`
    or by iterating (chunks of at most `chunk_size`). Memory, whatever the session size:
    one reused buffer of about `max(buffer_limit, chunk_size)` plus the chunk being handed
    out (a `read(n)` spanning two pieces may briefly hold up to `n` more).

    `progress(bytes_done)`, if given, is called each time about `chunk_size` more bytes went
    out, at the end, and after every chunk of the CRC pass over a large file (with an
    unchanged value) so that a watchdog keeps being fed during a long pass.

    Given a `root` (an open folder, which the stream then owns and closes when it is done or
    closed), each entry's `source` is a "/"-separated path below it, opened one folder at a
    time without following any link; without one, an absolute path opened with O_NOFOLLOW.

    Reading raises `SessionChangedError` when a file vanished, is no longer a regular file,
    lies behind a folder that is no longer a folder, or differs from the entry list (size,
    stamp) or from its own CRC pass (content). A file's stamp is checked when it is opened
    and once all of it has been read, before its last bytes go out: a file written while it
    was read never goes out whole. The stream is then unusable: the archive is cut short,
    and every later read raises ValueError. Other `OSError`s (permissions, I/O errors)
    propagate unchanged. Not thread-safe; no `tell()` on purpose (requests would subtract it
    from the length).
    """

    def __init__(
        self,
        entries: Sequence[BundleEntry],
        *,
        root: Dir | None = None,
        buffer_limit: int = 8 * 1024 * 1024,
        chunk_size: int = 1024 * 1024,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Plan the archive; nothing is opened yet (but `root` is now the stream's).

        Raises ValueError for a negative size, an empty name, a name ending in "/" (Java would
        take it for a folder and skip it) or a name longer than 65,535 bytes.
        """
        self._files = EntryFiles(root)
        try:
            self._plan(entries, buffer_limit, chunk_size)
        except BaseException:
            self._release()
            raise
        self._progress = progress
        self._gen: Generator[bytes | memoryview, None, None] = self._pieces()
        self._view: memoryview | None = None  # current piece
        self._piece: bytes | memoryview = b""
        self._pos = 0  # within the current piece
        self._done = 0
        self._entries_done = 0
        self._reported = 0
        self._closed = False
        self._failure: BaseException | None = None

    def _plan(self, entries: Sequence[BundleEntry], buffer_limit: int, chunk_size: int) -> None:
        """Lay the archive out (see __init__)."""
        if buffer_limit < 1 or chunk_size < 1:
            raise ValueError("buffer_limit and chunk_size must be positive")
        self._chunk_size = chunk_size
        self._limit = buffer_limit  # larger files go in stored blocks
        # A list is copied (8 bytes an entry): the caller may change it later. Any other
        # sequence (a tuple, a view made on demand) is taken as it is.
        self._entries: Sequence[BundleEntry] = (
            tuple(entries) if isinstance(entries, list) else entries
        )
        # The local header offset of each entry, then the central directory's.
        self._offsets, self._cd_size = self._layout(self._entries, buffer_limit)
        self._cd_offset = self._offsets[-1]
        count = len(self._entries)
        self._zip64_end = count >= MAX16 or self._cd_offset >= MAX32 or self._cd_size >= MAX32
        end_len = ZIP64_END.size + ZIP64_LOCATOR.size if self._zip64_end else 0
        self._total = self._cd_offset + self._cd_size + end_len + END.size
        self._segments = self._group(self._entries, self._offsets, buffer_limit)
        # One buffer for all file reads: the largest run of small files, or a piece of a
        # large file in stored blocks (whole blocks, their framing included).
        self._blocks_per_piece = max(1, chunk_size // STORED_BLOCK)
        piece = self._blocks_per_piece * (STORED_BLOCK + 5)
        self._buffer_size = max(
            (s.nbytes if s.buffered else min(piece, s.nbytes) for s in self._segments),
            default=0,
        )
        # Filled in as files are read: the central directory repeats them.
        self._crcs = zeros(count)
        self._dos = zeros(count)  # MS-DOS date << 16 | time

    @staticmethod
    def _layout(entries: Sequence[BundleEntry], limit: int) -> tuple[array[int], int]:
        """The offsets of the local headers, then of the central directory (an array of
        len(entries) + 1), and the central directory's length; files over `limit` bytes go in
        stored blocks."""
        offsets = array("q", [0]) * (len(entries) + 1)
        offset = cd_size = 0
        for i, e in enumerate(entries):
            name_str = zip_name(e.arcname)
            if e.size < 0:
                raise ValueError(f"{e.arcname!r}: negative size {e.size}")
            if not name_str or name_str.endswith("/"):
                raise ValueError(f"{e.arcname!r}: not a file name")
            name = name_str.encode("utf-8")
            if len(name) > MAX16:
                raise ValueError(f"{e.arcname!r}: name longer than 65,535 bytes")
            offsets[i] = offset
            planned = Planned(e.source, e.arcname, name, e.size, offset, blocks=e.size > limit)
            cd_size += central_len(name, e.size, offset, planned.data_len)
            offset = planned.end
        offsets[len(entries)] = offset
        return offsets, cd_size

    @staticmethod
    def _group(entries: Sequence[BundleEntry], offsets: array[int], limit: int) -> list[_Segment]:
        """Runs of small files whose headers and data fit in `limit` share one buffer."""
        segments: list[_Segment] = []
        i = 0
        while i < len(entries):
            if entries[i].size > limit:
                segments.append(_Segment(i, i + 1, offsets[i + 1] - offsets[i], buffered=False))
                i += 1
                continue
            # The first file always fits: a buffer may exceed `limit` by one header.
            stop = i + 1
            while stop < len(entries) and entries[stop].size <= limit:
                if offsets[stop + 1] - offsets[i] > limit:
                    break
                stop += 1
            segments.append(_Segment(i, stop, offsets[stop] - offsets[i], buffered=True))
            i = stop
        return segments

    def _planned(self, i: int) -> Planned:
        """Where entry `i` sits in the archive."""
        e = self._entries[i]
        name = encoded_name(e.arcname)
        blocks = e.size > self._limit
        return Planned(e.source, e.arcname, name, e.size, self._offsets[i], e.stamp, blocks)

    # -- the consumer's side --------------------------------------------------------------

    def __len__(self) -> int:
        return self._total

    @property
    def bytes_done(self) -> int:
        """Bytes handed out so far."""
        return self._done

    @property
    def entries_done(self) -> int:
        """Entries whose header and data were completely handed out."""
        return self._entries_done

    def read(self, size: int | None = -1) -> bytes:
        """Return the next `size` bytes (all that is left if negative), fewer only at the end.

        Returns b"" at the end. Raises `SessionChangedError` as described on the class.
        """
        self._check_usable()
        left = self._total - self._done
        want = left if size is None or size < 0 else min(size, left)
        if want == 0:
            return b""
        view = self._current()
        if len(view) - self._pos >= want:
            data = bytes(view[self._pos : self._pos + want])
            self._pos += want
        else:
            parts: list[bytes | memoryview] = []
            got = 0
            while got < want:
                view = self._current()
                take = min(want - got, len(view) - self._pos)
                part = view[self._pos : self._pos + take]
                self._pos += take
                got += take
                # A part followed by another piece is copied now: that piece may be the
                # same buffer, refilled.
                parts.append(bytes(part) if got < want else part)
            del view, part
            data = b"".join(parts)
        self._advance(len(data))
        return data

    def __iter__(self) -> Iterator[bytes]:
        """Yield the rest of the archive in chunks of at most `chunk_size` bytes."""
        while True:
            self._check_usable()
            if self._done == self._total:
                return
            view = self._current()
            piece = self._piece
            if self._pos == 0 and isinstance(piece, bytes) and len(piece) <= self._chunk_size:
                chunk = piece  # already a bytes object of its own: no copy
            else:
                chunk = bytes(view[self._pos : self._pos + self._chunk_size])
            del view, piece
            self._pos += len(chunk)
            self._advance(len(chunk))
            yield chunk
            del chunk  # not kept while the next one is made

    def close(self) -> None:
        """Stop early: close any open file, and `root`. Later reads raise ValueError."""
        self._closed = True
        self._view = None
        self._piece = b""
        self._gen.close()  # runs the generator's `finally`, which closes its file
        self._release()

    def _release(self) -> None:
        """Close the folders: every file has been read, or none will be."""
        self._files.close()

    def __enter__(self) -> ZipStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_usable(self) -> None:
        if self._closed:
            raise ValueError("read from a closed ZipStream")
        if self._failure is not None:
            raise ValueError(f"read from a ZipStream that broke off: {self._failure}")

    def _current(self) -> memoryview:
        """The piece with bytes left to hand out, fetching the next one when needed."""
        view = self._view
        if view is not None and self._pos < len(view):
            return view
        # Drop the old piece first so its buffer can be freed or refilled.
        self._view, self._piece, self._pos = None, b"", 0
        del view
        while True:
            try:
                piece = next(self._gen)
            except StopIteration:
                raise AssertionError("zip stream ended before its planned length") from None
            except BaseException as exc:
                self._failure = exc
                raise
            if len(piece):
                self._piece, self._view = piece, memoryview(piece)
                return self._view

    def _advance(self, n: int) -> None:
        self._done += n
        ends, count = self._offsets, len(self._entries)  # entry i ends where i + 1 starts
        while self._entries_done < count and ends[self._entries_done + 1] <= self._done:
            self._entries_done += 1
        if self._progress is not None and (
            self._done - self._reported >= self._chunk_size or self._done == self._total
        ):
            self._reported = self._done
            self._progress(self._done)

    # -- the producer's side --------------------------------------------------------------

    def _pieces(self) -> Generator[bytes | memoryview, None, None]:
        """Yield the archive in pieces; exactly `len(self)` bytes in all.

        Every file is read into one buffer, reused: a piece that is a view of it is copied
        out by `read` or `__iter__` before the next piece is asked for.
        """
        buffer = bytearray(self._buffer_size)
        view = memoryview(buffer)
        try:
            for segment in self._segments:
                if segment.buffered:
                    yield self._fill(segment, view)
                else:
                    yield from self._send_large(segment.first, view)
        finally:
            self._release()
        del view, buffer
        yield from self._central_directory()
        yield self._end_records()

    def _fill(self, segment: _Segment, view: memoryview) -> memoryview:
        """Read a run of small files into the buffer, each after its local header."""
        base = self._offsets[segment.first]
        for i in range(segment.first, segment.stop):
            p = self._planned(i)
            start = p.offset - base + p.header_len
            data = view[start : start + p.size]
            fd, expected, self._dos[i] = self._files.open(p)
            try:
                got = 0
                while got < p.size:
                    n = os.readv(fd, [data[got:]])
                    if n == 0:
                        raise shrank(p, got)
                    got += n
                check_unchanged(fd, p, expected)  # before the buffer goes out
            finally:
                os.close(fd)
            self._crcs[i] = zlib.crc32(data)
            view[p.offset - base : start] = self._local_header(i, p)
        return view[: segment.nbytes]

    def _send_large(self, i: int, view: memoryview) -> Iterator[bytes | memoryview]:
        """Yield one large file's header, its data as stored blocks, then its descriptor: one
        pass, the CRC computed as the data goes out."""
        p = self._planned(i)
        fd, expected, self._dos[i] = self._files.open(p)
        crc = 0
        try:
            yield self._local_header(i, p)
            left = p.size
            whole = STORED_BLOCK + 5
            while left:
                lengths: list[int] = []
                while left and len(lengths) < self._blocks_per_piece:
                    lengths.append(min(STORED_BLOCK, left))
                    left -= lengths[-1]
                slots = [view[k * whole + 5 : k * whole + 5 + n] for k, n in enumerate(lengths)]
                wanted = sum(lengths)
                got = read_into(fd, slots)
                if got < wanted:
                    raise shrank(p, p.size - left - wanted + got)
                for k, slot in enumerate(slots):
                    crc = zlib.crc32(slot, crc)
                    final = not left and k == len(slots) - 1
                    view[k * whole : k * whole + 5] = block_header(len(slot), final)
                del slots
                if not left:  # before the last piece: a file written meanwhile is a changed file
                    check_unchanged(fd, p, expected)
                yield view[: len(lengths) * 5 + wanted]
        finally:
            os.close(fd)
        self._crcs[i] = crc
        yield descriptor(crc, p.size, p.data_len)

    def _local_header(self, i: int, p: Planned) -> bytes:
        return local_header(p, self._crcs[i], self._dos[i])

    def _central_directory(self) -> Iterator[bytes]:
        """Yield the central directory in pieces of about `chunk_size` bytes."""
        out = bytearray()
        for i in range(len(self._entries)):
            out += central_entry(self._planned(i), self._crcs[i], self._dos[i])
            if len(out) >= self._chunk_size:
                yield bytes(out)
                out.clear()
        if out:
            yield bytes(out)

    def _end_records(self) -> bytes:
        return end_records(len(self._entries), self._cd_size, self._cd_offset, self._zip64_end)


def write_zip(entries: Sequence[BundleEntry], out: BinaryIO, *, root: Dir | None = None) -> int:
    """Write the whole archive of `entries` (below `root`, which it closes) to `out` (tests
    and benchmarks).

    Returns the number of bytes written. Raises as `ZipStream` does.
    """
    written = 0
    with ZipStream(entries, root=root) as stream:
        for chunk in stream:
            out.write(chunk)
            written += len(chunk)
    return written
