"""rules.evaluate and derived_signal: table tests on values, no disk. Every rule id is shown
both breaking and passing; exclude is shown where it applies."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from xnat_drop.core import sopclasses
from xnat_drop.core.config import DEFAULT_RULES, RulesConfig
from xnat_drop.core.model import (
    DicomHeader,
    FileFacts,
    FileKind,
    Policy,
    Route,
    Session,
    Target,
    Violation,
)
from xnat_drop.core.rules import derived_signal, evaluate, unknown_project

TARGET = Target("P1", "S01", "S01_MR1")
ROUTE = Route(TARGET)
MR = "1.2.840.10008.5.1.4.1.1.4"


def header(
    series: str = "1.2.3.1",
    number: int | None = 1,
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "M", "ND"),
    sop_class: str = MR,
    description: str = "T1",
    photometric: str = "MONOCHROME2",
    sop: str = "1.2.3.1.1",
    study: str = "1.2.3",
    frame_types: tuple[tuple[str, ...], ...] = (),
    **values: str,
) -> DicomHeader:
    return DicomHeader(
        sop_class,
        sop,
        study,
        series,
        number,
        description,
        image_type,
        "MR",
        photometric,
        frame_types,
        tuple(values.items()),
    )


def dicom(path: str, h: DicomHeader | None = None, digest: str = "") -> FileFacts:
    """A DICOM file; its SOP Instance UID is its path unless a header is given."""
    return FileFacts(
        path, 1000, FileKind.DICOM, h if h is not None else header(sop=path), digest=digest
    )


def session(*files: FileFacts) -> Session:
    return Session("S01_MR1", ("P1", "S01", "S01_MR1"), files)


def policies(**overrides: Policy) -> RulesConfig:
    base = dict(DEFAULT_RULES.policies)
    base.update({k.replace("_", "-"): v for k, v in overrides.items()})
    return replace(DEFAULT_RULES, policies=tuple(base.items()))


def rules_of(
    files: tuple[FileFacts, ...] | list[FileFacts], rules: RulesConfig = DEFAULT_RULES
) -> list[str]:
    return [v.rule for v in evaluate(session(*files), rules, ROUTE).violations]


CLEAN = [dicom("t1/1.dcm"), dicom("t1/2.dcm")]


# -- derived signals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, None),
        (
            {"image_type": ("DERIVED", "PRIMARY", "DIFFUSION", "ADC")},
            "ImageType (0008,0008) value 1 is DERIVED",
        ),
        ({"image_type": ("ORIGINAL", "SECONDARY", "OTHER")}, "value 2 is SECONDARY"),
        (
            {"image_type": ("ORIGINAL", "PRIMARY", "M", "ND", "NORM", "MOCO", "MOSAIC")},
            "ImageType (0008,0008) marks it as motion-corrected by the scanner (MoCo)",
        ),
        (
            {"image_type": ("ORIGINAL", "PRIMARY", "DIFFUSION", "TRACEW")},
            "marks it as a trace-weighted diffusion map",
        ),
        ({"image_type": ("ORIGINAL", "PRIMARY", "FA")}, "marks it as a fractional anisotropy"),
        ({"image_type": ("ORIGINAL", "PRIMARY", "COLFA")}, "marks it as a colour FA map"),
        ({"image_type": ("DERIVED", "SECONDARY", "MPR")}, "value 1 is DERIVED"),
        ({"image_type": ("ORIGINAL", "PRIMARY", "PROJECTION IMAGE")}, "as a projection image"),
        (
            {"frame_types": (("DERIVED", "PRIMARY", "T1", "NONE"),)},
            "FrameType (0008,9007) value 1 is DERIVED",
        ),
        (
            {"frame_types": (("ORIGINAL", "PRIMARY", "T1"), ("ORIGINAL", "PRIMARY", "MOCO"))},
            "FrameType (0008,9007) marks it as motion-corrected",
        ),
        ({"sop_class": "1.2.840.10008.5.1.4.1.1.7"}, "Secondary Capture"),
        ({"sop_class": "1.2.840.10008.5.1.4.1.1.7.4"}, "Secondary Capture"),
        ({"sop_class": "1.2.840.10008.5.1.4.1.1.66.4"}, "Segmentation"),
        ({"sop_class": "1.2.840.10008.5.1.4.1.1.66.1"}, "Spatial Registration"),
        ({"sop_class": "1.2.840.10008.5.1.4.1.1.66.5"}, "Surface Segmentation"),
        ({"sop_class": "1.2.840.10008.5.1.4.1.1.66.7"}, "segmentation or registration"),  # later
        ({"sop_class": "1.2.840.10008.5.1.4.1.1.11.1"}, "Presentation State"),
        ({"sop_class": "1.2.840.10008.5.1.4.1.1.11.12"}, "Presentation State"),
        ({"sop_class": "1.2.840.10008.5.1.4.1.1.30"}, "Parametric Map"),
        ({"sop_class": "1.2.840.10008.5.1.4.1.1.67"}, "Real World Value Mapping"),
        ({"sop_class": "1.2.840.10008.5.1.4.1.1.104.3"}, "Encapsulated STL"),
        # Non-image objects a session carries: never derived.
        ({"sop_class": "1.2.840.10008.5.1.4.1.1.66"}, None),  # Raw Data
        ({"sop_class": "1.2.840.10008.5.1.4.1.1.88.22"}, None),  # Enhanced SR
        ({"sop_class": "1.2.840.10008.5.1.4.1.1.88.67"}, None),  # X-Ray Radiation Dose SR
        ({"sop_class": "1.2.840.10008.5.1.4.1.1.88.99"}, None),  # an SR class to come
        ({"sop_class": "1.2.840.10008.5.1.4.1.1.104.1"}, None),  # Encapsulated PDF
        ({"sop_class": "1.2.840.10008.5.1.4.1.1.4.2"}, None),  # MR Spectroscopy
        ({"sop_class": "1.2.840.10008.5.1.4.1.1.9.1.1"}, None),  # 12-lead ECG waveform
        ({"photometric": "PALETTE COLOR"}, "PALETTE COLOR"),
        (
            {"description": "ep2d_diff_ADC"},
            "SeriesDescription (0008,103E) matches the pattern `_ADC$` "
            "(rules.derived_description_patterns)",
        ),
        ({"description": "T1_MPR_cor"}, "_MPR_(cor|sag|tra)$"),
        ({"description": "t2_FAT_SAT"}, None),  # FA anchored: FAT_SAT stays acquired
        ({"image_type": ("ORIGINAL", "PRIMARY", "FAT_SAT")}, None),
        ({"image_type": ("DERIVED", "PRIMARY", "M", "ND", "UNI")}, None),  # MP2RAGE UNI is kept
        ({"image_type": ("DERIVED", "PRIMARY", "M"), "description": "mp2rage_UNI_Images"}, None),
        ({"sop_class": "1.3.12.2.1107.5.9.1"}, None),  # Siemens CSA non-image: protocol, kept
    ],
)
def test_derived_signal(changes: dict[str, object], expected: str | None) -> None:
    signal = derived_signal(header(**changes), DEFAULT_RULES)  # type: ignore[arg-type]
    if expected is None:
        assert signal is None
    else:
        assert signal is not None and expected in signal


def test_a_derived_signal_never_quotes_the_header() -> None:
    """The description is named by the pattern it matches, a vendor's token by xnat-drop's own
    words for it; a token the lab configured is the configuration's own text."""
    described = header(description="Qvorp_private_MPR_sag", image_type=("ORIGINAL", "PRIMARY"))
    signal = derived_signal(described, DEFAULT_RULES)
    assert signal == (
        "SeriesDescription (0008,103E) matches the pattern `_MPR_(cor|sag|tra)$` "
        "(rules.derived_description_patterns)"
    )
    vendor = header(image_type=("ORIGINAL", "PRIMARY", "FLOOPTOK", "MIP_SAG"))
    signal = derived_signal(vendor, DEFAULT_RULES)
    assert signal == ("ImageType (0008,0008) marks it as a maximum intensity projection (MIP)")
    mine = replace(DEFAULT_RULES, extra_derived_markers=("MYRECON",))
    signal = derived_signal(header(image_type=("ORIGINAL", "PRIMARY", "MYRECON")), mine)
    assert signal == (
        "ImageType (0008,0008) holds MYRECON, a marker configured as derived "
        "(rules.extra_derived_markers)"
    )


