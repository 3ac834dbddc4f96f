"""The stand-in's benchmark-only fast path: the same prearchive and the same refusals.

`Emulator(fast=True)` reads each DICOM-zip entry's few attributes with `fastpath.scan_header`
instead of pydicom and writes the entry straight into the prearchive; `headers_only=True`
stores only the start of each object. Neither may change what the stand-in answers or files.
"""

from __future__ import annotations

import random
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pydicom.data
import pytest
import requests

from xnat_standin import Emulator
from xnat_standin.cli import build_parser
from xnat_standin.demo.samples import SeriesSpec, write_session
from xnat_standin.dicomheader import NotDicomError, read_header
from xnat_standin.fastpath import scan, scan_header

from data import PYDICOM_FILES, copy_study, pydicom_file
from emulator_helpers import (
    CENTRAL_DIRECTORY_END,
    PASSWORD,
    USER,
    client,
    dicom_bytes,
    h3,
    local_entry,
    new_study,
    series_files,
    streamed_zip,
    upload,
    zip_bytes,
)

MODES = {
    "faithful": {},
    "fast": {"fast": True},
    "headers-only": {"fast": True, "headers_only": True},
}


@pytest.fixture
def stand_ins(tmp_path: Path) -> Iterator[dict[str, Emulator]]:
    """One stand-in per mode, each with its own data folder."""
    emulators = {
        mode: Emulator(tmp_path / mode, users={USER: PASSWORD}, projects=["P1"], **kwargs)
        for mode, kwargs in MODES.items()
    }
    for emulator in emulators.values():
        emulator.start()
    try:
        yield emulators
    finally:
        for emulator in emulators.values():
            emulator.stop()


def real_session(folder: Path) -> list[tuple[str, bytes]]:
    """A small real session as zip entries: scanner MR files and the sample writer's series."""
    copy_study(folder / "scanner")  # two series of real MR images, one study
    specs = [SeriesSpec(3, "t1_mprage", images=3), SeriesSpec(4, "bold", images=5)]
    write_session(folder / "samples", specs, patient_id="SUBJ01", rng=random.Random(7))
    return [
        (path.relative_to(folder).as_posix(), path.read_bytes())
        for path in sorted(folder.rglob("*.dcm"))
    ]


def filed(emulator: Emulator) -> list[tuple[object, ...]]:
    """What the prearchive holds, without the timestamps that differ from run to run."""
    return [
        (s.project, s.name, s.subject, s.tag, s.status, s.prevent_auto_commit, s.scans)
        for s in emulator.prearchive()
    ]


def stored_files(emulator: Emulator) -> dict[str, tuple[Path, int]]:
    """Each stored object by name: its file and the size the stand-in recorded."""
    found = {}
    for row in emulator.store.rows():
        folder = emulator.store.row_dir(row) / "SCANS"
        for series in row.scans.values():
            for name, stored in series.files.items():
                found[name] = (folder / series.id / "DICOM" / name, stored.size)
    return found


def test_fast_paths_are_off_by_default(tmp_path: Path):
    emulator = Emulator(tmp_path / "x")
    assert (emulator.fast, emulator.api.fast, emulator.api.headers_only) == (False, False, False)
    parser = build_parser()
    assert not parser.parse_args([]).fast
    assert parser.parse_args(["--fast"]).fast
    assert parser.parse_args(["--fast-headers-only"]).fast_headers_only


def test_a_real_session_lands_in_the_same_prearchive(
    tmp_path: Path, stand_ins: dict[str, Emulator]
):
    entries = real_session(tmp_path / "session")
    body = zip_bytes(entries, zipfile.ZIP_STORED)  # STORED, as xnat-drop sends it
    with client() as http:
        answers = {
            mode: _answer(upload(http, emulator, body, prevent_auto_commit="true"))
            for mode, emulator in stand_ins.items()
        }
    assert answers["fast"] == answers["headers-only"] == answers["faithful"] == (200, "2 URIs")

    faithful = filed(stand_ins["faithful"])
    assert len(faithful) == 2  # the scanner study and the samples' study
    assert sum(len(files) for s in faithful for files in s[-1].values()) == len(entries)
    assert filed(stand_ins["fast"]) == faithful
    assert filed(stand_ins["headers-only"]) == faithful

    original = stored_files(stand_ins["faithful"])
    fast = stored_files(stand_ins["fast"])
    headers_only = stored_files(stand_ins["headers-only"])
    assert original.keys() == fast.keys() == headers_only.keys()
    for name, (path, size) in original.items():
        data = path.read_bytes()
        assert size == len(data)
        assert fast[name][0].read_bytes() == data  # the very same bytes
        assert fast[name][1] == headers_only[name][1] == size
        head = headers_only[name][0].read_bytes()
        assert len(head) < len(data) and data.startswith(head)  # the start, no pixel data
        assert read_header(headers_only[name][0]) == read_header(path)


