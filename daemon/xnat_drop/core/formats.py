"""What a file is from its first bytes and its name (everything but DICOM parsing). Pure.

Content decides first; names only confirm (`.bval`) or catch what content cannot (a broken
`.nii`). Sources: dicom-notes.md §2 (NIfTI, Analyze, MINC, MGH, NRRD, side-cars).

Magic numbers are tested in an order that cannot mistake one format for another: DICOM's
"DICM" at byte 128 first (the 128-byte preamble before it is free for the writer to fill; real
Siemens files, nibabel's among them, begin it with 5C 01 00 00: Analyze's header size 348),
then the formats with a magic of their own (NIfTI-1 "n+1" at byte 344, NIfTI-2, JNIfTI, MGH,
HDF5, netCDF, NRRD), and Analyze 7.5, known only by that header size, last. Inside gzip the
same order holds (`gzip_format`).
"""

from __future__ import annotations

import json
import struct
import zlib

from xnat_drop.core.model import FileKind

GZIP_MAGIC = b"\x1f\x8b"
DICOM_MAGIC = b"DICM"  # at byte 128, after the preamble (PS3.10 7.1)
# Decompressed bytes gzip_format looks at: a NIfTI-2 header is 540 bytes, NIfTI-1's magic
# ends at byte 348, DICOM's at 132.
GZIP_HEAD = 544
# Keys that only a DICOM-to-NIfTI converter writes into a JSON side-car.
CONVERSION_KEYS = ("ConversionSoftware", "ConversionSoftwareVersion")
# BIDS acquisition keys: two or more of them make a JSON file a BIDS side-car.
BIDS_KEYS = frozenset(
    {
        "RepetitionTime",
        "EchoTime",
        "FlipAngle",
        "SliceTiming",
        "PhaseEncodingDirection",
        "MagneticFieldStrength",
        "BidsGuess",
        "AcquisitionTime",
        "EffectiveEchoSpacing",
        "TotalReadoutTime",
    }
)
_ARCHIVES = (
    (b"PK\x03\x04", "a zip archive"),
    (b"PK\x05\x06", "an empty zip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"BZh", "a bzip2-compressed file"),
    (b"\xfd7zXZ\x00", "an xz-compressed file"),
)
_OTHER_MAGIC = (
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
)
_NAMED_CONVERTED = (
    ((".nii", ".nii.gz"), FileKind.NIFTI, "named like a NIfTI file"),
    ((".mgh", ".mgz"), FileKind.CONVERTED, "named like a FreeSurfer MGH/MGZ volume"),
    ((".mnc", ".mnc.gz"), FileKind.CONVERTED, "named like a MINC volume"),
    ((".nrrd", ".nhdr"), FileKind.CONVERTED, "named like an NRRD image"),
    ((".jnii", ".bnii"), FileKind.NIFTI, "named like a JNIfTI image"),
)
EMPTY_NOTE = "an empty file"
COMPRESSED_DICOM_NOTE = "a gzip-compressed DICOM file"
# FreeSurfer's MRI_UCHAR, MRI_INT, MRI_FLOAT, MRI_SHORT and MRI_USHRT (nibabel writes uint16 so).
MGH_TYPES = {0: "uchar", 1: "int", 3: "float", 4: "short", 10: "ushort"}
# JNIfTI (NIfTI as JSON text or binary JData, dcm2niix -e j / -e b): keys near the start.
JNIFTI_KEYS = (b"JNIFTIVersion", b"NIFTIHeader")


def is_part10(head: bytes) -> bool:
    """True when `head` (the first bytes of a file) holds "DICM" at byte 128: DICOM."""
    return head[128:132] == DICOM_MAGIC


def gzip_format(inner: bytes) -> tuple[FileKind, str]:
    """What a gzip-compressed file is, from the first decompressed bytes (GZIP_HEAD of them;
    "" when they could not be decompressed): a compressed DICOM file, compressed converted
    data, a compressed tar archive, or any other compressed file (ARCHIVE)."""
    if is_part10(inner):
        return FileKind.COMPRESSED_DICOM, COMPRESSED_DICOM_NOTE
    found = content_format(inner, compressed=True)
    if found is not None:
        return found
    if looks_like_bare_dicom(inner):
        return FileKind.COMPRESSED_DICOM, COMPRESSED_DICOM_NOTE
    if inner[257:262] == b"ustar":
        return FileKind.ARCHIVE, "a tar archive (gzip-compressed)"
    return FileKind.ARCHIVE, "a gzip-compressed file"


def content_format(head: bytes, *, compressed: bool = False) -> tuple[FileKind, str] | None:
    """Converted imaging data recognised from the first bytes (at least 544 for NIfTI-2), in
    words ("a gzip-compressed NIfTI-1 image ..." when `compressed`).

    None for DICOM (is_part10) whatever its preamble holds, and for anything unrecognised.
    """
    found = None if is_part10(head) else _converted(head)
    if found is None:
        return None
    kind, words = found
    if compressed:
        words = "a gzip-compressed " + words.split(" ", 1)[1]  # "an NRRD image": drop "an"
        words += " (.mgz)" if "MGH" in words else ""
    return kind, words


def _converted(head: bytes) -> tuple[FileKind, str] | None:
    """content_format's formats, in the order that cannot mistake one for another (see the
    module doc); each told in words starting with "a" or "an"."""
    nifti = _nifti(head)
    if nifti is not None:
        return (FileKind.ANALYZE if "pair" in nifti else FileKind.NIFTI), nifti
    if head.lstrip()[:1] == b"{" and any(key in head for key in JNIFTI_KEYS):
        return FileKind.NIFTI, "a JNIfTI image (NIfTI stored as JSON or JData)"
    if _is_mgh(head):
        return FileKind.CONVERTED, "a FreeSurfer MGH volume"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return FileKind.CONVERTED, "an HDF5 file (MINC-2 or other converted data)"
    if head.startswith((b"CDF\x01", b"CDF\x02")):
        return FileKind.CONVERTED, "a netCDF file (MINC-1)"
    if head.startswith(b"NRRD000"):
        return FileKind.CONVERTED, "an NRRD image"
    if _is_analyze(head):  # last: a header size of 348 is all it has to show
        return FileKind.ANALYZE, "an Analyze 7.5 header of an .hdr/.img pair (header size 348)"
    return None


def _sizeof_hdr(head: bytes) -> tuple[int, ...]:
    """The first int32 of `head` read in both byte orders (NIfTI's and Analyze's sizeof_hdr)."""
    return struct.unpack("<i", head[:4]) + struct.unpack(">i", head[:4]) if len(head) >= 4 else ()


def _is_analyze(head: bytes) -> bool:
    """Analyze 7.5: a 348-byte header and nothing else (NIfTI, DICOM) claiming the bytes."""
    return len(head) >= 348 and 348 in _sizeof_hdr(head)


def _nifti(head: bytes) -> str | None:
    """NIfTI-1/-2 from the header size and the magic, either byte order (not Analyze 7.5)."""
    for order in "<>":
        if len(head) >= 348 and struct.unpack(f"{order}i", head[:4])[0] == 348:
            magic = head[344:348]
            if magic == b"n+1\x00":
                return "a NIfTI-1 image, magic “n+1” at byte 344"
            if magic == b"ni1\x00":
                return "a NIfTI-1 header of an .hdr/.img pair, magic “ni1”"
        if len(head) >= 8 and struct.unpack(f"{order}i", head[:4])[0] == 540:
            magic = head[4:8]
            if magic == b"n+2\x00":
                return "a NIfTI-2 image, magic “n+2” at byte 4"
            if magic == b"ni2\x00":
                return "a NIfTI-2 header of an .hdr/.img pair, magic “ni2”"
    return None


def _is_mgh(head: bytes) -> bool:
    """FreeSurfer MGH: version 1, four positive dimensions, a known data type.

    The format is big-endian, but dcm2niix (`-e o`) writes the host's byte order: take both.
    """
    if len(head) < 28:
        return False
    for order in "><":
        version, width, height, depth, frames, kind, _dof = struct.unpack(f"{order}7i", head[:28])
        if (
            version == 1
            and all(0 < n < 1 << 16 for n in (width, height, depth, frames))
            and kind in MGH_TYPES
        ):
            return True
    return False


def gunzip_head(data: bytes, size: int = GZIP_HEAD) -> bytes:
    """The first `size` bytes of the gzip stream starting `data` ("" when it is not gzip)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        return inflater.decompress(data, size)
    except zlib.error:
        return b""


def archive_format(head: bytes) -> str | None:
    """Archives and compressed files by magic (tar by its "ustar" mark at byte 257)."""
    for magic, words in _ARCHIVES:
        if head.startswith(magic):
            return words
    if head[257:262] == b"ustar":
        return "a tar archive"
    return None


def named_format(lowered: str) -> tuple[FileKind, str] | None:
    """Converted data known by its name alone (content was not recognised)."""
    for suffixes, kind, words in _NAMED_CONVERTED:
        if lowered.endswith(suffixes):
            return kind, words
    return None


def sidecar_format(lowered: str, text: bytes) -> str | None:
    """dcm2niix/BIDS JSON side-cars (by keys) and .bval/.bvec files (by name and numbers)."""
    if lowered.endswith((".bval", ".bvec")):
        try:
            numbers = [float(x) for x in text.decode("ascii").split()]
        except (UnicodeDecodeError, ValueError):
            return None
        if numbers:
            return (
                "a diffusion b-value file (.bval)"
                if lowered.endswith(".bval")
                else ("a diffusion gradient-direction file (.bvec)")
            )
        return None
    if not text.lstrip().startswith(b"{"):
        return None
    try:
        data = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    for key in CONVERSION_KEYS:
        if key in data:
            return f"a converter's JSON side-car ({key} “{str(data[key])[:40]}”)"
    found = sorted(BIDS_KEYS & data.keys())
    if len(found) >= 2:
        return f"a BIDS JSON side-car ({', '.join(found[:3])})"
    return None


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


def describe(head: bytes, size: int) -> str:
    """A few words on what an unrecognised file seems to be, for the report."""
    if size == 0:
        return EMPTY_NOTE
    for magic, words in _OTHER_MAGIC:
        if head.startswith(magic):
            return words
    if _is_text(head):
        return "a JSON text file" if head.lstrip()[:1] in (b"{", b"[") else "a text file"
    return "unrecognised content"


def _is_text(head: bytes) -> bool:
    # The sample may end inside a multi-byte character: cut back to a character boundary.
    for cut in range(4):
        try:
            (head[: len(head) - cut] if cut else head).decode("utf-8")
        except UnicodeDecodeError:
            continue
        return b"\x00" not in head
    return False