@pytest.mark.parametrize(
    "sop_class",
    ["1.3.12.2.1107.5.9.1", "1.2.840.10008.5.1.4.1.1.88.22", "1.2.840.10008.5.1.4.1.1.66"],
)
def test_a_non_image_sop_class_wins_over_every_image_marker(sop_class: str) -> None:
    # Markers that each make an image derived: DERIVED\SECONDARY, TENSOR, a description
    # pattern, PALETTE COLOR, FrameType, and a marker the lab configured.
    odd = header(
        sop_class=sop_class,
        image_type=("DERIVED", "SECONDARY", "TENSOR", "MYRECON"),
        frame_types=(("DERIVED", "PRIMARY", "MOCO"),),
        description="PhoenixZIPReport_ADC",
        photometric="PALETTE COLOR",
    )
    assert derived_signal(odd, DEFAULT_RULES) is None
    assert derived_signal(odd, replace(DEFAULT_RULES, extra_derived_markers=("MYRECON",))) is None
    assert derived_signal(replace(odd, sop_class_uid=MR), DEFAULT_RULES) is not None  # control


@pytest.mark.parametrize(
    ("uid", "expected"),
    [
        ("1.2.840.10008.5.1.4.1.1.66", ("non-image", "Raw Data")),  # exact, not the 66. family
        ("1.2.840.10008.5.1.4.1.1.66.4", ("derived", "Segmentation")),
        ("1.2.840.10008.5.1.4.1.1.66.8", ("derived", "segmentation or registration")),
        ("1.2.840.10008.5.1.4.1.1.88.67", ("non-image", "dose report")),  # exact over family
        ("1.2.840.10008.5.1.4.1.1.88.40", ("non-image", "Structured Report")),  # family
        ("1.2.840.10008.5.1.4.1.1.104.1", ("non-image", "Encapsulated PDF")),
        ("1.2.840.10008.5.1.4.1.1.104.4", ("derived", "3D model")),
        ("1.3.12.2.1107.5.9.1", ("non-image", "Siemens CSA Non-Image")),
        ("1.2.840.10008.5.1.4.1.1.4", None),  # MR Image: an image, judged by its markers
        ("1.2.840.10008.5.1.4.1.1.4.1", None),  # Enhanced MR Image
        ("1.2.840.10008.5.1.4.1.1.1.1", None),  # Digital X-Ray, not the 11. family
        ("1.2.840.10008.5.1.4.1.1.88", None),  # a family's stem is no member of it
        ("1.2.840.10008.5.1.4.1.1.88.", None),
        ("", None),
    ],
)
def test_the_sop_class_table(uid: str, expected: tuple[str, str] | None) -> None:
    found = sopclasses.sop_class(uid)
    if expected is None:
        assert found is None
    else:
        assert found is not None and found[0] == expected[0] and expected[1] in found[1], found
    assert sopclasses.is_non_image(uid) == (expected is not None and expected[0] == "non-image")


