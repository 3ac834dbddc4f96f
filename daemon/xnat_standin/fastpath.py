"""The benchmark-only fast path of the stand-in's DICOM-zip importer (``Emulator(fast=True)``).

The faithful importer spools every zip entry to a temporary file, parses it with pydicom up to
the pixel data, then renames it into the prearchive: about a millisecond of CPU per entry,
which makes the stand-in, not the client, the slowest part of a large upload on a small
machine. With ``fast=True`` an entry is held in memory, the few attributes the importer needs
are picked out of its bytes by ``scan_header`` (XNAT's dcm4che also reads only up to the
highest tag it needs), and the bytes are written straight to their place in the prearchive.

Everything else stays as it is: the zip is read by the same ``ZipStreamReader`` (so STORED
entries with a data descriptor, bad CRCs and the rest are refused exactly as before), and the
entry is routed and filed by the same code. ``scan_header`` understands the common case only,
a Part 10 file in explicit VR little endian; for anything else (no preamble, another transfer
syntax, an odd element, an object without SOP UIDs) it answers None and the entry takes the
faithful path, so every refusal still comes from there. Values are converted as pydicom
converts them (by pydicom itself whenever they are not plain ASCII).

``Emulator(fast=True, headers_only=True)`` goes one step further and stores each object only
up to the last attribute the importer reads (listings still show the full size): on a small
machine, copying gigabytes into storage can cost the stand-in more than everything else it
does. Both are for benchmarks, never for tests of the importer's behaviour or for the demo.
"""

from __future__ import annotations

import re
import struct
import warnings

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from .dicomheader import PARSE_LOCK, DicomHeader, NotDicomError, _header_of

# The attributes DicomHeader holds, and SpecificCharacterSet to decode them.
_WANTED = frozenset(
    {
        0x00080005,  # SpecificCharacterSet
        0x00080016,  # SOPClassUID
        0x00080018,  # SOPInstanceUID
        0x00080020,  # StudyDate
        0x00080030,  # StudyTime
        0x00080050,  # AccessionNumber
        0x00080060,  # Modality
        0x00081030,  # StudyDescription
        0x0008103E,  # SeriesDescription
        0x00100010,  # PatientName
        0x00100020,  # PatientID
        0x001021B0,  # AdditionalPatientHistory
        0x00104000,  # PatientComments
        0x0020000D,  # StudyInstanceUID
        0x0020000E,  # SeriesInstanceUID
        0x00200011,  # SeriesNumber
        0x00200013,  # InstanceNumber
        0x00324000,  # StudyComments
    }
)
_LAST_WANTED = max(_WANTED)
_SOP_UIDS = (0x00080016, 0x00080018)
# VRs whose explicit encoding has two reserved bytes and a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_SHORT_VRS = frozenset(
    {
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT",
        b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
    }
)  # fmt: skip
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_DEFLATED_DATASETS = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95")
_ENCAPSULATED_PREFIXES = ("1.2.840.10008.1.2.4.", "1.2.840.10008.1.2.5")
# Printable ASCII without backslash, no leading or inner-edge blanks, one trailing pad byte.
_TEXT = rb"([!-\[\]-~](?:[ -\[\]-~]*[!-\[\]-~])?)"
_PLAIN = {
    "UI": re.compile(_TEXT + rb"\0?", re.DOTALL),
    "IS": re.compile(rb"([+-]?[0-9]{1,12}) ?"),
    **{
        vr: re.compile(_TEXT + rb" ?")
        for vr in ("AS", "CS", "DA", "LO", "LT", "PN", "SH", "ST", "TM")
    },
}
_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_TAG_VR = struct.Struct("<HH2s")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_TAG_LENGTH = struct.Struct("<HHI")


_Raw = tuple[str, bytes, int]  # VR, value bytes, offset of the value


class _UnsupportedError(Exception):
    """Not the common case: the caller takes the faithful path."""


def scan_header(data: bytes | memoryview) -> DicomHeader | None:
    """The importer's attributes from a whole DICOM object in memory, or None.

    None means "not the common case" (see the module docstring): the caller must then parse
    the object the faithful way, which also produces the right refusal if it is not DICOM.
    """
    found = scan(data)
    return None if found is None else found[0]


def scan(data: bytes | memoryview) -> tuple[DicomHeader, int] | None:
    """`scan_header`, and where the elements it read end: the object's bytes up to there are
    a valid DICOM object holding every attribute the importer uses (not the pixel data)."""
    view = memoryview(data)
    try:
        if len(view) < 132 or bytes(view[128:132]) != b"DICM":
            return None
        meta: dict[int, _Raw] = {}
        position = _walk(view, 132, meta, group=2)
        syntax = meta.get(0x00020010, ("UI", b"", 0))[1].decode("ascii", "replace").strip("\0 ")
        if not _is_explicit_little_endian(syntax):
            return None
        found: dict[int, _Raw] = {}
        end = _walk(view, position, found, group=None)
    except _UnsupportedError:
        return None
    if any(tag not in found for tag in _SOP_UIDS):
        return None  # the faithful path words the refusal
    texts = {tag: _plain(vr, value) for tag, (vr, value, _) in found.items()}
    if None not in texts.values():
        return _header_from(texts), end  # type: ignore[arg-type]
    # Some value needs pydicom's conversion (a character set, several values, ...).
    dataset = Dataset(
        {
            Tag(tag): RawDataElement(Tag(tag), vr, len(value), value, offset, False, True)
            for tag, (vr, value, offset) in found.items()
        }
    )
    with PARSE_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return _header_of(dataset), end
        except NotDicomError:
            return None
        except Exception:  # pydicom raises many types for odd values
            return None


