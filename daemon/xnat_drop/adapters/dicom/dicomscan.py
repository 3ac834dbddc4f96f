"""Walk the header of a DICOM Part 10 file held in memory, in the common case only. Pure.

pydicomheader.py reads DICOM headers with pydicom (`dcmread(stop_before_pixels=True,
specific_tags=...)`), which costs 0.3-0.6 ms per file. Nearly every file a scanner exports is a
Part 10 file whose dataset is explicit VR little endian; `scan` walks such a header from the
bytes already read: tag, VR and length of each element, the values of the wanted elements kept
as bytes, everything else skipped by its length (sequences of undefined length item by item, as
pydicom parses them). `text`, `values` and `integer` turn a kept value into what
pydicomheader.py makes of pydicom's value, when that is plainly its ASCII characters
(plainheader.py puts the two together).

`scan` answers None, and the conversions raise UnsureError, for anything they are not sure to
read exactly as pydicom reads it: another transfer syntax, an element or item pydicom would
read differently (implicit VR inside, unknown VRs, UN of undefined length, lengths running past
their container, elements out of order, deep nesting), bytes that end before the pixel data,
values that are not printable ASCII. The caller then uses pydicom, so that this costs time,
never a different answer. tests/test_dicomscan.py holds the two readers to the same results on
every DICOM file the test suite has, cut copies of them, and files crafted for the odd cases.
"""

from __future__ import annotations

import re
import struct
from typing import NamedTuple

# Transfer syntaxes whose dataset is explicit VR little endian, as pydicom reads it (the
# encapsulated ones compress only the pixel data). Deflated ones are not here.
EXPLICIT_LITTLE_ENDIAN_SYNTAXES = frozenset(
    {
        b"1.2.840.10008.1.2.1",  # Explicit VR Little Endian
        b"1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
        b"1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 and 4)
        b"1.2.840.10008.1.2.4.57",  # JPEG Lossless, Non-Hierarchical (Process 14)
        b"1.2.840.10008.1.2.4.70",  # JPEG Lossless, First-Order Prediction
        b"1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
        b"1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
        b"1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless Only
        b"1.2.840.10008.1.2.4.91",  # JPEG 2000
        b"1.2.840.10008.1.2.4.201",  # High-Throughput JPEG 2000 Lossless Only
        b"1.2.840.10008.1.2.4.202",  # High-Throughput JPEG 2000 with RPCL Lossless Only
        b"1.2.840.10008.1.2.4.203",  # High-Throughput JPEG 2000
        b"1.2.840.10008.1.2.5",  # RLE Lossless
    }
)
# VRs with two reserved bytes and a 4-byte length in explicit VR (pydicom's
# EXPLICIT_VR_LENGTH_32), and the other VRs pydicom knows, with a 2-byte length.
LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
SHORT_VRS = frozenset(
    {
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT",
        b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
    }
)  # fmt: skip
PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})  # where pydicom stops
TRANSFER_SYNTAX_UID = 0x00020010
MEDIA_STORAGE_SOP_CLASS_UID = 0x00020002
_META_KEPT = (MEDIA_STORAGE_SOP_CLASS_UID, TRANSFER_SYNTAX_UID)
# The first element of the file meta group: pydicom converts it to check the encoding.
_META_FIRST_VRS = frozenset({b"UL", b"OB", b"UI"})
_UNDEFINED = 0xFFFFFFFF
MAX_DEPTH = 8  # sequences inside sequences walked here; deeper ones are left to pydicom
_ELEMENT = struct.Struct("<HH2sH")  # group, element, VR, 2-byte length
_LENGTH = struct.Struct("<I")  # the 4-byte length after a long VR
_ITEM = struct.Struct("<HHI")  # item and delimiter tags: group, element, length

Raw = tuple[bytes, bytes]  # VR, value


class Header(NamedTuple):
    """What `scan` found: the kept elements of the file meta and of the dataset, as (VR,
    value bytes) by tag, and `stop`, the offset of the pixel data tag (where pydicom stops) or
    the end of the file."""

    meta: dict[int, Raw]
    elements: dict[int, Raw]
    stop: int


