"""Sample scanner sessions for the demo, the tests and the benchmark.

Real DICOM Part 10 files written with pydicom (MR Image Storage, explicit VR little endian) with
noise as pixel data, so zips and uploads see realistic, incompressible bytes. Also a minimal
NIfTI-1 writer, for the converted data users drop by mistake.
"""

from __future__ import annotations

import gzip
import os
import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
ORIGINAL = ("ORIGINAL", "PRIMARY", "M", "ND")


@dataclass(frozen=True, slots=True)
class SeriesSpec:
    """One series to write: `images` files of `rows` x `columns` 16-bit noise."""

    number: int
    description: str
    image_type: tuple[str, ...] = ORIGINAL
    images: int = 4
    rows: int = 64
    columns: int = 64
    sop_class_uid: str = MR_IMAGE_STORAGE
    series_uid: str = field(default_factory=generate_uid)


def write_session(
    folder: Path,
    series: Sequence[SeriesSpec],
    *,
    patient_id: str = "SUBJ01",
    study_uid: str | None = None,
    rng: random.Random | None = None,
) -> list[Path]:
    """Write one study into `folder/<number>_<description>/IM0001.dcm ...`; returns the files."""
    rng = rng or random.Random()
    study_uid = study_uid or generate_uid()
    written = []
    for spec in series:
        subfolder = folder / f"{spec.number:02d}_{spec.description}"
        subfolder.mkdir(parents=True, exist_ok=True)
        for index in range(1, spec.images + 1):
            path = subfolder / f"IM{index:04d}.dcm"
            _write_image(path, spec, index, patient_id, study_uid, rng)
            written.append(path)
    return written


def _write_image(
    path: Path, spec: SeriesSpec, index: int, patient_id: str, study_uid: str, rng: random.Random
) -> None:
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(spec.sop_class_uid)
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = spec.sop_class_uid
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = spec.series_uid
    ds.ImageType = list(spec.image_type)
    ds.Modality = "MR"
    ds.PatientID = patient_id
    ds.PatientName = f"{patient_id}^DEMO"
    ds.StudyDate = "20261121"
    ds.StudyTime = "101500"
    ds.StudyID = "1"
    ds.SeriesNumber = spec.number
    ds.SeriesDescription = spec.description
    ds.InstanceNumber = index
    ds.Manufacturer = "xnat-drop samples"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = spec.rows
    ds.Columns = spec.columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = rng.randbytes(spec.rows * spec.columns * 2)
    ds.save_as(path, enforce_file_format=True)


def write_nifti(
    path: Path, shape: tuple[int, int, int] = (16, 16, 8), *, compress: bool | None = None
) -> Path:
    """Write a minimal valid NIfTI-1 single-file image (int16 noise); gzip it for `.nii.gz`."""
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)  # sizeof_hdr
    struct.pack_into("<8h", header, 40, 3, *shape, 1, 1, 1, 1)  # dim
    struct.pack_into("<hh", header, 70, 4, 16)  # datatype int16, bitpix
    struct.pack_into("<8f", header, 76, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)  # pixdim
    struct.pack_into("<f", header, 108, 352.0)  # vox_offset
    header[344:348] = b"n+1\x00"
    voxels = shape[0] * shape[1] * shape[2]
    data = bytes(header) + b"\0" * 4 + os.urandom(voxels * 2)
    if compress if compress is not None else path.name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=1)
    path.write_bytes(data)
    return path