def test_the_sop_class_table_is_well_formed() -> None:
    uid = re.compile(r"^[12](\.(0|[1-9][0-9]*))+\.?$")
    for key, (kind, words) in sopclasses.SOP_CLASSES.items():
        assert uid.match(key) and len(key.rstrip(".")) <= 64, key
        assert kind in ("non-image", "derived") and words, key


def test_keep_list_never_passes_a_secondary_capture() -> None:
    sc = header(sop_class="1.2.840.10008.5.1.4.1.1.7", image_type=("DERIVED", "PRIMARY", "UNI"))
    assert derived_signal(sc, DEFAULT_RULES) is not None


def test_markers_patterns_and_keep_list_are_configurable() -> None:
    custom = header(image_type=("ORIGINAL", "PRIMARY", "MYRECON"), description="t1_custom_recon")
    assert derived_signal(custom, DEFAULT_RULES) is None
    assert "MYRECON" in (
        derived_signal(custom, replace(DEFAULT_RULES, extra_derived_markers=("MYRECON",))) or ""
    )
    pattern = replace(DEFAULT_RULES, description_patterns=("_recon$",))
    assert "_recon$" in (derived_signal(custom, pattern) or "")
    uni = header(image_type=("DERIVED", "PRIMARY", "UNI"))
    assert derived_signal(uni, replace(DEFAULT_RULES, keep_image_type_tokens=())) is not None


