"""rules.evaluate and derived_signal: table tests on values, no disk."""

from __future__ import annotations

import pytest

from xnat_drop.config import DEFAULT_RULES, RulesConfig
from xnat_drop.model import DicomHeader, FileFacts, FileKind, Policy, Session, Target, Violation
from xnat_drop.rules import derived_signal, evaluate

TARGET = Target("P1", "S01", "S01_MR1")
MR = "1.2.840.10008.5.1.4.1.1.4"


def header(
    series: str = "1.2.3.1",
    number: int | None = 1,
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "M", "ND"),
    sop_class: str = MR,
    description: str = "T1",
    photometric: str = "MONOCHROME2",
    sop: str = "1.2.3.1.1",
) -> DicomHeader:
    return DicomHeader(
        sop_class, sop, "1.2.3", series, number, description, image_type, "MR", photometric
    )


def dicom(path: str, h: DicomHeader | None = None) -> FileFacts:
    return FileFacts(path, 1000, FileKind.DICOM, h if h is not None else header(sop=path))


def session(*files: FileFacts) -> Session:
    return Session("S01_MR1", ("P1", "S01", "S01_MR1"), files)


def policies(**overrides: Policy) -> RulesConfig:
    base = dict(DEFAULT_RULES.policies)
    base.update({k.replace("_", "-"): v for k, v in overrides.items()})
    return RulesConfig(tuple(base.items()))


@pytest.mark.parametrize(
    ("image_type", "sop_class", "photometric", "expected"),
    [
        (("ORIGINAL", "PRIMARY", "M", "ND"), MR, "MONOCHROME2", None),
        (("DERIVED", "PRIMARY", "DIFFUSION", "ADC"), MR, "MONOCHROME2", "value 1 is DERIVED"),
        (("ORIGINAL", "SECONDARY", "OTHER"), MR, "MONOCHROME2", "value 2 is SECONDARY"),
        (
            ("ORIGINAL", "PRIMARY", "M", "ND", "NORM", "MOCO", "MOSAIC"),
            MR,
            "MONOCHROME2",
            "contains MOCO",
        ),
        (("ORIGINAL", "PRIMARY", "DIFFUSION", "TRACEW"), MR, "MONOCHROME2", "contains TRACEW"),
        (("ORIGINAL", "PRIMARY", "FA"), MR, "MONOCHROME2", "contains FA"),
        (
            ("ORIGINAL", "PRIMARY", "M", "ND"),
            "1.2.840.10008.5.1.4.1.1.7",
            "RGB",
            "Secondary Capture",
        ),
        (("ORIGINAL", "PRIMARY"), MR, "PALETTE COLOR", "PALETTE COLOR"),
        (("DERIVED", "PRIMARY", "M", "ND", "UNI"), MR, "MONOCHROME2", None),  # MP2RAGE UNI is kept
        (("ORIGINAL", "PRIMARY", "FAT_SAT"), MR, "MONOCHROME2", None),  # FA only as a whole token
        ((), MR, "MONOCHROME2", None),
    ],
)
def test_derived_signal(
    image_type: tuple[str, ...], sop_class: str, photometric: str, expected: str | None
) -> None:
    signal = derived_signal(
        header(image_type=image_type, sop_class=sop_class, photometric=photometric)
    )
    if expected is None:
        assert signal is None
    else:
        assert signal is not None and expected in signal


def test_extra_markers_are_configurable() -> None:
    h = header(image_type=("ORIGINAL", "PRIMARY", "MYRECON"))
    assert derived_signal(h) is None
    signal = derived_signal(h, ("MYRECON",))
    assert signal is not None and "MYRECON" in signal


def test_clean_session_is_accepted() -> None:
    files = (dicom("a/1.dcm", header(sop="1")), dicom("a/2.dcm", header(sop="2")))
    verdict = evaluate(session(*files), DEFAULT_RULES, TARGET)
    assert verdict.accepted
    assert verdict.violations == ()
    assert [f.path for f in verdict.upload] == ["a/1.dcm", "a/2.dcm"]
    assert verdict.target == TARGET


def test_junk_is_ignored_not_a_violation() -> None:
    files = (dicom("1.dcm", header(sop="1")), FileFacts(".DS_Store", 6, FileKind.JUNK))
    verdict = evaluate(session(*files), DEFAULT_RULES, TARGET)
    assert verdict.accepted and verdict.ignored == (".DS_Store",)
    assert [f.path for f in verdict.upload] == ["1.dcm"]