class UnsureError(Exception):
    """Something pydicom might read differently: the caller uses pydicom."""


def scan(data: bytes, whole: bool, wanted: frozenset[int]) -> Header | None:
    """Walk the Part 10 file whose first bytes are `data` (all of it when `whole`).

    Keeps the top-level elements whose tags are in `wanted`, plus MediaStorageSOPClassUID and
    TransferSyntaxUID from the file meta. Returns None unless the file meta says a transfer
    syntax in EXPLICIT_LITTLE_ENDIAN_SYNTAXES and every element up to the pixel data (or up to
    the end of a `whole` file) is one this module reads exactly as pydicom does.
    """
    if data[128:132] != b"DICM":
        return None
    end = len(data)
    try:
        meta: dict[int, Raw] = {}
        start = _meta(data, end, meta)
        syntax = meta.get(TRANSFER_SYNTAX_UID)
        if syntax is None or syntax[0] != b"UI":
            return None
        if syntax[1].rstrip(b"\0 ") not in EXPLICIT_LITTLE_ENDIAN_SYNTAXES:
            return None
        elements: dict[int, Raw] = {}
        stop = _dataset(data, start, end, whole, wanted, elements)
    except UnsureError:
        return None
    return Header(meta, elements, stop)


def _meta(data: bytes, end: int, kept: dict[int, Raw]) -> int:
    """Walk the file meta group (0002,xxxx) after "DICM"; returns where the dataset starts."""
    position = 132
    if position + 8 > end:
        raise UnsureError
    group, _, vr, length = _ELEMENT.unpack_from(data, position)
    if group != 2 or vr not in _META_FIRST_VRS or (vr == b"UL" and length != 4):
        raise UnsureError
    last = 0x0001FFFF
    while True:
        if position + 8 > end:
            raise UnsureError
        group, element, vr, length = _ELEMENT.unpack_from(data, position)
        if group != 2:
            return position
        tag = 0x00020000 | element
        if tag <= last:
            raise UnsureError
        last = tag
        if vr in LONG_VRS:
            if position + 12 > end:
                raise UnsureError
            (length,) = _LENGTH.unpack_from(data, position + 8)
            if length == _UNDEFINED:
                raise UnsureError
            start = position + 12
        elif vr in SHORT_VRS:
            start = position + 8
        else:
            raise UnsureError
        position = start + length
        if position > end:
            raise UnsureError
        if tag in _META_KEPT:
            kept[tag] = (vr, data[start:position])


def _dataset(
    data: bytes, position: int, end: int, whole: bool, wanted: frozenset[int], kept: dict[int, Raw]
) -> int:
    """Walk the top-level elements from `position` up to the pixel data; returns its offset.

    Tags must rise strictly (no command group 0000, no repeats, no item tags at this level),
    so that pydicom's reading, which keeps the last of repeated tags and stops at the first
    pixel data tag, is the same. Only a `whole` file may end before the pixel data, and only
    at the end of an element.
    """
    # The element header is decoded inline, as in _meta, not by a shared helper: this loop
    # runs for every element of every file, where a call per element is a cost worth avoiding.
    unpack = _ELEMENT.unpack_from
    unpack_length = _LENGTH.unpack_from
    last = 0xFFFF
    while True:
        if position + 8 > end:
            if whole and position == end:
                return position
            raise UnsureError
        group, element, vr, length = unpack(data, position)
        tag = group << 16 | element
        if tag <= last:
            raise UnsureError
        last = tag
        if tag >= 0x7FE00008 and tag in PIXEL_TAGS:
            if position + 12 > end:  # pydicom reads the tag, VR and length before stopping
                raise UnsureError
            return position
        if group == 0xFFFE:  # an item or delimiter at the top level
            raise UnsureError
        if vr in LONG_VRS:
            if position + 12 > end:
                raise UnsureError
            (length,) = unpack_length(data, position + 8)
            start = position + 12
            if length == _UNDEFINED:
                if tag in wanted:
                    raise UnsureError
                position = _undefined(data, vr, start, end, 1)
                continue
        elif vr in SHORT_VRS:
            start = position + 8
        else:
            raise UnsureError
        position = start + length
        if position > end:
            raise UnsureError
        if tag in wanted:
            kept[tag] = (vr, data[start:position])


