"""Classify every file of a claimed session by its content. Read-only effect.

Only the head of each file is read (one read of HEAD_READ bytes serves the magic numbers and
the DICOM header, which is read up to the pixel data); formats.py judges the magic numbers.
A DICOM header in the common encoding (Part 10, explicit VR little endian, plain ASCII values)
is read from those bytes by dicomscan.py, about five times faster than by pydicom and with the
same result; pydicom reads every other one.
Links and special files are never opened: a FIFO would block forever and a symlink could point
anywhere on the server. Every file is opened through the open session folder, one component at
a time, never through a link (beneath.py): a folder swapped for a link after the walk makes the
session "changed", never a reason to read elsewhere. Each file's identity and state (its
`stamp`) is taken as it is read and checked again afterwards, so a file written meanwhile is
read again later, and the zip sends only files still exactly as judged. What a header may cost
is bounded (headerlimits.py). Files sharing a SOP Instance UID are compared (by size, then by
hash) so the rules can tell copies from conflicts. Large sessions are read by worker processes
(workers.py) with exactly the same result as reading them here.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import operator
import os
import stat
import zlib
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import pydicom
import pydicom.config
import pydicom.hooks
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import FileDataset
from pydicom.filereader import read_dataset, read_partial
from pydicom.tag import Tag

from xnat_drop.adapters.dicom import dicomscan
from xnat_drop.adapters.dicom.headerlimits import (
    DEFLATED_UID,
    MAX_INFLATED_HEADER,
    BoundedFile,
    HeaderLimitError,
    InflatedSource,
    ending_problem,
)
from xnat_drop.adapters.fs.beneath import Beneath, Dir, UnsafePathError, stamp
from xnat_drop.adapters.fs.tree import REGULAR, TOO_DEEP, walk
from xnat_drop.adapters.workers import InspectionPool
from xnat_drop.core import formats
from xnat_drop.core.errors import SessionChangedError
from xnat_drop.core.model import DicomHeader, FileFacts, FileKind, Session
from xnat_drop.core.names import is_junk_path

# Header problems are judged by our rules, not printed as warnings by pydicom.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

HEAD_BYTES = 1024  # what the magic-number checks look at
HEAD_READ = 64 * 1024  # first read of every file (>= HEAD_BYTES): most DICOM headers fit
MAX_HEAD_READ = 1024 * 1024  # largest first read learned from headers that did not fit
_HEAD_STEP = 16 * 1024
GZIP_PEEK = 64 * 1024  # compressed bytes read to find a NIfTI/MGH header inside gzip
SIDECAR_LIMIT = 1024 * 1024  # JSON/bval/bvec files read whole up to this size
HEADER_TAGS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDescription",
    "ImageType",
    "Modality",
    "PhotometricInterpretation",
    "Rows",
    # FrameType of enhanced multi-frame objects (one file per series, so the cost is small).
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
)
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # a DICOMDIR, whatever its file name
# Files sharing a SOP Instance UID are compared: by size first (files of different sizes
# differ), and files of equal size by SHA-256. A file larger than this is not hashed (a copy
# that large is not worth reading twice to prove); nor is anything past the session's budget.
MAX_HASHED_BYTES = 1024 * 1024 * 1024
MAX_SESSION_HASHED_BYTES = 8 * 1024 * 1024 * 1024
HASH_BLOCK = 1024 * 1024  # bytes hashed between two calls of `progress`
_FIRST_INFLATE = 256 * 1024  # inflated bytes of a deflated data set parsed first (then 8x more)
_WALK_PROGRESS = 256  # entries walked between two calls of `progress`
_ANALYZE_SUFFIXES = (".hdr", ".img", ".hdr.gz", ".img.gz")
_PAIR_NOTE = "half of an .hdr/.img pair"
# A detached NRRD (dcm2niix -e y) is a header `x.nhdr` and its data `x.raw[.gz]` beside it.
_NRRD_DATA = (".raw", ".raw.gz", ".raw.bz2")
_PAIRED_SUFFIXES = (*_ANALYZE_SUFFIXES, ".nhdr", *_NRRD_DATA)
_UNSAFE_WORDS = {
    "symlink": "a symbolic link",
    "fifo": "a named pipe (FIFO)",
    "socket": "a socket",
    "character device": "a device file",
    "block device": "a device file",
    "unreadable": "a folder xnat-drop cannot read",
    TOO_DEEP: "a folder nested too deeply (more than 64 folder levels)",
}
_TAG = {keyword: int(Tag(keyword)) for keyword in (*HEADER_TAGS, "TransferSyntaxUID")}
_TAG["MediaStorageSOPClassUID"] = 0x00020002
_FRAME_GROUPS = (_TAG["SharedFunctionalGroupsSequence"], _TAG["PerFrameFunctionalGroupsSequence"])
# Converted header values, keyed by everything pydicom's conversion depends on (see _field).
# The values repeated in every file of a series are converted once instead of per file.
_CACHE_LIMIT = 20_000
_NOT_CACHED = frozenset({_TAG["SOPInstanceUID"]})  # different in every file
_field_cache: dict[Hashable, Any] = {}
# The same for the plain values dicomscan converts: (converter, VR, bytes) -> text.
_plain_cache: dict[tuple[Callable[[bytes, bytes], Any], bytes, bytes], Any] = {}
_CACHED_BYTES = 256
# The extra keyword values of a header, one tuple per distinct set: the files of a series then
# share one, which pickle sends once per task.
_values_cache: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] = {}
_CHARSET = 0x00080005
# Specific Character Set values under which pydicom decodes printable ASCII as ASCII (checked
# by tests/test_dicomscan.py); dicomscan only ever converts printable ASCII. Single values
# only: with several, ISO 2022 escape sequences may switch sets inside a value.
_ASCII_CHARSETS = frozenset(
    {
        b"", b"ISO_IR 6", b"ISO_IR 100", b"ISO_IR 101", b"ISO_IR 109", b"ISO_IR 110",
        b"ISO_IR 126", b"ISO_IR 127", b"ISO_IR 138", b"ISO_IR 144", b"ISO_IR 148",
        b"ISO_IR 166", b"ISO_IR 192", b"GB18030", b"GBK",
    }
)  # fmt: skip

# Files of a session for one worker: folder, relative paths, extra keywords.
Task = tuple[str, Sequence[str], tuple[str, ...]]
V = TypeVar("V")
K = TypeVar("K", bound=Hashable)


def unknown_keywords(keywords: Sequence[str]) -> list[str]:
    """The names in `keywords` that are not DICOM keywords (for configuration checks)."""
    return [k for k in keywords if tag_for_keyword(k) is None]


def inspect(
    folder: Path,
    relpath: tuple[str, ...],
    keywords: Sequence[str] = (),
    pool: InspectionPool | None = None,
    *,
    progress: Callable[[], None] | None = None,
) -> Session:
    """Classify every file below `folder`, the claimed copy of the session at `relpath`.

    `folder` itself is trusted (the service's own claim folder); nothing below it is ever
    reached through a link. `keywords` names extra DICOM attributes to read (routing sources,
    PHI checks). Given a `pool`, a session with at least `pool.min_files` files to read is
    read by its workers, which start on the first files while the rest of the folder is still
    being listed; the result is the same as without a pool. `progress`, a cheap function, is
    called at least once per file read here, per task read by the workers and per MiB hashed,
    so that a watchdog can be fed during a long inspection. Raises SessionChangedError when a
    file vanishes, changes type or is written while being read, or when a folder on its path
    was swapped for a link.
    """
    try:
        root: Dir | None = Dir.open(folder)
    except OSError:  # the walk reports the folder as one it cannot read
        root = None
    try:
        survey = _Survey(folder, progress)
        words = tuple(keywords)
        if pool is not None and pool.wants(pool.min_files):
            survey.advance(pool.min_files)
        if root is not None and pool is not None and pool.wants(len(survey.to_read)):
            tasks = survey.tasks(str(folder), words, pool.chunk_files)
            unpacker = _Unpacker()

            def then(task: Task, rows: list[tuple[Any, ...]]) -> list[FileFacts]:
                if progress is not None:
                    progress()
                return unpacker.chunk(task, rows)

            chunks = pool.map(_classify_packed, tasks, then)
            read = [facts for chunk in chunks for facts in chunk]
        else:
            survey.advance(None)
            if root is None and survey.to_read:  # the folder could be walked after all
                raise SessionChangedError(f"{relpath[-1]} changed during inspection")
            read = _classify_files(root, survey.to_read, words, progress) if root else []
        pending = iter(_paired(read, survey.analyze_names))
        files = [facts if facts is not None else next(pending) for facts in survey.found]
        if root is not None:
            files = _with_digests(root, files, progress)
    finally:
        if root is not None:
            root.close()
    return Session(name=relpath[-1], relpath=relpath, files=tuple(files))


class _Survey:
    """The walk of a session folder, taken as far as asked: what is known without opening a
    file (junk, links, special files), and the regular files still to read, in walk order."""

    def __init__(self, folder: Path, progress: Callable[[], None] | None) -> None:
        self._entries = walk(folder)
        self._progress = progress
        self.found: list[FileFacts | None] = []  # None: the next file of `to_read`
        self.to_read: list[str] = []
        self.analyze_names: set[str] = set()  # lower-cased .hdr/.img names, for pairs
        self.done = False

    def advance(self, until: int | None) -> None:
        """Walk on until `until` files wait to be read (None: to the end of the folder)."""
        while not self.done and (until is None or len(self.to_read) < until):
            entry = next(self._entries, None)
            if entry is None:
                self.done = True
                return
            if self._progress is not None and len(self.found) % _WALK_PROGRESS == 0:
                self._progress()
            lowered = entry.relpath.lower()
            if lowered.endswith(_PAIRED_SUFFIXES):
                self.analyze_names.add(lowered)
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
        sent = 0
        while True:
            self.advance(sent + size)
            chunk = self.to_read[sent : sent + size]
            if not chunk:  # shorter than `size` only at the end of the walk
                return
            yield folder, chunk, keywords
            sent += len(chunk)


def _paired(read: list[FileFacts], analyze_names: set[str]) -> list[FileFacts]:
    """`read` (classified without siblings) with each .hdr/.img that has its other half in the
    session made an Analyze file, as `classify` with all siblings would have decided.

    Without siblings, such a file can only have come out as OTHER: the pair check is the last
    test before that answer.
    """
    if not analyze_names:
        return read
    names = frozenset(analyze_names)
    return [_pair(f, names) for f in read]


def _pair(facts: FileFacts, names: frozenset[str]) -> FileFacts:
    lowered = facts.path.lower()
    if (
        facts.kind is FileKind.OTHER
        and lowered.endswith(_ANALYZE_SUFFIXES)
        and _has_pair(lowered, names)
    ):
        return replace(facts, kind=FileKind.ANALYZE, note=_PAIR_NOTE)
    if facts.kind in (FileKind.OTHER, FileKind.ARCHIVE) and lowered.endswith(_NRRD_DATA):
        stem = lowered[: lowered.rindex(".raw")]
        if f"{stem}.nhdr" in names:
            header = facts.path[: len(stem)].rsplit("/", 1)[-1] + ".nhdr"
            note = f"the data of the NRRD image {header}"
            return replace(facts, kind=FileKind.CONVERTED, note=note)
    return facts


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


def _classify_files(
    root: Dir,
    relpaths: Sequence[str],
    keywords: tuple[str, ...],
    progress: Callable[[], None] | None,
) -> list[FileFacts]:
    """Classify the files at `relpaths` below `root` in order (see classify_chunk), calling
    `progress` after each."""
    reader = _Reader()
    none: frozenset[str] = frozenset()
    found = []
    with Beneath(root) as files:
        for relpath in relpaths:
            found.append(reader.classify(files, relpath, relpath, none, keywords))
            if progress is not None:
                progress()
    return found


def _classify_packed(task: Task) -> list[tuple[Any, ...]]:
    """classify_chunk for a worker: plain tuples travel back faster than dataclasses."""
    return [_pack(facts) for facts in classify_chunk(task)]


# FileFacts and DicomHeader as tuples of their fields, in the order their __init__ takes them.
_FACTS_FIELDS = tuple(f.name for f in fields(FileFacts) if f.init)
_HEADER_FIELDS = tuple(f.name for f in fields(DicomHeader) if f.init)
_HEADER_AT = _FACTS_FIELDS.index("header")
_SIZE_AT = _FACTS_FIELDS.index("size")
_PATH_AT = _FACTS_FIELDS.index("path")
_facts_values = operator.attrgetter(*_FACTS_FIELDS)
_header_values = operator.attrgetter(*_HEADER_FIELDS)


def _pack(facts: FileFacts) -> tuple[Any, ...]:
    values: tuple[Any, ...] = _facts_values(facts)
    if facts.header is None:
        return values
    return (*values[:_HEADER_AT], _header_values(facts.header), *values[_HEADER_AT + 1 :])


_OWN = _HEADER_FIELDS.index("sop_instance_uid")  # unique per file: not worth sharing


class _Unpacker:
    """Makes the workers' rows of one session FileFacts again.

    Header values repeated across a series (UIDs, ImageType, description, ...) and the sizes
    of its files arrive as new objects per file; sharing one copy keeps a 50,000-file session
    small. The tables live as long as the session's inspection, so nothing piles up in the
    daemon from one session to the next.
    """

    def __init__(self) -> None:
        self._values: dict[Any, Any] = {}
        # All header fields but the SOP Instance UID, as one tuple, are the same for every
        # file of a series: one lookup per file instead of one per field.
        self._common: dict[tuple[Any, ...], tuple[Any, ...]] = {}

    def chunk(self, task: Task, rows: list[tuple[Any, ...]]) -> list[FileFacts]:
        # The worker's copy of each path is dropped for the one the task already holds here.
        return [self._one(row, path) for row, path in zip(rows, task[1], strict=True)]

    def _one(self, values: tuple[Any, ...], path: str) -> FileFacts:
        """The FileFacts `_pack` made `values` of, holding `path` (equal to the one packed)."""
        parts = list(values)
        parts[_PATH_AT] = path
        parts[_SIZE_AT] = self._values.setdefault(parts[_SIZE_AT], parts[_SIZE_AT])
        fields = parts[_HEADER_AT]
        if fields is None:
            return FileFacts(*parts)
        key = fields[:_OWN] + fields[_OWN + 1 :]
        common = self._common.get(key)
        if common is None:
            common = self._common[key] = tuple(self._values.setdefault(v, v) for v in key)
        parts[_HEADER_AT] = DicomHeader(*[*common[:_OWN], fields[_OWN], *common[_OWN:]])
        return FileFacts(*parts)


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
        return _Reader().classify(files, path.name, relpath, siblings, tuple(keywords))


class _Head(io.BytesIO):
    """The first bytes of a longer file, noting whether a read ran into their end.

    pydicom takes data from a file-like only through `read` (besides `seek` and `tell`). A
    read that comes back short here might not have on the file, so whatever pydicom made of
    these bytes is trusted only when `short` stayed False: then it read exactly what it would
    have read from the file.
    """

    short = False

    def read(self, size: int | None = -1, /) -> bytes:
        data = _bytes_read(self, size)
        if len(data) != size:  # short, or "all the rest" (size -1 or None)
            self.short = True
        return data


_bytes_read = io.BytesIO.read  # called per DICOM element: skip super()'s lookup


class _Source:
    """An open regular file and its first bytes, read once."""

    __slots__ = ("fd", "head", "size", "whole")

    def __init__(self, fd: int, head: bytes, size: int, whole: bool) -> None:
        self.fd = fd
        self.head = head  # the first bytes; all of the file when `whole`
        self.size = size  # from fstat, as the rules see it
        self.whole = whole

    def read_at(self, offset: int, length: int) -> bytes:
        """Up to `length` bytes from `offset` (fewer only at the end of the file)."""
        end = offset + length
        if self.whole or end <= len(self.head):
            return self.head[offset:end]
        return _read_fully(self.fd, length, offset)


class _Reader:
    """Classifies files one after another, learning how much of a file its header needs.

    One per task, so what it learns from one session does not make it read more of the files
    of the next one.
    """

    def __init__(self, fast: bool = True) -> None:
        self.head_read = HEAD_READ
        # dicomscan reads headers as pydicom does with its default settings only.
        self.fast = fast and _pydicom_as_shipped()
        self.fast_files = 0  # DICOM files whose header dicomscan read (tests count them)
        self._sizes: dict[int, int] = {}  # one int object per file size (a series shares one)

    def classify(
        self,
        files: Beneath,
        path: str,
        relpath: str,
        siblings: frozenset[str],
        keywords: tuple[str, ...],
    ) -> FileFacts:
        """Classify the file at `path` below `files.root`, reported as `relpath`, with its
        stamp. Raises SessionChangedError when it vanished, is no longer a regular file, lies
        behind a folder that is no longer a folder, or was written while it was read."""
        try:
            fd = files.open(path)
        except FileNotFoundError as exc:
            raise SessionChangedError(f"{relpath} vanished during inspection") from exc
        except OSError as exc:
            # ELOOP: it (or a folder on its path: UnsafePathError) became a link after the
            # walk; ENOTDIR: a folder on its path became a file; ENXIO: it became a socket.
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
                raise SessionChangedError(f"{relpath} changed during inspection") from exc
            note = f"cannot open it: {exc.strerror}"
            return FileFacts(relpath, 0, FileKind.UNREADABLE_DICOM, note=note)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise SessionChangedError(f"{relpath} changed type during inspection")
            mark = stamp(st)
            head = _read_fully(fd, self.head_read, 0)
            size = self._sizes.setdefault(st.st_size, st.st_size)
            source = _Source(fd, head, size, len(head) < self.head_read)
            facts = self._classify_open(source, relpath, siblings, keywords)
            # Written while it was read (a copy still running, or a writer with an old
            # handle): what was read may be a mix. Read again once the session settles.
            if stamp(os.fstat(fd)) != mark:
                raise SessionChangedError(f"{relpath} changed while it was being read")
        finally:
            os.close(fd)
        # Built whole rather than with replace(): this runs for every file of a session.
        return FileFacts(facts.path, facts.size, facts.kind, facts.header, facts.note, stamp=mark)

    def _classify_open(
        self, source: _Source, relpath: str, siblings: frozenset[str], keywords: tuple[str, ...]
    ) -> FileFacts:
        head, size = source.head[:HEAD_BYTES], source.size
        lowered = relpath.lower()
        if head[128:132] == b"DICM":
            return self._read_dicom(source, relpath, FileKind.DICOM, keywords)
        if head.startswith(formats.GZIP_MAGIC):
            inner = formats.gunzip_head(source.read_at(0, GZIP_PEEK))
            found = formats.content_format(inner, compressed=True)
            if found is None:
                archive = "a tar archive (gzip-compressed)" if inner[257:262] == b"ustar" else None
                return FileFacts(
                    relpath, size, FileKind.ARCHIVE, note=archive or "a gzip-compressed file"
                )
            return FileFacts(relpath, size, found[0], note=found[1])
        found = formats.content_format(head)
        if found is not None:
            return FileFacts(relpath, size, found[0], note=found[1])
        if formats.looks_like_bare_dicom(head):
            return self._read_dicom(source, relpath, FileKind.DICOM_NO_PREAMBLE, keywords)
        archive = formats.archive_format(head)
        if archive is not None:
            return FileFacts(relpath, size, FileKind.ARCHIVE, note=archive)
        if size <= SIDECAR_LIMIT:
            text = source.read_at(0, len(head) + SIDECAR_LIMIT) if size > len(head) else head
            sidecar = formats.sidecar_format(lowered, text)
            if sidecar is not None:
                return FileFacts(relpath, size, FileKind.CONVERTED, note=sidecar)
        named = formats.named_format(lowered)
        if named is not None:
            return FileFacts(relpath, size, named[0], note=named[1])
        if lowered.endswith(_ANALYZE_SUFFIXES) and _has_pair(lowered, siblings):
            return FileFacts(relpath, size, FileKind.ANALYZE, note=_PAIR_NOTE)
        return FileFacts(relpath, size, FileKind.OTHER, note=formats.describe(head, size))

    def _read_dicom(
        self, source: _Source, relpath: str, kind: FileKind, keywords: tuple[str, ...]
    ) -> FileFacts:
        if self.fast and kind is FileKind.DICOM:
            facts = _read_plain_dicom(source, relpath, keywords)
            if facts is not None:
                self.fast_files += 1
                return facts
        return self._read_with_pydicom(source, relpath, kind, keywords)

    def _read_with_pydicom(
        self, source: _Source, relpath: str, kind: FileKind, keywords: tuple[str, ...]
    ) -> FileFacts:
        size = source.size
        try:
            ds, stop, inflated = self._parse(source, kind is FileKind.DICOM_NO_PREAMBLE, keywords)
            meta: Any = getattr(ds, "file_meta", None) or None
            is_image = _TAG["Rows"] in ds
            if inflated is None:
                problem = ending_problem(source, stop, is_image)
            else:  # the end of a deflated data set is checked in it, then in the file
                problem = ending_problem(inflated, stop, is_image) or inflated.problem()
            header = _header(ds, keywords)
        except HeaderLimitError as exc:
            return FileFacts(relpath, size, FileKind.UNREADABLE_DICOM, note=str(exc))
        except zlib.error:
            note = "its deflated (compressed) data is damaged"
            return FileFacts(relpath, size, FileKind.UNREADABLE_DICOM, note=note)
        except Exception as exc:
            # pydicom raises many types on damaged input (ValueError, EOFError, OSError,
            # BytesLengthException, ...): each means the file cannot be used.
            return FileFacts(relpath, size, FileKind.UNREADABLE_DICOM, note=_plain(exc))
        media_class = _field(meta, _TAG["MediaStorageSOPClassUID"], str, "") if meta else ""
        return _judged(relpath, size, kind, header, problem, media_class)

    def _parse(
        self, source: _Source, force: bool, keywords: tuple[str, ...]
    ) -> tuple[Any, int, InflatedSource | None]:
        """pydicom's reading of the header, where it stopped (the pixel data, or the end) and,
        for a deflated file, its inflated data set (where that offset lies).

        Parsed from the bytes already read when they hold the whole header; otherwise (a read
        ran into the end of those bytes) from the file itself within the limits of
        headerlimits.py, remembering how much a header needed so the next files of the
        session are read far enough at once. A deflated data set (whose transfer syntax UID
        is then among the first bytes) is inflated here, never by pydicom, which would
        inflate all of it at once. Raises HeaderLimitError past a limit.
        """
        tags = _specific_tags(keywords)
        if DEFLATED_UID not in source.head:
            if source.whole:
                whole = io.BytesIO(source.head)
                ds = _read_header(whole, tags, force)
                return ds, whole.tell(), None
            head = _Head(source.head)
            try:
                ds = _read_header(head, tags, force)
            except Exception:
                if not head.short:
                    raise
            else:
                if not head.short:
                    return ds, head.tell(), None
        fp = BoundedFile(source.read_at, source.size)
        try:
            ds = _read_header(fp, tags, force)
        except Exception:
            fp.check()  # a limit, whatever pydicom made of it
            raise
        fp.check()
        if fp.deflated_at is not None:
            return _inflated(source, fp.deflated_at, ds, tags)
        stop = fp.tell()
        if stop < source.size:  # stopped at the pixel data, not at the end of the file
            # Enough for this header and the pixel data tag, with 16-32 KiB to spare for the
            # slightly longer headers of the next images of the series.
            needed = ((stop + 12) // _HEAD_STEP + 2) * _HEAD_STEP
            self.head_read = min(MAX_HEAD_READ, max(self.head_read, needed))
        return ds, stop, None


def _inflated(
    source: _Source, start: int, first: Any, tags: list[Any]
) -> tuple[Any, int, InflatedSource]:
    """pydicom's reading of a deflated file whose data set starts at `start`, as dcmread
    would make it, but inflated step by step: `first` is pydicom's reading of the file meta
    (with an empty data set). Returns the dataset, where pydicom stopped in the inflated data
    set, and that data set. Raises HeaderLimitError when the header does not end within
    MAX_INFLATED_HEADER inflated bytes, zlib.error for damaged data.
    """
    inflated = InflatedSource(source.read_at, source.size, start)
    want = _FIRST_INFLATE
    while True:
        inflated.inflate_to(want)
        head: Any = inflated.reader()  # a file to pydicom (read, seek, tell)
        try:
            dataset = read_dataset(head, False, True, stop_when=_at_end, specific_tags=tags)
        except Exception:
            if not head.short or inflated.dry:
                raise
        else:
            if not head.short or inflated.dry:
                break
        if want >= MAX_INFLATED_HEADER:
            raise HeaderLimitError(
                f"it is deflated, and its header does not end within the first "
                f"{MAX_INFLATED_HEADER // (1024 * 1024)} MiB unpacked, far more than any "
                "scanner writes"
            )
        want = min(want * 8, MAX_INFLATED_HEADER)
    stop = head.tell()
    del head
    # As pydicom's read_partial builds it (command set elements, if any, were read first).
    dataset.update(first)
    ds = FileDataset(io.BytesIO(), dataset, first.preamble, first.file_meta, False, True)
    ds.set_original_encoding(False, True, dataset._character_set)
    return ds, stop, inflated


def _read_header(fp: Any, tags: list[Any], force: bool) -> Any:
    """`pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=tags, force=force)`, which
    also stops where a data set ends in a hole (see _at_end)."""
    return read_partial(fp, _at_end, force=force, specific_tags=[Tag(t) for t in tags])


def _at_end(tag: int, vr: str | None, length: int) -> bool:
    """Where a header ends: at the pixel data (as dcmread(stop_before_pixels=True) stops), or
    at a group 0000 element after the command set (pydicom reads that first), which is what a
    run of zeros reads as: a hole (a sparse file) or padding after the data set. Read on,
    zeros would be taken for elements up to the end of the file."""
    return tag in _PIXEL_TAG_INTS or tag >> 16 == 0


_PIXEL_TAG_INTS = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})


def _judged(
    relpath: str, size: int, kind: FileKind, header: DicomHeader, problem: str, media_class: str
) -> FileFacts:
    """The facts of a DICOM file whose header was read: damaged, a DICOMDIR, or usable."""
    if problem:
        return FileFacts(relpath, size, FileKind.UNREADABLE_DICOM, note=problem)
    if MEDIA_STORAGE_DIRECTORY in (header.sop_class_uid, media_class):
        return FileFacts(relpath, size, FileKind.JUNK, note="a DICOMDIR index")
    for value, keyword, tag in (
        (header.sop_class_uid, "SOPClassUID", "(0008,0016)"),
        (header.sop_instance_uid, "SOPInstanceUID", "(0008,0018)"),
        (header.study_instance_uid, "StudyInstanceUID", "(0020,000D)"),
    ):
        if not value:
            note = f"it has no {keyword} {tag}, which XNAT requires"
            return FileFacts(relpath, size, FileKind.UNREADABLE_DICOM, note=note)
    return FileFacts(relpath, size, kind, header=header)


def _read_plain_dicom(source: _Source, relpath: str, keywords: tuple[str, ...]) -> FileFacts | None:
    """What `_read_with_pydicom` answers for a Part 10 file, read by dicomscan from the bytes
    in memory; None when dicomscan is not sure to read it as pydicom does (see there), when
    the file is a DICOMDIR or an enhanced multi-frame object (FrameType), or on any error."""
    try:
        plan = _plain_plan(keywords)
        found = dicomscan.scan(source.head, source.whole, plan.wanted) if plan else None
        if plan is None or found is None:
            return None
        elements = found.elements
        if any(tag in elements for tag in _FRAME_GROUPS):
            return None
        charset = elements.get(_CHARSET)
        if charset is not None and (
            charset[0] != b"CS" or charset[1].rstrip(b" \0") not in _ASCII_CHARSETS
        ):
            return None
        media = found.meta.get(dicomscan.MEDIA_STORAGE_SOP_CLASS_UID)
        media_class = _text_of(media, b"UI")
        header = _plain_header(elements, plan.keywords)
        if MEDIA_STORAGE_DIRECTORY in (header.sop_class_uid, media_class):
            return None
        problem = ending_problem(source, found.stop, _TAG["Rows"] in elements)
    except Exception:  # dicomscan.UnsureError, or anything else: pydicom decides
        return None
    return _judged(relpath, source.size, FileKind.DICOM, header, problem, media_class)


class _Plan(NamedTuple):
    wanted: frozenset[int]  # the tags dicomscan keeps
    keywords: tuple[tuple[str, int, bytes], ...]  # keyword, tag, VR its value must have


@functools.lru_cache(maxsize=64)
def _plain_plan(keywords: tuple[str, ...]) -> _Plan | None:
    """What dicomscan is asked for, given the extra `keywords`; None when one is not a DICOM
    keyword (pydicom's reading of those is left as it is)."""
    extra = []
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is None:
            return None
        try:
            vr = dictionary_VR(tag).encode()
        except KeyError:
            vr = b""
        # A value of another VR (or of an ambiguous one such as "US or SS") is left to pydicom.
        extra.append((keyword, tag, vr if vr in dicomscan.TEXT_VRS else b""))
    tags = {_CHARSET, *(_TAG[k] for k in HEADER_TAGS), *(tag for _, tag, _ in extra)}
    return _Plan(frozenset(tags), tuple(extra))


def _plain_header(
    elements: dict[int, dicomscan.Raw], keywords: tuple[tuple[str, int, bytes], ...]
) -> DicomHeader:
    """The DicomHeader `_header` makes of the same elements, converted by dicomscan.

    Raises dicomscan.UnsureError when an element has another VR than the dictionary's or a
    value that is not plain (see dicomscan).
    """
    get = elements.get
    own = get(_TAG["SOPInstanceUID"])
    number = get(_TAG["SeriesNumber"])
    image_type = get(_TAG["ImageType"])
    return DicomHeader(
        sop_class_uid=_text_of(get(_TAG["SOPClassUID"]), b"UI"),
        # Different in every file: converted, never cached.
        sop_instance_uid=dicomscan.text(*_checked(own, b"UI")) if own else "",
        study_instance_uid=_text_of(get(_TAG["StudyInstanceUID"]), b"UI"),
        series_instance_uid=_text_of(get(_TAG["SeriesInstanceUID"]), b"UI"),
        series_number=_converted(dicomscan.integer, number, b"IS") if number else None,
        series_description=_text_of(get(_TAG["SeriesDescription"]), b"LO"),
        image_type=_converted(dicomscan.values, image_type, b"CS") if image_type else (),
        modality=_text_of(get(_TAG["Modality"]), b"CS"),
        photometric_interpretation=_text_of(get(_TAG["PhotometricInterpretation"]), b"CS"),
        values=_kept(_values_cache, tuple((k, _text_of(get(tag), vr)) for k, tag, vr in keywords)),
    )


def _text_of(raw: dicomscan.Raw | None, vr: bytes) -> str:
    return _converted(dicomscan.text, raw, vr) if raw is not None else ""


def _checked(raw: dicomscan.Raw, vr: bytes) -> dicomscan.Raw:
    if raw[0] != vr:
        raise dicomscan.UnsureError
    return raw


def _converted(convert: Callable[[bytes, bytes], V], raw: dicomscan.Raw, vr: bytes) -> V:
    """`convert(*raw)` for an element that must have VR `vr`, once per distinct value: the
    values repeated in every file of a series are converted once and shared."""
    if raw[0] != vr:
        raise dicomscan.UnsureError
    key = (convert, *raw)
    try:
        return _plain_cache[key]  # type: ignore[no-any-return]
    except KeyError:
        pass
    value = convert(*raw)
    if len(raw[1]) <= _CACHED_BYTES:  # long texts (comments) are rarely repeated: not kept
        if len(_plain_cache) >= _CACHE_LIMIT:
            _plain_cache.clear()
        _plain_cache[key] = value
    return value


def _kept(cache: dict[K, K], value: K) -> K:
    """The copy of `value` already in `cache` (a bounded table), or `value`, now kept."""
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    return cache.setdefault(value, value)


def _pydicom_as_shipped() -> bool:
    """True while pydicom converts values with its default settings and hooks, which are
    what dicomscan's conversions reproduce (reading validation is IGNORE, set above)."""
    config = pydicom.config
    hooks = pydicom.hooks.hooks
    return (
        config.settings.reading_validation_mode == config.IGNORE
        and not config.datetime_conversion
        and not config.use_none_as_empty_text_VR_value
        and not config.use_IS_numpy
        and not config.use_DS_numpy
        and not config.use_DS_decimal
        and config.data_element_callback is None
        and hooks.raw_element_vr is pydicom.hooks.raw_element_vr
        and hooks.raw_element_value is pydicom.hooks.raw_element_value
    )


def _read_fully(fd: int, length: int, offset: int) -> bytes:
    """`length` bytes from `offset`, or fewer only where the file ends."""
    data = os.pread(fd, length, offset)
    if len(data) == length or not data:
        return data
    parts = [data]
    got = len(data)
    while got < length:
        more = os.pread(fd, length - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


@functools.lru_cache(maxsize=64)
def _specific_tags(keywords: tuple[str, ...]) -> list[Any]:
    """The tags pydicom is asked for, as tags (a keyword is looked up once, not per file)."""
    try:
        return [Tag(keyword) for keyword in (*HEADER_TAGS, *keywords)]
    except Exception:  # not a DICOM keyword: let pydicom say so, per file, as it always did
        return [*HEADER_TAGS, *keywords]


def _header(ds: Any, keywords: Sequence[str]) -> DicomHeader:
    try:
        number = _field(ds, _TAG["SeriesNumber"], _series_number, None)
    except (TypeError, ValueError):
        number = None
    return DicomHeader(
        sop_class_uid=_field(ds, _TAG["SOPClassUID"], _text, ""),
        sop_instance_uid=_field(ds, _TAG["SOPInstanceUID"], _text, ""),
        study_instance_uid=_field(ds, _TAG["StudyInstanceUID"], _text, ""),
        series_instance_uid=_field(ds, _TAG["SeriesInstanceUID"], _text, ""),
        series_number=number,
        series_description=_field(ds, _TAG["SeriesDescription"], _text, ""),
        image_type=_field(ds, _TAG["ImageType"], _values, None),
        modality=_field(ds, _TAG["Modality"], _text, ""),
        photometric_interpretation=_field(ds, _TAG["PhotometricInterpretation"], _text, ""),
        frame_types=_frame_types(ds) if any(t in ds for t in _FRAME_GROUPS) else (),
        values=tuple((k, _keyword_text(ds, k)) for k in keywords),
    )


def _keyword_text(ds: Any, keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    if tag is None:  # not a DICOM keyword: nothing to read (configuration says so)
        return _text(ds.get(keyword, ""))
    return _field(ds, tag, _text, "")


def _field(ds: Any, tag: int, shape: Callable[[Any], V], default: Any) -> V:
    """`shape(ds.get(keyword, default))` for the element `tag`, converted once per value.

    pydicom's conversion of a raw element depends only on the element (tag, VR, encoding,
    bytes) and the dataset's character set, except for private tags and ambiguous VRs, which
    are never cached. The same raw value therefore always gives the same result.
    """
    element = ds.get_item(tag)
    if element is None:
        return shape(default)
    if type(element) is not RawDataElement or not _cacheable(tag):
        return shape(ds[tag].value)
    charset = ds.original_character_set
    key = (
        shape,
        tag,
        element.VR,
        element.length,
        element.value,
        element.is_implicit_VR,
        element.is_little_endian,
        charset if isinstance(charset, str) else tuple(charset),
    )
    try:
        return _field_cache[key]  # type: ignore[no-any-return]
    except KeyError:
        pass
    value = shape(ds[tag].value)
    if len(_field_cache) >= _CACHE_LIMIT:
        _field_cache.clear()
    _field_cache[key] = value
    return value


@functools.lru_cache(maxsize=1024)
def _cacheable(tag: int) -> bool:
    """A public tag whose VR is fixed by the dictionary (no dataset-dependent VR)."""
    if tag in _NOT_CACHED or (tag >> 16) % 2:  # private groups are odd
        return False
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return False
    return " or " not in vr and vr != "SQ"


def _series_number(raw_number: Any) -> int | None:
    return int(raw_number) if raw_number not in (None, "") else None


def _frame_types(ds: Any) -> tuple[tuple[str, ...], ...]:
    """Distinct FrameType values from the <Modality>FrameTypeSequence of every functional group."""
    found: dict[tuple[str, ...], None] = {}
    for groups in (
        ds.get("SharedFunctionalGroupsSequence", None),
        ds.get("PerFrameFunctionalGroupsSequence", None),
    ):
        for item in groups or ():
            for element in item:
                if element.keyword.endswith("FrameTypeSequence") and element.value:
                    value = _values(element.value[0].get("FrameType", None))
                    if value:
                        found[value] = None
    return tuple(found)


def _values(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split("\\") if v.strip())
    return tuple(str(v).strip() for v in value)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip()


def _with_digests(
    root: Dir, files: list[FileFacts], progress: Callable[[], None] | None
) -> list[FileFacts]:
    """`files` with a `digest` for each DICOM file that shares its SOP Instance UID (rare).

    Within such a group, files of different sizes differ without being read: each gets
    "size-<bytes>". Files of equal size get their SHA-256, unless they are larger than
    MAX_HASHED_BYTES or the session already hashed MAX_SESSION_HASHED_BYTES: then each gets
    "unhashed-<its path>", different from every other file's. Raises SessionChangedError
    when a file changed since it was classified.
    """
    by_uid: dict[str, list[int]] = defaultdict(list)
    for index, facts in enumerate(files):
        if facts.is_dicom and facts.header is not None:
            by_uid[facts.header.sop_instance_uid].append(index)
    groups = [indexes for indexes in by_uid.values() if len(indexes) > 1]
    if not groups:
        return files
    budget = MAX_SESSION_HASHED_BYTES
    buffer = bytearray(HASH_BLOCK)
    with Beneath(root) as opener:
        for indexes in groups:
            by_size: dict[int, list[int]] = defaultdict(list)
            for index in indexes:
                by_size[files[index].size].append(index)
            for size, same in by_size.items():
                hashed = len(same) > 1 and size <= MAX_HASHED_BYTES and size * len(same) <= budget
                if hashed:
                    budget -= size * len(same)
                for index in same:
                    facts = files[index]
                    if len(same) == 1:
                        digest = f"size-{size}"
                    elif hashed:
                        digest = _digest(opener, facts, buffer, progress)
                    else:
                        digest = f"unhashed-{facts.path}"
                    files[index] = replace(facts, digest=digest)
    return files


def _digest(
    opener: Beneath, facts: FileFacts, buffer: bytearray, progress: Callable[[], None] | None
) -> str:
    """The SHA-256 of the file as it was classified (its `size` bytes, its `stamp`)."""
    changed = SessionChangedError(f"{facts.path} changed during inspection")
    try:
        fd = opener.open(facts.path)
    except OSError as exc:  # vanished, or a folder on its path is now a link
        raise changed from exc
    try:
        if facts.stamp and stamp(os.fstat(fd)) != facts.stamp:
            raise changed
        digest = hashlib.sha256()
        view = memoryview(buffer)
        left = facts.size
        while left:
            got = os.readv(fd, [view[: min(left, len(view))]])
            if got == 0:
                raise changed
            digest.update(view[:got])
            left -= got
            if progress is not None:
                progress()
        if facts.stamp and stamp(os.fstat(fd)) != facts.stamp:
            raise changed
    finally:
        os.close(fd)
    return digest.hexdigest()


def _has_pair(lowered: str, siblings: frozenset[str]) -> bool:
    stem, _, ext = lowered.rpartition(".")
    if ext == "gz":
        stem, _, ext = stem.rpartition(".")
    other = "img" if ext == "hdr" else "hdr"
    return any(f"{stem}.{other}{gz}" in siblings for gz in ("", ".gz"))


def _plain(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    first = text.splitlines()[0]
    return f"pydicom says: {first[:200]}"
