"""The strings XNAT's series import filters test: dcm4che2's
``DicomElement.getValueAsString(charset, 300)`` (xnat-api-round2.md §2), read from raw bytes.

- string VRs: the whole value decoded with the object's Specific Character Set, ``\\``
  separators included, trimmed (characters up to U+0020 at both ends); longer than 300
  characters, the first 297 and ``...``. Without a character set the bytes are read as UTF-8
  (the platform default of a typical server).
- binary VRs as dcm4che2's ``VR.toChars`` writes them: numbers in decimal (floats as Java's
  ``Float/Double.toString``), AT as ``GGGGEEEE``, OB as hex bytes, each joined by ``\\``, and
  cut with ``...`` once the next value could pass 300 characters; UN as its printable bytes
  with ``\\hh`` escapes. (dcm4che2's FD loop stops one value early: a single FD renders "".)
- a sequence cannot be rendered: ``UnsupportedOperationException``, returned as a JavaError.
- blank renders as ""; an absent attribute is None. File meta (group 0002) counts as present,
  as in dcm4che2's object.
"""

from __future__ import annotations

import decimal
import math
import struct
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

from .dicomheader import PARSE_LOCK, NotDicomError, read_dataset
from .seriesfilter import UNSUPPORTED, JavaError, java_is_blank, java_trim

MAX_CHARS = 300
PIXEL_DATA = 0x7FE00010
CHARACTER_SET = 0x00080005
STRING_VRS = frozenset("AE AS CS DA DS DT IS LO LT PN SH ST TM UC UI UR UT".split())  # noqa: SIM905
_DELIMITERS = {0x5C, 0x5E, 0x3D, 0x0D, 0x0A, 0x09, 0x0C}
_HEX = "0123456789ABCDEF"


def read_values(path: Path, tags: Iterable[int]) -> dict[int, str | JavaError | None]:
    """Each tag's rendering for a stored object; raises NotDicomError if it cannot be read."""
    wanted = sorted(set(tags))
    pixels = bool(wanted) and wanted[-1] >= PIXEL_DATA
    with PARSE_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = read_dataset(path, pixels=pixels)
        try:
            encodings = _encodings(dataset)
            return {tag: _rendered(dataset, tag, encodings) for tag in wanted}
        except NotDicomError:
            raise
        except Exception as error:  # a value pydicom cannot take apart
            raise NotDicomError(str(error)) from error


def _rendered(dataset: Dataset, tag: int, encodings: list[str] | None) -> str | JavaError | None:
    holder: Dataset | None = dataset
    if tag >> 16 == 0x0002:
        holder = getattr(dataset, "file_meta", None)
    if holder is None or tag not in holder:
        return None
    element = holder.get_item(tag, keep_deferred=True)
    if element is None:
        return None
    try:
        value = _element_string(element, encodings)
    except JavaError as error:
        return error
    return "" if java_is_blank(value) else value


def _element_string(element: DataElement | RawDataElement, encodings: list[str] | None) -> str:
    if isinstance(element, RawDataElement):
        vr = element.VR or _implicit_vr(element.tag)
        if vr == "SQ":
            raise JavaError(UNSUPPORTED)
        raw = element.value if isinstance(element.value, bytes) else b""
        return render(vr, raw, little=element.is_little_endian, encodings=encodings)
    vr = str(element.VR)
    if vr == "SQ":
        raise JavaError(UNSUPPORTED)
    value = element.value
    if value is None or value == "":
        return ""
    if isinstance(value, bytes):
        return render(vr, value, little=True, encodings=encodings)
    items = list(value) if element.VM > 1 else [value]
    if vr in STRING_VRS:
        return _cut(java_trim("\\".join(str(item) for item in items)))
    packed = _PACKING.get(vr)
    if packed is None:
        return _cut(java_trim("\\".join(str(item) for item in items)))
    raw = struct.pack("<" + packed * len(items), *items)
    return render(vr, raw, little=True, encodings=encodings)


_PACKING = {"US": "H", "OW": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "OF": "f", "FD": "d"}


def render(vr: str, raw: bytes, *, little: bool, encodings: list[str] | None) -> str:
    """One element's value as dcm4che2's ``VR.promptValue(..., 300, ...)`` writes it."""
    if not raw:
        return ""
    order = "<" if little else ">"
    if vr in STRING_VRS:
        return _cut(java_trim(_decode(raw, encodings)))
    if vr in ("US", "OW"):
        return _numbers(raw, order + "H", 8, str)
    if vr == "SS":
        return _numbers(raw, order + "h", 8, str)
    if vr == "UL":
        return _numbers(raw, order + "I", 12, str)
    if vr == "SL":
        return _numbers(raw, order + "i", 12, str)
    if vr in ("FL", "OF"):
        return _numbers(raw, order + "f", 16, java_float)
    if vr == "FD":
        return _numbers(raw[:-1], order + "d", 26, java_double)  # i + 8 < length
    if vr == "AT":
        return _tags(raw, little)
    if vr == "OB":
        return _bytes_hex(raw)
    return _unknown(raw)