def test_stored_entries_with_a_data_descriptor_are_still_refused(
    stand_ins: dict[str, Emulator],
):
    study = new_study()
    body = zip_bytes(series_files(study, 1, 2), zipfile.ZIP_STORED)
    body = body[: body.index(b"PK\x01\x02")]  # no central directory
    body += streamed_zip([("late.dcm", dicom_bytes(study, 1, 3))], zipfile.ZIP_STORED)
    with client() as http:
        for emulator in stand_ins.values():
            response = upload(http, emulator, body)
            assert (response.status_code, h3(response)) == (400, "unable to read data from file")
            (session,) = emulator.prearchive()  # what came before the bad entry stays
            assert session.scans == {"1": ("001_0001.dcm", "001_0002.dcm")}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            zip_bytes([*series_files(new_study(), 1, 1), ("notes.txt", b"not DICOM\n")]),
            id="non-dicom",
        ),
        pytest.param(
            zip_bytes([("x.dcm", dicom_bytes(new_study(), with_sop_instance=False))]),
            id="no-sop-instance",
        ),
        pytest.param(
            zip_bytes([("x.dcm", dicom_bytes(new_study(), with_sop_class=False))]),
            id="no-sop-class",
        ),
        pytest.param(
            zip_bytes([("DICOMDIR", pydicom_file("DICOMDIR").read_bytes())]), id="dicomdir"
        ),
        pytest.param(
            local_entry(b"c.dcm", dicom_bytes(new_study()), crc=1234) + CENTRAL_DIRECTORY_END,
            id="crc-mismatch",
        ),
        pytest.param(
            zip_bytes([("t.dcm", dicom_bytes(new_study())[:200])]),
            id="truncated",
        ),
        pytest.param(
            zip_bytes(
                [
                    (name, pydicom_file(name).read_bytes())
                    for name in (
                        "ExplVR_LitEndNoMeta.dcm",
                        "ExplVR_BigEndNoMeta.dcm",
                        "CT_small.dcm",
                    )
                ]
            ),
            id="no-preamble-and-implicit",
        ),
    ],
)
def test_refusals_and_odd_objects_are_answered_alike(stand_ins: dict[str, Emulator], body: bytes):
    with client() as http:
        answers = {mode: _answer(upload(http, e, body)) for mode, e in stand_ins.items()}
    assert answers["fast"] == answers["faithful"]
    assert answers["headers-only"] == answers["faithful"]
    assert filed(stand_ins["fast"]) == filed(stand_ins["faithful"])


def _answer(response: requests.Response) -> tuple[int, str]:
    """The status and XNAT's message, or for a success how many sessions it named."""
    if response.status_code == 200:
        return 200, f"{len(response.text.splitlines())} URIs"
    return response.status_code, h3(response)


CHARSET_FILES = PYDICOM_FILES.parent / "charset_files"  # pydicom's, in many character sets


def real_files() -> list[Path]:
    """Every test file shipped by pydicom and pydicom-data (DICOM or not), up to 4 MB."""
    roots = [PYDICOM_FILES, CHARSET_FILES, pydicom_file("JPEG-LL.dcm").parent]
    found = {p for root in roots for p in root.rglob("*") if p.is_file()}
    return sorted(p for p in found if p.stat().st_size < 4_000_000)


def test_scan_header_agrees_with_pydicom_or_steps_aside():
    agreed = stepped_aside = 0
    for path in real_files():
        data = path.read_bytes()
        try:
            expected = read_header(path)
        except NotDicomError:
            expected = None
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the scanner itself must stay quiet
            found = scan_header(data)
        if found is None:
            stepped_aside += 1
            continue
        assert expected is not None, f"{path.name}: not DICOM to pydicom"
        assert found == expected, path.name
        agreed += 1
    assert agreed >= 50 and stepped_aside >= 10  # both ways are really exercised


def test_the_stored_start_of_an_object_holds_every_attribute():
    paths = [pydicom_file(name) for name in ("MR_small.dcm", "ExplVR_BigEnd.dcm", "JPEG2000.dcm")]
    for path in [*paths, CHARSET_FILES / "chrH31.dcm"]:
        name, data = path.name, path.read_bytes()
        found = scan(data)
        if found is None:
            assert name == "ExplVR_BigEnd.dcm"  # big endian: the faithful path reads it
            continue
        header, end = found
        assert 132 < end < len(data)
        assert scan_header(data[:end]) == header


@pytest.mark.parametrize("name", ["chrH31.dcm", "chrGreek.dcm", "chrX2.dcm", "chrFrenMulti.dcm"])
def test_non_ascii_values_are_converted_by_pydicom(name: str):
    path = CHARSET_FILES / name  # ISO 2022 escapes, ISO 8859, GB 18030, several charsets
    header = scan_header(path.read_bytes())
    assert header is not None
    assert header == read_header(path)
    assert not header.patient_name.isascii()


def test_pydicom_files_are_where_the_test_expects():
    # Guards the file lists above against a pydicom upgrade that moves its test data.
    assert (PYDICOM_FILES / "MR_small.dcm").is_file()
    assert len(list(CHARSET_FILES.glob("chr*.dcm"))) >= 10
    assert len(pydicom.data.get_charset_files("chr*.dcm")) >= 10
