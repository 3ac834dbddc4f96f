"""Read a DICOM header in the common encoding with dicomscan: the fast path. Read-only.

A Part 10 file in explicit VR little endian with plain ASCII values is read from the bytes
already in memory, about five times faster than by pydicom and with the same result
(tests/test_dicomscan.py holds the two to it). For anything else the answer is None and
pydicomheader.py reads the file: the fast path costs time, never a different answer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from pydicom.datadict import dictionary_VR, tag_for_keyword

from xnat_drop.adapters.dicom import dicomscan
from xnat_drop.adapters.dicom.headerfields import (
    CHARSET,
    COUNT_FIELDS,
    FRAME_GROUPS,
    HEADER_TAGS,
    MEDIA_STORAGE_DIRECTORY,
    TABLE_LIMIT,
    TAG,
    judged,
    kept,
)
from xnat_drop.adapters.dicom.headerlimits import ending_problem, has_image_header
from xnat_drop.adapters.dicom.openfile import OpenFile
from xnat_drop.core.model import DicomHeader, FileFacts, FileKind

# Specific Character Set values under which pydicom decodes printable ASCII as ASCII (checked
# by tests/test_dicomscan.py); dicomscan only ever converts printable ASCII. Single values
# only: with several, ISO 2022 escape sequences may switch sets inside a value.
ASCII_CHARSETS = frozenset(
    {
        b"", b"ISO_IR 6", b"ISO_IR 100", b"ISO_IR 101", b"ISO_IR 109", b"ISO_IR 110",
        b"ISO_IR 126", b"ISO_IR 127", b"ISO_IR 138", b"ISO_IR 144", b"ISO_IR 148",
        b"ISO_IR 166", b"ISO_IR 192", b"GB18030", b"GBK",
    }
)  # fmt: skip
_CACHED_BYTES = 256  # longer values (comments) are rarely repeated: converted, not kept
_SOP_INSTANCE_UID = TAG["SOPInstanceUID"]
_SERIES_NUMBER = TAG["SeriesNumber"]
_IMAGE_TYPE = TAG["ImageType"]
_INSTANCE_NUMBER = TAG["InstanceNumber"]
_COUNTS = tuple((name, TAG[k]) for name, k in COUNT_FIELDS if k != "InstanceNumber")

V = TypeVar("V")


class _Plan(NamedTuple):
    wanted: frozenset[int]  # the tags dicomscan keeps
    keywords: tuple[tuple[str, int, bytes], ...]  # keyword, tag, VR its value must have


class PlainHeaderReader:
    """Reads the headers dicomscan is sure of, sharing the values repeated across a series.

    One per FileClassifier (one session, or one worker task): its tables of converted values
    live exactly as long, so nothing one session held is kept for the next.
    """

    def __init__(self) -> None:
        # (converter, VR, bytes) -> the converted value: the values repeated in every file of
        # a series (UIDs, description, ImageType, ...) are converted once and shared.
        self._converted: dict[tuple[Callable[[bytes, bytes], Any], bytes, bytes], Any] = {}
        # The extra keyword values of a header, one tuple per distinct set: the files of a
        # series then share one, which pickle sends once per task.
        self._keyword_values: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] = {}

    def read(self, source: OpenFile, relpath: str, keywords: tuple[str, ...]) -> FileFacts | None:
        """What pydicomheader.py answers for a Part 10 file, read by dicomscan from the bytes
        in memory; None when dicomscan is not sure to read it as pydicom does (see there),
        when the file is a DICOMDIR or an enhanced multi-frame object (FrameType), or on any
        error."""
        try:
            plan = _plan(keywords)
            found = dicomscan.scan(source.head, source.whole, plan.wanted) if plan else None
            if plan is None or found is None:
                return None
            elements = found.elements
            if any(tag in elements for tag in FRAME_GROUPS):
                return None
            charset = elements.get(CHARSET)
            if charset is not None and (
                charset[0] != b"CS" or charset[1].rstrip(b" \0") not in ASCII_CHARSETS
            ):
                return None
            media = found.meta.get(dicomscan.MEDIA_STORAGE_SOP_CLASS_UID)
            media_class = self._text_of(media, b"UI")
            header = self._header(elements, plan.keywords)
            if MEDIA_STORAGE_DIRECTORY in (header.sop_class_uid, media_class):
                return None
            is_image = has_image_header(TAG["Rows"] in elements, header.sop_class_uid)
            problem = ending_problem(source, found.stop, is_image)
        except Exception:  # dicomscan.UnsureError, or anything else: pydicom decides
            return None
        return judged(relpath, source.size, FileKind.DICOM, header, problem, media_class)

    def _header(
        self, elements: dict[int, dicomscan.Raw], keywords: tuple[tuple[str, int, bytes], ...]
    ) -> DicomHeader:
        """The DicomHeader pydicomheader.py makes of the same elements, converted by dicomscan.

        Raises dicomscan.UnsureError when an element has another VR than the dictionary's or
        a value that is not plain (see dicomscan).
        """
        get = elements.get
        text_of = self._text_of
        own = get(_SOP_INSTANCE_UID)
        number = get(_SERIES_NUMBER)
        image_type = get(_IMAGE_TYPE)
        converted = self._converted_value
        instance = get(_INSTANCE_NUMBER)
        # The other counting fields are the same in many files of a series: converted once.
        count = {
            name: converted(dicomscan.integer, raw, b"IS") if raw else None
            for name, raw in ((n, get(tag)) for n, tag in _COUNTS)
        }
        return DicomHeader(
            sop_class_uid=text_of(get(TAG["SOPClassUID"]), b"UI"),
            # Different in every file: converted, never kept.
            sop_instance_uid=dicomscan.text(*_checked(own, b"UI")) if own else "",
            study_instance_uid=text_of(get(TAG["StudyInstanceUID"]), b"UI"),
            series_instance_uid=text_of(get(TAG["SeriesInstanceUID"]), b"UI"),
            series_number=converted(dicomscan.integer, number, b"IS") if number else None,
            series_description=text_of(get(TAG["SeriesDescription"]), b"LO"),
            image_type=converted(dicomscan.values, image_type, b"CS") if image_type else (),
            modality=text_of(get(TAG["Modality"]), b"CS"),
            photometric_interpretation=text_of(get(TAG["PhotometricInterpretation"]), b"CS"),
            values=kept(
                self._keyword_values, tuple((k, text_of(get(tag), vr)) for k, tag, vr in keywords)
            ),
            # Different in every file: converted, never kept.
            instance_number=dicomscan.integer(*_checked(instance, b"IS")) if instance else None,
            acquisition_number=count["acquisition_number"],
            temporal_position=count["temporal_position"],
            images_in_acquisition=count["images_in_acquisition"],
            temporal_positions=count["temporal_positions"],
            frames=count["frames"],
        )

    def _text_of(self, raw: dicomscan.Raw | None, vr: bytes) -> str:
        return self._converted_value(dicomscan.text, raw, vr) if raw is not None else ""

    def _converted_value(
        self, convert: Callable[[bytes, bytes], V], raw: dicomscan.Raw, vr: bytes
    ) -> V:
        """`convert(*raw)` for an element that must have VR `vr`, once per distinct value."""
        if raw[0] != vr:
            raise dicomscan.UnsureError
        key = (convert, *raw)
        table = self._converted
        try:
            return table[key]  # type: ignore[no-any-return]
        except KeyError:
            pass
        value = convert(*raw)
        if len(raw[1]) <= _CACHED_BYTES:
            if len(table) >= TABLE_LIMIT:
                table.clear()
            table[key] = value
        return value


def _checked(raw: dicomscan.Raw, vr: bytes) -> dicomscan.Raw:
    if raw[0] != vr:
        raise dicomscan.UnsureError
    return raw


@functools.lru_cache(maxsize=64)
def _plan(keywords: tuple[str, ...]) -> _Plan | None:
    """What dicomscan is asked for, given the extra `keywords` (a pure lookup in pydicom's
    dictionary); None when one is not a DICOM keyword (pydicom's reading of those is left as
    it is)."""
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
    tags = {CHARSET, *(TAG[k] for k in HEADER_TAGS), *(tag for _, tag, _ in extra)}
    return _Plan(frozenset(tags), tuple(extra))
