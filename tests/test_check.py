"""`xnat-drop check` as a user runs it, on real data: every rule id broken and passed, exclude,
PHI, routing, links and FIFOs, the `--json` contract, exit codes, and agreement with the daemon.

Real files wherever they exist: pydicom's test set and pydicom-data, nibabel's DICOM, NIfTI,
Analyze, MINC and MGH files, dcm2niix output made here, highdicom Secondary Capture and
Segmentation objects built inside a real study. Generated series (realistic Siemens and GE
headers) only for cases no real file shows: MoCo, a GE ADC map known by its description alone,
MP2RAGE's UNI image.

Most sessions are built once (module fixture `lib`) and judged by a few `check` processes, since
`check` only reads; tests that need a config of their own build their sessions in tmp_path.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import gzip
import hashlib
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid

from xnat_standin import Emulator
from xnat_standin.demo.samples import ORIGINAL, SeriesSpec, write_session

from conftest import PROJECT, Drop, run_daemon
from data import (
    MR_SERIES,
    NIBABEL_DATA,
    NICOM_DATA,
    STUDY_1,
    STUDY_133,
    copy_ct_study,
    copy_series,
    copy_siemens_dti,
    copy_study,
    dcm2niix,
    pydicom_file,
    write_non_image_objects,
)

XNAT_DROP = [sys.executable, "-m", "xnat_drop"]
RULE_IDS = frozenset(
    {
        "nifti",
        "derived-series",
        "non-dicom",
        "unreadable-dicom",
        "mixed-studies",
        "no-dicom",
        "bad-label",
        "unsafe-file",
        "duplicate-instance",
        "phi",
        "unknown-project",
    }
)
EXCLUDE_ALL = """
[rules]
nifti = "exclude"
derived-series = "exclude"
non-dicom = "exclude"
unreadable-dicom = "exclude"
"""
BASE_FILES = len(STUDY_133)  # the clean real study most broken sessions are built on
# The study the dicomdirtests MR1/MR2 files in STUDY_133 belong to, and a file's SOP UID there.
STUDY_133_UID = "1.3.6.1.4.1.5962.1.1.0.0.0.1196533885.18148.0.133"
MR1_4919_SOP = "1.3.6.1.4.1.5962.1.1.0.0.0.1196533885.18148.0.135"

Verdict = dict[str, Any]


# -- running check -----------------------------------------------------------------------------


def write_config(path: Path, root: Path, extra: str = "") -> Path:
    """A config whose drop tree is `root` (folders outside root/incoming are routed by their
    trailing path components); `extra` adds TOML tables such as [rules] or [routing]."""
    path.write_text(
        f'[paths]\nroot = "{root}"\nstate_dir = "{root / "state"}"\n\n'
        f'[xnat]\nurl = "http://127.0.0.1:9"\n{extra}\n'
    )
    return path


def check(
    config: Path,
    *folders: Path | str,
    as_json: bool = True,
    server: bool = False,
    cwd: Path | None = None,
    timeout: float = 60,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real `xnat-drop check` process (`env` adds variables)."""
    cmd = [*XNAT_DROP, "check", "--config", str(config)]
    cmd += ["--json"] if as_json else []
    cmd += ["--server"] if server else []
    cmd += [str(f) for f in folders]
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"} | (env or {})
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env, check=False
    )


def verdicts(result: subprocess.CompletedProcess[str]) -> dict[str, Verdict]:
    """The `--json` verdicts by folder (as given on the command line)."""
    assert result.returncode in (0, 1), result.stdout + result.stderr
    data = json.loads(result.stdout)
    return {item["folder"]: item for item in data["folders"]}


def rules(verdict: Verdict) -> list[str]:
    return [v["rule"] for v in verdict["violations"]]


def tree_state(root: Path) -> dict[str, tuple[int, str]]:
    """Every entry below `root` (lstat mode and content hash of regular files), links unfollowed."""
    state = {}
    for path in sorted(root.rglob("*")):
        mode = path.lstat().st_mode
        content = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(mode) else ""
        state[str(path.relative_to(root))] = (mode, content)
    return state


# -- building sessions from real files ------------------------------------------------------


def junk(folder: Path) -> None:
    """Operating-system clutter and a real DICOMDIR: ignored, never a violation."""
    shutil.copyfile(pydicom_file("DICOMDIR"), folder / "DICOMDIR")
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1" + bytes(100))
    (folder / "Thumbs.db").write_bytes(bytes(512))
    (folder / "__MACOSX").mkdir()
    (folder / "__MACOSX" / "._MR1_4919.dcm").write_bytes(b"\0\5\x16\7" + bytes(60))


def edit(path: Path, target: Path | None = None, **values: str) -> Path:
    """Set attributes of a real DICOM file with pydicom (in place or into `target`)."""
    ds = pydicom.dcmread(path)
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    out = target or path
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out)
    return out


def highdicom_objects(folder: Path) -> list[Path]:
    """A Secondary Capture and a Segmentation made with highdicom from the real MR files of
    STUDY_133 in `folder`, so they share its StudyInstanceUID (as a workstation's would)."""
    import highdicom
    import numpy as np
    from highdicom.sc import SCImage
    from highdicom.seg import Segmentation, SegmentDescription

    source = pydicom.dcmread(folder / "MR2_4950.dcm")
    sc = SCImage.from_ref_dataset(
        source,
        np.zeros((16, 16), dtype=np.uint8),
        "MONOCHROME2",
        8,
        "PATIENT",
        generate_uid(),
        90,
        generate_uid(),
        1,
        "xnat-drop tests",
        pixel_spacing=(1.0, 1.0),
        patient_orientation=("A", "F"),
    )
    mask = np.zeros((1, 16, 16), dtype=bool)
    mask[0, 4:10, 4:10] = True
    segment = SegmentDescription(
        1,
        "lesion",
        highdicom.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure"),
        highdicom.sr.CodedConcept("4147007", "SCT", "Mass"),
        algorithm_type="MANUAL",
    )
    seg = Segmentation(
        [source],
        mask,
        "BINARY",
        [segment],
        generate_uid(),
        91,
        generate_uid(),
        1,
        "xnat-drop tests",
        "tests",
        "1.0",
        "1",
    )
    sc.save_as(folder / "screenshot.dcm")
    seg.save_as(folder / "lesion_seg.dcm")
    # highdicom keeps an in-memory SQLite database per image and never closes it: collect it
    # here, where its ResourceWarning is known and harmless, not in some later test.
    del seg, sc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    return [folder / "screenshot.dcm", folder / "lesion_seg.dcm"]


def nibabel_mgz(path: Path) -> Path:
    """A FreeSurfer volume written by nibabel as FreeSurfer does it for unsigned 16-bit data
    (MGH data type 10, MRI_USHRT)."""
    import nibabel
    import numpy as np

    image = nibabel.MGHImage(np.arange(120, dtype=np.uint16).reshape(4, 5, 6), np.eye(4))
    nibabel.save(image, path)
    assert int(image.header["type"]) == 10
    return path


# Generated series with the headers scanners write (only where no real file shows the case).
BOLD = SeriesSpec(5, "rest_BOLD", (*ORIGINAL, "MOSAIC"), images=3, rows=16, columns=16)
MOCO = SeriesSpec(
    6,
    "MoCoSeries",
    ("ORIGINAL", "PRIMARY", "M", "ND", "NORM", "MOCO", "MOSAIC"),
    images=3,
    rows=16,
    columns=16,
)
GE_ADC = SeriesSpec(7, "Ax_DWI_ASSET_ADC", ("ORIGINAL", "PRIMARY", "OTHER"), 2, 16, 16)
FAT_SAT = SeriesSpec(8, "t2_tse_FAT_SAT", ORIGINAL, 2, 16, 16)  # "FA" anchored: not a FA map
INV1 = SeriesSpec(9, "mp2rage_INV1", ORIGINAL, 2, 16, 16)
INV2 = SeriesSpec(10, "mp2rage_INV2", ORIGINAL, 2, 16, 16)
UNI = SeriesSpec(11, "mp2rage_UNI_Images", ("DERIVED", "PRIMARY", "M", "ND", "UNI"), 2, 16, 16)