# -- accept and reject, rule by rule ---------------------------------------------------------------


def test_clean_session_is_accepted() -> None:
    verdict = evaluate(session(*CLEAN), DEFAULT_RULES, ROUTE)
    assert verdict.accepted
    assert verdict.violations == ()
    assert [f.path for f in verdict.upload] == ["t1/1.dcm", "t1/2.dcm"]
    assert verdict.target == TARGET


def test_junk_is_ignored_not_a_violation() -> None:
    verdict = evaluate(
        session(*CLEAN, FileFacts(".DS_Store", 6, FileKind.JUNK)), DEFAULT_RULES, ROUTE
    )
    assert verdict.accepted and verdict.ignored == (".DS_Store",)
    assert len(verdict.upload) == 2


@pytest.mark.parametrize(
    ("kind", "rule", "words"),
    [
        (FileKind.NIFTI, "nifti", "converted data"),
        (FileKind.ANALYZE, "nifti", "converted data"),
        (FileKind.CONVERTED, "nifti", "converted data"),
        (FileKind.OTHER, "non-dicom", "not a DICOM file"),
        (FileKind.ARCHIVE, "non-dicom", "unpack it"),
        (FileKind.COMPRESSED_DICOM, "non-dicom", "decompress it (e.g. with 7-Zip or `gunzip`)"),
        (FileKind.EMPTY, "unreadable-dicom", "is empty: the copy was probably interrupted"),
        (FileKind.UNREADABLE_DICOM, "unreadable-dicom", "export this series again"),
        (FileKind.UNSAFE, "unsafe-file", "never follows or opens"),
    ],
)
def test_each_bad_file_kind_rejects_and_names_the_file(
    kind: FileKind, rule: str, words: str
) -> None:
    bad = FileFacts("sub/bad.file", 10, kind, note="why")
    verdict = evaluate(session(*CLEAN, bad), DEFAULT_RULES, ROUTE)
    assert not verdict.accepted
    [violation] = verdict.violations
    assert (violation.rule, violation.policy, violation.files) == (
        rule,
        Policy.REJECT,
        ("sub/bad.file",),
    )
    assert "“sub/bad.file”" in violation.sentence and words in violation.sentence


SR = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
CSA_NON_IMAGE = "1.3.12.2.1107.5.9.1"
PDF = "1.2.840.10008.5.1.4.1.1.104.1"


def test_non_image_objects_go_with_the_session() -> None:
    report = header(sop_class=SR, series="1.2.3.90", number=90, image_type=(), sop="r")
    phoenix = header(
        sop_class=CSA_NON_IMAGE,
        series="1.2.3.99",
        number=99,
        image_type=("DERIVED", "SECONDARY", "TENSOR"),
        description="PhoenixZIPReport",
        sop="p",
    )
    pdf = header(sop_class=PDF, series="1.2.3.92", number=92, image_type=(), sop="d")
    files = [*CLEAN, dicom("sr/1.dcm", report), dicom("99/1.dcm", phoenix), dicom("p.dcm", pdf)]
    assert report.instance_number is None  # an SR without InstanceNumber: never incomplete
    verdict = evaluate(session(*files), DEFAULT_RULES, ROUTE)
    assert verdict.accepted and verdict.violations == ()
    assert [f.path for f in verdict.upload] == [f.path for f in files]


