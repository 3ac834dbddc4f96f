"""Issue 16: no DICOM header value ever appears in a message, page, file or metric.

Sessions whose free-text and identifying header fields hold distinctive strings
(`write_leak_session`), and one scan for them (`assert_no_header_values`) over everything the
daemon lets out: reports, receipts, notes beside folders, its log, status.json, the commands'
output. Later outputs (the status page, metrics, STATUS.txt, notifications) join the same scan.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
# Every UID of a leak session starts with this: the scan looks for its tail.
UID_ROOT = "1.2.826.0.1.3680043.8.498.77777"
SERIES_NUMBER_BASE = 9137450  # SeriesNumber (and so XNAT's scan IDs) 9137451, 9137452, ...
VENDOR_TOKEN = "FLOOPTOK"  # an ImageType token no standard or xnat-drop list knows

# Header values no output may show, by keyword. Routing must take the labels from the folder
# layout only (routing.order = ["layout"]): a label a lab takes from a header may be shown.
VALUES: dict[str, str] = {
    "PatientName": "Zyxwq^Leakcheck",
    "PatientID": "LEAKID-93117",
    "PatientBirthDate": "19011231",
    "PatientAddress": "12 Vorbel Lane",
    "PatientComments": "Knarfcomment on the patient",
    "StudyComments": "Glimbcomment on the study",
    "StudyDescription": "Vexstudy Omnibrain",
    "StudyDate": "19030607",
    "StudyTime": "071531.4417",
    "SeriesDate": "19030607",
    "AcquisitionDate": "19030607",
    "StudyID": "STX8841",
    "AccessionNumber": "ACCX70411",
    "InstitutionName": "Blorfton Infirmary",
    "InstitutionAddress": "Blorfton Street 9",
    "ReferringPhysicianName": "Quenzl^Referrer",
    "PerformingPhysicianName": "Drezzik^Performer",
    "OperatorsName": "Wompf^Operator",
    "Manufacturer": "Grelbcorp",
    "ManufacturerModelName": "Tronkmodel",
    "StationName": "Plixstation",
    "DeviceSerialNumber": "SN-Yorrt-55",
    "ProtocolName": "Zentprotocol",
    "ImageComments": "Hubblix image comment",
}
# What the scan looks for (case-insensitive): each value and its obvious parts and forms.
FORBIDDEN: tuple[str, ...] = (
    *VALUES.values(),
    "Zyxwq",
    "Leakcheck",
    "LEAKID",
    "Vorbel",
    "Knarfcomment",
    "Glimbcomment",
    "Vexstudy",
    "Omnibrain",
    "19011231",
    "1901-12-31",
    "19030607",
    "1903-06-07",
    "STX8841",
    "ACCX",
    "Blorfton",
    "Quenzl",
    "Drezzik",
    "Wompf",
    "Grelbcorp",
    "Tronkmodel",
    "Plixstation",
    "Yorrt",
    "Zentprotocol",
    "Hubblix",
    "Qvorp",  # every SeriesDescription starts with it
    "498.77777",  # the UIDs
    str(SERIES_NUMBER_BASE)[:6],  # SeriesNumber, and so XNAT's scan IDs
    VENDOR_TOKEN,
)

_uids = itertools.count(1)


def uid(kind: int) -> str:
    """A new UID below UID_ROOT (1 study, 2 series, 3 instance)."""
    return f"{UID_ROOT}.{kind}.{next(_uids)}"


@dataclass(frozen=True)
class LeakSeries:
    """One series to write into `folder` (session-relative) with `files` images.

    `description` is appended to "Qvorpseries_"; `study` picks one of the session's studies;
    `announced` sets ImagesInAcquisition (more than `files`: an incomplete series);
    `same_instance` gives the last file the SOP Instance UID of the first (a different file
    claiming the same instance)."""

    folder: str
    files: int = 2
    description: str = "T1"
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "M", "ND", VENDOR_TOKEN)
    study: int = 0
    announced: int | None = None
    same_instance: bool = False


def write_leak_session(folder: Path, series: Sequence[LeakSeries]) -> list[Path]:
    """Write the series into `folder` (file names IM0001.dcm ... per series folder), every
    header full of VALUES; returns the files."""
    studies = [uid(1) for _ in range(1 + max(s.study for s in series))]
    written = []
    for number, spec in enumerate(series, start=SERIES_NUMBER_BASE + 1):
        series_uid = uid(2)
        first = ""
        for index in range(1, spec.files + 1):
            sop = first if spec.same_instance and index == spec.files else uid(3)
            first = first or sop
            path = folder / spec.folder / f"IM{index:04d}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            _write(path, spec, studies[spec.study], series_uid, sop, number, index)
            written.append(path)
    return written


def _write(
    path: Path, spec: LeakSeries, study: str, series: str, sop: str, number: int, index: int
) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.FrameOfReferenceUID = f"{series}.9"
    for keyword, value in VALUES.items():
        setattr(ds, keyword, value)
    ds.Modality = "MR"
    ds.SeriesNumber = number
    ds.SeriesDescription = f"Qvorpseries_{spec.description}"
    ds.ImageType = list(spec.image_type)
    ds.InstanceNumber = index
    ds.AcquisitionNumber = 1
    if spec.announced is not None:
        ds.ImagesInAcquisition = spec.announced
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(range(128)) if index % 2 else bytes(128)
    ds.save_as(path, enforce_file_format=True)


def is_dicom(path: Path) -> bool:
    """True for a DICOM Part 10 file (the sessions' own files hold the values, of course)."""
    try:
        with path.open("rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def output_files(root: Path, *, skip: Iterable[str] = ()) -> list[Path]:
    """Every file below `root` that is output: not DICOM, not named in `skip` (e.g. the
    ledger, which may keep UIDs for its own use and hands none out)."""
    skipped = set(skip)
    return [
        p
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in skipped and not is_dicom(p)
    ]


def leaks(text: str) -> list[str]:
    """The forbidden strings in `text`, each with a little context."""
    low = text.lower()
    found = []
    for value in dict.fromkeys(FORBIDDEN):
        at = low.find(value.lower())
        if at >= 0:
            context = text[max(0, at - 60) : at + len(value) + 60].replace("\n", "⏎")
            found.append(f"{value!r} in …{context}…")
    return found


def assert_no_header_values(outputs: Iterable[tuple[str, str] | Path]) -> None:
    """Fail, listing every leak at once, when any output holds a forbidden string.

    `outputs` are files, or (name, text) pairs for what is not a file (a command's stdout)."""
    problems = []
    scanned = 0
    for item in outputs:
        if isinstance(item, Path):
            name, text = str(item), item.read_bytes().decode("utf-8", "replace")
        else:
            name, text = item
        scanned += 1
        problems += [f"{name}: {leak}" for leak in leaks(text)]
    assert scanned, "nothing was scanned"
    assert not problems, "header values in the output:\n" + "\n".join(problems)