# Real derived objects from pydicom, pydicom-data and nibabel, and the words check must give.
DERIVED_REAL = {
    "examples_overlay.dcm": "ImageType (0008,0008) value 1 is DERIVED",  # Siemens MPR
    "csa_mip.dcm": "ImageType (0008,0008) value 1 is DERIVED",  # Siemens CSA MIP (nibabel)
    "eCT_Supplemental.dcm": "ImageType (0008,0008) value 1 is DERIVED",  # CT perfusion rCBF
    "liver.dcm": "SOP Class UID (0008,0016) is Segmentation",
    "SC_rgb.dcm": "Secondary Capture",
    "OT-PAL-8-face.dcm": "Secondary Capture",
    "examples_palette.dcm": "PhotometricInterpretation (0028,0004) is PALETTE COLOR",  # US
}
NIFTI_NIBABEL = (
    "anatomical.nii",
    "example4d.nii.gz",
    "example_nifti2.nii.gz",
    "standard.nii.gz",
    "row_major.dconn.nii",  # CIFTI-2: a NIfTI-2 container
    "nifti1.hdr",
    "nifti2.hdr",
    "analyze.hdr",
    "test.mgz",
    "minc1_1_scale.mnc",
    "minc2_1_scale.mnc",
)
NON_DICOM_NIBABEL = (
    "umass_anonymized.PAR",  # Philips PAR header: the scanner's own export, not DICOM
    "simple.trk",  # tractography
    "example4d+orig.HEAD",  # AFNI
    "example4d+orig.BRIK.gz",
    "tinypet.v",  # ECAT
)


def build_library(root: Path) -> dict[str, Path]:
    """Session folders at root/P1/S01/<case>, each from real files where they exist."""
    cases: dict[str, Path] = {}

    def case(name: str) -> Path:
        folder = root / PROJECT / "S01" / name
        folder.mkdir(parents=True)
        cases[name] = folder
        return folder

    # -- accepted as dropped
    junk(d := case("mr-clean"))
    copy_study(d)
    copy_ct_study(case("ct-clean"))
    copy_siemens_dti(case("siemens-dti"))
    (case("philips-enhanced") / "IM_0001").write_bytes(
        gzip.decompress((NICOM_DATA / "philips_mprage.dcm.gz").read_bytes())
    )
    # Non-image objects a scanner exports with a session, in the real Siemens DTI study
    copy_siemens_dti(d := case("non-image"))
    write_non_image_objects(d / "other", d / "dti_0.dcm")
    d = case("compressed-whole")
    shutil.copyfile(pydicom_file("emri_small_jpeg_2k_lossless.dcm"), d / "emri_j2k.dcm")
    d = case("bare-dataset")  # one file written without preamble and file meta: DICOM to XNAT
    copy_study(d)
    ds = pydicom.dcmread(d / "MR1_4919.dcm")
    del ds.file_meta
    ds.preamble = None
    ds.save_as(d / "MR1_4919.dcm", implicit_vr=False, little_endian=True)
    write_session(case("mp2rage"), [INV1, INV2, UNI, FAT_SAT], patient_id="S01")
    copy_study(d := case("dup-identical"))
    (d / "copy").mkdir()
    shutil.copyfile(d / "MR1_4919.dcm", d / "copy" / "MR1_4919.dcm")

    # -- nifti
    copy_study(d := case("nifti-nibabel"))
    for name in NIFTI_NIBABEL:
        shutil.copyfile(NIBABEL_DATA / name, d / name)
    (d / "analyze.img").write_bytes(os.urandom(4096))  # the .img half of the Analyze pair
    shutil.copyfile(NIBABEL_DATA / "anatomical.nii", d / "IM0099")  # renamed: found by content
    copy_siemens_dti(d := case("nifti-dcm2niix"))
    dcm2niix(d, d / "nifti", "dwi")  # the session converted into itself, as users do

    other = root / "staging-dti"  # the nibabel Siemens pair, which dcm2niix reads as one series
    other.mkdir()
    for name in ("0.dcm", "1.dcm"):
        shutil.copyfile(NICOM_DATA / name, other / name)
    copy_siemens_dti(d := case("nifti-other-writers"))
    for export, folder in (("o", "mgh"), ("o", "mgz"), ("j", "jnii"), ("b", "bnii"), ("y", "nrrd")):
        dcm2niix(other, d / folder, "dwi", compress=folder == "mgz", export=export)
    (d / "renamed").mkdir()
    for folder in ("mgh", "jnii", "bnii"):  # the same files without their extension
        shutil.copyfile(d / folder / f"dwi.{folder}", d / "renamed" / f"dwi_{folder}")
    (d / "fs").mkdir()
    nibabel_mgz(d / "fs" / "T1_uint16.mgz")
    copy_siemens_dti(d := case("nrrd-detached"))
    dcm2niix(other, d / "nrrd", "dwi", export="y")  # dwi.nhdr + dwi.raw.gz, the pair's halves
    shutil.rmtree(other)

    # -- derived-series
    copy_study(d := case("derived-real"))
    for name in DERIVED_REAL:
        if name == "csa_mip.dcm":
            shutil.copyfile(NICOM_DATA / "slicethickness_empty_string.dcm", d / name)
        else:
            shutil.copyfile(pydicom_file(name), d / name)
    copy_study(d := case("derived-mr700"), STUDY_1)
    copy_series("MR700", d / "MR700")  # same study as STUDY_1
    copy_study(d := case("derived-highdicom"))
    highdicom_objects(d)
    write_session(case("derived-generated"), [BOLD, MOCO, GE_ADC, FAT_SAT, UNI], patient_id="S01")

    # -- non-dicom
    copy_study(d := case("non-dicom"))
    for name in NON_DICOM_NIBABEL:
        shutil.copyfile(NIBABEL_DATA / name, d / name)
    shutil.copyfile(NICOM_DATA / "ascconv_sample.txt", d / "ascconv_sample.txt")
    shutil.copyfile(NICOM_DATA / "philips_mprage.dcm.gz", d / "philips_mprage.dcm.gz")
    shutil.copyfile(pydicom_file("zipMR.gz"), d / "zipMR.gz")
    with zipfile.ZipFile(d / "series.zip", "w") as zf:
        zf.write(MR_SERIES / "MR2" / "6273", "IM1.dcm")
    (d / "scan notes.txt").write_text("Subject moved during run 2.\n")

    # -- unreadable-dicom
    copy_study(d := case("unreadable"))
    shutil.copyfile(pydicom_file("MR_truncated.dcm"), d / "MR_truncated.dcm")
    too_short = "emri_small_jpeg_2k_lossless_too_short.dcm"
    shutil.copyfile(pydicom_file(too_short), d / too_short)
    shutil.copyfile(pydicom_file("meta_missing_tsyntax.dcm"), d / "meta_missing_tsyntax.dcm")
    (d / "IM0005.dcm").write_bytes(b"")  # an interrupted copy leaves an empty file
    whole = (MR_SERIES / "MR2" / "6273").read_bytes()
    (d / "tail_cut.dcm").write_bytes(whole[:-100])
    (d / "header_cut.dcm").write_bytes((MR_SERIES / "MR2" / "6605").read_bytes()[:1000])
    (d / "j2k_cut.dcm").write_bytes(pydicom_file("JPEG2000.dcm").read_bytes()[:-200])

    # -- mixed-studies: the real dicomdirtests MR2 folder holds files of three studies
    copy_series("MR2", case("mixed-studies"))

    # -- no-dicom
    staging = root / "staging"
    copy_siemens_dti(staging)
    dcm2niix(staging, case("converted-only"), "dwi")
    shutil.rmtree(staging)
    junk(case("junk-only"))

    # -- bad-label: a session folder named with a space
    copy_study(case("S01 MR1"))

    # -- duplicate-instance: a re-export of one file, same SOP Instance UID, different bytes
    copy_study(d := case("dup-conflict"))
    edit(d / "MR1_4919.dcm", d / "reexport" / "MR1_4919.dcm", ImageComments="re-exported")
    return cases


@dataclass(frozen=True)
class Library:
    root: Path
    cases: dict[str, Path]
    config: Path  # default rules
    exclude_config: Path  # the four excludable rules set to "exclude"

    def __getitem__(self, name: str) -> Path:
        return self.cases[name]


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Library:
    root = tmp_path_factory.mktemp("lib")
    cases = build_library(root / "sessions")
    return Library(
        root / "sessions",
        cases,
        write_config(root / "default.toml", root / "drop"),
        write_config(root / "exclude.toml", root / "drop", EXCLUDE_ALL),
    )


@dataclass(frozen=True)
class Run:
    result: subprocess.CompletedProcess[str]
    by_case: dict[str, Verdict]

    def __getitem__(self, name: str) -> Verdict:
        return self.by_case[name]


def run_all(lib: Library, config: Path) -> Run:
    result = check(config, *lib.cases.values())
    found = verdicts(result)
    return Run(result, {name: found[str(folder)] for name, folder in lib.cases.items()})


@pytest.fixture(scope="module")
def default_run(lib: Library) -> Run:
    before = tree_state(lib.root)
    run = run_all(lib, lib.config)
    assert tree_state(lib.root) == before  # check moved, changed and added nothing
    return run