def _undefined(data: bytes, vr: bytes, position: int, end: int, depth: int) -> int:
    """Walk a value of undefined length; returns the offset after its delimiter.

    pydicom parses a sequence item by item, and reads an OB or OW value (compressed pixel
    data, in an icon image for instance) fragment by fragment. Anything else of undefined
    length (UN, which pydicom reads as a sequence in implicit VR) is left to pydicom, and so
    are sequences nested deeper than MAX_DEPTH: pydicom's recursion may fail before that.
    """
    if vr == b"SQ" and depth <= MAX_DEPTH:
        return _sequence(data, position, end, depth)
    if vr in (b"OB", b"OW"):
        return _fragments(data, position, end)
    raise UnsureError


def _fragments(data: bytes, position: int, end: int) -> int:
    """Walk the items of encapsulated data up to the sequence delimiter, as pydicom does."""
    while True:
        if position + 8 > end:
            raise UnsureError
        group, element, length = _ITEM.unpack_from(data, position)
        position += 8
        if group != 0xFFFE:
            raise UnsureError
        if element == 0xE0DD and length == 0:
            return position
        if element != 0xE000:
            raise UnsureError
        position += length
        if position > end:
            raise UnsureError


def _sequence(data: bytes, position: int, end: int, depth: int) -> int:
    """Walk the items of an undefined-length sequence; returns the offset after its delimiter."""
    while True:
        if position + 8 > end:
            raise UnsureError
        group, element, length = _ITEM.unpack_from(data, position)
        position += 8
        if group != 0xFFFE:
            raise UnsureError
        if element == 0xE0DD and length == 0:  # sequence delimitation item
            return position
        if element != 0xE000:
            raise UnsureError
        if length == _UNDEFINED:
            position = _item(data, position, end, depth, defined=False)
        else:
            stop = position + length
            if stop > end:
                raise UnsureError
            position = _item(data, position, stop, depth, defined=True)


def _item(data: bytes, position: int, end: int, depth: int, *, defined: bool) -> int:
    """Walk the elements of one item; returns the offset after it.

    A `defined` item ends exactly at `end`; otherwise it ends with an item delimiter. pydicom
    reads an item in implicit VR when its first element's VR is not two capital letters: such
    items are left to it.
    """
    unpack = _ELEMENT.unpack_from
    while True:
        if defined and position == end:
            return position
        if position + 8 > end:
            raise UnsureError
        group, element, vr, length = unpack(data, position)
        if group == 0xFFFE:
            if element == 0xE00D and not defined and not _LENGTH.unpack_from(data, position + 4)[0]:
                return position + 8  # item delimitation item (its length is 0)
            raise UnsureError
        if vr in LONG_VRS:
            if position + 12 > end:
                raise UnsureError
            (length,) = _LENGTH.unpack_from(data, position + 8)
            start = position + 12
            if length == _UNDEFINED:
                position = _undefined(data, vr, start, end, depth + 1)
                continue
        elif vr in SHORT_VRS:
            start = position + 8
        else:  # implicit VR (at the start: the whole item), or a VR pydicom guesses at
            raise UnsureError
        position = start + length
        if position > end:
            raise UnsureError


