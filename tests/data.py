"""Real test files shipped by pydicom, pydicom-data and nibabel (all offline)."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel
import pydicom
import pydicom.data
from pydicom.uid import generate_uid

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
NIBABEL_DATA = Path(nibabel.__file__).parent / "tests" / "data"
NICOM_DATA = Path(nibabel.__file__).parent / "nicom" / "tests" / "data"
# Small ORIGINAL MR series (dicom-notes.md §4); MR700 is DERIVED\SECONDARY\PROJECTION IMAGE.
MR_SERIES = PYDICOM_FILES / "dicomdirtests" / "98892003"


def pydicom_file(name: str) -> Path:
    """A file from pydicom's (or pydicom-data's) test set, never downloaded."""
    found = pydicom.data.get_testdata_file(name, download=False)
    assert found, f"{name} is not available offline"
    return Path(str(found))


def copy_series(name: str, dest: Path) -> list[Path]:
    """Copy one of the dicomdirtests series (MR1, MR2, MR700) into `dest`; returns the copies."""
    dest.mkdir(parents=True, exist_ok=True)
    copies = []
    for source in sorted((MR_SERIES / name).iterdir()):
        target = dest / f"{name}_{source.name}.dcm"
        shutil.copyfile(source, target)
        copies.append(target)
    return copies


# The dicomdirtests MR folders mix three studies (StudyInstanceUID ...18148.0.1, ...0.133 and
# ...0.427): copy_series("MR2") alone is a real mixed-studies session. These are whole studies,
# as (series folder, file name):
STUDY_133 = (("MR1", "4919"), ("MR2", "4950"), ("MR2", "4981"), ("MR2", "5011"))  # 2 series
# The study that MR700 (DERIVED\SECONDARY\PROJECTION IMAGE) belongs to, without MR700.
STUDY_1 = (("MR1", "5641"), ("MR2", "6273"), ("MR2", "6605"), ("MR2", "6935"))
# 98892001: a CT localizer and an axial series of one study (7 files).
CT_STUDY = PYDICOM_FILES / "dicomdirtests" / "98892001"


def copy_study(dest: Path, files: tuple[tuple[str, str], ...] = STUDY_133) -> list[Path]:
    """Copy single files of the dicomdirtests MR series into `dest` as `<series>_<name>.dcm`."""
    dest.mkdir(parents=True, exist_ok=True)
    copies = []
    for series, name in files:
        target = dest / f"{series}_{name}.dcm"
        shutil.copyfile(MR_SERIES / series / name, target)
        copies.append(target)
    return copies


def copy_ct_study(dest: Path) -> list[Path]:
    """Copy the CT study 98892001 (series CT2N and CT5N) into `dest/<series>/<name>.dcm`."""
    copies = []
    for source in sorted(CT_STUDY.glob("*/*")):
        target = dest / source.parent.name / f"{source.name}.dcm"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        copies.append(target)
    return copies


def copy_siemens_dti(dest: Path) -> list[Path]:
    """Four real Siemens DTI mosaic files of one series (nibabel): two plain, two gunzipped."""
    dest.mkdir(parents=True, exist_ok=True)
    copies = []
    for name in ("0.dcm", "1.dcm"):
        shutil.copyfile(NICOM_DATA / name, dest / f"dti_{name}")
        copies.append(dest / f"dti_{name}")
    for name in ("siemens_dwi_0.dcm.gz", "siemens_dwi_1000.dcm.gz"):
        target = dest / name.removesuffix(".gz")
        target.write_bytes(gzip.decompress((NICOM_DATA / name).read_bytes()))
        copies.append(target)
    return copies


# Non-image objects a scanner exports with a session (rules.py: uploaded, never derived).
CSA_NON_IMAGE = "1.3.12.2.1107.5.9.1"  # Siemens' private CSA Non-Image Storage
DOSE_SR = "1.2.840.10008.5.1.4.1.1.88.67"  # X-Ray Radiation Dose SR
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
RAW_DATA = "1.2.840.10008.5.1.4.1.1.66"
# Attributes copied from the session's own file, so an object joins its patient and study.
_STUDY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
)
# A minimal PDF document: the content of an encapsulated protocol.
PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)


def write_non_image_objects(dest: Path, reference: Path) -> dict[str, Path]:
    """Non-image objects of the study of `reference` (a real DICOM image) written into `dest`:
    by name, the path of an SR without InstanceNumber, a dose report, an encapsulated PDF, a
    Siemens PhoenixZIPReport (CSA Non-Image) and a Raw Data object, each its own series.

    No such objects ship offline except the SRs, so each is built from a real file with its SOP
    class changed: the SRs from pydicom's reportsi.dcm and test-SR.dcm, the others from
    `reference` itself (a real Siemens file keeps its CSA private header) without its pixels.
    The PhoenixZIPReport-like object is given ImageType DERIVED\\SECONDARY\\TENSOR and a
    description ending in _ADC: markers that would make an image derived, which its SOP class
    must overrule.
    """
    dest.mkdir(parents=True, exist_ok=True)
    source = pydicom.dcmread(reference)
    study = {k: source.get(k) for k in _STUDY_KEYWORDS if k in source}

    def written(name: str, ds: pydicom.Dataset, sop_class: str, number: int) -> Path:
        for keyword, value in study.items():
            setattr(ds, keyword, value)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.SeriesNumber = number
        if "PixelData" in ds:
            del ds.PixelData
        ds.save_as(dest / name)
        return dest / name

    report = pydicom.dcmread(pydicom_file("reportsi.dcm"))  # a real Basic Text SR
    del report.InstanceNumber  # SRs often have none: no series of it can look incomplete
    dose = pydicom.dcmread(pydicom_file("test-SR.dcm"))  # a real Comprehensive SR, as dose SR
    pdf = pydicom.dcmread(reference)
    for tag in [e.tag for e in pdf if e.tag.group == 0x0028] + [pydicom.tag.Tag("ImageType")]:
        del pdf[tag]  # a document has no image attributes
    pdf.Modality = "DOC"
    pdf.MIMETypeOfEncapsulatedDocument = "application/pdf"
    pdf.DocumentTitle = "Protocol"
    pdf.BurnedInAnnotation = "NO"
    pdf.EncapsulatedDocument = PDF
    phoenix = pydicom.dcmread(reference)
    phoenix.ImageType = ["DERIVED", "SECONDARY", "TENSOR"]
    phoenix.SeriesDescription = "PhoenixZIPReport_ADC"
    raw = pydicom.dcmread(reference)
    raw.ImageType = ["ORIGINAL", "PRIMARY", "RAW"]
    return {
        "sr": written("report_sr.dcm", report, report.SOPClassUID, 90),
        "dose": written("dose_sr.dcm", dose, DOSE_SR, 91),
        "pdf": written("protocol_pdf.dcm", pdf, ENCAPSULATED_PDF, 92),
        "phoenix": written("PhoenixZIPReport.dcm", phoenix, CSA_NON_IMAGE, 99),
        "raw": written("raw_data.dcm", raw, RAW_DATA, 93),
    }


def dcm2niix(
    source: Path, out: Path, name: str, *, compress: bool = True, export: str = ""
) -> list[Path]:
    """Convert the DICOM files in `source` with the real dcm2niix; returns what it wrote.

    `export` is dcm2niix's `-e`: "y" NRRD, "o" MGH, "j" JNIfTI (JSON), "b" binary JNIfTI.
    """
    exe = Path(sys.executable).parent / "dcm2niix"
    out.mkdir(parents=True, exist_ok=True)
    options = ["-z", "y" if compress else "n", "-b", "y", "-f", name, "-o", str(out)]
    options += ["-e", export] if export else []
    result = subprocess.run(
        [str(exe), *options, str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return sorted(out.iterdir())
