"""The DICOM attributes inspection reads, and the facts of a file whose header was read.

Shared by the two header readers (plainheader.py with dicomscan, pydicomheader.py with
pydicom), which must give the same answer for the same file.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

from pydicom.datadict import tag_for_keyword
from pydicom.tag import Tag

from xnat_drop.core.model import DicomHeader, FileFacts, FileKind

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
    # What completeness.py counts a series by (small integers: cheap to read and keep).
    "InstanceNumber",
    "AcquisitionNumber",
    "TemporalPositionIdentifier",
    "ImagesInAcquisition",
    "NumberOfTemporalPositions",
    "NumberOfFrames",
    # FrameType of enhanced multi-frame objects (one file per series, so the cost is small).
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
)
# The tag of each keyword above, as an int, and of two file meta elements.
TAG = {keyword: int(Tag(keyword)) for keyword in (*HEADER_TAGS, "TransferSyntaxUID")}
TAG["MediaStorageSOPClassUID"] = 0x00020002
# The header's counting fields (DicomHeader.instance_number ...) and the keywords they hold.
COUNT_FIELDS = (
    ("instance_number", "InstanceNumber"),
    ("acquisition_number", "AcquisitionNumber"),
    ("temporal_position", "TemporalPositionIdentifier"),
    ("images_in_acquisition", "ImagesInAcquisition"),
    ("temporal_positions", "NumberOfTemporalPositions"),
    ("frames", "NumberOfFrames"),
)
FRAME_GROUPS = (TAG["SharedFunctionalGroupsSequence"], TAG["PerFrameFunctionalGroupsSequence"])
CHARSET = 0x00080005  # Specific Character Set
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # a DICOMDIR, whatever its file name
# Entries a reader's table of shared values may hold (see `kept`): far more than the distinct
# values of a session, few enough that a session of odd files cannot grow it without end.
TABLE_LIMIT = 20_000

K = TypeVar("K", bound=Hashable)


def unknown_keywords(keywords: Sequence[str]) -> list[str]:
    """The names in `keywords` that are not DICOM keywords (for configuration checks)."""
    return [k for k in keywords if tag_for_keyword(k) is None]


def kept(table: dict[K, K], value: K) -> K:
    """The copy of `value` already in `table` (bounded by TABLE_LIMIT), or `value`, now kept."""
    if len(table) >= TABLE_LIMIT:
        table.clear()
    return table.setdefault(value, value)


def judged(
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
