"""Classify every file of a claimed session by its content. Read-only effect.

Only a few bytes of each file are read for magic numbers (formats.py judges them), and DICOM
headers are read with pydicom up to the pixel data, never the pixels themselves. Links and
special files are never opened: a FIFO would block forever and a symlink could point anywhere
on the server. Files sharing a SOP Instance UID are hashed so the rules can tell copies from
conflicts.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import struct
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

import pydicom
import pydicom.config
from pydicom.datadict import tag_for_keyword
from pydicom.errors import InvalidDicomError

from . import formats
from .errors import SessionChangedError
from .model import DicomHeader, FileFacts, FileKind, Session
from .names import is_junk_path
from .tree import REGULAR, walk

# Header problems are judged by our rules, not printed as warnings by pydicom.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

HEAD_BYTES = 1024
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
_UNSAFE_WORDS = {
    "symlink": "a symbolic link",
    "fifo": "a named pipe (FIFO)",
    "socket": "a socket",
    "character device": "a device file",
    "block device": "a device file",
    "unreadable": "a folder xnat-drop cannot read",
}


def unknown_keywords(keywords: Sequence[str]) -> list[str]:
    """The names in `keywords` that are not DICOM keywords (for configuration checks)."""
    return [k for k in keywords if tag_for_keyword(k) is None]


def inspect(folder: Path, relpath: tuple[str, ...], keywords: Sequence[str] = ()) -> Session:
    """Classify every file below `folder`, the claimed copy of the session at `relpath`.

    `keywords` names extra DICOM attributes to read (routing sources, PHI checks). Raises
    SessionChangedError when a file vanishes or changes type while being read.
    """
    entries = list(walk(folder))
    names = frozenset(e.relpath.lower() for e in entries)
    files = []
    for entry in entries:
        if is_junk_path(entry.relpath):
            files.append(FileFacts(entry.relpath, entry.size, FileKind.JUNK))
        elif entry.kind != REGULAR:
            note = _UNSAFE_WORDS.get(entry.kind, f"a {entry.kind}")
            files.append(FileFacts(entry.relpath, entry.size, FileKind.UNSAFE, note=note))
        else:
            files.append(classify(folder / entry.relpath, entry.relpath, names, keywords))
    return Session(name=relpath[-1], relpath=relpath, files=tuple(_with_digests(folder, files)))


def classify(
    path: Path,
    relpath: str,
    siblings: frozenset[str] = frozenset(),
    keywords: Sequence[str] = (),
) -> FileFacts:
    """Decide what one regular file is, by content first and by name second.

    `siblings` (lower-cased session-relative paths) lets an Analyze `.img` be recognised by
    its `.hdr`.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError as exc:
        raise SessionChangedError(f"{relpath} vanished during inspection") from exc
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: it became a symlink after the walk
            raise SessionChangedError(f"{relpath} changed during inspection") from exc
        note = f"cannot open it: {exc.strerror}"
        return FileFacts(relpath, 0, FileKind.UNREADABLE_DICOM, note=note)
    with os.fdopen(fd, "rb", buffering=64 * 1024) as fp:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SessionChangedError(f"{relpath} changed type during inspection")
        head = fp.read(HEAD_BYTES)
        return _classify_open(fp, head, st.st_size, relpath, siblings, keywords)


def _classify_open(
    fp: BinaryIO,
    head: bytes,
    size: int,
    relpath: str,
    siblings: frozenset[str],
    keywords: Sequence[str],
) -> FileFacts:
    lowered = relpath.lower()
    if head[128:132] == b"DICM":
        return _read_dicom(fp, size, relpath, FileKind.DICOM, keywords)
    if head.startswith(formats.GZIP_MAGIC):
        inner = formats.gunzip_head(head + fp.read(GZIP_PEEK - len(head)))
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
        return _read_dicom(fp, size, relpath, FileKind.DICOM_NO_PREAMBLE, keywords)
    archive = formats.archive_format(head)
    if archive is not None:
        return FileFacts(relpath, size, FileKind.ARCHIVE, note=archive)
    if size <= SIDECAR_LIMIT:
        text = head + fp.read(SIDECAR_LIMIT) if size > len(head) else head
        sidecar = formats.sidecar_format(lowered, text)
        if sidecar is not None:
            return FileFacts(relpath, size, FileKind.CONVERTED, note=sidecar)
    named = formats.named_format(lowered)
    if named is not None:
        return FileFacts(relpath, size, named[0], note=named[1])
    if lowered.endswith(_ANALYZE_SUFFIXES) and _has_pair(lowered, siblings):
        return FileFacts(relpath, size, FileKind.ANALYZE, note="half of an .hdr/.img pair")
    return FileFacts(relpath, size, FileKind.OTHER, note=formats.describe(head, size))