def _cut(text: str) -> str:
    if len(text) > MAX_CHARS:
        return text[: MAX_CHARS - 3] + "..."
    return text


def _numbers(raw: bytes, code: str, width: int, show: Callable[[float], str]) -> str:
    size = struct.calcsize(code)
    out: list[str] = []
    position = 0
    for index in range(len(raw) // size):
        if index:
            out.append("\\")
            position += 1
        if position + width > MAX_CHARS:
            out.append("...")
            break
        text = show(struct.unpack_from(code, raw, index * size)[0])
        out.append(text)
        position += len(text)
    return "".join(out)


def _tags(raw: bytes, little: bool) -> str:
    order = (1, 0, 3, 2) if little else (0, 1, 2, 3)
    out: list[str] = []
    position = 0
    for start in range(0, len(raw) - 3, 4):
        if start:
            out.append("\\")
            position += 1
        if position + 9 > MAX_CHARS:
            out.append("...")
            break
        out.append("".join(_hex(raw[start + offset]) for offset in order))
        position += 8
    return "".join(out)


def _bytes_hex(raw: bytes) -> str:
    out: list[str] = []
    position = 0
    for index, byte in enumerate(raw):
        if index:
            out.append("\\")
            position += 1
        if position + 3 > MAX_CHARS:
            out.append("...")
            break
        out.append(_hex(byte))
        position += 2
    return "".join(out)


def _unknown(raw: bytes) -> str:
    out: list[str] = []
    position = 0
    for byte in raw:
        if position + 3 > MAX_CHARS:
            out.append("...")
            break
        if 32 <= byte <= 126:
            out.append(chr(byte) * (2 if byte == 0x5C else 1))
            position += 2 if byte == 0x5C else 1
        else:
            out.append("\\" + _hex(byte))
            position += 3
    return "".join(out)


def _hex(byte: int) -> str:
    return _HEX[byte >> 4] + _HEX[byte & 0xF]


def java_float(value: float) -> str:
    """Java's ``Float.toString``: the shortest decimal that reads back as the same float."""
    if not math.isfinite(value) or value == 0:
        return _java_special(value)
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if struct.unpack("<f", struct.pack("<f", float(text)))[0] == value:
            return _java_decimal(text)
    return _java_decimal(repr(value))


def java_double(value: float) -> str:
    """Java's ``Double.toString`` (shortest round trip, as Java 19 and later write it)."""
    if not math.isfinite(value) or value == 0:
        return _java_special(value)
    return _java_decimal(repr(value))


def _java_special(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"


def _java_decimal(text: str) -> str:
    """Plain notation for 1e-3 <= |x| < 1e7, else d.dddE[-]n; always a digit after the point."""
    sign, digit_tuple, exponent = decimal.Decimal(text).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    point = len(digits) + int(exponent)  # position of the decimal point in `digits`
    magnitude = point - 1
    prefix = "-" if sign else ""
    if -3 <= magnitude < 7:
        if point <= 0:
            return f"{prefix}0.{'0' * -point}{digits}"
        whole, fraction = digits[:point].ljust(point, "0"), digits[point:]
        return f"{prefix}{whole}.{fraction or '0'}"
    return f"{prefix}{digits[0]}.{digits[1:] or '0'}E{magnitude}"


def _encodings(dataset: Dataset) -> list[str] | None:
    if CHARACTER_SET not in dataset:
        return None
    element = dataset.get_item(CHARACTER_SET, keep_deferred=True)
    if isinstance(element, RawDataElement):
        raw = element.value if isinstance(element.value, bytes) else b""
        terms = raw.decode("latin-1").split("\\")
    elif element is not None:
        value = element.value
        terms = [str(item) for item in value] if element.VM > 1 else [str(value or "")]
    else:
        return None
    names = [java_trim(term) for term in terms]
    if not any(names):
        return None
    return convert_encodings(names)


def _decode(raw: bytes, encodings: list[str] | None) -> str:
    if encodings is None:
        return raw.decode("utf-8", "replace")
    return decode_bytes(raw, encodings, _DELIMITERS)


def _implicit_vr(tag: int) -> str:
    """The dictionary VR an implicit-VR reader assumes; UN when the dictionary does not say."""
    if tag & 0xFFFF == 0:
        return "UL"  # group length
    try:
        vr = str(dictionary_VR(tag))
    except KeyError:
        return "UN"
    if vr == "OB or OW":
        return "OW"
    return vr.split(" or ", maxsplit=1)[0]
