"""Read a DICOM header with pydicom, within bounds, and check where the file ends. Read-only.

Every DICOM file plainheader.py is not sure of is read here: other transfer syntaxes, no
preamble, deflated data sets, enhanced multi-frame objects, odd character sets. The header
is parsed from the first bytes already read when they hold all of it; otherwise from the file,
within the limits of headerlimits.py. A deflated data set is inflated here step by step, never
by pydicom (which would inflate all of it at once). pydicom reads under `lenient_reading`
(pydicomsettings.py): header problems are judged by inspection's rules, not by pydicom's
validation, and pydicom's settings are back as they were once a file was read.
"""

from __future__ import annotations

import functools
import io
import zlib
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import FileDataset
from pydicom.filereader import read_dataset, read_partial
from pydicom.tag import Tag

from xnat_drop.adapters.dicom.headerfields import (
    COUNT_FIELDS,
    FRAME_GROUPS,
    HEADER_TAGS,
    TABLE_LIMIT,
    TAG,
    judged,
)
from xnat_drop.adapters.dicom.headerlimits import (
    DEFLATED_UID,
    MAX_INFLATED_HEADER,
    BoundedFile,
    HeaderLimitError,
    InflatedSource,
    ending_problem,
    has_image_header,
)
from xnat_drop.adapters.dicom.openfile import HEAD_READ, MAX_HEAD_READ, OpenFile
from xnat_drop.adapters.dicom.pydicomsettings import lenient_reading
from xnat_drop.core.model import DicomHeader, FileFacts, FileKind
from xnat_drop.core.noheader import scrubbed

_HEAD_STEP = 4 * 1024  # a learned first read is a multiple of this
_HEAD_SPARE = 2 * 1024  # at least this much more than the header read last needed
_FIRST_INFLATE = 256 * 1024  # inflated bytes of a deflated data set parsed first (then 8x more)
_PIXEL_TAG_INTS = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})
_NOT_KEPT = frozenset({TAG["SOPInstanceUID"], TAG["InstanceNumber"]})  # different in every file

V = TypeVar("V")


