"""routing.route: labels from the folder layout, DICOM, templates and defaults. Pure."""

from __future__ import annotations

from dataclasses import replace

import pytest

from xnat_drop.core.config import DEFAULT_ROUTING, RoutingConfig
from xnat_drop.core.model import DicomHeader, FileFacts, FileKind, Route, Session, Target
from xnat_drop.core.routing import is_valid_label, route, suggest_label, xnat_clean

MR = "1.2.840.10008.5.1.4.1.1.4"


def dicom(path: str, **values: str) -> FileFacts:
    header = DicomHeader(
        MR, path, "1.2.3", "1.2.3.1", 1, "T1", ("ORIGINAL",), "MR", values=tuple(values.items())
    )
    return FileFacts(path, 10, FileKind.DICOM, header)


def session(*files: FileFacts, relpath: tuple[str, ...] = ("x",)) -> Session:
    return Session(relpath[-1], relpath, files)


def routed(relpath: tuple[str, ...], cfg: RoutingConfig, *files: FileFacts) -> Route:
    return route(relpath, session(*files, relpath=relpath), cfg)


def rule_and_subject(result: Route) -> list[tuple[str, str]]:
    return [(v.rule, v.subject) for v in result.violations]


def test_full_layout() -> None:
    result = routed(("P1", "S01", "S01_MR1"), DEFAULT_ROUTING, dicom("a"))
    assert result.target == Target("P1", "S01", "S01_MR1")
    assert result.notes == (
        "project “P1” from the folder name",
        "subject “S01” from the folder name",
        "session “S01_MR1” from the folder name",
    )


def test_layout_without_project_uses_the_configured_default() -> None:
    cfg = RoutingConfig(("subject", "session"), defaults=("LAB", "", ""))
    assert routed(("S01", "S01_MR1"), cfg, dicom("a")).target == Target("LAB", "S01", "S01_MR1")


def test_flat_layout_and_an_ignored_level() -> None:
    flat = RoutingConfig(("session",), defaults=("LAB", "PHANTOM", ""))
    assert routed(("QA_2026_11_21",), flat, dicom("a")).target == Target(
        "LAB", "PHANTOM", "QA_2026_11_21"
    )
    dated = RoutingConfig(("project", "*", "session"), defaults=("", "S9", ""))
    assert routed(("P1", "2026-11-21", "E1"), dated, dicom("a")).target == Target("P1", "S9", "E1")


@pytest.mark.parametrize("field", ["PatientComments", "StudyComments", "AdditionalPatientHistory"])
def test_xnat_comment_convention(field: str) -> None:
    cfg = RoutingConfig(("*",), order=("dicom",))
    files = [
        dicom(f"{i}.dcm", **{field: "scan notes; Project: P1 Subject: S01, Session:S01_MR1"})
        for i in range(3)
    ]
    result = routed(("whatever",), cfg, *files)
    assert result.target == Target("P1", "S01", "S01_MR1")
    assert "DICOM" in result.notes[0] and field in result.notes[0]


def test_xnat_url_in_study_description() -> None:
    cfg = RoutingConfig(("*",), order=("dicom",))
    result = routed(("x",), cfg, dicom("a", StudyDescription="Brain xnat://P1/S01/S01_MR1"))
    assert result.target == Target("P1", "S01", "S01_MR1")


def test_order_decides_which_source_wins() -> None:
    files = [dicom("a", PatientComments="Project: FROMDICOM")]
    layout_first = routed(("P1", "S01", "E1"), DEFAULT_ROUTING, *files)
    assert layout_first.target is not None and layout_first.target.project == "P1"
    dicom_first = RoutingConfig(("project", "subject", "session"), order=("dicom", "layout"))
    result = routed(("P1", "S01", "E1"), dicom_first, *files)
    assert result.target == Target("FROMDICOM", "S01", "E1")


def test_templates_over_dicom_keywords() -> None:
    cfg = RoutingConfig(
        ("project",),
        order=("layout", "template"),
        templates=("", "{PatientID}", "{PatientID}_{StudyDate}"),
    )
    files = [dicom(f"{i}", PatientID="SUBJ7", StudyDate="20261121") for i in range(2)]
    assert routed(("P1",), cfg, *files) == Route(
        Target("P1", "SUBJ7", "SUBJ7_20261121"),
        (),
        (
            "project “P1” from the folder name",
            "subject “SUBJ7” from routing.subject_template “{PatientID}”",
            "session “SUBJ7_20261121” from routing.session_template “{PatientID}_{StudyDate}”",
        ),
    )