def test_derived_series_decided_per_series_uid_not_number() -> None:
    original = header(series="1.2.3.5", number=5, description="rest_BOLD")
    moco = header(
        series="1.2.3.6",
        number=5,
        description="MoCoSeries",
        image_type=("ORIGINAL", "PRIMARY", "MOCO"),
    )
    files = (
        dicom("bold/1.dcm", original),
        dicom("bold/2.dcm", original),
        dicom("moco/1.dcm", moco),
        dicom("moco/2.dcm", moco),
    )
    verdict = evaluate(session(*files), DEFAULT_RULES, TARGET)
    assert not verdict.accepted
    [violation] = verdict.violations
    assert violation.rule == "derived-series"
    assert violation.subject == "series 5 “MoCoSeries”"
    assert violation.files == ("moco/1.dcm", "moco/2.dcm")
    assert "MOCO" in violation.sentence and "2 files" in violation.sentence


def test_one_derived_file_taints_its_series() -> None:
    ok = header(series="9", number=9)
    bad = header(series="9", number=9, image_type=("DERIVED", "SECONDARY"))
    verdict = evaluate(session(dicom("1.dcm", ok), dicom("2.dcm", bad)), DEFAULT_RULES, TARGET)
    assert [v.files for v in verdict.violations] == [("1.dcm", "2.dcm")]


@pytest.mark.parametrize(
    ("kind", "rule"),
    [
        (FileKind.NIFTI, "nifti"),
        (FileKind.ANALYZE, "nifti"),
        (FileKind.OTHER, "non-dicom"),
        (FileKind.UNREADABLE_DICOM, "unreadable-dicom"),
        (FileKind.UNSAFE, "unsafe-file"),
    ],
)
def test_each_bad_file_kind_rejects_and_names_the_file(kind: FileKind, rule: str) -> None:
    bad = FileFacts("sub/bad.file", 10, kind, note="why")
    verdict = evaluate(session(dicom("1.dcm"), bad), DEFAULT_RULES, TARGET)
    assert not verdict.accepted
    [violation] = verdict.violations
    assert (violation.rule, violation.policy, violation.files) == (
        rule,
        Policy.REJECT,
        ("sub/bad.file",),
    )
    assert "“sub/bad.file”" in violation.sentence


def test_exclude_policy_uploads_the_rest_and_lists_what_was_left_out() -> None:
    moco = header(series="7", number=7, image_type=("ORIGINAL", "PRIMARY", "MOCO"), sop="m")
    files = (
        dicom("t1/1.dcm", header(sop="1")),
        dicom("moco/1.dcm", moco),
        FileFacts("t1.nii.gz", 10, FileKind.NIFTI),
    )
    rules = policies(nifti=Policy.EXCLUDE, derived_series=Policy.EXCLUDE)
    verdict = evaluate(session(*files), rules, TARGET)
    assert verdict.accepted
    assert [f.path for f in verdict.upload] == ["t1/1.dcm"]
    assert verdict.excluded == ("moco/1.dcm", "t1.nii.gz")
    assert {v.rule for v in verdict.violations} == {"nifti", "derived-series"}


def test_unsafe_files_always_reject_even_if_others_are_excluded() -> None:
    rules = RulesConfig(tuple((r, Policy.EXCLUDE) for r, _ in DEFAULT_RULES.policies))
    bad = FileFacts("link", 0, FileKind.UNSAFE, note="a symbolic link")
    verdict = evaluate(session(dicom("1.dcm"), bad), rules, TARGET)
    assert not verdict.accepted
    assert verdict.rejections[0].rule == "unsafe-file"


def test_nothing_left_to_upload_is_no_dicom() -> None:
    only_nifti = FileFacts("x.nii", 10, FileKind.NIFTI)
    verdict = evaluate(session(only_nifti), policies(nifti=Policy.EXCLUDE), TARGET)
    assert not verdict.accepted
    assert [v.rule for v in verdict.rejections] == ["no-dicom"]
    assert "left out" in verdict.rejections[0].sentence
    empty = evaluate(session(FileFacts(".DS_Store", 1, FileKind.JUNK)), DEFAULT_RULES, TARGET)
    assert [v.rule for v in empty.violations] == ["no-dicom"]


def test_routing_violation_rejects() -> None:
    bad = Violation("bad-label", Policy.REJECT, "subject “S 01”", "fix it")
    verdict = evaluate(session(dicom("1.dcm")), DEFAULT_RULES, bad)
    assert not verdict.accepted and verdict.target is None
    assert verdict.violations[0] is bad
