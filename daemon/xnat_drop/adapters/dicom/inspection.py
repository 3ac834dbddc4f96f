"""Classify every file of a claimed session by its content. Read-only effect.

The session folder is walked without following links (fs/tree.py); what is known without
opening a file (junk, links, special files) is decided from the walk, and every regular file
is classified by a FileClassifier (fileclassifier.py), which reads only the head of each file
and its DICOM header. Every file is opened through the open session folder, one component at
a time, never through a link (fs/beneath.py): a folder swapped for a link after the walk makes
the session "changed", never a reason to read elsewhere. .hdr/.img and .nhdr/.raw pairs are
found once the whole folder is known (pairing.py), and files sharing a SOP Instance UID are
compared (duplicates.py) so the rules can tell copies from conflicts. Large sessions are read
by worker processes (workers.py), with results sent back as plain tuples (packing.py), with
exactly the same result as reading them here.

Nothing here outlives a call: each session (each worker task) is read by a FileClassifier of
its own, whose tables of shared header values go with it, and pydicom's settings are changed
only around its own reads (pydicomsettings.py).

The names other packages use are importable from here: inspect, classify, classify_chunk,
unknown_keywords, HEADER_TAGS and Task.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from xnat_drop.adapters.dicom.duplicates import digests
from xnat_drop.adapters.dicom.fileclassifier import FileClassifier
from xnat_drop.adapters.dicom.headerfields import HEADER_TAGS, unknown_keywords
from xnat_drop.adapters.dicom.packing import Unpacker, pack
from xnat_drop.adapters.dicom.pairing import PAIRED_SUFFIXES, pair
from xnat_drop.adapters.dicom.spill import FileSink
from xnat_drop.adapters.fs.beneath import Beneath, Dir, UnsafePathError
from xnat_drop.adapters.fs.tree import REGULAR, TOO_DEEP, walk
from xnat_drop.adapters.workers import InspectionPool
from xnat_drop.core.errors import SessionChangedError
from xnat_drop.core.filetable import changed
from xnat_drop.core.model import FileFacts, FileKind, Session
from xnat_drop.core.names import is_junk_path

__all__ = [
    "HEADER_TAGS",
    "Task",
    "classify",
    "classify_chunk",
    "inspect",
    "unknown_keywords",
]

_WALK_PROGRESS = 256  # entries walked between two calls of `progress`
_LOCAL_TASK = 512  # files read in-process between two walks on (a task, as for a worker)
_UNSAFE_WORDS = {
    "symlink": "a symbolic link",
    "fifo": "a named pipe (FIFO)",
    "socket": "a socket",
    "character device": "a device file",
    "block device": "a device file",
    "unreadable": "a folder xnat-drop cannot read",
    TOO_DEEP: "a folder nested too deeply (more than 64 folder levels)",
}

# Files of a session for one worker: folder, relative paths, extra keywords.
Task = tuple[str, Sequence[str], tuple[str, ...]]


def inspect(
    folder: Path,
    relpath: tuple[str, ...],
    keywords: Sequence[str] = (),
    pool: InspectionPool | None = None,
    *,
    progress: Callable[[], None] | None = None,
    spill: Path | None = None,
    bound: int | None = None,
) -> Session:
    """Classify every file below `folder`, the claimed copy of the session at `relpath`.

    `folder` itself is trusted (the service's own claim folder); nothing below it is ever
    reached through a link. `keywords` names extra DICOM attributes to read (routing sources,
    PHI checks). Given a `pool`, a session with at least `pool.min_files` files to read is
    read by its workers, which start on the first files while the rest of the folder is still
    being listed; the result is the same as without a pool. A session of more than `bound`
    files (None: spill.BOUND) keeps them in an unnamed file in `spill` (None: the system's
    temporary folder), as a Shelved view (spill.py). `progress`, a cheap function, is called
    at least once per file read here, per task read by the workers and per MiB hashed, so
    that a watchdog can be fed during a long inspection. Raises SessionChangedError when a
    file vanishes, changes type or is written while being read, or when a folder on its path
    was swapped for a link.
    """
    try:
        root: Dir | None = Dir.open(folder)
    except OSError:  # the walk reports the folder as one it cannot read
        root = None
    try:
        survey = _Survey(folder, progress)
        merge = _Merge(survey, FileSink(spill, bound))
        words = tuple(keywords)
        if pool is not None and pool.wants(pool.min_files):
            survey.advance(pool.min_files)
        if root is not None and pool is not None and pool.wants(len(survey.to_read)):
            unpacker = Unpacker()

            def then(task: Task, rows: list[tuple[Any, ...]]) -> None:
                if progress is not None:
                    progress()
                merge.take(unpacker.rows(rows, task[1]))

            pool.map(_classify_packed, survey.tasks(str(folder), words, pool.chunk_files), then)
        elif root is not None:
            classifier = FileClassifier()
            for task in survey.tasks(str(folder), words, _LOCAL_TASK):
                merge.take(_classify_files(root, task[1], words, progress, classifier))
        else:
            survey.advance(None)
            if survey.to_read:  # the folder could be walked after all
                raise SessionChangedError(f"{relpath[-1]} changed during inspection")
        files = merge.files()
        if root is not None:
            files = changed(files, digests(root, files, progress))
    finally:
        if root is not None:
            root.close()
    return Session(name=relpath[-1], relpath=relpath, files=files)


def classify(
    path: Path,
    relpath: str,
    siblings: frozenset[str] = frozenset(),
    keywords: Sequence[str] = (),
) -> FileFacts:
    """Decide what one regular file is, by content first and by name second.

    The folder holding `path` is trusted; the file itself is never opened through a link.
    `siblings` (lower-cased session-relative paths) lets an Analyze `.img` be recognised by
    its `.hdr`. Raises SessionChangedError when the file vanished, is no longer a file, or
    was written while it was read.
    """
    path = Path(path)
    try:
        parent = Dir.open(path.parent)
    except FileNotFoundError as exc:
        raise SessionChangedError(f"{relpath} vanished during inspection") from exc
    except UnsafePathError as exc:
        raise SessionChangedError(f"{relpath} changed during inspection") from exc
    with parent, Beneath(parent) as files:
        return FileClassifier().classify(files, path.name, relpath, siblings, tuple(keywords))


def classify_chunk(task: Task) -> list[FileFacts]:
    """Classify the files of one task in order (run by a worker process), without looking for
    .hdr/.img pairs (inspect does that once the whole folder is known).

    The task's folder is the service's own claim folder: it is opened by its path, and every
    file below it through it. Raises SessionChangedError for the first file that vanished,
    changed or lies behind a folder swapped for a link.
    """
    folder, relpaths, keywords = task
    with Dir.open(folder) as root:
        return _classify_files(root, relpaths, keywords, None)


class _Survey:
    """The walk of a session folder, taken as far as asked: what is known without opening a
    file (junk, links, special files), and the regular files still to read, in walk order.
    Both hold only what was walked and not yet taken (tasks, _Merge)."""

    def __init__(self, folder: Path, progress: Callable[[], None] | None) -> None:
        self._entries = walk(folder)
        self._progress = progress
        self.found: deque[FileFacts | None] = deque()  # None: the next file read
        self.to_read: list[str] = []
        self.paired_names: set[str] = set()  # lower-cased names of possible pair halves
        self.walked = 0
        self.done = False

    def advance(self, until: int | None) -> None:
        """Walk on until `until` files wait to be read (None: to the end of the folder)."""
        while not self.done and (until is None or len(self.to_read) < until):
            entry = next(self._entries, None)
            if entry is None:
                self.done = True
                return
            if self._progress is not None and self.walked % _WALK_PROGRESS == 0:
                self._progress()
            self.walked += 1
            lowered = entry.relpath.lower()
            if lowered.endswith(PAIRED_SUFFIXES):
                self.paired_names.add(lowered)
            if is_junk_path(entry.relpath):
                self.found.append(FileFacts(entry.relpath, entry.size, FileKind.JUNK))
            elif entry.kind != REGULAR:
                note = _UNSAFE_WORDS.get(entry.kind, f"a {entry.kind}")
                self.found.append(FileFacts(entry.relpath, entry.size, FileKind.UNSAFE, note=note))
            else:
                self.found.append(None)
                self.to_read.append(entry.relpath)

    def tasks(self, folder: str, keywords: tuple[str, ...], size: int) -> Iterator[Task]:
        """The files to read in tasks of `size`, each yielded as soon as the walk found it."""
        while True:
            self.advance(size)
            chunk, self.to_read = self.to_read[:size], self.to_read[size:]
            if not chunk:  # shorter than `size` only at the end of the walk
                return
            yield folder, chunk, keywords


class _Merge:
    """Puts the files read back among the ones the walk decided, in walk order, into a sink;
    finds .hdr/.img pairs once every name is known."""

    def __init__(self, survey: _Survey, sink: FileSink) -> None:
        self._survey = survey
        self._sink = sink
        self._pairable: dict[int, FileFacts] = {}  # by position: few, if any

    def take(self, read: list[FileFacts]) -> None:
        """The next files read, in the order their tasks gave them."""
        found = self._survey.found
        for facts in read:
            while (head := found.popleft()) is not None:
                self._add(head)
            self._add(facts)

    def files(self) -> Sequence[FileFacts]:
        """Every file, once the walk is over (the rest of what it found is added first)."""
        while self._survey.found:
            facts = self._survey.found.popleft()
            assert facts is not None, "a file left unread"
            self._add(facts)
        names = frozenset(self._survey.paired_names)
        changes = {i: pair(f, names) for i, f in self._pairable.items()}
        return changed(self._sink.files(), {i: f for i, f in changes.items() if f is not None})

    def _add(self, facts: FileFacts) -> None:
        if facts.path.lower().endswith(PAIRED_SUFFIXES):
            self._pairable[len(self._sink)] = facts
        self._sink.add(facts)


def _classify_files(
    root: Dir,
    relpaths: Sequence[str],
    keywords: tuple[str, ...],
    progress: Callable[[], None] | None,
    classifier: FileClassifier | None = None,
) -> list[FileFacts]:
    """Classify the files at `relpaths` below `root` in order (see classify_chunk), calling
    `progress` after each. One FileClassifier reads them all (a new one unless given)."""
    classifier = classifier or FileClassifier()
    none: frozenset[str] = frozenset()
    found = []
    with Beneath(root) as files:
        for relpath in relpaths:
            found.append(classifier.classify(files, relpath, relpath, none, keywords))
            if progress is not None:
                progress()
    return found


def _classify_packed(task: Task) -> list[tuple[Any, ...]]:
    """classify_chunk for a worker: plain tuples travel back faster than dataclasses."""
    return [pack(facts) for facts in classify_chunk(task)]
