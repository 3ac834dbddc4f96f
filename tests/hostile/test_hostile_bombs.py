"""Bounded work per file: files crafted to exhaust memory, disk or time, on the real daemon.

Each test failed on the code before issue 11 (93eee20): the deflated bomb and the file
declaring a 1 GiB SeriesDescription were accepted (after pydicom built about 2 GB in memory),
the 50 GiB sparse "DICOM" was queued for upload in full, and sparse twins sharing a SOP
Instance UID were hashed in full, found identical, and sent.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from xnat_standin import Emulator

from conftest import PROJECT
from hostile_lab import LAB_GID, LAB_UID, LabTree, needs_root, no_traceback, run_once

pytestmark = needs_root

CLEAN = (PROJECT, "S01", "S01_MR1")
DEFLATED = "1.2.840.10008.1.2.1.99"
GIB = 1 << 30


def _element(tag: int, vr: bytes, value: bytes) -> bytes:
    group, element = tag >> 16, tag & 0xFFFF
    if vr in (b"OB", b"OW", b"UN", b"UT", b"SQ"):
        return struct.pack("<HH2sHI", group, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def _pad(text: str, pad: bytes = b" ") -> bytes:
    data = text.encode()
    return data + pad if len(data) % 2 else data


def _header(sop_uid: str, study_uid: str, series_uid: str) -> bytes:
    """The dataset elements of a plain MR image, up to (not including) its pixel data."""
    return b"".join(
        (
            _element(0x00080008, b"CS", _pad("ORIGINAL\\PRIMARY\\M\\ND")),
            _element(0x00080016, b"UI", _pad(MRImageStorage, b"\0")),
            _element(0x00080018, b"UI", _pad(sop_uid, b"\0")),
            _element(0x00080060, b"CS", _pad("MR")),
            _element(0x0020000D, b"UI", _pad(study_uid, b"\0")),
            _element(0x0020000E, b"UI", _pad(series_uid, b"\0")),
            _element(0x00200011, b"IS", _pad("1")),
        )
    )


def _part10(sop_uid: str, syntax: str = ExplicitVRLittleEndian) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = syntax
    out = io.BytesIO()
    out.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(out, meta, enforce_standard=True)  # type: ignore[arg-type]
    return out.getvalue()


def _session(lab: LabTree) -> Path:
    folder = lab.lab_drop(CLEAN)
    return folder / "01_localizer"


def _rules(lab: LabTree) -> dict[str, list[str]]:
    folder = lab.failed.joinpath(*CLEAN)
    report = json.loads(folder.with_name(folder.name + ".report.json").read_text())
    found: dict[str, list[str]] = {}
    for v in report["violations"]:
        found.setdefault(v["rule"], []).extend(v["files"])
    return found


def _write_as_lab(path: Path, data: bytes, size: int | None = None) -> None:
    """A file as a lab member leaves it (their user and group); `size` makes it sparse."""
    path.write_bytes(data)
    if size is not None:
        with path.open("r+b") as fp:
            fp.truncate(size)  # costs no disk
    os.chown(path, LAB_UID, LAB_GID)
    path.chmod(0o664)


def test_a_deflated_bomb_and_a_1_gib_element_are_unreadable_not_accepted(
    lab: LabTree, emulator: Emulator
) -> None:
    series = _session(lab)
    study = generate_uid()
    # 1. Deflated Explicit VR Little Endian: 1 GiB of zeros in a private element, ~1 MB on disk.
    sop = generate_uid()
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = [packer.compress(_header(sop, study, generate_uid()))]
    body.append(packer.compress(struct.pack("<HH2sHI", 0x0009, 0x1010, b"OB", 0, GIB)))
    zeros = b"\0" * (16 << 20)
    for _ in range(GIB // len(zeros)):
        body.append(packer.compress(zeros))
    body.append(packer.flush())
    bomb = _part10(sop, DEFLATED) + b"".join(body)
    assert len(bomb) < 2 << 20
    _write_as_lab(series / "bomb.dcm", bomb)
    # 2. A SeriesDescription declared 1 GiB long (VR UN: 4-byte length), sparse.
    sop = generate_uid()
    head = _part10(sop) + _header(sop, study, generate_uid())
    head += struct.pack("<HH2sHI", 0x0008, 0x103E, b"UN", 0, GIB)
    _write_as_lab(series / "long.dcm", head, size=len(head) + GIB)
    code, log = run_once(lab)
    assert code == 0, log
    unreadable = _rules(lab).get("unreadable-dicom", [])
    assert sorted(unreadable) == ["01_localizer/bomb.dcm", "01_localizer/long.dcm"], log
    assert emulator.prearchive() == []
    no_traceback(log)


def test_trailing_data_after_the_pixel_data_is_refused_without_reading_it(
    lab: LabTree, emulator: Emulator
) -> None:
    series = _session(lab)
    original = (series / "IM0001.dcm").read_bytes()
    # A valid image followed by 50 GiB of zeros: only its first bytes were ever judged.
    _write_as_lab(series / "IM0001.dcm", original, size=len(original) + 50 * GIB)
    code, log = run_once(lab, timeout=60)
    assert code == 0, log
    assert _rules(lab).get("unreadable-dicom") == ["01_localizer/IM0001.dcm"]
    text = lab.failed.joinpath(*CLEAN).with_name("S01_MR1.report.txt").read_text()
    assert "after the end of its image data" in text
    assert emulator.prearchive() == []
    no_traceback(log)


def test_sparse_twins_with_one_sop_instance_uid_are_not_hashed_in_full(
    lab: LabTree, emulator: Emulator
) -> None:
    series = _session(lab)
    sop, study, series_uid = generate_uid(), generate_uid(), generate_uid()
    pixels = 3 * GIB  # a legal (if unlikely) image: nothing after its pixel data
    head = _part10(sop) + _header(sop, study, series_uid)
    head += struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, pixels)
    for name in ("twin-a.dcm", "twin-b.dcm"):
        _write_as_lab(series / name, head, size=len(head) + pixels)
    code, log = run_once(lab, timeout=90)
    assert code == 0, log
    duplicates = _rules(lab).get("duplicate-instance", [])
    assert sorted(duplicates) == ["01_localizer/twin-a.dcm", "01_localizer/twin-b.dcm"], log
    text = lab.failed.joinpath(*CLEAN).with_name("S01_MR1.report.txt").read_text()
    assert "too large to be compared" in " ".join(text.split()), text
    assert emulator.prearchive() == []
    no_traceback(log)
