"""Classify every file of a claimed session by its content. Read-only effect.

Only a few bytes of each file are read for magic numbers, and DICOM headers are read with
pydicom up to the pixel data, never the pixels themselves. Links and special files are never
opened: a FIFO would block forever and a symlink could point anywhere on the server.
"""

from __future__ import annotations

import codecs
import io
import os
import stat
import struct
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import pydicom
import pydicom.config
from pydicom.errors import InvalidDicomError

from .errors import SessionChangedError
from .model import DicomHeader, FileFacts, FileKind, Session
from .names import is_junk_path
from .tree import REGULAR, walk

# Header problems are judged by our rules, not printed as warnings by pydicom.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

HEAD_BYTES = 1024
HEADER_TAGS = [
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
]
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # a DICOMDIR, whatever its file name
DEFLATED_SYNTAX = "1.2.840.10008.1.2.1.99"
PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_ANALYZE_SUFFIXES = (".hdr", ".img", ".hdr.gz", ".img.gz")
# Recognisable non-DICOM content, for a report that says what the file is.
_MAGIC = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a zip archive"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89HDF", "an HDF5/MINC file"),
    (b"CDF\x01", "a MINC (netCDF) file"),
    (b"NRRD000", "an NRRD image"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
)
_UNSAFE_WORDS = {
    "symlink": "a symbolic link",
    "fifo": "a named pipe (FIFO)",
    "socket": "a socket",
    "character device": "a device file",
    "block device": "a device file",
    "unreadable": "a folder xnat-drop cannot read",
}


def inspect(folder: Path, relpath: tuple[str, ...]) -> Session:
    """Classify every file below `folder`, the claimed copy of the session at `relpath`.

    Raises SessionChangedError when a file vanishes or changes type while being read.
    """
    entries = list(walk(folder))
    names = {e.relpath for e in entries}
    files = []
    for entry in entries:
        if is_junk_path(entry.relpath):
            files.append(FileFacts(entry.relpath, entry.size, FileKind.JUNK))
        elif entry.kind != REGULAR:
            note = _UNSAFE_WORDS.get(entry.kind, f"a {entry.kind}")
            files.append(FileFacts(entry.relpath, entry.size, FileKind.UNSAFE, note=note))
        else:
            files.append(classify(folder / entry.relpath, entry.relpath, names))
    return Session(name=relpath[-1], relpath=relpath, files=tuple(files))


def classify(
    path: Path, relpath: str, siblings: set[str] | frozenset[str] = frozenset()
) -> FileFacts:
    """Decide what one regular file is, by content first and by name second.

    `siblings` (session-relative paths) lets an Analyze `.img` be recognised by its `.hdr`.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError as exc:
        raise SessionChangedError(f"{relpath} vanished during inspection") from exc
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: it became a symlink after the walk
            raise SessionChangedError(f"{relpath} changed during inspection") from exc
        return FileFacts(
            relpath, 0, FileKind.UNREADABLE_DICOM, note=f"cannot open it: {exc.strerror}"
        )
    with os.fdopen(fd, "rb", buffering=64 * 1024) as fp:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SessionChangedError(f"{relpath} changed type during inspection")
        head = fp.read(HEAD_BYTES)
        return _classify_open(fp, head, st.st_size, relpath, siblings)


def _classify_open(
    fp: BinaryIO, head: bytes, size: int, relpath: str, siblings: set[str] | frozenset[str]
) -> FileFacts:
    lowered = relpath.lower()
    if head[128:132] == b"DICM":
        return _read_dicom(fp, size, relpath, FileKind.DICOM)
    nifti = nifti_kind(head)
    if nifti is None and head[:2] == b"\x1f\x8b":
        nifti = nifti_kind(_gunzip_head(head, fp), compressed=True)
        if nifti is None:
            return FileFacts(relpath, size, FileKind.OTHER, note="a gzip-compressed file")
    if nifti is not None:
        kind = FileKind.ANALYZE if "pair" in nifti or "Analyze" in nifti else FileKind.NIFTI
        return FileFacts(relpath, size, kind, note=nifti)
    if looks_like_bare_dicom(head):
        return _read_dicom(fp, size, relpath, FileKind.DICOM_NO_PREAMBLE)
    if lowered.endswith(_NIFTI_SUFFIXES):
        return FileFacts(relpath, size, FileKind.NIFTI, note="named like a NIfTI file")
    if lowered.endswith(_ANALYZE_SUFFIXES) and _has_pair(lowered, siblings):
        return FileFacts(relpath, size, FileKind.ANALYZE, note="half of an .hdr/.img pair")
    return FileFacts(relpath, size, FileKind.OTHER, note=_describe(head, size))


def nifti_kind(head: bytes, *, compressed: bool = False) -> str | None:
    """Describe NIfTI-1/-2 or Analyze content from the first 544+ bytes, or None."""
    prefix = "gzip-compressed " if compressed else ""
    for order in "<>":
        if len(head) >= 348 and struct.unpack(f"{order}i", head[:4])[0] == 348:
            magic = head[344:348]
            if magic == b"n+1\x00":
                return f"{prefix}NIfTI-1 image, magic “n+1” at byte 344"
            if magic == b"ni1\x00":
                return f"{prefix}NIfTI-1 header of an .hdr/.img pair, magic “ni1”"
            return f"{prefix}Analyze 7.5 header of an .hdr/.img pair (header size 348)"
        if len(head) >= 8 and struct.unpack(f"{order}i", head[:4])[0] == 540:
            magic = head[4:8]
            if magic == b"n+2\x00":
                return f"{prefix}NIfTI-2 image, magic “n+2” at byte 4"
            if magic == b"ni2\x00":
                return f"{prefix}NIfTI-2 header of an .hdr/.img pair, magic “ni2”"
    return None


def _gunzip_head(head: bytes, fp: BinaryIO) -> bytes:
    """The first 544 bytes of a gzip stream, reading at most 64 KiB of it."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = b""
    data = head
    try:
        while len(out) < 544 and data:
            out += inflater.decompress(data, 544 - len(out))
            data = inflater.unconsumed_tail or (
                fp.read(16 * 1024) if fp.tell() < 64 * 1024 else b""
            )
    except zlib.error:
        return b""
    return out