@pytest.fixture(scope="module")
def exclude_run(lib: Library) -> Run:
    return run_all(lib, lib.exclude_config)


ACCEPTED = (
    "mr-clean",
    "ct-clean",
    "siemens-dti",
    "non-image",
    "philips-enhanced",
    "compressed-whole",
    "bare-dataset",
    "mp2rage",
    "dup-identical",
)


# -- the contract: JSON shape, text, exit codes ---------------------------------------------


def test_json_has_exactly_the_promised_shape(lib: Library, default_run: Run) -> None:
    data = json.loads(default_run.result.stdout)
    assert list(data) == ["folders"]
    assert [item["folder"] for item in data["folders"]] == [str(p) for p in lib.cases.values()]
    for item in data["folders"]:
        assert list(item) == [
            "folder",
            "accepted",
            "target",
            "violations",
            "upload_files",
            "would_upload_files",
            "excluded_files",
            "resources",
        ]
        assert item["resources"] == []  # no session of the library has a resources folder
        assert isinstance(item["accepted"], bool)
        counts = (item["upload_files"], item["would_upload_files"], item["excluded_files"])
        assert all(type(n) is int for n in counts)
        # nothing is uploaded from a rejected folder; what would be, once fixed, has its key
        assert item["upload_files"] == (item["would_upload_files"] if item["accepted"] else 0)
        target = item["target"]
        assert target is None or (
            list(target) == ["project", "subject", "session"]
            and all(isinstance(v, str) and v for v in target.values())
        )
        for violation in item["violations"]:
            assert list(violation) == ["rule", "policy", "subject", "message", "files"]
            assert violation["rule"] in RULE_IDS
            assert violation["policy"] in ("reject", "exclude")
            assert isinstance(violation["subject"], str) and violation["subject"]
            assert isinstance(violation["message"], str) and violation["message"].endswith(".")
        assert item["accepted"] == (
            target is not None
            and item["would_upload_files"] > 0
            and all(v["policy"] == "exclude" for v in item["violations"])
        )
    assert default_run.result.returncode == 1  # some folders are rejected


def test_clean_real_sessions_are_accepted_with_their_target(default_run: Run) -> None:
    counts = {name: default_run[name]["upload_files"] for name in ACCEPTED}
    assert counts == {
        "mr-clean": 4,  # DICOMDIR, .DS_Store, Thumbs.db and __MACOSX are ignored
        "ct-clean": 7,
        "siemens-dti": 4,
        "non-image": 9,  # 4 images, 2 SRs, a PDF, a PhoenixZIPReport and raw data
        "philips-enhanced": 1,  # one enhanced multi-frame file, 176 frames
        "compressed-whole": 1,
        "bare-dataset": 4,
        "mp2rage": 8,
        "dup-identical": 4,  # the identical copy is sent once
    }
    for name in ACCEPTED:
        verdict = default_run[name]
        assert verdict["accepted"] and verdict["violations"] == [], (name, verdict)
        assert verdict["target"] == {"project": PROJECT, "subject": "S01", "session": name}
        assert verdict["excluded_files"] == 0


def test_exit_codes_0_when_all_accepted_1_when_any_rejected(lib: Library) -> None:
    accepted = check(lib.config, lib["mr-clean"], lib["ct-clean"])
    assert accepted.returncode == 0, accepted.stderr
    mixed = check(lib.config, lib["mr-clean"], lib["nifti-dcm2niix"], lib["ct-clean"])
    assert mixed.returncode == 1, mixed.stderr
    found = verdicts(mixed)
    assert [v["accepted"] for v in found.values()] == [True, False, True]


@pytest.mark.parametrize(
    ("toml", "words"),
    [
        ('[rules]\nnifty = "exclude"\n', "rules.nifty: unknown key (did you mean 'nifti'?)"),
        ('[rules]\nmixed-studies = "exclude"\n', "rules.mixed-studies: this rule always rejects"),
        ('[rules]\nunsafe-file = "exclude"\n', "rules.unsafe-file: this rule always rejects"),
        ('[rules]\nphi = "exclude"\n', "rules.phi: must be one of 'off', 'reject'"),
        ('[rules]\nnifti = "skip"\n', "rules.nifti: must be one of 'reject', 'exclude'"),
        ('[rules]\nphi = "reject"\nphi_tags = ["PatientNmae"]\n', "'PatientNmae' is not a DICOM"),
        ('[routing]\nsession_template = "{PatientID"\n', "routing.session_template"),
    ],
)
def test_exit_code_2_for_a_config_error(
    lib: Library, tmp_path: Path, toml: str, words: str
) -> None:
    config = write_config(tmp_path / "bad.toml", tmp_path / "drop", toml)
    result = check(config, lib["mr-clean"])
    assert result.returncode == 2
    assert result.stdout == ""
    assert "configuration error" in result.stderr and words in result.stderr