def _read_dicom(
    fp: BinaryIO, size: int, relpath: str, kind: FileKind, keywords: Sequence[str]
) -> FileFacts:
    fp.seek(0)
    try:
        ds = pydicom.dcmread(
            fp,
            stop_before_pixels=True,
            specific_tags=[*HEADER_TAGS, *keywords],
            force=kind is FileKind.DICOM_NO_PREAMBLE,
        )
        # A deflated dataset is inflated in memory, so file positions say nothing there.
        meta: Any = getattr(ds, "file_meta", None) or {}
        deflated = meta.get("TransferSyntaxUID", "") == DEFLATED_SYNTAX
        problem = "" if deflated else _truncation(fp, size, "Rows" in ds)
        header = _header(ds, keywords)
    except (
        InvalidDicomError,
        EOFError,
        ValueError,
        KeyError,
        OverflowError,
        TypeError,
        struct.error,
    ) as exc:
        return FileFacts(relpath, size, FileKind.UNREADABLE_DICOM, note=_plain(exc))
    if problem:
        return FileFacts(relpath, size, FileKind.UNREADABLE_DICOM, note=problem)
    media_class = str(meta.get("MediaStorageSOPClassUID", ""))
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


def _truncation(fp: BinaryIO, size: int, is_image: bool) -> str:
    """Why the pixel data is cut short, or "" when the file is whole.

    pydicom stops reading at the Pixel Data tag; its length (or, for encapsulated data, the
    chain of items) must fit in the file. An image header with no pixel data ends too early.
    """
    start = fp.tell()
    tag_bytes = fp.read(12)
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
    fp.seek(start + header_len)
    return _encapsulated_truncation(fp, size, order)


def _encapsulated_truncation(fp: BinaryIO, size: int, order: str) -> str:
    """Follow the items of compressed pixel data up to the sequence delimiter."""
    while True:
        item = fp.read(8)
        if len(item) < 8:
            return "the compressed image data ends without its closing delimiter"
        group, element, length = struct.unpack(f"{order}HHI", item)
        if (group, element) == (0xFFFE, 0xE0DD):
            return ""
        if (group, element) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
            return "the compressed image data is damaged"
        if fp.tell() + length > size:
            return "the compressed image data is cut short"
        fp.seek(length, io.SEEK_CUR)


def _header(ds: Any, keywords: Sequence[str]) -> DicomHeader:
    try:
        raw_number = ds.get("SeriesNumber", None)
        number = int(raw_number) if raw_number not in (None, "") else None
    except (TypeError, ValueError):
        number = None
    return DicomHeader(
        sop_class_uid=_text(ds.get("SOPClassUID", "")),
        sop_instance_uid=_text(ds.get("SOPInstanceUID", "")),
        study_instance_uid=_text(ds.get("StudyInstanceUID", "")),
        series_instance_uid=_text(ds.get("SeriesInstanceUID", "")),
        series_number=number,
        series_description=_text(ds.get("SeriesDescription", "")),
        image_type=_values(ds.get("ImageType", None)),
        modality=_text(ds.get("Modality", "")),
        photometric_interpretation=_text(ds.get("PhotometricInterpretation", "")),
        frame_types=_frame_types(ds),
        values=tuple((k, _text(ds.get(k, ""))) for k in keywords),
    )


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
