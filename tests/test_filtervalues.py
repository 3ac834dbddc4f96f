"""The values XNAT's series filter tests, read from real files (pydicom's test data) and
rendered as dcm4che2 renders them: multi-values whole with their backslashes, integers of
binary VRs as decimals, absent as None, empty as "", sequences UNRENDERABLE."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from xnat_drop.adapters.dicom.filtervalues import read_values, tag_of
from xnat_drop.core.seriesfilter import UNRENDERABLE

IMAGE_TYPE, DESCRIPTION, SERIES_NUMBER, ROWS = 0x00080008, 0x0008103E, 0x00200011, 0x00280010
STUDY_COMMENTS, REFERENCED = 0x00324000, 0x00081140


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    source = Path(str(get_testdata_file("MR_small.dcm")))
    (tmp_path / "s1").mkdir()
    shutil.copyfile(source, tmp_path / "s1" / "a.dcm")
    ds = pydicom.dcmread(source)
    ds.SeriesDescription = "  localizer  "
    ds.StudyComments = ""
    ds.ReferencedImageSequence = Sequence([Dataset()])
    ds.save_as(tmp_path / "s1" / "b.dcm")
    (tmp_path / "s1" / "c.dcm").write_bytes(b"not dicom at all")
    return tmp_path


def test_values_are_rendered_as_xnat_sees_them(folder: Path) -> None:
    tags = frozenset({IMAGE_TYPE, DESCRIPTION, SERIES_NUMBER, ROWS, STUDY_COMMENTS, REFERENCED})
    found = read_values(folder, ["s1/a.dcm", "s1/b.dcm"], tags)
    a, b = found["s1/a.dcm"], found["s1/b.dcm"]
    assert a[IMAGE_TYPE] == "DERIVED\\SECONDARY\\OTHER"
    assert a[SERIES_NUMBER] == "1" and a[ROWS] == "64"  # IS text, US binary: both decimals
    assert a[DESCRIPTION] is None and a[STUDY_COMMENTS] is None and a[REFERENCED] is None
    assert b[DESCRIPTION] == "localizer"  # trimmed like Java's String.trim()
    assert b[STUDY_COMMENTS] == ""  # present but empty: EXISTS matches it
    assert b[REFERENCED] is UNRENDERABLE


def test_a_file_pydicom_cannot_parse_is_unrenderable_and_a_link_is_never_followed(
    folder: Path, tmp_path: Path
) -> None:
    found = read_values(folder, ["s1/c.dcm"], frozenset({DESCRIPTION}))
    assert found["s1/c.dcm"][DESCRIPTION] in (UNRENDERABLE, None)
    (folder / "s1" / "link.dcm").symlink_to(folder / "s1" / "a.dcm")
    with pytest.raises(OSError):
        read_values(folder, ["s1/link.dcm"], frozenset({DESCRIPTION}))


def test_names_resolve_as_dicom_keywords() -> None:
    assert tag_of("SeriesDescription") == DESCRIPTION
    assert tag_of("ImageType") == IMAGE_TYPE
    assert tag_of("NoSuchThing") is None
