"""A large session's FileFacts kept in a file instead of memory (core/filetable.py says why).

Inspection hands each file's facts to a FileSink in walk order. Up to `bound` files they stay
a list, and the session gets a tuple; past it they go, in blocks of BLOCK files pickled as
plain tuples, to an unnamed file in the given folder (the state directory: never
/tmp, which may be memory), and the session gets a Shelved view of it. The file has no name:
it goes when the last view of it does, or with the process.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import operator
import os
import pickle
import tempfile
import threading
import weakref
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from xnat_drop.core.errors import StorageError
from xnat_drop.core.filetable import Shelved
from xnat_drop.core.model import DicomHeader, FileFacts

BOUND = 4096  # files a session keeps in memory; past this they are spilled
BLOCK = 1024  # files per block: what one pass holds at a time (about 0.5 MB)
_RECENT = 2  # blocks kept made, for reads that jump about (the zip, from several threads)
_OWN = 6  # values in the row of a file without a header
_HEADER_FIELDS = tuple(f.name for f in fields(DicomHeader) if f.init)
_UID = _HEADER_FIELDS.index("sop_instance_uid")  # unique per file, like the InstanceNumber
_NUMBER = _HEADER_FIELDS.index("instance_number")
assert _UID < _NUMBER
_header_values = operator.attrgetter(*_HEADER_FIELDS)


class SpillShelf:
    """The blocks of one session's files in an unnamed file: written once, then read.

    A row is the file's own values: path, size, kind, note, digest, stamp, then for a DICOM
    file its SOP Instance UID, InstanceNumber and the number of its *pattern*, the rest of its
    header, which the files of a series share. The patterns stay in memory (a few per series),
    so a header is made again with one call, and shares its values with every other.
    """

    block_size = BLOCK

    def __init__(self, folder: Path | None) -> None:
        with _stored(folder):
            self._file = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 (lives with the shelf)
        self._folder = folder
        self._fd = self._file.fileno()
        weakref.finalize(self, self._file.close)
        self._spans = array("q")  # offset, length of each block
        self._end = 0
        self._count = 0
        self._pending: list[tuple[Any, ...]] = []
        self._patterns: list[tuple[tuple[Any, ...], tuple[Any, ...], tuple[Any, ...]]] = []
        self._numbered: dict[tuple[Any, ...], int] = {}
        self._values: dict[Any, Any] = {}  # one object per distinct header value
        self._recent: dict[int, Sequence[FileFacts]] = {}  # a few blocks, for random access
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        return self._count

    def add(self, facts: FileFacts) -> None:
        own = (facts.path, facts.size, facts.kind, facts.note, facts.digest, facts.stamp)
        header = facts.header
        if header is None:
            self._pending.append(own)
        else:
            values = _header_values(header)
            pattern = values[:_UID] + values[_UID + 1 : _NUMBER] + values[_NUMBER + 1 :]
            number = self._numbered.get(pattern)
            if number is None:
                number = self._numbered[pattern] = len(self._patterns)
                shared = tuple(self._values.setdefault(v, v) for v in pattern)
                cut = _NUMBER - 1  # where the InstanceNumber goes back in `shared`
                self._patterns.append((shared[:_UID], shared[_UID:cut], shared[cut:]))
            self._pending.append((*own, header.sop_instance_uid, header.instance_number, number))
        self._count += 1
        if len(self._pending) == BLOCK:
            self.flush()

    def flush(self) -> None:
        """Write the files added since the last full block (done once, before reading)."""
        if not self._pending:
            return
        data = pickle.dumps(self._pending, protocol=pickle.HIGHEST_PROTOCOL)
        with _stored(self._folder):
            written = os.pwrite(self._fd, data, self._end)
            if written != len(data):
                raise OSError(errno.ENOSPC, "a short write")
        self._spans.extend((self._end, len(data)))
        self._end += len(data)
        self._pending = []

    def block(self, number: int) -> Sequence[FileFacts]:
        recent = self._recent.get(number)
        if recent is not None:
            return recent
        offset, length = self._spans[2 * number], self._spans[2 * number + 1]
        with _stored(self._folder):
            data = os.pread(self._fd, length, offset)
        rows = pickle.loads(data)  # noqa: S301 (our own file, written above)
        patterns = self._patterns
        files = []
        for row in rows:
            if len(row) == _OWN:
                files.append(FileFacts(row[0], row[1], row[2], None, row[3], row[4], row[5]))
                continue
            before, between, after = patterns[row[8]]
            header = DicomHeader(*before, row[6], *between, row[7], *after)  # type: ignore[call-arg]
            files.append(FileFacts(row[0], row[1], row[2], header, row[3], row[4], row[5]))
        with self._lock:  # blocks may be read from several threads (the zip's workers)
            if len(self._recent) >= _RECENT:
                del self._recent[next(iter(self._recent))]
            self._recent[number] = files
        return files


class FileSink:
    """Takes a session's files in order; `files()` gives them as a tuple or a Shelved view."""

    def __init__(self, folder: Path | None, bound: int | None = None) -> None:
        self._folder = folder
        self._bound = BOUND if bound is None else bound
        self._held: list[FileFacts] = []
        self._shelf: SpillShelf | None = None

    def __len__(self) -> int:
        return self._shelf.count if self._shelf is not None else len(self._held)

    def add(self, facts: FileFacts) -> None:
        if self._shelf is not None:
            self._shelf.add(facts)
            return
        self._held.append(facts)
        if len(self._held) > self._bound:
            self._shelf = SpillShelf(self._folder)
            for held in self._held:
                self._shelf.add(held)
            self._held = []

    def files(self) -> Sequence[FileFacts]:
        """Every file added, in order. The sink takes no more files after this."""
        if self._shelf is None:
            return tuple(self._held)
        self._shelf.flush()
        return Shelved(self._shelf)


