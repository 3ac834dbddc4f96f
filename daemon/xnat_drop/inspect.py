"""Classify every file of a claimed session by its content. Read-only effect.

Only the head of each file is read (one read of HEAD_READ bytes serves the magic numbers and
the DICOM header, which is read up to the pixel data); formats.py judges the magic numbers.
A DICOM header in the common encoding (Part 10, explicit VR little endian, plain ASCII values)
is read from those bytes by dicomscan.py, about five times faster than by pydicom and with the
same result; pydicom reads every other one.
Links and special files are never opened: a FIFO would block forever and a symlink could point
anywhere on the server. Files sharing a SOP Instance UID are hashed so the rules can tell
copies from conflicts. Large sessions are read by worker processes (workers.py) with exactly
the same result as reading them here.
"""

from __future__ import annotations

import functools
import hashlib
import io
import operator
import os
import stat
import struct
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
from pydicom.tag import Tag

from . import dicomscan, formats
from .errors import SessionChangedError
from .model import DicomHeader, FileFacts, FileKind, Session
from .names import is_junk_path
from .tree import REGULAR, walk
from .workers import InspectionPool

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
DEFLATED_SYNTAX = "1.2.840.10008.1.2.1.99"
PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
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
) -> Session:
    """Classify every file below `folder`, the claimed copy of the session at `relpath`.

    `keywords` names extra DICOM attributes to read (routing sources, PHI checks). Given a
    `pool`, a session with at least `pool.min_files` files to read is read by its workers,
    which start on the first files while the rest of the folder is still being listed; the
    result is the same as without a pool. Raises SessionChangedError when a file vanishes or
    changes type while being read.
    """
    survey = _Survey(folder)
    words = tuple(keywords)
    if pool is not None and pool.wants(pool.min_files):
        survey.advance(pool.min_files)
    if pool is not None and pool.wants(len(survey.to_read)):
        tasks = survey.tasks(str(folder), words, pool.chunk_files)
        chunks = pool.map(_classify_packed, tasks, _Unpacker().chunk)
        read = [facts for chunk in chunks for facts in chunk]
    else:
        survey.advance(None)
        read = classify_chunk((str(folder), survey.to_read, words))
    pending = iter(_paired(read, survey.analyze_names))
    files = [facts if facts is not None else next(pending) for facts in survey.found]
    return Session(name=relpath[-1], relpath=relpath, files=tuple(_with_digests(folder, files)))


class _Survey:
    """The walk of a session folder, taken as far as asked: what is known without opening a
    file (junk, links, special files), and the regular files still to read, in walk order."""

    def __init__(self, folder: Path) -> None:
        self._entries = walk(folder)
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
        return FileFacts(facts.path, facts.size, FileKind.ANALYZE, note=_PAIR_NOTE)
    if facts.kind in (FileKind.OTHER, FileKind.ARCHIVE) and lowered.endswith(_NRRD_DATA):
        stem = lowered[: lowered.rindex(".raw")]
        if f"{stem}.nhdr" in names:
            header = facts.path[: len(stem)].rsplit("/", 1)[-1] + ".nhdr"
            return FileFacts(
                facts.path,
                facts.size,
                FileKind.CONVERTED,
                note=f"the data of the NRRD image {header}",
            )
    return facts