def looks_like_bare_dicom(head: bytes) -> bool:
    """True when the file starts like a DICOM dataset without preamble (group 0002 or 0008).

    Both explicit VR (two upper-case letters after the tag) and implicit VR (a small length)
    are accepted, little or big endian.
    """
    if len(head) < 8:
        return False
    for order in "<>":
        group, _element = struct.unpack(f"{order}HH", head[:4])
        if group not in (0x0002, 0x0008):
            continue
        vr = head[4:6]
        if vr.isalpha() and vr.isupper():
            return True
        length = struct.unpack(f"{order}I", head[4:8])[0]
        if 0 < length < 1024:
            return True
    return False


def _read_dicom(fp: BinaryIO, size: int, relpath: str, kind: FileKind) -> FileFacts:
    fp.seek(0)
    try:
        ds = pydicom.dcmread(
            fp,
            stop_before_pixels=True,
            specific_tags=HEADER_TAGS,
            force=kind is FileKind.DICOM_NO_PREAMBLE,
        )
        # A deflated dataset is inflated in memory, so file positions say nothing there.
        meta: Any = getattr(ds, "file_meta", None) or {}
        deflated = meta.get("TransferSyntaxUID", "") == DEFLATED_SYNTAX
        problem = "" if deflated else _truncation(fp, size, "Rows" in ds)
    except (InvalidDicomError, EOFError, ValueError, KeyError, OverflowError, struct.error) as exc:
        return FileFacts(relpath, size, FileKind.UNREADABLE_DICOM, note=_plain(exc))
    if problem:
        return FileFacts(relpath, size, FileKind.UNREADABLE_DICOM, note=problem)
    header = _header(ds)
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


def _header(ds: Any) -> DicomHeader:
    def text(keyword: str) -> str:
        value = ds.get(keyword, "")
        return str(value).strip() if value is not None else ""

    image_type = ds.get("ImageType", "")
    if image_type is None:
        values: tuple[str, ...] = ()
    elif isinstance(image_type, str):
        values = tuple(v.strip() for v in image_type.split("\\") if v.strip())
    else:
        values = tuple(str(v).strip() for v in image_type)
    try:
        raw_number = ds.get("SeriesNumber", None)
        number = int(raw_number) if raw_number not in (None, "") else None
    except (TypeError, ValueError):
        number = None
    return DicomHeader(
        sop_class_uid=text("SOPClassUID"),
        sop_instance_uid=text("SOPInstanceUID"),
        study_instance_uid=text("StudyInstanceUID"),
        series_instance_uid=text("SeriesInstanceUID"),
        series_number=number,
        series_description=text("SeriesDescription"),
        image_type=values,
        modality=text("Modality"),
        photometric_interpretation=text("PhotometricInterpretation"),
    )


def _has_pair(lowered: str, siblings: set[str] | frozenset[str]) -> bool:
    stem, _, ext = lowered.rpartition(".")
    if ext == "gz":
        stem, _, ext = stem.rpartition(".")
    other = "img" if ext == "hdr" else "hdr"
    lowered_siblings = {s.lower() for s in siblings}
    return any(f"{stem}.{other}{gz}" in lowered_siblings for gz in ("", ".gz"))


def _describe(head: bytes, size: int) -> str:
    if size == 0:
        return "an empty file"
    for magic, words in _MAGIC:
        if head.startswith(magic):
            return words
    stripped = head.lstrip()
    if stripped[:1] in (b"{", b"[") and _is_text(head):
        return "a JSON text file"
    if _is_text(head):
        return "a text file"
    return "unrecognised content"


def _is_text(head: bytes) -> bool:
    try:
        # Not final: the sample may end in the middle of a multi-byte character.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return b"\x00" not in head


def _plain(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    first = text.splitlines()[0]
    return f"pydicom says: {first[:200]}"