class PydicomHeaderReader:
    """Reads DICOM headers with pydicom, learning how much of a file a header needs.

    One per FileClassifier (one session, or one worker task), so what it learns from one
    session does not make it read more of the files of the next one, and its table of
    converted values (see `_field`) lives exactly as long.
    """

    def __init__(self) -> None:
        # How many first bytes of a file to read, so that its header is likely among them.
        self.head_read = HEAD_READ
        # Converted header values, keyed by everything pydicom's conversion depends on (see
        # _field): the values repeated in every file of a series are converted once.
        self._fields: dict[Hashable, Any] = {}

    def read(
        self, source: OpenFile, relpath: str, kind: FileKind, keywords: tuple[str, ...]
    ) -> FileFacts:
        """The facts of the DICOM file open as `source` (DICOM or DICOM_NO_PREAMBLE), read
        with pydicom: UNREADABLE_DICOM with a note when its header cannot be read, is past a
        limit of headerlimits.py or does not end where the file does."""
        size = source.size
        with lenient_reading:
            try:
                no_preamble = kind is FileKind.DICOM_NO_PREAMBLE
                ds, stop, inflated = self._parse(source, no_preamble, keywords)
                meta: Any = getattr(ds, "file_meta", None) or None
                header = self._header(ds, keywords)
                is_image = has_image_header(TAG["Rows"] in ds, header.sop_class_uid)
                if inflated is None:
                    problem = ending_problem(source, stop, is_image)
                else:  # the end of a deflated data set is checked in it, then in the file
                    problem = ending_problem(inflated, stop, is_image) or inflated.problem()
            except HeaderLimitError as exc:
                return FileFacts(relpath, size, FileKind.UNREADABLE_DICOM, note=str(exc))
            except zlib.error:
                note = "its deflated (compressed) data is damaged"
                return FileFacts(relpath, size, FileKind.UNREADABLE_DICOM, note=note)
            except Exception as exc:
                # pydicom raises many types on damaged input (ValueError, EOFError, OSError,
                # BytesLengthException, ...): each means the file cannot be used.
                note = _pydicom_says(exc)
                return FileFacts(relpath, size, FileKind.UNREADABLE_DICOM, note=note)
            media_class = self._field(meta, TAG["MediaStorageSOPClassUID"], str, "") if meta else ""
        return judged(relpath, size, kind, header, problem, media_class)

    def _parse(
        self, source: OpenFile, force: bool, keywords: tuple[str, ...]
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
            # Enough for this header and the pixel data tag, with 2-6 KiB to spare for the
            # slightly longer headers of the next images of the series, and little more: the
            # zip reads every byte again.
            needed = -(-(stop + 12 + _HEAD_SPARE) // _HEAD_STEP) * _HEAD_STEP
            self.head_read = min(MAX_HEAD_READ, max(self.head_read, needed))
        return ds, stop, None

    def _header(self, ds: Any, keywords: Sequence[str]) -> DicomHeader:
        field = self._field
        try:
            number = field(ds, TAG["SeriesNumber"], _series_number, None)
        except (TypeError, ValueError):
            number = None
        return DicomHeader(
            sop_class_uid=field(ds, TAG["SOPClassUID"], _text, ""),
            sop_instance_uid=field(ds, TAG["SOPInstanceUID"], _text, ""),
            study_instance_uid=field(ds, TAG["StudyInstanceUID"], _text, ""),
            series_instance_uid=field(ds, TAG["SeriesInstanceUID"], _text, ""),
            series_number=number,
            series_description=field(ds, TAG["SeriesDescription"], _text, ""),
            image_type=field(ds, TAG["ImageType"], _values, None),
            modality=field(ds, TAG["Modality"], _text, ""),
            photometric_interpretation=field(ds, TAG["PhotometricInterpretation"], _text, ""),
            frame_types=_frame_types(ds) if any(t in ds for t in FRAME_GROUPS) else (),
            values=tuple((k, self._keyword_text(ds, k)) for k in keywords),
            frame_items=_frame_items(ds),
            **{name: field(ds, TAG[keyword], _count, None) for name, keyword in COUNT_FIELDS},
        )

    def _keyword_text(self, ds: Any, keyword: str) -> str:
        tag = tag_for_keyword(keyword)
        if tag is None:  # not a DICOM keyword: nothing to read (configuration says so)
            return _text(ds.get(keyword, ""))
        return self._field(ds, tag, _text, "")

    def _field(self, ds: Any, tag: int, shape: Callable[[Any], V], default: Any) -> V:
        """`shape(ds.get(keyword, default))` for the element `tag`, converted once per value.

        pydicom's conversion of a raw element depends only on the element (tag, VR, encoding,
        bytes) and the dataset's character set, except for private tags and ambiguous VRs,
        which are never kept. The same raw value therefore always gives the same result.
        """
        element = ds.get_item(tag)
        if element is None:
            return shape(default)
        if type(element) is not RawDataElement or not _keepable(tag):
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
        table = self._fields
        try:
            return table[key]  # type: ignore[no-any-return]
        except KeyError:
            pass
        value = shape(ds[tag].value)
        if len(table) >= TABLE_LIMIT:
            table.clear()
        table[key] = value
        return value


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


def _inflated(
    source: OpenFile, start: int, first: Any, tags: list[Any]
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


@functools.lru_cache(maxsize=64)
def _specific_tags(keywords: tuple[str, ...]) -> list[Any]:
    """The tags pydicom is asked for, as tags (a keyword is looked up once, not per file)."""
    try:
        return [Tag(keyword) for keyword in (*HEADER_TAGS, *keywords)]
    except Exception:  # not a DICOM keyword: let pydicom say so, per file, as it always did
        return [*HEADER_TAGS, *keywords]


@functools.lru_cache(maxsize=1024)
def _keepable(tag: int) -> bool:
    """A public tag whose VR is fixed by the dictionary (no dataset-dependent VR), and whose
    value is repeated across files: its converted values are worth keeping."""
    if tag in _NOT_KEPT or (tag >> 16) % 2:  # private groups are odd
        return False
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return False
    return " or " not in vr and vr != "SQ"


def _series_number(raw_number: Any) -> int | None:
    return int(raw_number) if raw_number not in (None, "") else None


def _count(raw: Any) -> int | None:
    """A counting field (IS) as one integer; None when absent, empty or anything else."""
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def _frame_items(ds: Any) -> int | None:
    """The items of the PerFrameFunctionalGroupsSequence (one per frame), or None."""
    groups = ds.get("PerFrameFunctionalGroupsSequence", None)
    return None if groups is None else len(groups)


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


def _pydicom_says(exc: BaseException) -> str:
    """A note from pydicom's error: its first line, without what it quotes of the file (a value
    read from the header never reaches a report: core/noheader.py)."""
    text = str(exc).strip() or type(exc).__name__
    first = scrubbed(text.splitlines()[0])
    return f"pydicom says: {first[:200]}"
