"""inspect.py on real files: pydicom's and nibabel's test data, dcm2niix output, special files."""

from __future__ import annotations

import gc
import gzip
import importlib
import json
import os
import pkgutil
import shutil
import socket
import subprocess
import sys
import tarfile
import textwrap
import weakref
import zipfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import pydicom
import pydicom.config
import pytest

import xnat_drop.adapters.dicom
from xnat_drop.adapters.dicom import inspection
from xnat_drop.adapters.dicom.fileclassifier import FileClassifier
from xnat_drop.adapters.dicom.inspection import classify, classify_chunk, inspect
from xnat_drop.adapters.dicom.pydicomsettings import lenient_reading
from xnat_drop.core import formats
from xnat_drop.core.errors import SessionChangedError
from xnat_drop.core.model import DicomHeader, FileFacts, FileKind
from xnat_standin.demo.samples import SeriesSpec, write_nifti, write_session

from data import (
    MR_SERIES,
    NIBABEL_DATA,
    NICOM_DATA,
    copy_series,
    pydicom_file,
    write_non_image_objects,
)


def kinds(folder: Path) -> dict[str, FileKind]:
    session = inspect(folder, ("P", "S", folder.name))
    return {f.path: f.kind for f in session.files}


def test_original_mr_series_is_dicom_with_header(tmp_path: Path) -> None:
    copies = copy_series("MR2", tmp_path / "s")
    session = inspect(tmp_path / "s", ("P", "S", "s"))
    assert len(session.files) == len(copies)
    for facts in session.files:
        assert facts.kind is FileKind.DICOM
        assert facts.header is not None
        assert facts.header.image_type[0] == "ORIGINAL"
        assert facts.header.sop_instance_uid
        assert facts.size == (tmp_path / "s" / facts.path).stat().st_size


def test_generated_session_headers_match_what_was_written(tmp_path: Path) -> None:
    spec = SeriesSpec(7, "MoCoSeries", ("ORIGINAL", "PRIMARY", "M", "ND", "MOCO"), images=2)
    write_session(tmp_path / "s", [spec], study_uid="1.2.3.4")
    session = inspect(tmp_path / "s", ("s",))
    headers = [f.header for f in session.files]
    assert all(h is not None for h in headers)
    assert {
        (h.series_number, h.series_description, h.study_instance_uid) for h in headers if h
    } == {(7, "MoCoSeries", "1.2.3.4")}
    assert headers[0] is not None and "MOCO" in headers[0].image_type


def test_truncated_pixel_data_is_unreadable(tmp_path: Path) -> None:
    facts = classify(pydicom_file("MR_truncated.dcm"), "MR_truncated.dcm")
    assert facts.kind is FileKind.UNREADABLE_DICOM
    assert "cut short" in facts.note


def test_a_real_file_cut_in_half_is_unreadable(tmp_path: Path) -> None:
    source = copy_series("MR2", tmp_path / "full")[0]
    half = tmp_path / "half.dcm"
    half.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    assert classify(source, "full.dcm").kind is FileKind.DICOM
    assert classify(half, "half.dcm").kind is FileKind.UNREADABLE_DICOM


def test_compressed_pixel_data_whole_and_cut(tmp_path: Path) -> None:
    source = pydicom_file("JPEG2000.dcm")
    assert classify(source, "j2k.dcm").kind is FileKind.DICOM
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(source.read_bytes()[:-200])
    facts = classify(cut, "cut.dcm")
    assert facts.kind is FileKind.UNREADABLE_DICOM
    assert "compressed image data" in facts.note


def test_dicom_without_preamble_is_dicom(tmp_path: Path) -> None:
    facts = classify(pydicom_file("ExplVR_LitEndNoMeta.dcm"), "no_meta.dcm")
    assert facts.kind is FileKind.DICOM_NO_PREAMBLE
    assert facts.header is not None and facts.header.sop_instance_uid


def test_dicomdir_is_junk_even_when_renamed(tmp_path: Path) -> None:
    source = pydicom_file("DICOMDIR")
    renamed = tmp_path / "index.dcm"
    shutil.copyfile(source, renamed)
    facts = classify(renamed, "index.dcm")
    assert facts.kind is FileKind.JUNK
    assert "DICOMDIR" in facts.note


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("anatomical.nii", FileKind.NIFTI),
        ("example4d.nii.gz", FileKind.NIFTI),
        ("example_nifti2.nii.gz", FileKind.NIFTI),
        ("row_major.dconn.nii", FileKind.NIFTI),  # CIFTI: a NIfTI-2 container
        ("nifti1.hdr", FileKind.ANALYZE),
        ("analyze.hdr", FileKind.ANALYZE),
    ],
)
def test_nibabel_images_are_converted_data(name: str, kind: FileKind) -> None:
    facts = classify(NIBABEL_DATA / name, name)
    assert facts.kind is kind, facts.note


