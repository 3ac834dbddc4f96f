"""Stream a session's files as a zip whose pieces are compressed in parallel when the link is
slower than compressing (`zip.compression = "auto"` or `"deflate"`).

Every entry is DEFLATED with a data descriptor (zipformat.py), so each file is read once, as
it is sent, and its CRC follows its data. A file goes out in pieces of up to PIECE bytes;
each piece is either compressed on a worker thread (zlib releases the GIL, so the threads
run in parallel: a raw deflate stream of its own ending in a sync flush, on a byte boundary)
or framed as stored blocks, and the pieces of one entry may mix both. `core.linkpace` decides
each piece from what this stream measures: how fast the consumer sends, how fast the threads
compress, and how well.

The length is not known in advance, so the body goes out chunked (XNAT accepts a chunked
`application/zip` body from 1.7.6 on, xnat-api.md §2). Pieces are emitted in order; at most
`ahead` raw bytes wait for their threads, so memory stays bounded whatever the session size.
Files are opened and checked as zipstream.py does (zipsource.py): a file changed since it was
inspected, or while it is read, raises `SessionChangedError` before its entry is complete.
"""

from __future__ import annotations

import os
import time
import zlib
from array import array
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType

from xnat_drop.adapters.fs.beneath import Dir
from xnat_drop.adapters.fs.zipformat import (
    DEFLATED,
    FINAL_EMPTY,
    MAX16,
    MAX32,
    STORED_BLOCK,
    Planned,
    block_header,
    central_entry,
    central_record,
    deflated_header,
    descriptor,
    descriptor_flags,
    encoded_name,
    end_records,
    local_header,
    zeros,
)
from xnat_drop.adapters.fs.zipsource import EntryFiles, check_unchanged, read_into, shrank
from xnat_drop.adapters.fs.zipstream import BundleEntry
from xnat_drop.core import linkpace
from xnat_drop.core.linkpace import Pace

__all__ = ["PIECE", "DeflatingZip"]

PIECE = 1 << 20  # raw bytes per piece: a whole small file, or one piece of a large one
LEVEL = 1  # zlib's fastest level: most of what deflate gains on images, at the least CPU

_HEADER, _DATA, _END, _STORED = 0, 1, 2, 3


@dataclass(slots=True)
class _Out:
    """One thing to emit, in order: an entry's header, a piece of its data, its end, or a
    whole STORED entry."""

    kind: int
    index: int
    raw: int = 0  # session bytes in this piece
    data: bytes | bytearray | Future[tuple[bytes, float]] = b""


def _deflate(piece: bytearray, level: int) -> tuple[bytes, float]:
    """`piece` as a raw deflate stream ending on a byte boundary (not final), and the CPU
    seconds it took this thread; stored blocks when compressing would not make it smaller."""
    started = time.thread_time()
    packer = zlib.compressobj(level, zlib.DEFLATED, -15)
    out = packer.compress(piece) + packer.flush(zlib.Z_SYNC_FLUSH)
    if len(out) >= _framed_len(len(piece)):
        out = bytes(_framed_copy(piece))
    return out, time.thread_time() - started