def classify_chunk(task: Task) -> list[FileFacts]:
    """Classify the files of one task in order (run by a worker process, or in-process),
    without looking for .hdr/.img pairs (inspect does that once the whole folder is known).

    Raises SessionChangedError for the first file that vanished or changed type.
    """
    folder, relpaths, keywords = task
    reader = _Reader()
    none: frozenset[str] = frozenset()
    return [reader.classify(os.path.join(folder, r), r, none, keywords) for r in relpaths]


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

    `siblings` (lower-cased session-relative paths) lets an Analyze `.img` be recognised by
    its `.hdr`. Raises SessionChangedError when the file vanished or is no longer a file.
    """
    return _Reader().classify(os.fspath(path), relpath, siblings, tuple(keywords))


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
        self, path: str, relpath: str, siblings: frozenset[str], keywords: tuple[str, ...]
    ) -> FileFacts:
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except FileNotFoundError as exc:
            raise SessionChangedError(f"{relpath} vanished during inspection") from exc
        except OSError as exc:
            if exc.errno == 40:  # ELOOP: it became a symlink after the walk
                raise SessionChangedError(f"{relpath} changed during inspection") from exc
            note = f"cannot open it: {exc.strerror}"
            return FileFacts(relpath, 0, FileKind.UNREADABLE_DICOM, note=note)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise SessionChangedError(f"{relpath} changed type during inspection")
            head = _read_fully(fd, self.head_read, 0)
            size = self._sizes.setdefault(st.st_size, st.st_size)
            source = _Source(fd, head, size, len(head) < self.head_read)
            return self._classify_open(source, relpath, siblings, keywords)
        finally:
            os.close(fd)

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
            ds, stop = self._parse(source, kind is FileKind.DICOM_NO_PREAMBLE, keywords)
            # A deflated dataset is inflated in memory, so file positions say nothing there.
            meta: Any = getattr(ds, "file_meta", None) or None
            syntax = _field(meta, _TAG["TransferSyntaxUID"], _same, "") if meta else ""
            deflated = syntax == DEFLATED_SYNTAX
            problem = "" if deflated else _truncation(source, stop, _TAG["Rows"] in ds)
            header = _header(ds, keywords)
        except Exception as exc:
            # pydicom raises many types on damaged input (ValueError, EOFError, OSError,
            # zlib.error, BytesLengthException, ...): each means the file cannot be used.
            return FileFacts(relpath, size, FileKind.UNREADABLE_DICOM, note=_plain(exc))
        media_class = _field(meta, _TAG["MediaStorageSOPClassUID"], str, "") if meta else ""
        return _judged(relpath, size, kind, header, problem, media_class)

    def _parse(self, source: _Source, force: bool, keywords: tuple[str, ...]) -> tuple[Any, int]:
        """pydicom's reading of the header and where it stopped (the pixel data, or the end).

        Parsed from the bytes already read when they hold the whole header; otherwise (a read
        ran into the end of those bytes) from the file itself, remembering how much a header
        needed so the next files of the session are read far enough at once.
        """
        tags = _specific_tags(keywords)
        if source.whole:
            whole = io.BytesIO(source.head)
            ds = pydicom.dcmread(whole, stop_before_pixels=True, specific_tags=tags, force=force)
            return ds, whole.tell()
        head = _Head(source.head)
        try:
            ds = pydicom.dcmread(head, stop_before_pixels=True, specific_tags=tags, force=force)
        except Exception:
            if not head.short:
                raise
        else:
            if not head.short:
                return ds, head.tell()
        with open(source.fd, "rb", buffering=HEAD_READ, closefd=False) as fp:
            ds = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=tags, force=force)
            stop = fp.tell()
        if stop < source.size:  # stopped at the pixel data, not at the end of the file
            # Enough for this header and the pixel data tag, with 16-32 KiB to spare for the
            # slightly longer headers of the next images of the series.
            needed = ((stop + 12) // _HEAD_STEP + 2) * _HEAD_STEP
            self.head_read = min(MAX_HEAD_READ, max(self.head_read, needed))
        return ds, stop


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
        problem = _truncation(source, found.stop, _TAG["Rows"] in elements)
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


def _truncation(source: _Source, start: int, is_image: bool) -> str:
    """Why the pixel data is cut short, or "" when the file is whole.

    pydicom stops reading at the Pixel Data tag (at `start`); its length (or, for encapsulated
    data, the chain of items) must fit in the file. An image header with no pixel data ends
    too early.
    """
    size = source.size
    tag_bytes = source.read_at(start, 12)
    if len(tag_bytes) < 8:
        return "the file ends before the image data" if is_image else ""
    for order in "<>":
        group, element = struct.unpack(f"{order}HH", tag_bytes[:4])
        if (group, element) in PIXEL_TAGS:
            break
    else:
        return ""
    vr = tag_bytes[4:6]
    if vr.isalpha() and vr.isupper():
        header_len, length = 12, struct.unpack(f"{order}I", tag_bytes[8:12])[0]
    else:
        header_len, length = 8, struct.unpack(f"{order}I", tag_bytes[4:8])[0]
    if length != 0xFFFFFFFF:
        missing = start + header_len + length - size
        return f"the image data is cut short by {missing} bytes" if missing > 0 else ""
    return _encapsulated_truncation(source, start + header_len, order)


def _encapsulated_truncation(source: _Source, position: int, order: str) -> str:
    """Follow the items of compressed pixel data up to the sequence delimiter."""
    while True:
        item = source.read_at(position, 8)
        if len(item) < 8:
            return "the compressed image data ends without its closing delimiter"
        position += 8
        group, element, length = struct.unpack(f"{order}HHI", item)
        if (group, element) == (0xFFFE, 0xE0DD):
            return ""
        if (group, element) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
            return "the compressed image data is damaged"
        if position + length > source.size:
            return "the compressed image data is cut short"
        position += length


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


def _same(value: Any) -> Any:
    return value


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


def _with_digests(folder: Path, files: list[FileFacts]) -> list[FileFacts]:
    """Hash the content of DICOM files that share a SOP Instance UID (rare: read only then)."""
    by_uid: dict[str, list[int]] = defaultdict(list)
    for index, facts in enumerate(files):
        if facts.is_dicom and facts.header is not None:
            by_uid[facts.header.sop_instance_uid].append(index)
    for indexes in by_uid.values():
        if len(indexes) > 1:
            for index in indexes:
                files[index] = replace(
                    files[index], digest=_digest(folder / files[index].path, files[index].path)
                )
    return files


def _digest(path: Path, relpath: str) -> str:
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise SessionChangedError(f"{relpath} changed during inspection") from exc
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as fp:
        while block := fp.read(1024 * 1024):
            digest.update(block)
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