def test_a_non_image_object_is_not_taken_out_with_the_derived_series_it_shares() -> None:
    sc = header(sop_class="1.2.840.10008.5.1.4.1.1.7", series="9", number=9, sop="sc")
    report = header(sop_class=SR, series="9", number=9, image_type=(), sop="sr")
    files = [*CLEAN, dicom("9/sc.dcm", sc), dicom("9/sr.dcm", report)]
    [violation] = evaluate(session(*files), DEFAULT_RULES, ROUTE).violations
    assert violation.rule == "derived-series" and violation.files == ("9/sc.dcm",)
    assert "Delete “9/sc.dcm”" in violation.sentence  # not the folder: the report stays
    verdict = evaluate(session(*files), policies(derived_series=Policy.EXCLUDE), ROUTE)
    assert verdict.accepted and verdict.excluded == ("9/sc.dcm",)
    assert "9/sr.dcm" in [f.path for f in verdict.upload]


def test_an_empty_file_follows_the_unreadable_dicom_policy() -> None:
    empty = FileFacts("t1/3.dcm", 0, FileKind.EMPTY, note="an empty file")
    [violation] = evaluate(session(*CLEAN, empty), DEFAULT_RULES, ROUTE).violations
    assert violation.sentence == (
        "“t1/3.dcm” is empty: the copy was probably interrupted. Copy the series again from the "
        "scanner export, then drop the session again."
    )
    verdict = evaluate(session(*CLEAN, empty), policies(unreadable_dicom=Policy.EXCLUDE), ROUTE)
    assert verdict.accepted and verdict.excluded == ("t1/3.dcm",)


def test_a_gzip_compressed_dicom_file_says_how_to_decompress_it() -> None:
    gz = FileFacts(
        "t1/3.dcm.gz", 500, FileKind.COMPRESSED_DICOM, note="a gzip-compressed DICOM file"
    )
    [violation] = evaluate(session(*CLEAN, gz), DEFAULT_RULES, ROUTE).violations
    assert (violation.rule, violation.detail) == ("non-dicom", "a gzip-compressed DICOM file")
    assert violation.sentence == (
        "“t1/3.dcm.gz” is a gzip-compressed DICOM file, which XNAT cannot read: decompress it "
        "(e.g. with 7-Zip or `gunzip`), delete the compressed file, and drop the session again."
    )


def test_derived_series_decided_per_series_uid_not_number() -> None:
    original = header(series="1.2.3.5", number=5, description="rest_BOLD")
    moco = header(
        series="1.2.3.6",
        number=5,
        description="MoCoSeries",
        image_type=("ORIGINAL", "PRIMARY", "MOCO"),
    )
    files = [
        dicom("bold/1.dcm", replace(original, sop_instance_uid="b1")),
        dicom("bold/2.dcm", replace(original, sop_instance_uid="b2")),
        dicom("moco/1.dcm", replace(moco, sop_instance_uid="m1")),
        dicom("moco/2.dcm", replace(moco, sop_instance_uid="m2")),
    ]
    verdict = evaluate(session(*files), DEFAULT_RULES, ROUTE)
    assert not verdict.accepted
    [violation] = verdict.violations
    assert violation.rule == "derived-series"
    # Named by its files: never by its SeriesNumber, description or UID.
    assert violation.subject == "the series of 2 files under moco/ (first: moco/1.dcm)"
    assert violation.files == ("moco/1.dcm", "moco/2.dcm")
    assert violation.sentence.startswith(
        "The series of 2 files under moco/ (first: moco/1.dcm) was derived by the scanner, not "
        "acquired: ImageType (0008,0008) marks it as motion-corrected by the scanner (MoCo). "
    )
    assert "Delete the folder “moco”" in violation.sentence
    assert "MoCoSeries" not in violation.sentence and "1.2.3.6" not in violation.sentence


def test_derived_files_mixed_into_a_folder_are_named_one_by_one() -> None:
    moco = header(series="9", number=9, image_type=("DERIVED", "SECONDARY"), sop="m")
    files = [dicom("all/1.dcm"), dicom("all/2.dcm", moco)]
    [violation] = evaluate(session(*files), DEFAULT_RULES, ROUTE).violations
    assert "Delete “all/2.dcm”" in violation.sentence