# Values are converted only when they hold printable ASCII (after the padding pydicom strips
# from their end: spaces and NULs), which every character set plainheader.py accepts decodes as
# ASCII. What pydicom then makes of them depends on the VR:
_PRINTABLE = re.compile(rb"[ -~]*")
_PADDING = b" \0"
# Split at backslashes after removing the padding; `str(value).strip()` of the whole (AS, CS,
# DA, DT, TM: DataElement keeps the parts as they are).
_SPLIT = frozenset({b"AS", b"CS", b"DA", b"DT", b"TM"})
# Split at backslashes, each value's trailing blanks removed (SH, LO, UC: convert_text).
_SPLIT_RSTRIP = frozenset({b"LO", b"SH", b"UC"})
# One value, backslashes included (LT, ST, UT: convert_single_string).
_SINGLE = frozenset({b"LT", b"ST", b"UT"})
# Person names are split at backslashes and kept as they are; "=" separates up to three
# representations, and pydicom warns about more: names with "=" are left to it.
_NAME = re.compile(rb"[ -<>-~]*")
# IS and DS: plain numbers only (IS exactly an int and a float to pydicom; DS at most 16
# characters), one or several.
_INTEGER = rb"[+-]?[0-9]{1,12}"
_ONE_INTEGER = re.compile(_INTEGER)
_NUMBERS = {
    b"IS": re.compile(_INTEGER + rb"(?:\\" + _INTEGER + rb")*"),
    b"DS": re.compile(
        rb"(?:(?=[^\\]{1,16}(?:\\|\Z))[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
        rb"(?:\\(?=[^\\]{1,16}(?:\\|\Z))[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)*"
    ),
}
TEXT_VRS = frozenset({*_SPLIT, *_SPLIT_RSTRIP, *_SINGLE, b"PN", b"UI", *_NUMBERS})


def text(vr: bytes, value: bytes) -> str:
    """pydicom's text of `value` (VR `vr`) as pydicomheader.py makes it: `str(value).strip()`, or
    its values joined by backslashes, stripped. Raises UnsureError for other VRs and for
    values that are not printable ASCII (see above).
    """
    core = value.rstrip(_PADDING)
    if vr in _SPLIT or vr in _SINGLE:
        if _PRINTABLE.fullmatch(core) is None:
            raise UnsureError
        return core.strip(b" ").decode("ascii")
    if vr == b"UI":  # each UID is stripped (pydicom's UID class strips)
        if _PRINTABLE.fullmatch(core) is None:
            raise UnsureError
        if b"\\" not in core:
            return core.strip(b" ").decode("ascii")
        return b"\\".join(part.strip(b" ") for part in core.split(b"\\")).strip(b" ").decode()
    if vr in _SPLIT_RSTRIP:
        if _PRINTABLE.fullmatch(core) is None:
            raise UnsureError
        if b"\\" not in core:
            return core.strip(b" ").decode("ascii")
        return b"\\".join(part.rstrip(b" ") for part in core.split(b"\\")).strip(b" ").decode()
    if vr == b"PN":
        if _NAME.fullmatch(core) is None:
            raise UnsureError
        return core.strip(b" ").decode("ascii")
    pattern = _NUMBERS.get(vr)
    if pattern is None or (core and pattern.fullmatch(core) is None):
        raise UnsureError
    return core.decode("ascii")


def values(vr: bytes, value: bytes) -> tuple[str, ...]:
    """The values of a CS element as pydicomheader.py makes them for ImageType: each stripped, and
    none for a single blank value. Raises UnsureError unless the value is printable ASCII."""
    if vr != b"CS":
        raise UnsureError
    core = value.rstrip(_PADDING)
    if _PRINTABLE.fullmatch(core) is None:
        raise UnsureError
    if b"\\" not in core:
        one = core.strip(b" ")
        return (one.decode("ascii"),) if one else ()
    return tuple(part.strip(b" ").decode("ascii") for part in core.split(b"\\"))


def integer(vr: bytes, value: bytes) -> int | None:
    """`int()` of an IS value as pydicomheader.py makes it for SeriesNumber, None when it is empty.
    Raises UnsureError unless the value is plainly one integer."""
    if vr != b"IS":
        raise UnsureError
    core = value.rstrip(_PADDING)
    if not core:
        return None
    if _ONE_INTEGER.fullmatch(core) is None:
        raise UnsureError
    return int(core)