def _plain(vr: str, raw: bytes) -> str | None:
    """The value as `str(pydicom value).strip()` gives it, when that is plainly its ASCII text.

    None when pydicom's conversion could give something else: non-ASCII bytes (a character
    set), several values, padding other than one trailing pad byte, an IS that is not a plain
    integer, a VR not listed here.
    """
    if not raw:
        return ""
    pattern = _PLAIN.get(vr)
    match = pattern.fullmatch(raw) if pattern is not None else None
    return match.group(1).decode("ascii") if match is not None else None


def _header_from(texts: dict[int, str]) -> DicomHeader:
    def text(tag: int) -> str:
        return texts.get(tag, "")

    return DicomHeader(
        sop_class_uid=text(0x00080016),
        sop_instance_uid=text(0x00080018),
        study_uid=text(0x0020000D),
        series_uid=text(0x0020000E),
        series_number=text(0x00200011),
        instance_number=text(0x00200013),
        modality=text(0x00080060),
        series_description=text(0x0008103E),
        patient_name=text(0x00100010),
        patient_id=text(0x00100020),
        comments=(text(0x00104000), text(0x00324000), text(0x001021B0)),
        study_description=text(0x00081030),
        accession_number=text(0x00080050),
        study_date=text(0x00080020),
        study_time=text(0x00080030),
    )


def _is_explicit_little_endian(syntax: str) -> bool:
    if syntax == _EXPLICIT_LE:
        return True
    return syntax.startswith(_ENCAPSULATED_PREFIXES) and syntax not in _DEFLATED_DATASETS


def _walk(view: memoryview, position: int, found: dict[int, _Raw], *, group: int | None) -> int:
    """Read elements from `position`, keeping the wanted ones in `found`; returns the end.

    With `group`, stops at the first element of another group (the file meta group); without,
    stops after the last wanted tag, at the pixel data or at the end of the data.
    """
    end = len(view)
    while position + 8 <= end:
        group_number, element_number, vr = _TAG_VR.unpack_from(view, position)
        tag = group_number << 16 | element_number
        if group is not None and group_number != group:
            return position
        if group is None and tag > _LAST_WANTED:
            return position
        if group_number == 0xFFFE:
            raise _UnsupportedError  # an item tag at the top level
        start, length = _value_at(view, position, vr, end)
        if length == _UNDEFINED:
            position = _skip_sequence(view, start)
            continue
        stop = start + length
        if stop > end:
            raise _UnsupportedError
        if tag in _WANTED or group is not None:
            found[tag] = (vr.decode("ascii"), bytes(view[start:stop]), start)
        position = stop
    if group is None or position != end:
        return position
    raise _UnsupportedError  # nothing after the file meta group


def _skip_sequence(view: memoryview, position: int) -> int:
    """Skip the items of an undefined-length sequence; returns the position after it."""
    end = len(view)
    while position + 8 <= end:
        group_number, element_number, length = _TAG_LENGTH.unpack_from(view, position)
        tag = group_number << 16 | element_number
        position += 8
        if tag == _SEQUENCE_END:
            return position
        if tag != _ITEM:
            raise _UnsupportedError
        if length != _UNDEFINED:
            position += length
            continue
        position = _skip_item(view, position)
    raise _UnsupportedError


def _skip_item(view: memoryview, position: int) -> int:
    """Skip the elements of an undefined-length item; returns the position after its end."""
    end = len(view)
    while position + 8 <= end:
        group_number, element_number, vr = _TAG_VR.unpack_from(view, position)
        if (group_number << 16 | element_number) == _ITEM_END:
            return position + 8
        start, length = _value_at(view, position, vr, end)
        if length == _UNDEFINED:
            position = _skip_sequence(view, start)
            continue
        position = start + length
    raise _UnsupportedError


def _value_at(view: memoryview, position: int, vr: bytes, end: int) -> tuple[int, int]:
    """Where the value of the explicit-VR element at `position` starts, and its length.

    The length is _UNDEFINED only for a sequence (SQ) of undefined length.
    """
    if vr in _LONG_VRS:
        if position + 12 > end:
            raise _UnsupportedError
        (length,) = _U32.unpack_from(view, position + 8)
        if length == _UNDEFINED and vr != b"SQ":
            raise _UnsupportedError  # an undefined-length UN is implicit VR inside
        return position + 12, length
    if vr in _SHORT_VRS:
        (length,) = _U16.unpack_from(view, position + 6)
        return position + 8, length
    raise _UnsupportedError  # implicit VR where explicit was promised, or an odd VR