def test_one_derived_file_taints_its_series() -> None:
    ok = header(series="9", number=9, sop="a")
    bad = header(series="9", number=9, image_type=("DERIVED", "SECONDARY"), sop="b")
    verdict = evaluate(session(dicom("1.dcm", ok), dicom("2.dcm", bad)), DEFAULT_RULES, ROUTE)
    assert [v.files for v in verdict.violations] == [("1.dcm", "2.dcm")]


def test_exclude_policy_uploads_the_rest_and_lists_what_was_left_out() -> None:
    moco = header(series="7", number=7, image_type=("ORIGINAL", "PRIMARY", "MOCO"), sop="m")
    files = [
        *CLEAN,
        dicom("moco/1.dcm", moco),
        FileFacts("t1.nii.gz", 10, FileKind.NIFTI),
        FileFacts("notes.pdf", 10, FileKind.OTHER),
        FileFacts("cut.dcm", 10, FileKind.UNREADABLE_DICOM),
    ]
    rules = policies(
        nifti=Policy.EXCLUDE,
        derived_series=Policy.EXCLUDE,
        non_dicom=Policy.EXCLUDE,
        unreadable_dicom=Policy.EXCLUDE,
    )
    verdict = evaluate(session(*files), rules, ROUTE)
    assert verdict.accepted
    assert [f.path for f in verdict.upload] == ["t1/1.dcm", "t1/2.dcm"]
    assert verdict.excluded == ("cut.dcm", "moco/1.dcm", "notes.pdf", "t1.nii.gz")
    assert {v.rule for v in verdict.violations} == {
        "nifti",
        "derived-series",
        "non-dicom",
        "unreadable-dicom",
    }
    assert all(v.policy is Policy.EXCLUDE for v in verdict.violations)


def test_exclude_of_one_rule_does_not_excuse_another() -> None:
    files = [
        *CLEAN,
        FileFacts("t1.nii", 10, FileKind.NIFTI),
        FileFacts("x.pdf", 10, FileKind.OTHER),
    ]
    verdict = evaluate(session(*files), policies(nifti=Policy.EXCLUDE), ROUTE)
    assert not verdict.accepted
    assert [v.rule for v in verdict.rejections] == ["non-dicom"]


def test_unsafe_files_always_reject_even_if_others_are_excluded() -> None:
    rules = replace(
        DEFAULT_RULES, policies=tuple((r, Policy.EXCLUDE) for r, _ in DEFAULT_RULES.policies)
    )
    bad = FileFacts("link", 0, FileKind.UNSAFE, note="a symbolic link")
    verdict = evaluate(session(*CLEAN, bad), rules, ROUTE)
    assert not verdict.accepted
    assert [v.rule for v in verdict.rejections] == ["unsafe-file"]


def test_no_dicom() -> None:
    only_nifti = FileFacts("x.nii", 10, FileKind.NIFTI)
    verdict = evaluate(session(only_nifti), policies(nifti=Policy.EXCLUDE), ROUTE)
    assert not verdict.accepted
    assert [v.rule for v in verdict.rejections] == ["no-dicom"]
    assert "left out" in verdict.rejections[0].sentence
    assert rules_of([FileFacts(".DS_Store", 1, FileKind.JUNK)]) == ["no-dicom"]
    assert "no-dicom" not in rules_of(CLEAN)