def sorted_texts(texts: Iterable[str], folder: Path | None, run: int = BOUND) -> Iterator[str]:
    """`sorted(texts)`, holding at most `run` of them at a time: longer inputs are sorted in
    runs kept in an unnamed file in `folder`, then merged (a 50,000-file session's UIDs
    would cost about 6 MB as one list)."""
    batch: list[str] = []
    runs: list[tuple[int, int]] = []  # offset and length of each sorted run in `spilled`
    spilled = None
    for text in texts:
        batch.append(text)
        if len(batch) >= run:
            with _stored(folder):
                if spilled is None:
                    spilled = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 (closed below)
                start = spilled.seek(0, os.SEEK_END)
                for item in sorted(batch):
                    data = item.encode("utf-8", "surrogatepass")
                    spilled.write(len(data).to_bytes(4, "big") + data)
                runs.append((start, spilled.tell() - start))
            batch = []
    if spilled is None:
        yield from sorted(batch)
        return
    with spilled, _stored(folder):
        spilled.flush()  # the runs are read back from the file itself (pread)
        yield from heapq.merge(sorted(batch), *(_run(spilled.fileno(), *r) for r in runs))


def _run(fd: int, offset: int, length: int) -> Iterator[str]:
    """The texts of one sorted run, read in pieces of 64 KiB."""
    pending = b""
    end = offset + length
    while offset < end or pending:
        if len(pending) < 4 or len(pending) < 4 + int.from_bytes(pending[:4], "big"):
            piece = os.pread(fd, min(65536, end - offset), offset)
            if not piece:
                raise OSError("a sorted run ended early")
            offset += len(piece)
            pending += piece
            continue
        size = int.from_bytes(pending[:4], "big")
        yield pending[4 : 4 + size].decode("utf-8", "surrogatepass")
        pending = pending[4 + size :]


@contextlib.contextmanager
def _stored(folder: Path | None) -> Iterator[None]:
    """OSError as StorageError: a full or read-only state directory pauses all work, loudly,
    and the session waits; it is never a reason to fail it."""
    try:
        yield
    except OSError as exc:
        where = folder or "the temporary folder"
        raise StorageError(
            f"cannot keep a large session's list of files in {where}: {exc.strerror or exc}"
        ) from exc