def test_exit_code_2_for_paths_that_are_not_folders(lib: Library, tmp_path: Path) -> None:
    a_file = lib["mr-clean"] / "MR1_4919.dcm"
    link = tmp_path / "link_to_session"
    link.symlink_to(lib["mr-clean"], target_is_directory=True)
    for bad in (a_file, tmp_path / "missing", link):
        result = check(lib.config, lib["mr-clean"], bad)
        assert result.returncode == 2, (bad, result.stdout, result.stderr)
        assert result.stdout == "" and f"not a folder: {bad}" in result.stderr
    missing_config = check(tmp_path / "nope.toml", lib["mr-clean"])
    assert missing_config.returncode == 2 and "cannot read" in missing_config.stderr
    no_folder = subprocess.run(
        [*XNAT_DROP, "check", "--config", str(lib.config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert no_folder.returncode == 2 and "FOLDER" in no_folder.stderr


def test_text_output_is_one_readable_block_per_folder(lib: Library) -> None:
    result = check(lib.config, lib["mr-clean"], lib["nifti-dcm2niix"], as_json=False)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"{lib['mr-clean']}: ACCEPTED -> XNAT P1/S01/mr-clean: 4 files to upload, 0 left out"
    )
    assert lines[1] == (
        f"{lib['nifti-dcm2niix']}: REJECTED -> XNAT P1/S01/nifti-dcm2niix: "
        "nothing to upload; 4 files once fixed, 0 left out"
    )
    assert lines[2].startswith("  [nifti] (rejects) “nifti/dwi.bval” is converted data")
    assert len(lines) == 2 + len(dcm2niix_paths(lib))
    assert all(line.startswith("  [nifti] (rejects) “nifti/dwi") for line in lines[2:])
    excluded = check(lib.exclude_config, lib["derived-generated"], as_json=False)
    assert excluded.returncode == 0
    first, *rest = excluded.stdout.splitlines()
    assert first == (
        f"{lib['derived-generated']}: ACCEPTED -> XNAT P1/S01/derived-generated: "
        "7 files to upload, 5 left out"
    )
    assert [line.split(")")[0] for line in rest] == ["  [derived-series] (excluded"] * 2


def test_folder_is_reported_as_given_and_routed_by_its_real_place(lib: Library) -> None:
    result = check(lib.config, "S01/mr-clean", "S01/../S01/ct-clean", cwd=lib.root / PROJECT)
    found = verdicts(result)
    assert list(found) == ["S01/mr-clean", "S01/../S01/ct-clean"]
    assert found["S01/../S01/ct-clean"]["target"] == {
        "project": PROJECT,
        "subject": "S01",
        "session": "ct-clean",
    }


def test_folder_is_reported_exactly_as_typed(lib: Library) -> None:
    found = verdicts(check(lib.config, "./S01/ct-clean/", cwd=lib.root / PROJECT))
    assert list(found) == ["./S01/ct-clean/"]


def test_names_that_are_not_utf8_are_printed_not_a_crash(tmp_path: Path) -> None:
    """Sessions exported on Windows or old Macs reach the share with Latin-1 names, which Python
    reads as surrogate escapes; a strict UTF-8 stdout (any xx_XX.UTF-8 locale) must still work,
    and the JSON must give back names that map to the very bytes on disk."""
    session = tmp_path / "lib" / PROJECT / "S01" / os.fsdecode(b"M\xfcller")  # Latin-1 "Müller"
    copy_study(session)
    notes = os.fsdecode(b"notes_\xe9t\xe9.txt")  # Latin-1 "notes_été.txt"
    (session / notes).write_text("Subject moved during run 2.\n")
    config = write_config(tmp_path / "c.toml", tmp_path / "drop")
    strict = {"PYTHONIOENCODING": "utf-8"}  # errors="strict", as under en_US.UTF-8
    result = check(config, session, env=strict)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    [verdict] = json.loads(result.stdout)["folders"]
    assert os.fsencode(verdict["folder"]) == os.fsencode(session)
    assert [(v["rule"], os.fsencode(v["subject"])) for v in verdict["violations"]] == [
        ("bad-label", os.fsencode("session “") + b"M\xfcller" + os.fsencode("”")),
        ("non-dicom", b"notes_\xe9t\xe9.txt"),
    ]
    text = check(config, session, as_json=False, env=strict)
    assert text.returncode == 1 and "Traceback" not in text.stderr, text.stderr
    assert "REJECTED" in text.stdout and "[non-dicom]" in text.stdout


def test_session_resources_are_listed_per_label_in_json_and_text(tmp_path: Path) -> None:
    """Files in resources/<label>/ are counted per label, never as files to upload; a broken
    one is a violation and is not counted."""
    session = tmp_path / "lib" / PROJECT / "S01" / "with-resources"
    copy_study(session)
    res = session / "resources"
    (res / "physio" / "run1").mkdir(parents=True)
    (res / "physio" / "run1" / "ecg.tsv").write_text("time\tecg\n0.0\t0.1\n")  # 17 bytes
    (res / "physio" / "resp.tsv").write_text("t\n")  # 2 bytes
    (res / "logs").mkdir()
    (res / "logs" / "empty.log").write_bytes(b"")
    with zipfile.ZipFile(res / "logs" / "console.zip", "w") as zf:
        zf.writestr("console.txt", "ok\n")
    zipped = (res / "logs" / "console.zip").stat().st_size
    config = write_config(tmp_path / "c.toml", tmp_path / "drop")
    [verdict] = verdicts(check(config, session)).values()
    assert verdict["accepted"] and verdict["violations"] == []
    assert verdict["upload_files"] == BASE_FILES  # DICOM only
    assert verdict["resources"] == [
        {"label": "logs", "files": 2, "bytes": zipped},
        {"label": "physio", "files": 2, "bytes": 19},
    ]
    text = check(config, session, as_json=False)
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[1] == (
        f"  session resources: logs (2 files, {zipped} B), physio (2 files, 19 B)"
    )
    # a DICOM file in resources/ rejects; a bad label is left out with "exclude"
    shutil.copyfile(session / "MR1_4919.dcm", res / "physio" / "copy.dcm")
    (res / "my notes").mkdir()
    (res / "my notes" / "a.txt").write_text("a\n")
    excluding = write_config(
        tmp_path / "x.toml", tmp_path / "drop", '[rules]\nresource-label = "exclude"\n'
    )
    [verdict] = verdicts(check(excluding, session)).values()
    assert not verdict["accepted"]
    assert [(v["rule"], v["policy"], v["subject"]) for v in verdict["violations"]] == [
        ("dicom-in-resources", "reject", "resources/physio/copy.dcm"),
        ("resource-label", "exclude", "resources/my notes/"),
    ]
    assert verdict["excluded_files"] == 1 and verdict["would_upload_files"] == BASE_FILES
    assert verdict["resources"][1] == {"label": "physio", "files": 2, "bytes": 19}


# -- rule by rule: reject, accept, exclude --------------------------------------------------


def assert_files_rejected(verdict: Verdict, rule: str, paths: set[str]) -> None:
    """Every violation is `rule`, rejecting, one per file, and its detail names the file."""
    assert not verdict["accepted"]
    assert rules(verdict) == [rule] * len(paths), verdict["violations"]
    assert {v["subject"] for v in verdict["violations"]} == paths
    for violation in verdict["violations"]:
        assert violation["policy"] == "reject"
        assert f"“{violation['subject']}”" in violation["message"]
    assert verdict["upload_files"] == 0 and verdict["excluded_files"] == 0
    assert verdict["would_upload_files"] == BASE_FILES


def assert_files_excluded(verdict: Verdict, rule: str, paths: set[str], upload: int) -> None:
    assert verdict["accepted"], verdict
    assert {v["rule"] for v in verdict["violations"]} == {rule}
    assert all(v["policy"] == "exclude" for v in verdict["violations"])
    assert verdict["excluded_files"] == len(paths)
    assert verdict["upload_files"] == upload


NIFTI_PATHS = {*NIFTI_NIBABEL, "analyze.img", "IM0099"}


def dcm2niix_paths(lib: Library) -> set[str]:
    """What dcm2niix wrote into the session (one NIfTI, side-car, .bval and .bvec per series:
    the plain and the gunzipped Siemens files differ in size, so it makes two series)."""
    written = {f"nifti/{p.name}" for p in (lib["nifti-dcm2niix"] / "nifti").iterdir()}
    assert {"nifti/dwi.nii.gz", "nifti/dwi.json", "nifti/dwi.bval", "nifti/dwi.bvec"} <= written
    return written


def test_nifti_rejects_nibabel_images_by_content_and_name(default_run: Run) -> None:
    verdict = default_run["nifti-nibabel"]
    assert_files_rejected(verdict, "nifti", NIFTI_PATHS)
    details = {v["subject"]: v["message"] for v in verdict["violations"]}
    assert "NIfTI-1 image, magic “n+1”" in details["IM0099"]  # no extension: by content
    assert "NIfTI-2" in details["row_major.dconn.nii"]
    assert "Analyze 7.5" in details["analyze.hdr"] and "pair" in details["analyze.img"]
    assert "MGH" in details["test.mgz"] and "MINC-1" in details["minc1_1_scale.mnc"]


def test_nifti_rejects_dcm2niix_output_and_side_cars(lib: Library, default_run: Run) -> None:
    verdict = default_run["nifti-dcm2niix"]
    assert_files_rejected(verdict, "nifti", dcm2niix_paths(lib))
    details = {v["subject"]: v["message"] for v in verdict["violations"]}
    assert "ConversionSoftware “dcm2niix”" in details["nifti/dwi.json"]
    assert "b-value" in details["nifti/dwi.bval"]


def test_nifti_rejects_dcm2niix_mgh_jnifti_nrrd_and_nibabel_mgz_by_content_and_name(
    lib: Library, default_run: Run
) -> None:
    folder = lib["nifti-other-writers"]
    written = {str(p.relative_to(folder)) for p in folder.glob("*/*")}  # all but the DICOM
    assert {
        "mgh/dwi.mgh",
        "mgz/dwi.mgz",
        "jnii/dwi.jnii",
        "bnii/dwi.bnii",
        "nrrd/dwi.nrrd",
    } <= written
    verdict = default_run["nifti-other-writers"]
    found = {v["subject"]: (v["rule"], v["message"]) for v in verdict["violations"]}
    assert {path: rule for path, (rule, _) in found.items()} == dict.fromkeys(written, "nifti")
    assert_files_rejected(verdict, "nifti", written)
    assert "MGH" in found["renamed/dwi_mgh"][1] and "MGH" in found["fs/T1_uint16.mgz"][1]
    assert "JNIfTI" in found["renamed/dwi_jnii"][1] and "JNIfTI" in found["renamed/dwi_bnii"][1]


def test_nifti_rejects_both_halves_of_a_detached_nrrd(default_run: Run) -> None:
    verdict = default_run["nrrd-detached"]
    assert {v["subject"]: v["rule"] for v in verdict["violations"]}["nrrd/dwi.raw.gz"] == "nifti"


def test_nifti_accepts_real_dicom_from_four_vendors_and_formats(default_run: Run) -> None:
    # Philips/Eclipse MR, CT, Siemens DTI mosaic, Philips enhanced MR, JPEG 2000, no preamble
    for name in ACCEPTED:
        assert "nifti" not in rules(default_run[name])


def test_nifti_exclude_uploads_the_dicom_and_counts_what_was_left_out(
    lib: Library, exclude_run: Run
) -> None:
    assert_files_excluded(exclude_run["nifti-nibabel"], "nifti", NIFTI_PATHS, BASE_FILES)
    assert_files_excluded(exclude_run["nifti-dcm2niix"], "nifti", dcm2niix_paths(lib), 4)


def test_derived_series_rejects_real_derived_objects(default_run: Run) -> None:
    verdict = default_run["derived-real"]
    assert not verdict["accepted"]
    assert rules(verdict) == ["derived-series"] * len(DERIVED_REAL)  # no mixed-studies on top
    for name, words in DERIVED_REAL.items():
        [violation] = [v for v in verdict["violations"] if f"“{name}”" in v["message"]]
        assert violation["policy"] == "reject"
        assert violation["subject"].startswith("the series of 1 file, "), violation
        assert words in violation["message"], (name, violation["message"])
    assert verdict["upload_files"] == 0
    assert verdict["would_upload_files"] == BASE_FILES + len(DERIVED_REAL)


def test_derived_series_rejects_mr700_projection_of_its_own_study(default_run: Run) -> None:
    verdict = default_run["derived-mr700"]
    [violation] = verdict["violations"]
    assert violation["rule"] == "derived-series" and violation["policy"] == "reject"
    # Named by its files: not by SeriesNumber 700 nor its description “ANGIO Projected ...”.
    assert (
        violation["subject"] == "the series of 7 files under MR700/ (first: MR700/MR700_4467.dcm)"
    )
    assert "ANGIO" not in violation["message"] and " 700" not in violation["message"]
    assert "Delete the folder “MR700”" in violation["message"]


def test_derived_series_rejects_highdicom_sc_and_seg_in_the_same_study(
    lib: Library, default_run: Run
) -> None:
    folder = lib["derived-highdicom"]
    studies = {pydicom.dcmread(p).StudyInstanceUID for p in folder.glob("*.dcm")}
    assert studies == {STUDY_133_UID}  # one study: only the derived rule can catch them
    verdict = default_run["derived-highdicom"]
    paths = {v["subject"]: v["message"] for v in verdict["violations"]}
    assert rules(verdict) == ["derived-series", "derived-series"]
    screenshot = paths["the series of 1 file, screenshot.dcm"]
    assert "“screenshot.dcm”" in screenshot and "Secondary Capture" in screenshot
    segmentation = paths["the series of 1 file, lesion_seg.dcm"]
    assert "“lesion_seg.dcm”" in segmentation and "Segmentation" in segmentation


def test_derived_series_rejects_moco_and_ge_adc_but_keeps_uni_and_fat_sat(
    default_run: Run,
) -> None:
    verdict = default_run["derived-generated"]
    assert [(v["rule"], v["subject"]) for v in verdict["violations"]] == [
        (
            "derived-series",
            "the series of 3 files under 06_MoCoSeries/ (first: 06_MoCoSeries/IM0001.dcm)",
        ),
        (
            "derived-series",
            "the series of 2 files under 07_Ax_DWI_ASSET_ADC/ "
            "(first: 07_Ax_DWI_ASSET_ADC/IM0001.dcm)",
        ),
    ]
    moco, adc = (v["message"] for v in verdict["violations"])
    assert "ImageType (0008,0008) marks it as motion-corrected by the scanner (MoCo)" in moco
    assert "“06_MoCoSeries”" in moco  # the folder to delete
    assert "SeriesDescription (0008,103E) matches the pattern `_ADC$`" in adc


def test_derived_series_accepts_mp2rage_uni_and_acquired_diffusion(default_run: Run) -> None:
    assert default_run["mp2rage"]["accepted"]  # DERIVED\PRIMARY\M\ND\UNI is kept
    assert default_run["siemens-dti"]["accepted"]  # ORIGINAL\PRIMARY\DIFFUSION\NONE\ND\MOSAIC


def test_derived_series_accepts_the_non_image_objects_of_a_session(
    lib: Library, default_run: Run
) -> None:
    # An SR without InstanceNumber, a dose report, an encapsulated PDF, a PhoenixZIPReport
    # (Siemens CSA Non-Image) and raw data, in the real Siemens DTI study: all go to XNAT.
    verdict = default_run["non-image"]
    assert verdict["accepted"] and verdict["violations"] == [] and verdict["upload_files"] == 9
    # The PhoenixZIPReport carries markers that make an image derived; its SOP class wins.
    phoenix = pydicom.dcmread(lib["non-image"] / "other" / "PhoenixZIPReport.dcm")
    assert phoenix.SOPClassUID == "1.3.12.2.1107.5.9.1"
    assert list(phoenix.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert "Rows" in phoenix and "PixelData" not in phoenix  # not an image cut short either


def test_derived_series_exclude_leaves_out_whole_series(exclude_run: Run) -> None:
    real = exclude_run["derived-real"]
    assert real["accepted"] and real["excluded_files"] == len(DERIVED_REAL)
    assert real["upload_files"] == BASE_FILES
    assert {v["policy"] for v in real["violations"]} == {"exclude"}
    mr700 = exclude_run["derived-mr700"]
    assert (mr700["accepted"], mr700["excluded_files"], mr700["upload_files"]) == (True, 7, 4)
    highdicom = exclude_run["derived-highdicom"]
    assert (highdicom["excluded_files"], highdicom["upload_files"]) == (2, BASE_FILES)
    generated = exclude_run["derived-generated"]
    assert generated["accepted"]
    # MoCo (3) and ADC (2) stay out; BOLD (3), FAT_SAT (2) and UNI (2) go: 7 - the UNI is kept
    assert (generated["excluded_files"], generated["upload_files"]) == (5, 7)


NON_DICOM_PATHS = {
    *NON_DICOM_NIBABEL,
    "ascconv_sample.txt",
    "philips_mprage.dcm.gz",
    "zipMR.gz",
    "series.zip",
    "scan notes.txt",
}


def test_non_dicom_rejects_every_other_file(default_run: Run) -> None:
    verdict = default_run["non-dicom"]
    assert_files_rejected(verdict, "non-dicom", NON_DICOM_PATHS)
    details = {v["subject"]: v["message"] for v in verdict["violations"]}
    assert "unpack it" in details["series.zip"] and "zip archive" in details["series.zip"]
    for gzipped in ("philips_mprage.dcm.gz", "zipMR.gz"):  # real gzip-compressed DICOM files
        assert details[gzipped] == (
            f"“{gzipped}” is a gzip-compressed DICOM file, which XNAT cannot read: decompress "
            "it (e.g. with 7-Zip or `gunzip`), delete the compressed file, and drop the "
            "session again."
        )
    assert "a text file" in details["scan notes.txt"]


def test_non_dicom_accepts_os_clutter_and_dicomdir(default_run: Run) -> None:
    verdict = default_run["mr-clean"]
    assert verdict["accepted"] and verdict["violations"] == [] and verdict["upload_files"] == 4


def test_non_dicom_exclude(exclude_run: Run) -> None:
    assert_files_excluded(exclude_run["non-dicom"], "non-dicom", NON_DICOM_PATHS, BASE_FILES)


UNREADABLE_PATHS = {
    "IM0005.dcm",
    "MR_truncated.dcm",
    "emri_small_jpeg_2k_lossless_too_short.dcm",
    "meta_missing_tsyntax.dcm",
    "tail_cut.dcm",
    "header_cut.dcm",
    "j2k_cut.dcm",
}


def test_unreadable_dicom_rejects_truncated_and_incomplete_files(default_run: Run) -> None:
    verdict = default_run["unreadable"]
    assert_files_rejected(verdict, "unreadable-dicom", UNREADABLE_PATHS)
    details = {v["subject"]: v["message"] for v in verdict["violations"]}
    assert "cut short by 62 bytes" in details["MR_truncated.dcm"]
    assert "cut short by 100 bytes" in details["tail_cut.dcm"]
    assert "compressed image data" in details["j2k_cut.dcm"]
    assert "which XNAT requires" in details["meta_missing_tsyntax.dcm"]
    assert details["IM0005.dcm"] == (
        "“IM0005.dcm” is empty: the copy was probably interrupted. Copy the series again from "
        "the scanner export, then drop the session again."
    )


def test_unreadable_dicom_accepts_compressed_and_bare_datasets(
    lib: Library, default_run: Run
) -> None:
    bare = (lib["bare-dataset"] / "MR1_4919.dcm").read_bytes()
    assert bare[128:132] != b"DICM" and bare[:2] == b"\x08\x00"  # starts with (0008,0005)
    assert default_run["compressed-whole"]["accepted"]  # JPEG 2000 pixel data, whole
    assert default_run["bare-dataset"]["accepted"]  # no preamble, no file meta


def test_unreadable_dicom_exclude(exclude_run: Run) -> None:
    assert_files_excluded(
        exclude_run["unreadable"], "unreadable-dicom", UNREADABLE_PATHS, BASE_FILES
    )


def test_mixed_studies_rejects_the_real_mr2_folder(lib: Library, default_run: Run) -> None:
    studies = {pydicom.dcmread(p).StudyInstanceUID for p in lib["mixed-studies"].iterdir()}
    assert len(studies) == 3  # pydicom's dicomdirtests MR2 really mixes three studies
    verdict = default_run["mixed-studies"]
    [violation] = verdict["violations"]
    assert (violation["rule"], violation["policy"], violation["subject"]) == (
        "mixed-studies",
        "reject",
        "3 studies",
    )
    for uid in studies:  # each study is named by its files, never by its UID
        assert uid not in violation["message"]
    assert violation["message"].startswith("The folder holds 3 studies: ")
    assert "files in the session folder (first: MR2_" in violation["message"]
    # exclude policies do not apply: still rejected
    assert not verdict["accepted"]


def test_mixed_studies_accepts_one_study_in_several_series(default_run: Run) -> None:
    for name in ("mr-clean", "ct-clean", "derived-mr700"):
        assert "mixed-studies" not in rules(default_run[name])


def test_mixed_studies_is_never_excluded(exclude_run: Run) -> None:
    verdict = exclude_run["mixed-studies"]
    assert not verdict["accepted"] and rules(verdict) == ["mixed-studies"]
    assert verdict["violations"][0]["policy"] == "reject"


def test_no_dicom_rejects_converted_only_and_junk_only(
    lib: Library, default_run: Run, exclude_run: Run
) -> None:
    converted = default_run["converted-only"]
    written = len(list(lib["converted-only"].iterdir()))
    assert rules(converted) == ["nifti"] * written + ["no-dicom"]
    no_dicom = converted["violations"][-1]
    assert no_dicom["subject"] == "P1/S01/converted-only" and no_dicom["policy"] == "reject"
    assert "no DICOM files" in no_dicom["message"]
    junk_only = default_run["junk-only"]
    assert rules(junk_only) == ["no-dicom"] and junk_only["upload_files"] == 0
    # excluding the converted files leaves nothing: still rejected, and said why
    excluded = exclude_run["converted-only"]
    assert not excluded["accepted"] and excluded["excluded_files"] == written
    assert rules(excluded)[-1] == "no-dicom" and "left out" in excluded["violations"][-1]["message"]


def test_no_dicom_accepts_a_single_file_session(default_run: Run) -> None:
    assert default_run["philips-enhanced"]["accepted"]
    assert default_run["compressed-whole"]["accepted"]


def test_bad_label_rejects_a_folder_named_with_a_space(default_run: Run) -> None:
    verdict = default_run["S01 MR1"]
    assert verdict["target"] is None and not verdict["accepted"]
    [violation] = verdict["violations"]
    assert (violation["rule"], violation["policy"], violation["subject"]) == (
        "bad-label",
        "reject",
        "session “S01 MR1”",
    )
    assert "contains a space" in violation["message"]
    assert "Rename the folder (for example to “S01_MR1”)" in violation["message"]


def test_bad_label_accepts_valid_labels(default_run: Run) -> None:
    for name in ("mr-clean", "dup-identical", "nifti-nibabel"):
        assert "bad-label" not in rules(default_run[name])
        assert default_run[name]["target"] is not None


def test_duplicate_instance_rejects_a_different_file_with_the_same_uid(default_run: Run) -> None:
    verdict = default_run["dup-conflict"]
    [violation] = verdict["violations"]
    assert (violation["rule"], violation["policy"], violation["subject"]) == (
        "duplicate-instance",
        "reject",
        "2 files with one SOP Instance UID",
    )
    assert "“MR1_4919.dcm”, “reexport/MR1_4919.dcm”" in violation["message"]
    assert MR1_4919_SOP not in violation["message"]


def test_duplicate_instance_accepts_an_identical_copy_sent_once(default_run: Run) -> None:
    verdict = default_run["dup-identical"]
    assert verdict["accepted"] and verdict["violations"] == []
    assert verdict["upload_files"] == BASE_FILES


def test_reject_only_rules_stay_rejects_when_the_others_exclude(exclude_run: Run) -> None:
    for name, rule in (
        ("dup-conflict", "duplicate-instance"),
        ("S01 MR1", "bad-label"),
        ("junk-only", "no-dicom"),
    ):
        verdict = exclude_run[name]
        assert not verdict["accepted"] and rules(verdict) == [rule]
        assert verdict["violations"][0]["policy"] == "reject"
    for name in ACCEPTED:
        assert exclude_run[name]["accepted"] and exclude_run[name]["violations"] == []


# -- PHI -------------------------------------------------------------------------------------

# Identifying values in the real files (pydicom MR, nibabel Siemens DTI, nibabel Philips).
PHI_VALUES = ("Doe", "Peter", "dft patient name", "19800102", "Phantom", "19111111")


def test_phi_is_off_by_default_even_with_names_in_the_files(lib: Library, default_run: Run) -> None:
    assert str(pydicom.dcmread(lib["mr-clean"] / "MR1_4919.dcm").PatientName) == "Doe^Peter"
    for name in ("mr-clean", "siemens-dti", "philips-enhanced"):
        assert default_run[name]["accepted"] and "phi" not in rules(default_run[name])


def test_phi_rejects_identifying_values_and_never_repeats_them(
    lib: Library, tmp_path: Path
) -> None:
    dti = pydicom.dcmread(lib["siemens-dti"] / "dti_0.dcm")
    assert (str(dti.PatientName), dti.PatientBirthDate) == ("dft patient name", "19800102")
    anonymised = tmp_path / "lib" / PROJECT / "S01" / "anonymised"
    for path in copy_study(anonymised):  # the subject label in PatientName is allowed
        edit(path, PatientName="S01", PatientBirthDate="")
    anonymised_dti = tmp_path / "lib" / PROJECT / "S01" / "anonymised-dti"
    for path in copy_siemens_dti(anonymised_dti):
        edit(path, PatientName="", PatientBirthDate="")
    config = write_config(tmp_path / "phi.toml", tmp_path / "drop", '[rules]\nphi = "reject"\n')
    folders = [lib["mr-clean"], lib["siemens-dti"], lib["philips-enhanced"]]
    folders += [anonymised, anonymised_dti]
    result = check(config, *folders)
    text = check(config, *folders, as_json=False)
    for output in (result.stdout + result.stderr, text.stdout + text.stderr):
        for value in PHI_VALUES:
            assert value not in output
    found = verdicts(result)
    mr, siemens, philips, clean, clean_dti = (found[str(f)] for f in folders)
    assert [(v["rule"], v["policy"], v["subject"]) for v in mr["violations"]] == [
        ("phi", "reject", "PatientName")
    ]
    assert "4 files, e.g. “MR1_4919.dcm”" in mr["violations"][0]["message"]
    assert "subject label “S01”" in mr["violations"][0]["message"]
    # only the two plain nibabel files carry the name; the gunzipped pair is already blank
    assert [(v["subject"], v["message"].split(")")[0]) for v in siemens["violations"]] == [
        ("PatientName", "PatientName is filled in (2 files, e.g. “dti_0.dcm”"),
        ("PatientBirthDate", "PatientBirthDate is filled in (2 files, e.g. “dti_0.dcm”"),
    ]
    assert rules(philips) == ["phi", "phi"] and not philips["accepted"]
    assert clean["accepted"] and clean["violations"] == []
    assert clean_dti["accepted"] and clean_dti["violations"] == []
    assert result.returncode == 1


def test_phi_tags_are_configurable(lib: Library, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "phi.toml",
        tmp_path / "drop",
        '[rules]\nphi = "reject"\nphi_tags = ["PatientID", "InstitutionName"]\n',
    )
    result = check(config, lib["mr-clean"])
    [violation] = verdicts(result)[str(lib["mr-clean"])]["violations"]
    assert (violation["rule"], violation["subject"]) == ("phi", "PatientID")
    assert "98890234" not in result.stdout  # the PatientID of the real files


# -- routing ---------------------------------------------------------------------------------


def test_routing_from_dicom_comments_and_study_description(tmp_path: Path) -> None:
    base = tmp_path / "lib"
    comments = base / "inbox" / "scanner-export" / "A1"
    for path in copy_study(comments):  # XNAT's own convention, set on copies of real files
        edit(path, PatientComments="Project: P1 Subject: S77 Session: S77_MR3")
    described = base / "inbox" / "scanner-export" / "B1"
    for path in copy_study(described):
        edit(path, StudyDescription="Brain xnat://P2/S88/S88_MR1")
    disagree = base / "inbox" / "scanner-export" / "C1"
    for index, path in enumerate(copy_study(disagree)):
        edit(path, PatientComments=f"Project: P1 Subject: S7{7 + index % 2} Session: S77_MR3")
    plain = base / "P5" / "S05" / "D1"  # no comments: the folder names are next in order
    copy_study(plain)
    config = write_config(
        tmp_path / "dicom.toml", tmp_path / "drop", '[routing]\norder = ["dicom", "layout"]\n'
    )
    found = verdicts(check(config, comments, described, disagree, plain))
    targets = [found[str(f)]["target"] for f in (comments, described, plain)]
    assert targets == [
        {"project": "P1", "subject": "S77", "session": "S77_MR3"},
        {"project": "P2", "subject": "S88", "session": "S88_MR1"},
        {"project": "P5", "subject": "S05", "session": "D1"},
    ]
    assert all(found[str(f)]["accepted"] for f in (comments, described, plain))
    ambiguous = found[str(disagree)]
    assert ambiguous["target"] is None and rules(ambiguous) == ["bad-label"]
    assert ambiguous["violations"][0]["subject"] == "subject (ambiguous)"
    disagreeing = ambiguous["violations"][0]["message"]
    assert "PatientComments (0010,4000) gives 2 different values" in disagreeing
    assert "“S77”" not in disagreeing and "“S78”" not in disagreeing  # read from the headers
    # with the default order the folder names come first and the comments are not used
    default = write_config(tmp_path / "default.toml", tmp_path / "drop")
    [verdict] = verdicts(check(default, comments)).values()
    assert verdict["target"] == {"project": "inbox", "subject": "scanner-export", "session": "A1"}


def test_routing_from_templates_over_real_headers(tmp_path: Path) -> None:
    mr = tmp_path / "lib" / PROJECT  # layout "project": the folder is the project
    copy_study(mr)
    ct = tmp_path / "other" / PROJECT
    ct_files = copy_ct_study(ct)
    disagree = tmp_path / "third" / PROJECT
    edit(copy_study(disagree)[0], PatientID="OTHER01")
    config = write_config(
        tmp_path / "template.toml",
        tmp_path / "drop",
        '[routing]\nlayout = "project"\norder = ["layout", "template"]\n'
        'subject_template = "{PatientID}"\nsession_template = "{PatientID}_{StudyDate}"\n',
    )
    found = verdicts(check(config, mr, ct, disagree))
    assert found[str(mr)]["target"] == {
        "project": PROJECT,
        "subject": "98890234",
        "session": "98890234_20030505",
    }
    ct_header = pydicom.dcmread(ct_files[0])
    assert found[str(ct)]["target"] == {
        "project": PROJECT,
        "subject": ct_header.PatientID,
        "session": f"{ct_header.PatientID}_{ct_header.StudyDate}",
    }
    assert found[str(mr)]["accepted"] and found[str(ct)]["accepted"]
    bad = found[str(disagree)]
    assert bad["target"] is None
    assert [v["subject"] for v in bad["violations"]] == [
        "subject (ambiguous)",
        "session (ambiguous)",
    ]


def test_sanitize_labels_maps_like_xnat_and_only_what_xnat_maps(tmp_path: Path) -> None:
    space = tmp_path / "lib" / PROJECT / "S01" / "S01 MR1"
    dotted = tmp_path / "lib" / PROJECT / "S 02" / "S02.MR1"
    bang = tmp_path / "lib" / PROJECT / "S01" / "S01!MR1"  # XNAT keeps "!", then refuses it
    for folder in (space, dotted, bang):
        copy_study(folder)
    plain = write_config(tmp_path / "plain.toml", tmp_path / "drop")
    before = verdicts(check(plain, space, dotted, bang))
    assert [
        [v["subject"] for v in before[str(f)]["violations"]] for f in (space, dotted, bang)
    ] == [
        ["session “S01 MR1”"],
        ["subject “S 02”", "session “S02.MR1”"],
        ["session “S01!MR1”"],
    ]
    config = write_config(
        tmp_path / "sanitize.toml", tmp_path / "drop", "[routing]\nsanitize_labels = true\n"
    )
    result = check(config, space, dotted, bang)
    assert result.returncode == 1
    found = verdicts(result)
    assert found[str(space)]["accepted"]
    assert found[str(space)]["target"] == {"project": "P1", "subject": "S01", "session": "S01_MR1"}
    assert found[str(dotted)]["target"] == {
        "project": "P1",
        "subject": "S_02",
        "session": "S02_MR1",
    }
    [violation] = found[str(bang)]["violations"]
    assert (violation["rule"], violation["subject"]) == ("bad-label", "session “S01!MR1”")
    assert "contains “!”" in violation["message"]


def test_routing_below_incoming_uses_the_path_below_incoming(tmp_path: Path) -> None:
    root = tmp_path / "drop"
    inside = root / "incoming" / PROJECT / "S02" / "E2"
    shallow = root / "incoming" / "S03" / "E3"  # one level short: no project folder
    outside = tmp_path / "elsewhere" / "deep" / "P4" / "S04" / "E4"
    for folder in (inside, shallow, outside):
        copy_study(folder)
    config = write_config(tmp_path / "c.toml", root)
    found = verdicts(check(config, inside, shallow, outside))
    assert found[str(inside)]["target"] == {"project": "P1", "subject": "S02", "session": "E2"}
    assert found[str(outside)]["target"] == {"project": "P4", "subject": "S04", "session": "E4"}
    # trailing components would have made "incoming" the project; below incoming it is missing
    short = found[str(shallow)]
    assert short["target"] is None
    assert [v["subject"] for v in short["violations"]] == ["project (missing)"]


# -- links and special files -----------------------------------------------------------------

IN_ACCESS = 0x001
IN_OPEN = 0x020
IN_ISDIR = 0x4000_0000
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)


class OpenWatch:
    """Every open and read of the watched folders and of the entries in them, by any process
    (Linux inotify: IN_OPEN also fires for FIFOs and for listing a folder)."""

    def __init__(self, *folders: Path) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self._fd >= 0, os.strerror(ctypes.get_errno())
        self._folders: dict[int, Path] = {}
        for folder in folders:
            wd = self._libc.inotify_add_watch(self._fd, os.fsencode(folder), IN_OPEN | IN_ACCESS)
            assert wd >= 0, os.strerror(ctypes.get_errno())
            self._folders[wd] = folder

    def events(self) -> list[tuple[Path, str]]:
        """(path, "open"/"read") for what happened since the last call."""
        found = []
        while True:
            try:
                data = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                return found
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                start = offset + _EVENT.size
                name = data[start : start + length].rstrip(b"\0").decode()
                offset = start + length
                path = self._folders[wd] / name if name else self._folders[wd]
                found.append((path, "open" if mask & IN_OPEN else "read"))

    def close(self) -> None:
        os.close(self._fd)


@pytest.fixture
def open_watch() -> Iterator[type[OpenWatch]]:
    watches: list[OpenWatch] = []

    class Watch(OpenWatch):
        def __init__(self, *folders: Path) -> None:
            super().__init__(*folders)
            watches.append(self)

    yield Watch
    for watch in watches:
        watch.close()


def test_unsafe_file_links_and_fifos_are_reported_and_never_followed_or_opened(
    tmp_path: Path, open_watch: type[OpenWatch]
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "OUTSIDE_IM0001.dcm"  # a real DICOM of another study
    shutil.copyfile(MR_SERIES / "MR2" / "6273", target)
    os.mkfifo(outside / "OUTSIDE_pipe")  # a blocking open of it would hang check forever
    outside_series = outside / "OUTSIDE_series"
    copy_study(outside_series, STUDY_1)
    session = tmp_path / "lib" / PROJECT / "S01" / "links"
    copy_study(session)
    (session / "link.dcm").symlink_to(target)
    (session / "pipe.dcm").symlink_to(outside / "OUTSIDE_pipe")
    (session / "series").symlink_to(outside_series, target_is_directory=True)
    (session / "same.dcm").symlink_to(session / "MR1_4919.dcm")  # even a link inside
    os.mkfifo(session / "IM0099.dcm")
    # relatime (this filesystem's mount option) updates atime on a read when atime < mtime
    st = target.stat()
    os.utime(target, ns=(st.st_mtime_ns - 86400 * 10**9, st.st_mtime_ns))
    atime = target.stat().st_atime_ns
    config = write_config(tmp_path / "c.toml", tmp_path / "drop")
    exclude = write_config(tmp_path / "x.toml", tmp_path / "drop", EXCLUDE_ALL)
    before = tree_state(tmp_path / "lib")

    watch = open_watch(outside, outside_series, session)
    result = check(config, session, timeout=30)  # a hang fails here, not at the test timeout
    seen = watch.events()

    assert result.returncode == 1, result.stderr
    outside_events = [(p, what) for p, what in seen if outside in p.parents or p == outside]
    assert outside_events == []  # nothing outside the session was opened, listed or read
    opened_inside = {p.name for p, _ in seen if p.parent == session}
    assert opened_inside == {"MR1_4919.dcm", "MR2_4950.dcm", "MR2_4981.dcm", "MR2_5011.dcm"}
    assert target.stat().st_atime_ns == atime
    assert "OUTSIDE" not in result.stdout + result.stderr
    [verdict] = verdicts(result).values()
    assert not verdict["accepted"] and verdict["would_upload_files"] == BASE_FILES
    unsafe = {v["subject"]: v for v in verdict["violations"]}
    assert set(unsafe) == {"link.dcm", "pipe.dcm", "series", "same.dcm", "IM0099.dcm"}
    assert rules(verdict) == ["unsafe-file"] * 5
    for path, violation in unsafe.items():
        assert violation["policy"] == "reject" and f"“{path}”" in violation["message"]
        words = "a named pipe (FIFO)" if path == "IM0099.dcm" else "a symbolic link"
        assert words in violation["message"] and "never follows or opens" in violation["message"]
    # unsafe-file always rejects, whatever the other rules' policies
    [excluded] = verdicts(check(exclude, session, timeout=30)).values()
    assert not excluded["accepted"] and {v["policy"] for v in excluded["violations"]} == {"reject"}
    assert tree_state(tmp_path / "lib") == before

    # controls: the watch and atime do see a read of these very objects
    watch.events()
    target.read_bytes()
    os.close(os.open(outside / "OUTSIDE_pipe", os.O_RDONLY | os.O_NONBLOCK))
    os.listdir(outside_series)
    assert set(watch.events()) >= {
        (target, "open"),
        (target, "read"),
        (outside / "OUTSIDE_pipe", "open"),
        (outside_series, "open"),
    }
    assert target.stat().st_atime_ns != atime


def test_unsafe_file_accepts_regular_files_in_nested_folders(default_run: Run) -> None:
    verdict = default_run["ct-clean"]  # CT2N/ and CT5N/ subfolders of real files
    assert verdict["accepted"] and "unsafe-file" not in rules(verdict)


# -- the server, and the daemon --------------------------------------------------------------


def test_unknown_project_from_the_server_and_nothing_for_a_known_one(
    drop: Drop, emulator: Emulator, tmp_path: Path
) -> None:
    known = tmp_path / "lib" / PROJECT / "S01" / "E1"
    unknown = tmp_path / "lib" / "NOPE" / "S01" / "E1"
    for folder in (known, unknown):
        copy_study(folder)
    offline = check(drop.config, known, unknown)
    assert offline.returncode == 0  # without --server nobody asks XNAT
    assert emulator.requests() == []
    result = check(drop.config, known, unknown, server=True)
    assert result.returncode == 1, result.stderr
    found = verdicts(result)
    assert found[str(known)]["accepted"] and found[str(known)]["violations"] == []
    bad = found[str(unknown)]
    assert not bad["accepted"] and bad["upload_files"] == 0
    assert bad["would_upload_files"] == BASE_FILES
    [violation] = bad["violations"]
    assert (violation["rule"], violation["policy"], violation["subject"]) == (
        "unknown-project",
        "reject",
        "project “NOPE”",
    )
    assert "Unassigned" in violation["message"]
    # only looked: nothing was sent
    assert emulator.prearchive() == [] and emulator.archive() == []
    assert not [r for r in emulator.requests() if "/services/import" in r.path]
    assert {r.method for r in emulator.requests()} <= {"GET", "HEAD", "POST"}


def test_server_that_cannot_be_asked_is_exit_2_not_a_verdict(lib: Library, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("alice:pw\n")
    secret.chmod(0o600)
    nothing_listens = write_config(
        tmp_path / "down.toml", tmp_path / "drop", f'secret_file = "{secret}"\n'
    )  # the [xnat] table's url is 127.0.0.1:9, where nothing listens
    no_secret = write_config(tmp_path / "nosecret.toml", tmp_path / "drop")
    for config, words in ((nothing_listens, "cannot reach XNAT"), (no_secret, "secret_file")):
        result = check(config, lib["mr-clean"], server=True, env={"HOME": str(tmp_path)})
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stdout == "" and "cannot ask XNAT" in result.stderr
        assert words in result.stderr


def test_daemon_and_check_agree_on_a_rejected_session(
    lib: Library, drop: Drop, emulator: Emulator, tmp_path: Path
) -> None:
    relpath = (PROJECT, "S01", "S01_MR1")
    staging = tmp_path / "staging" / "S01_MR1"
    shutil.copytree(lib["derived-highdicom"], staging)  # SC + SEG in a real study
    shutil.copyfile(NIBABEL_DATA / "anatomical.nii", staging / "anatomical.nii")
    (staging / "scan notes.txt").write_text("Subject moved during run 2.\n")
    shutil.copyfile(pydicom_file("MR_truncated.dcm"), staging / "MR_truncated.dcm")
    shutil.copytree(lib["dup-conflict"] / "reexport", staging / "reexport")
    folder = drop.incoming.joinpath(*relpath)
    folder.parent.mkdir(parents=True)
    os.rename(staging, folder)
    before = tree_state(folder)

    result = check(drop.config, folder)
    [verdict] = verdicts(result).values()
    assert tree_state(folder) == before  # check left the folder where and as it was
    assert verdict["target"] == dict(zip(("project", "subject", "session"), relpath, strict=True))
    assert sorted(set(rules(verdict))) == [
        "derived-series",
        "duplicate-instance",
        "nifti",
        "non-dicom",
        "unreadable-dicom",
    ]

    daemon = run_daemon(drop)
    assert daemon.returncode == 0, daemon.stderr
    failed = drop.failed.joinpath(*relpath)
    assert tree_state(failed) == before
    report = json.loads(failed.with_name("S01_MR1.report.json").read_text())
    assert report["outcome"] == "failed"
    assert [(v["rule"], v["policy"], v["subject"], v["message"]) for v in report["violations"]] == [
        (v["rule"], v["policy"], v["subject"], v["message"]) for v in verdict["violations"]
    ]
    assert report["target"] == verdict["target"]
    assert emulator.prearchive() == []


def test_the_daemon_delivers_non_image_objects_and_xnat_holds_them(
    lib: Library, drop: Drop, emulator: Emulator, tmp_path: Path
) -> None:
    relpath = (PROJECT, "S01", "S01_MR1")
    staging = tmp_path / "staging" / "S01_MR1"
    shutil.copytree(lib["non-image"], staging)
    folder = drop.incoming.joinpath(*relpath)
    folder.parent.mkdir(parents=True)
    os.rename(staging, folder)
    [verdict] = verdicts(check(drop.config, folder)).values()
    assert verdict["accepted"] and verdict["upload_files"] == 9

    daemon = run_daemon(drop)
    assert daemon.returncode == 0, daemon.stderr
    assert drop.done.joinpath(*relpath).is_dir(), daemon.stderr
    [session] = emulator.prearchive()
    assert session.scans == {  # each object a scan of its own, as XNAT files them
        "12": ("dti_0.dcm", "dti_1.dcm", "siemens_dwi_0.dcm", "siemens_dwi_1000.dcm"),
        "90": ("report_sr.dcm",),
        "91": ("dose_sr.dcm",),
        "92": ("protocol_pdf.dcm",),
        "93": ("raw_data.dcm",),
        "99": ("PhoenixZIPReport.dcm",),
    }
    report = json.loads(drop.done.joinpath(*relpath[:-1], "S01_MR1.report.json").read_text())
    assert report["outcome"] == "done" and report["xnat"]["files"] == 9


SPILL_CONFIG = """
[watch]
ready_marker = "READY"

[rules]
phi = "reject"
derived-series = "exclude"
"""


@pytest.mark.parametrize("kind", ["default", "exclude", "marker-phi"])
def test_a_spilled_session_is_judged_exactly_as_one_in_memory(
    lib: Library, kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every library case, with its files kept on disk (spill.py) from the first file on, gets
    the very verdict it gets in memory: each pass of the core reads a Shelved view as it reads
    a tuple."""
    from xnat_drop.adapters import configfile
    from xnat_drop.adapters.dicom import spill
    from xnat_drop.core.filetable import Shelved
    from xnat_drop.service.judge import judge, relpath_for

    config = {
        "default": lib.config,
        "exclude": lib.exclude_config,
        "marker-phi": write_config(tmp_path / "c.toml", lib.root.parent / "drop", SPILL_CONFIG),
    }[kind]
    cfg = configfile.load(config, {})
    for name, folder in lib.cases.items():
        if kind == "marker-phi" and name == "mr-clean":
            (folder / "READY").touch()
        relpath = relpath_for(folder, cfg.paths.incoming, len(cfg.routing.layout))
        kept = judge(folder, relpath, cfg)
        with monkeypatch.context() as patch:
            patch.setattr(spill, "BOUND", 0)
            spilled = judge(folder, relpath, cfg, spill=tmp_path)
        if kind == "marker-phi" and name == "mr-clean":
            (folder / "READY").unlink()
        files = spilled.session.files
        assert isinstance(files, Shelved) or not files, name
        assert list(files) == list(kept.session.files), name
        one, other = kept.verdict, spilled.verdict
        assert list(other.upload) == list(one.upload), name
        assert dataclasses.replace(other, upload=()) == dataclasses.replace(one, upload=()), name