def test_mixed_studies() -> None:
    other = [
        dicom(f"b/{i}.dcm", header(sop=f"b{i}", study="9.9.9", series="9.9.9.1", number=3))
        for i in range(2)
    ]
    verdict = evaluate(session(*CLEAN, *other), DEFAULT_RULES, ROUTE)
    [violation] = verdict.violations
    assert violation.rule == "mixed-studies" and violation.policy is Policy.REJECT
    # Each study by its files, never by its UID.
    assert violation.sentence.startswith(
        "The folder holds 2 studies: 2 files under b/, 2 files under t1/ (their "
        "StudyInstanceUID (0020,000D) differs). "
    )
    assert "9.9.9" not in violation.sentence and "1.2.3" not in violation.sentence
    assert rules_of(CLEAN) == []
    [one] = evaluate(session(*CLEAN, other[0]), DEFAULT_RULES, ROUTE).violations
    assert "2 studies: 2 files under t1/, 1 file under b/ (" in one.sentence
    flat = [dicom("1.dcm"), dicom("2.dcm", header(sop="x", study="9.9.9"))]
    [shared] = evaluate(session(*flat), DEFAULT_RULES, ROUTE).violations
    assert "2 studies: 1 file in the session folder (first: 1.dcm), 1 file in the session " in (
        shared.sentence
    )


def test_a_derived_series_from_another_study_is_one_problem_not_two() -> None:
    sc = header(sop_class="1.2.840.10008.5.1.4.1.1.7", study="7.7.7", series="7.7.7.1", sop="sc")
    assert rules_of([*CLEAN, dicom("sc.dcm", sc)]) == ["derived-series"]
    # excluded, the rest is one study and goes
    verdict = evaluate(
        session(*CLEAN, dicom("sc.dcm", sc)), policies(derived_series=Policy.EXCLUDE), ROUTE
    )
    assert verdict.accepted and verdict.excluded == ("sc.dcm",)


def test_duplicate_instances() -> None:
    same = header(sop="1.2.3.4.5")
    identical = [dicom("a/1.dcm", same, digest="aa"), dicom("b/1.dcm", same, digest="aa")]
    verdict = evaluate(session(*identical), DEFAULT_RULES, ROUTE)
    assert verdict.accepted
    assert [f.path for f in verdict.upload] == ["a/1.dcm"] and verdict.duplicates == ("b/1.dcm",)

    different = [dicom("a/1.dcm", same, digest="aa"), dicom("b/1.dcm", same, digest="bb")]
    verdict = evaluate(session(*different), DEFAULT_RULES, ROUTE)
    [violation] = verdict.violations
    assert violation.rule == "duplicate-instance" and violation.files == ("a/1.dcm", "b/1.dcm")
    assert "SOP Instance UID (0008,0018)" in violation.sentence
    assert "1.2.3.4.5" not in violation.sentence and "1.2.3.4.5" not in violation.subject
    assert "“a/1.dcm”, “b/1.dcm”" in violation.sentence
    assert "Remove the wrong copy" in violation.sentence


def test_phi_is_off_by_default_and_checks_configured_tags() -> None:
    named = [
        dicom(f"{i}.dcm", header(sop=f"p{i}", PatientName="DOE^JANE", PatientBirthDate=""))
        for i in range(3)
    ]
    assert rules_of(named) == []
    phi = replace(DEFAULT_RULES, phi=True, phi_tags=("PatientName", "PatientBirthDate"))
    verdict = evaluate(session(*named), phi, ROUTE)
    [violation] = verdict.violations
    assert (violation.rule, violation.subject) == ("phi", "PatientName")
    assert "3 files" in violation.sentence and "DOE" not in violation.sentence  # never repeat PHI


def test_phi_accepts_empty_or_the_subject_label() -> None:
    phi = replace(DEFAULT_RULES, phi=True, phi_tags=("PatientName", "PatientBirthDate"))
    files = [
        dicom("1.dcm", header(sop="1", PatientName="S01", PatientBirthDate="")),
        dicom("2.dcm", header(sop="2", PatientName="S01^", PatientBirthDate="")),
    ]
    assert evaluate(session(*files), phi, ROUTE).accepted


def test_routing_violations_reject() -> None:
    bad = Violation("bad-label", Policy.REJECT, "subject “S 01”", "fix it")
    verdict = evaluate(session(*CLEAN), DEFAULT_RULES, Route(None, (bad,)))
    assert not verdict.accepted and verdict.target is None
    assert verdict.violations[0] is bad


def test_unknown_project_sentence() -> None:
    violation = unknown_project("NOPE")
    assert violation.rule == "unknown-project" and "Unassigned" in violation.sentence
