"""Real test files shipped by pydicom, pydicom-data and nibabel (all offline)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel
import pydicom.data

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