def test_nifti_found_by_content_when_renamed(tmp_path: Path) -> None:
    for name in ("example4d.nii.gz", "anatomical.nii", "example_nifti2.nii.gz"):
        renamed = tmp_path / f"IM_{name.split('.')[0]}"
        shutil.copyfile(NIBABEL_DATA / name, renamed)
        facts = classify(renamed, renamed.name)
        assert facts.kind is FileKind.NIFTI, (name, facts.note)
        assert "magic" in facts.note


def test_nifti_named_file_with_other_content_is_still_nifti(tmp_path: Path) -> None:
    fake = tmp_path / "broken.nii"
    fake.write_bytes(b"not really an image")
    assert classify(fake, "broken.nii").kind is FileKind.NIFTI


def test_analyze_img_half_needs_its_hdr(tmp_path: Path) -> None:
    (tmp_path / "a.hdr").write_bytes((NIBABEL_DATA / "analyze.hdr").read_bytes())
    (tmp_path / "a.img").write_bytes(os.urandom(100))
    (tmp_path / "lonely.img").write_bytes(os.urandom(100))
    found = kinds(tmp_path)
    assert found["a.hdr"] is FileKind.ANALYZE
    assert found["a.img"] is FileKind.ANALYZE
    assert found["lonely.img"] is FileKind.OTHER


def test_own_nifti_writer_output_is_recognised(tmp_path: Path) -> None:
    for name in ("x.nii", "x.nii.gz"):
        facts = classify(write_nifti(tmp_path / name), name)
        assert facts.kind is FileKind.NIFTI
    # the same bytes really are NIfTI to nibabel
    import nibabel

    image = nibabel.load(tmp_path / "x.nii.gz")
    assert image.shape == (16, 16, 8)


def test_dcm2niix_output_is_caught(tmp_path: Path) -> None:
    dcm2niix = shutil.which("dcm2niix") or str(Path(os.sys.executable).parent / "dcm2niix")
    series = tmp_path / "series"
    copy_series("MR2", series)
    out = tmp_path / "out"
    out.mkdir()
    result = subprocess.run(
        [dcm2niix, "-z", "y", "-b", "y", "-f", "converted", "-o", str(out), str(series)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    produced = kinds(out)
    niftis = [p for p in produced if p.endswith(".nii.gz")]
    assert niftis and all(produced[p] is FileKind.NIFTI for p in niftis)
    sidecars = [p for p in produced if p.endswith(".json")]
    assert sidecars and all(produced[p] is FileKind.CONVERTED for p in sidecars)


def test_siemens_and_philips_real_files(tmp_path: Path) -> None:
    assert classify(NICOM_DATA / "0.dcm", "0.dcm").kind is FileKind.DICOM
    facts = classify(NICOM_DATA / "philips_mprage.dcm.gz", "philips_mprage.dcm.gz")
    assert (facts.kind, facts.note) == (FileKind.COMPRESSED_DICOM, "a gzip-compressed DICOM file")
    unpacked = tmp_path / "philips_mprage.dcm"
    unpacked.write_bytes(gzip.decompress(facts_bytes(NICOM_DATA / "philips_mprage.dcm.gz")))
    enhanced = classify(unpacked, "philips_mprage.dcm")
    assert enhanced.kind is FileKind.DICOM and enhanced.header is not None
    assert enhanced.header.frame_types == (("ORIGINAL", "PRIMARY", "T1", "NONE"),)  # per frame


def facts_bytes(path: Path) -> bytes:
    return path.read_bytes()


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("test.mgz", "FreeSurfer MGH"),
        ("minc1_1_scale.mnc", "netCDF"),
        ("minc2_1_scale.mnc", "HDF5"),
    ],
)
def test_other_converted_formats_from_nibabel(name: str, words: str) -> None:
    facts = classify(NIBABEL_DATA / name, name)
    assert facts.kind is FileKind.CONVERTED and words in facts.note, facts.note


