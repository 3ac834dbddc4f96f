"""Read the few DICOM attributes XNAT's importer needs from a file on disk (header only)."""

from __future__ import annotations

import struct
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

# pydicom reports odd values through `warnings`, whose filters are process-global: under a test
# runner that turns warnings into errors a lenient read would fail. dcm4che (XNAT) is lenient,
# so warnings are silenced, and the lock keeps concurrent catch_warnings() blocks from
# restoring each other's filter lists out of order (the series filters' reader shares it).
PARSE_LOCK = threading.Lock()

# Groups a bare dataset (no preamble, no "DICM") may start with: file meta or identifying group.
_BARE_DATASET_GROUPS = frozenset({0x0002, 0x0008})


class NotDicomError(Exception):
    """The bytes are not a DICOM object (dcm4che: ``DicomCodingException``)."""


@dataclass(frozen=True, slots=True)
class DicomHeader:
    """The attributes used for routing, grouping and storage; "" when absent."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    series_number: str
    instance_number: str
    modality: str
    series_description: str
    patient_name: str
    patient_id: str
    comments: tuple[str, ...]  # PatientComments, StudyComments, AdditionalPatientHistory
    study_description: str
    accession_number: str
    study_date: str  # YYYYMMDD
    study_time: str  # HHMMSS[.ffffff]


def read_header(path: Path) -> DicomHeader:
    """Parse ``path`` up to the pixel data; raises NotDicomError if it is not DICOM.

    Like dcm4che, a dataset without the 128-byte preamble is accepted when its first tag is
    plausible (group 0002 or 0008, either byte order).
    """
    has_preamble = _has_preamble(path)
    with PARSE_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True, force=not has_preamble)
            return _header_of(dataset)
        except Exception as error:  # pydicom raises many types for broken data
            raise NotDicomError(str(error)) from error


def read_dataset(path: Path, *, pixels: bool = False) -> Dataset:
    """The whole dataset, up to the pixel data unless ``pixels``, read as leniently as
    ``read_header``. Values stay raw (undecoded) until used: call with PARSE_LOCK held and
    warnings silenced, and use them under the same lock. Raises NotDicomError."""
    has_preamble = _has_preamble(path)
    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels, force=not has_preamble)
    except Exception as error:  # pydicom raises many types for broken data
        raise NotDicomError(str(error)) from error


def _has_preamble(path: Path) -> bool:
    with path.open("rb") as stream:
        head = stream.read(132)
    has_preamble = len(head) == 132 and head[128:132] == b"DICM"
    if not has_preamble and not _looks_like_bare_dataset(head):
        raise NotDicomError("not a DICOM stream")
    return has_preamble


def _looks_like_bare_dataset(head: bytes) -> bool:
    if len(head) < 8:
        return False
    # dcm4che guesses the byte order, so a big-endian dataset qualifies too.
    return any(struct.unpack_from(order, head)[0] in _BARE_DATASET_GROUPS for order in ("<H", ">H"))


def _header_of(dataset: Dataset) -> DicomHeader:
    def text(keyword: str) -> str:
        value: Any = dataset.get(keyword)
        return "" if value is None else str(value).strip()

    if len(dataset) == 0:
        raise NotDicomError("empty dataset")
    return DicomHeader(
        sop_class_uid=text("SOPClassUID"),
        sop_instance_uid=text("SOPInstanceUID"),
        study_uid=text("StudyInstanceUID"),
        series_uid=text("SeriesInstanceUID"),
        series_number=text("SeriesNumber"),
        instance_number=text("InstanceNumber"),
        modality=text("Modality"),
        series_description=text("SeriesDescription"),
        patient_name=text("PatientName"),
        patient_id=text("PatientID"),
        comments=tuple(
            text(keyword)
            for keyword in ("PatientComments", "StudyComments", "AdditionalPatientHistory")
        ),
        study_description=text("StudyDescription"),
        accession_number=text("AccessionNumber"),
        study_date=text("StudyDate"),
        study_time=text("StudyTime"),
    )