def test_empty_template_value_falls_through_to_the_next_source() -> None:
    cfg = RoutingConfig(
        ("project", "session"),
        order=("layout", "template", "default"),
        templates=("", "{PatientID}", ""),
        defaults=("", "NOBODY", ""),
    )
    result = routed(("P1", "E1"), cfg, dicom("a", PatientID=""))
    assert result.target is not None and result.target.subject == "NOBODY"


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ([{"PatientComments": "Subject: A"}, {"PatientComments": "Subject: B"}], "PatientComments"),
        ([{"PatientID": "A"}, {"PatientID": "B"}], "subject_template"),
    ],
)
def test_files_that_disagree_are_a_bad_label(values: list[dict[str, str]], where: str) -> None:
    cfg = RoutingConfig(
        ("project", "session"),
        order=("layout", "dicom", "template"),
        templates=("", "{PatientID}", ""),
    )
    files = [dicom(f"{i}", **v) for i, v in enumerate(values)]
    result = routed(("P1", "E1"), cfg, *files)
    assert result.target is None
    [violation] = result.violations
    assert (violation.rule, violation.subject) == ("bad-label", "subject (ambiguous)")
    # The values were read from the headers: the files are named, the values never.
    assert where in violation.sentence and "gives 2 different values" in violation.sentence
    assert "1 file in the session folder (first: 0); 1 file in the session folder (first: 1)" in (
        violation.sentence
    )
    assert "“A”" not in violation.sentence and "“B”" not in violation.sentence


def test_a_bad_label_from_the_headers_never_quotes_the_value() -> None:
    cfg = RoutingConfig(
        ("project", "session"), order=("layout", "template"), templates=("", "{PatientName}", "")
    )
    result = routed(("P1", "E1"), cfg, dicom("0", PatientName="DOE^JANE"))
    [violation] = result.violations
    assert (violation.rule, violation.subject) == ("bad-label", "subject from the DICOM headers")
    assert violation.sentence.startswith(
        "The subject label that routing.subject_template “{PatientName}” gives cannot be the "
        "XNAT subject label: it contains characters XNAT does not allow."
    )
    assert "DOE" not in violation.sentence and "^" not in violation.sentence
    sanitised = routed(
        ("P1", "E1"), replace(cfg, sanitize_labels=True), dicom("0", PatientName="DOE JANE")
    )
    assert sanitised.target == Target("P1", "DOE_JANE", "E1")
    assert sanitised.notes[1] == (
        "subject “DOE_JANE” from routing.subject_template “{PatientName}” (sanitised as XNAT "
        "would, because routing.sanitize_labels is on)"
    )


@pytest.mark.parametrize(
    ("relpath", "level", "shown"),
    [
        (("P1", "S 01", "E1"), "subject", "a space"),
        (("P1", "S01", "E1.MR"), "session", "“.”"),
        (("P-ü", "S01", "E1"), "project", "“ü”"),
        (("P1", "S01", "E" * 65), "session", "65 characters"),
    ],
)
def test_bad_labels_quote_the_value_and_suggest_a_name(
    relpath: tuple[str, ...], level: str, shown: str
) -> None:
    result = routed(relpath, DEFAULT_ROUTING, dicom("a"))
    assert result.target is None
    [violation] = result.violations
    assert violation.rule == "bad-label" and violation.subject.startswith(level)
    value = relpath[("project", "subject", "session").index(level)]
    assert f"“{value}”" in violation.sentence and shown in violation.sentence
    assert f"for example to “{suggest_label(value)}”" in violation.sentence


def test_bad_configured_default_blames_the_configuration() -> None:
    result = routed(
        ("S01", "E1"),
        RoutingConfig(("subject", "session"), defaults=("my project", "", "")),
        dicom("a"),
    )
    assert "administrator" in result.violations[0].sentence


def test_missing_label_says_what_was_tried() -> None:
    cfg = RoutingConfig(("session",), order=("layout", "dicom", "default"), defaults=("P1", "", ""))
    result = routed(("E1",), cfg, dicom("a"))
    assert rule_and_subject(result) == [("bad-label", "subject (missing)")]
    assert "“Subject:” in the DICOM comments" in result.violations[0].sentence


def test_sanitize_maps_like_xnat_and_reports_it() -> None:
    cfg = RoutingConfig(("project", "subject", "session"), sanitize_labels=True)
    result = routed(("P1", "S 01", "E1.MR 2"), cfg, dicom("a"))
    assert result.target == Target("P1", "S_01", "E1_MR_2")
    assert any("“E1.MR 2” sanitised as XNAT would" in n for n in result.notes)
    # XNAT keeps accents through its cleaning and then refuses them: so do we
    assert rule_and_subject(routed(("P1", "Sü", "E1"), cfg, dicom("a"))) == [
        ("bad-label", "subject “Sü”")
    ]


@pytest.mark.parametrize(
    ("label", "valid"),
    [
        ("S01_MR-1", True),
        ("a", True),
        ("", False),
        ("S 1", False),
        ("x" * 64, True),
        ("x" * 65, False),
    ],
)
def test_label_pattern(label: str, valid: bool) -> None:
    assert is_valid_label(label) is valid


def test_xnat_cleaning_and_suggestions() -> None:
    assert xnat_clean("S1.MR 2/a:b") == "S1_MR_2_a_b"
    assert xnat_clean('S"1!') == 'S"1!'  # survives XNAT's cleaning, fails its validation
    for label in ("S 01", "DOE^JOHN", "ü", "a.b/c", "x" * 80):
        assert is_valid_label(suggest_label(label))