def _framed_len(size: int) -> int:
    return size + 5 * -(-size // STORED_BLOCK)


def _framed_copy(piece: bytearray) -> bytearray:
    framed = bytearray(_framed_len(len(piece)))
    for k, slot in enumerate(_slots(memoryview(framed), len(piece))):
        framed[k * (STORED_BLOCK + 5) : k * (STORED_BLOCK + 5) + 5] = block_header(len(slot), False)
        slot[:] = piece[k * STORED_BLOCK : k * STORED_BLOCK + len(slot)]
    return framed


def _slots(framed: memoryview, size: int) -> list[memoryview]:
    """The data slots of `size` bytes framed as (non-final) stored blocks in `framed`."""
    whole = STORED_BLOCK + 5
    return [
        framed[k * whole + 5 : k * whole + 5 + min(STORED_BLOCK, size - k * STORED_BLOCK)]
        for k in range(-(-size // STORED_BLOCK))
    ]


class DeflatingZip:
    """A zip archive produced on the fly, compressed where the link is the bottleneck;
    readable by ZipInputStream. No `len()`: it goes out chunked. Iterate it for its bytes.

    `mode` is "auto" (each piece decided by linkpace) or "deflate" (every piece compressed).
    `workers` threads compress; `progress(session_bytes_done)` is called about once a piece.
    Raises `SessionChangedError` as ZipStream does; other `OSError`s propagate. Not
    thread-safe.
    """

    def __init__(
        self,
        entries: Sequence[BundleEntry],
        *,
        root: Dir | None = None,
        mode: str = "auto",
        workers: int = 2,
        level: int = LEVEL,
        piece: int = PIECE,
        progress: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        pace: Pace | None = None,
    ) -> None:
        """`pace`: what an earlier upload learned (linkpace.carried), else a new one."""
        self._files = EntryFiles(root)
        self._entries: Sequence[BundleEntry] = (
            tuple(entries) if isinstance(entries, list) else entries  # as ZipStream
        )
        count = len(self._entries)
        self._offsets = array("q", [0]) * count
        self._csizes = array("q", [0]) * count
        self._crcs = zeros(count)
        self._dos = zeros(count)  # MS-DOS date << 16 | time
        self._stored = bytearray(count)  # 1: a STORED entry (a small file sent as it is)
        self._workers = max(1, workers)
        self._level = level
        self._piece = max(1, piece)
        self._ahead = 2 * self._workers * self._piece  # raw bytes waiting for threads, at most
        self._progress = progress
        self._clock = clock
        self.pace = pace or Pace(mode=mode, workers=self._workers)
        self._done = 0  # bytes handed out
        self._entries_done = 0
        self._reported = 0
        self._closed = False
        self._gen: Generator[bytes | bytearray, None, None] = self._pieces()

    @property
    def bytes_done(self) -> int:
        """Bytes handed out so far (compressed)."""
        return self._done

    @property
    def entries_done(self) -> int:
        """Entries whose header, data and descriptor were completely handed out."""
        return self._entries_done

    def __iter__(self) -> Iterator[bytes | bytearray]:
        """Yield the archive in chunks of about `piece` bytes (the pieces of many small files
        go out together), timing how long the consumer takes with each."""
        if self._closed:
            raise ValueError("read from a closed DeflatingZip")
        out = bytearray()
        for data in self._gen:
            if not out and len(data) >= self._piece // 2:
                yield from self._send(data)  # large enough alone: no copy (each is its own)
                continue
            out += data
            if len(out) >= self._piece:
                yield from self._send(out)
                out = bytearray()
        if out:
            yield from self._send(out)

    def _send(self, chunk: bytes | bytearray) -> Iterator[bytes | bytearray]:
        started = self._clock()
        yield chunk  # a bytearray of its own: the consumer may keep it
        self.pace = linkpace.sent(self.pace, len(chunk), self._clock() - started)

    def close(self) -> None:
        """Stop early: close any open file, the threads and the folders."""
        self._closed = True
        self._gen.close()
        self._files.close()

    def __enter__(self) -> DeflatingZip:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the producer's side --------------------------------------------------------------

    def _pieces(self) -> Generator[bytes | bytearray, None, None]:
        """Yield the archive: entries in order, then the central directory and end records."""
        pool = ThreadPoolExecutor(self._workers, thread_name_prefix="xnat-drop-deflate")
        queue: deque[_Out] = deque()
        waiting = 0  # raw bytes in the queue
        try:
            for out in self._produce(pool):
                queue.append(out)
                waiting += out.raw
                while queue and (waiting > self._ahead or _ready(queue[0])):
                    item = queue.popleft()
                    waiting -= item.raw
                    yield from self._emit(item)
            while queue:
                yield from self._emit(queue.popleft())
        finally:
            for item in queue:
                if isinstance(item.data, Future):
                    item.data.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            self._files.close()
        yield from self._central_directory()

    def _produce(self, pool: ThreadPoolExecutor) -> Iterator[_Out]:
        """Read every file once, in order, handing each piece to a thread or framing it."""
        for i, e in enumerate(self._entries):
            p = Planned(e.source, e.arcname, b"", e.size, 0, e.stamp)
            fd, expected, self._dos[i] = self._files.open(p)
            try:
                if e.size <= self._piece and not (e.size and linkpace.compress_next(self.pace)):
                    # A file of one piece, not to be compressed: read whole, its CRC known
                    # before its header, so a STORED entry as ZipStream makes them (the
                    # receiver copies it; no deflate framing to undo).
                    yield self._whole(i, fd, p, expected)
                    continue
                yield _Out(_HEADER, i)
                crc, left = 0, e.size
                while left:
                    n = min(self._piece, left)
                    compress = linkpace.compress_next(self.pace)
                    self.pace = linkpace.taken(self.pace, n)
                    buffer = bytearray(n if compress else _framed_len(n))
                    slots = [memoryview(buffer)] if compress else _slots(memoryview(buffer), n)
                    got = read_into(fd, list(slots))
                    if got < n:
                        raise shrank(p, e.size - left + got)
                    left -= n
                    for slot in slots:
                        crc = zlib.crc32(slot, crc)
                    if not compress:
                        whole = STORED_BLOCK + 5
                        for k, slot in enumerate(slots):
                            buffer[k * whole : k * whole + 5] = block_header(len(slot), False)
                    del slots
                    if not left:  # before its last piece: a file written meanwhile is changed
                        check_unchanged(fd, p, expected)
                    data = pool.submit(_deflate, buffer, self._level) if compress else buffer
                    yield _Out(_DATA, i, n, data)
                self._crcs[i] = crc
                yield _Out(_END, i)
            finally:
                os.close(fd)

    def _whole(self, i: int, fd: int, p: Planned, expected: int) -> _Out:
        """Entry `i`, open at `fd`, read whole for a STORED entry."""
        self.pace = linkpace.taken(self.pace, p.size)
        buffer = bytearray(p.size)
        got = read_into(fd, [memoryview(buffer)])
        if got < p.size:
            raise shrank(p, got)
        check_unchanged(fd, p, expected)
        self._crcs[i] = zlib.crc32(buffer)
        self._stored[i] = 1
        return _Out(_STORED, i, p.size, buffer)

    def _emit(self, item: _Out) -> Iterator[bytes | bytearray]:
        i = item.index
        e = self._entries[i]
        if item.kind == _STORED:
            self._offsets[i] = self._done
            yield self._out(local_header(self._planned(i), self._crcs[i], self._dos[i]))
            self._csizes[i] = e.size
            data = item.data
            assert not isinstance(data, Future)  # read whole, never compressed
            if data:
                yield self._out(data)
            self._taken(item.raw)
            self._entries_done += 1
        elif item.kind == _HEADER:
            self._offsets[i] = self._done
            zip64 = e.size + e.size // 64 + 64 >= MAX32  # a compressed piece may grow a little
            yield self._out(
                deflated_header(encoded_name(e.arcname), self._done, self._dos[i], zip64)
            )
        elif item.kind == _DATA:
            data = item.data
            if isinstance(data, Future):
                packed, cpu = data.result()
                self.pace = linkpace.packed(self.pace, item.raw, len(packed), cpu)
                data = packed
            self._csizes[i] += len(data)
            yield self._out(data)
            self._taken(item.raw)
        else:
            self._csizes[i] += len(FINAL_EMPTY)
            tail = FINAL_EMPTY + descriptor(self._crcs[i], e.size, self._csizes[i])
            yield self._out(tail)
            self._entries_done += 1

    def _planned(self, i: int) -> Planned:
        """Where STORED entry `i` sits (once its offset is known)."""
        e = self._entries[i]
        name = encoded_name(e.arcname)
        return Planned(e.source, e.arcname, name, e.size, self._offsets[i], e.stamp)

    def _out(self, data: bytes | bytearray) -> bytes | bytearray:
        self._done += len(data)
        return data

    def _taken(self, raw: int) -> None:
        self._reported += raw
        if self._progress is not None:
            self._progress(self._reported)

    def _central_directory(self) -> Iterator[bytes | bytearray]:
        cd_offset = self._done
        out = bytearray()
        for i, e in enumerate(self._entries):
            if self._stored[i]:
                out += central_entry(self._planned(i), self._crcs[i], self._dos[i])
            else:
                name = encoded_name(e.arcname)
                out += central_record(
                    name, descriptor_flags(name), DEFLATED, self._crcs[i], e.size,
                    self._csizes[i], self._offsets[i], self._dos[i],
                )  # fmt: skip
            if len(out) >= self._piece:  # in pieces: 50,000 entries make about 4.5 MB
                yield self._out(bytes(out))
                out.clear()
        cd_size = self._done + len(out) - cd_offset
        count = len(self._entries)
        zip64 = count >= MAX16 or cd_offset >= MAX32 or cd_size >= MAX32
        out += end_records(count, cd_size, cd_offset, zip64)
        yield self._out(bytes(out))


def _ready(item: _Out) -> bool:
    return not isinstance(item.data, Future) or item.data.done()