def test_converted_formats_by_content_and_side_cars(tmp_path: Path) -> None:
    (tmp_path / "vol.nrrd").write_bytes(b"NRRD0004\ntype: short\n")
    (tmp_path / "data").write_bytes(gzip.decompress((NIBABEL_DATA / "test.mgz").read_bytes()))
    (tmp_path / "dwi.bval").write_text("0 1000 1000 1000\n")
    (tmp_path / "dwi.bvec").write_text("0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    (tmp_path / "odd.bval").write_text("not numbers\n")
    (tmp_path / "T1w.json").write_text(json.dumps({"RepetitionTime": 2.3, "EchoTime": 0.003}))
    (tmp_path / "settings.json").write_text(json.dumps({"theme": "dark"}))
    found = {f.path: (f.kind, f.note) for f in inspect(tmp_path, ("s",)).files}
    assert found["vol.nrrd"] == (FileKind.CONVERTED, "an NRRD image")
    assert found["data"][0] is FileKind.CONVERTED and "MGH" in found["data"][1]
    assert found["dwi.bval"] == (FileKind.CONVERTED, "a diffusion b-value file (.bval)")
    assert found["dwi.bvec"][0] is FileKind.CONVERTED
    assert found["odd.bval"] == (FileKind.OTHER, "a text file")
    assert found["T1w.json"][0] is FileKind.CONVERTED and "BIDS" in found["T1w.json"][1]
    assert found["settings.json"] == (FileKind.OTHER, "a JSON text file")


def test_archives_are_archives(tmp_path: Path) -> None:
    source = copy_series("MR1", tmp_path / "src")[0]
    with zipfile.ZipFile(tmp_path / "series.zip", "w") as zf:
        zf.write(source, "IM1.dcm")
    with tarfile.open(tmp_path / "series.tar.gz", "w:gz") as tf:
        tf.add(source, "IM1.dcm")
    with tarfile.open(tmp_path / "series.tar", "w") as tf:
        tf.add(source, "IM1.dcm")
    (tmp_path / "IM1.dcm.gz").write_bytes(gzip.compress(source.read_bytes()))
    (tmp_path / "notes.txt.gz").write_bytes(gzip.compress(b"subject moved in run 2\n"))
    shutil.rmtree(tmp_path / "src")
    found = {f.path: (f.kind, f.note) for f in inspect(tmp_path, ("s",)).files}
    assert found == {
        "series.zip": (FileKind.ARCHIVE, "a zip archive"),
        "series.tar.gz": (FileKind.ARCHIVE, "a tar archive (gzip-compressed)"),
        "series.tar": (FileKind.ARCHIVE, "a tar archive"),
        "IM1.dcm.gz": (FileKind.COMPRESSED_DICOM, "a gzip-compressed DICOM file"),
        "notes.txt.gz": (FileKind.ARCHIVE, "a gzip-compressed file"),
    }


def test_a_siemens_preamble_that_reads_as_analyze_348_is_still_dicom(tmp_path: Path) -> None:
    # Real Siemens files (nibabel's) begin their 128-byte preamble with 5C 01 00 00: the int32
    # 348, Analyze's header size. "DICM" at byte 128 is checked first, plain and inside gzip.
    data = (NICOM_DATA / "0.dcm").read_bytes()
    assert data[:4] == b"\x5c\x01\x00\x00" and data[128:132] == b"DICM"
    facts = classify(NICOM_DATA / "0.dcm", "0.dcm")
    assert facts.kind is FileKind.DICOM and facts.header is not None
    assert formats.content_format(data[:1024]) is None  # not converted data
    (tmp_path / "IM0001.dcm.gz").write_bytes(gzip.compress(data))
    for path in (tmp_path / "IM0001.dcm.gz", NICOM_DATA / "siemens_dwi_0.dcm.gz"):
        assert gzip.decompress(path.read_bytes())[:4] == b"\x5c\x01\x00\x00"
        facts = classify(path, path.name)
        assert (facts.kind, facts.note) == (
            FileKind.COMPRESSED_DICOM,
            "a gzip-compressed DICOM file",
        ), path
    facts = classify(pydicom_file("zipMR.gz"), "zipMR.gz")  # pydicom's gzipped MR image
    assert facts.kind is FileKind.COMPRESSED_DICOM


@pytest.mark.parametrize(
    ("source", "kind", "note"),
    [
        ("example4d.nii.gz", FileKind.NIFTI, "a gzip-compressed NIfTI-1 image, magic “n+1”"),
        ("example_nifti2.nii.gz", FileKind.NIFTI, "a gzip-compressed NIfTI-2 image"),
        ("analyze.hdr", FileKind.ANALYZE, "a gzip-compressed Analyze 7.5 header"),
        ("nifti1.hdr", FileKind.ANALYZE, "a gzip-compressed NIfTI-1 header of an .hdr/.img pair"),
        ("test.mgz", FileKind.CONVERTED, "a gzip-compressed FreeSurfer MGH volume (.mgz)"),
        ("ExplVR_LitEndNoMeta.dcm", FileKind.COMPRESSED_DICOM, "a gzip-compressed DICOM file"),
    ],
)
def test_what_gzip_holds_is_named_by_its_own_magic(
    tmp_path: Path, source: str, kind: FileKind, note: str
) -> None:
    path = NIBABEL_DATA / source if (NIBABEL_DATA / source).exists() else pydicom_file(source)
    data = path.read_bytes()
    if not data.startswith(formats.GZIP_MAGIC):
        data = gzip.compress(data)
    (tmp_path / "renamed").write_bytes(data)  # by content: the name says nothing
    facts = classify(tmp_path / "renamed", "renamed")
    assert facts.kind is kind and facts.note.startswith(note), facts.note


def test_non_image_objects_are_dicom_with_their_sop_class(tmp_path: Path) -> None:
    objects = write_non_image_objects(tmp_path / "s", NICOM_DATA / "0.dcm")
    for name, path in objects.items():
        facts = classify(path, path.name)
        assert facts.kind is FileKind.DICOM and facts.header is not None, (name, facts.note)
        assert facts.header.sop_class_uid == pydicom.dcmread(path).SOPClassUID
    report = classify(objects["sr"], "report_sr.dcm").header
    assert report is not None and report.instance_number is None and report.image_type == ()


def test_extra_keywords_are_read_for_routing_and_phi(tmp_path: Path) -> None:
    copy_series("MR2", tmp_path / "s")
    session = inspect(
        tmp_path / "s", ("s",), ("PatientID", "StudyDate", "PatientName", "PatientComments")
    )
    header = session.files[0].header
    assert header is not None
    assert header.value("PatientID") and header.value("StudyDate").isdigit()
    assert header.value("PatientName") and header.value("PatientComments") == ""


def test_files_sharing_a_sop_instance_uid_are_hashed(tmp_path: Path) -> None:
    source = copy_series("MR1", tmp_path / "s")[0]
    shutil.copyfile(source, tmp_path / "s" / "copy.dcm")
    session = inspect(tmp_path / "s", ("s",))
    digests = {f.path: f.digest for f in session.files}
    assert digests[source.name] == digests["copy.dcm"] != ""
    assert sum(1 for d in digests.values() if d) == 2  # the others are never read whole


def test_junk_is_ignored_by_name_without_reading(tmp_path: Path) -> None:
    (tmp_path / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (tmp_path / "._IM0001.dcm").write_bytes(b"\0\5\x16\7")
    (tmp_path / "Thumbs.db").write_bytes(b"x")
    (tmp_path / "__MACOSX").mkdir()
    (tmp_path / "__MACOSX" / "IM0001.dcm").write_bytes(b"AppleDouble")
    assert set(kinds(tmp_path).values()) == {FileKind.JUNK}


def test_other_files_say_what_they_are(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("scan notes: subject moved, ünïcode\n")
    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.7\n")
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "empty.nii").write_bytes(b"")  # converted data, named so: remove it
    (tmp_path / "pair.hdr").write_bytes((NIBABEL_DATA / "analyze.hdr").read_bytes())
    (tmp_path / "pair.img").write_bytes(b"")  # the empty half of an Analyze pair
    session = inspect(tmp_path, ("s",))
    notes = {f.path: (f.kind, f.note) for f in session.files}
    assert notes["notes.txt"] == (FileKind.OTHER, "a text file")
    assert notes["report.pdf"] == (FileKind.OTHER, "a PDF document")
    assert notes["empty.dcm"] == notes["empty"] == (FileKind.EMPTY, "an empty file")
    assert notes["empty.nii"][0] is FileKind.NIFTI
    assert notes["pair.img"][0] is notes["pair.hdr"][0] is FileKind.ANALYZE


def test_symlinks_are_never_followed(tmp_path: Path) -> None:
    outside = copy_series("MR1", tmp_path / "outside")[0]
    session_dir = tmp_path / "s"
    session_dir.mkdir()
    (session_dir / "link.dcm").symlink_to(outside)
    (session_dir / "dirlink").symlink_to(tmp_path / "outside", target_is_directory=True)
    session = inspect(session_dir, ("s",))
    assert {(f.path, f.kind, f.note) for f in session.files} == {
        ("link.dcm", FileKind.UNSAFE, "a symbolic link"),
        ("dirlink", FileKind.UNSAFE, "a symbolic link"),
    }


def test_fifo_and_socket_are_never_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.dcm")  # opening it for reading would block this test forever
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    try:
        found = {f.path: f.note for f in inspect(tmp_path, ("s",)).files}
    finally:
        sock.close()
    assert found == {"pipe.dcm": "a named pipe (FIFO)", "sock": "a socket"}


def test_file_replaced_by_symlink_after_walk_is_a_change(tmp_path: Path) -> None:
    target = copy_series("MR1", tmp_path / "x")[0]
    victim = tmp_path / "victim.dcm"
    victim.symlink_to(target)
    with pytest.raises(SessionChangedError):
        classify(victim, "victim.dcm")


@pytest.mark.parametrize(
    ("name", "cut"),
    [("rtstruct.dcm", 2531), ("image_dfl.dcm", 4459), ("dicomdirtests/98892001/CT2N/6293", 142)],
)
def test_odd_cuts_that_made_pydicom_raise_other_errors_are_unreadable(
    tmp_path: Path, name: str, cut: int
) -> None:
    source = pydicom_file(name) if "/" not in name else MR_SERIES.parent / name.split("/", 1)[1]
    damaged = tmp_path / "cut.dcm"
    damaged.write_bytes(source.read_bytes()[:cut])
    facts = classify(damaged, "cut.dcm")
    assert facts.kind is FileKind.UNREADABLE_DICOM, facts


# -- nothing outlives a call: no pydicom setting changed, no header value kept ---------------


def test_importing_the_adapter_leaves_pydicom_settings_alone() -> None:
    """Importing the DICOM adapter (as the daemon, `xnat-drop check` and the fork server of
    the workers do) changes no pydicom setting: checked in a fresh interpreter."""
    script = textwrap.dedent(
        """
        import importlib, pkgutil
        import pydicom.config, pydicom.hooks

        def settings():
            config, plain = pydicom.config, (bool, int, float, str, type(None), dict, list)
            found = {k: v for k, v in vars(config).items() if isinstance(v, plain)}
            found.update((f"settings.{k}", v) for k, v in vars(config.settings).items())
            found.update((f"hooks.{k}", v) for k, v in vars(pydicom.hooks.hooks).items())
            return {k: v for k, v in found.items() if not k.startswith("__")}

        before = settings()
        import xnat_drop.adapters.dicom as package
        names = [m.name for m in pkgutil.iter_modules(package.__path__, package.__name__ + ".")]
        for name in [*names, "xnat_drop.adapters.workers"]:
            importlib.import_module(name)
        after = settings()
        changed = {k: (before.get(k), after.get(k)) for k in {*before, *after}
                   if before.get(k) != after.get(k)}
        assert not changed, changed
        print(len(names))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 10  # every module of the adapter was imported


def test_inspection_puts_pydicom_settings_back(tmp_path: Path) -> None:
    """pydicom reads for inspection with validation off, and the settings are as they were
    once inspect returns (here with files read by pydicom: big endian, no preamble)."""
    shutil.copyfile(pydicom_file("MR_small_bigendian.dcm"), tmp_path / "big.dcm")
    shutil.copyfile(pydicom_file("ExplVR_LitEndNoMeta.dcm"), tmp_path / "bare.dcm")
    before = dict(vars(pydicom.config.settings))
    kinds = {f.path: f.kind for f in inspect(tmp_path, ("s",)).files}
    assert kinds == {"big.dcm": FileKind.DICOM, "bare.dcm": FileKind.DICOM_NO_PREAMBLE}
    assert dict(vars(pydicom.config.settings)) == before


def test_overlapping_reads_put_the_setting_back_once_all_ended(tmp_path: Path) -> None:
    """Reads in several threads at once (an abandoned step still reading while the next
    session is inspected): validation stays off until the last one ends, then it is back."""
    settings = pydicom.config.settings
    assert settings._reading_validation_mode is None
    with lenient_reading:
        with lenient_reading:
            assert settings.reading_validation_mode == pydicom.config.IGNORE
        assert settings.reading_validation_mode == pydicom.config.IGNORE  # one still reads
    assert settings._reading_validation_mode is None
    shutil.copyfile(pydicom_file("MR_small_bigendian.dcm"), tmp_path / "big.dcm")
    expected = inspect(tmp_path, ("s",)).files
    with ThreadPoolExecutor(4) as threads:
        found = list(threads.map(lambda _: inspect(tmp_path, ("s",)).files, range(16)))
    assert all(files == expected for files in found)
    assert settings._reading_validation_mode is None


def _headers(files: Iterable[FileFacts]) -> list[DicomHeader]:
    return [f.header for f in files if f.header is not None]


@pytest.mark.parametrize("reader", ["dicomscan", "pydicom"])
def test_two_inspections_share_no_header_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reader: str
) -> None:
    """The values a reader shares among the files of a series (converted once) belong to one
    session's inspection, or one worker task: the next one converts its own."""
    if reader == "pydicom":  # dicomscan steps aside: pydicom reads every header
        monkeypatch.setattr(pydicom.config, "datetime_conversion", True)
        assert not FileClassifier().fast
    write_session(tmp_path / "a", [SeriesSpec(1, "T1", images=3)], study_uid="1.2.3.4")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    first = _headers(inspect(tmp_path / "a", ("a",), ("PatientID",)).files)
    second = _headers(inspect(tmp_path / "b", ("b",), ("PatientID",)).files)
    assert first == second and len(first) == 3
    assert first[0].series_instance_uid is first[1].series_instance_uid  # shared in a session
    assert first[0].image_type is first[1].image_type
    assert second[0].series_instance_uid is not first[0].series_instance_uid
    assert second[0].image_type is not first[0].image_type
    # A worker's tasks: the same, task by task.
    relpaths = [f.path for f in inspect(tmp_path / "a", ("a",)).files]
    task = (str(tmp_path / "a"), relpaths, ("PatientID",))
    one, other = _headers(classify_chunk(task)), _headers(classify_chunk(task))
    assert one == other == first
    assert one[0].series_instance_uid is one[1].series_instance_uid
    assert other[0].series_instance_uid is not one[0].series_instance_uid


def test_the_reader_of_a_session_is_gone_when_inspect_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[weakref.ref[FileClassifier]] = []

    class Watched(FileClassifier):
        def __init__(self, fast: bool = True) -> None:
            super().__init__(fast)
            made.append(weakref.ref(self))

    monkeypatch.setattr(inspection, "FileClassifier", Watched)
    write_session(tmp_path / "s", [SeriesSpec(1, "T1", images=2)])
    assert len(inspect(tmp_path / "s", ("s",)).files) == 2
    gc.collect()
    assert len(made) == 1 and made[0]() is None


def _module_tables() -> dict[tuple[str, str], int]:
    """The size of every module-level table of the adapter (dicts, lists, sets, lru_caches)."""
    package = xnat_drop.adapters.dicom
    sizes = {}
    for found in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        module: ModuleType = importlib.import_module(found.name)
        for name, value in vars(module).items():
            if isinstance(value, (dict, list, set)):
                sizes[found.name, name] = len(value)
            elif hasattr(value, "cache_info"):
                sizes[found.name, name] = value.cache_info().currsize
    return sizes


@pytest.mark.parametrize("reader", ["dicomscan", "pydicom"])
def test_no_module_table_keeps_header_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reader: str
) -> None:
    """Module-level tables hold lookups by keyword or tag only: once a first session asked
    for these keywords, a session of other series and values leaves all of them as they were."""
    if reader == "pydicom":
        monkeypatch.setattr(pydicom.config, "datetime_conversion", True)
    write_session(tmp_path / "a", [SeriesSpec(1, "T1", images=2)], study_uid="1.2.3.4")
    later = [SeriesSpec(2, "T2", images=3), SeriesSpec(3, "DWI", images=2)]
    write_session(tmp_path / "b", later, patient_id="SUBJ02", study_uid="1.2.3.5")
    words = ("PatientID", "InstanceNumber")
    inspect(tmp_path / "a", ("a",), words)
    before = _module_tables()
    session = inspect(tmp_path / "b", ("b",), words)
    assert len(_headers(session.files)) == 5
    assert _module_tables() == before
