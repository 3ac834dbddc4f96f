"""core.depth: sessions dropped at the wrong folder level are caught, never guessed. Pure."""

from __future__ import annotations

import pytest

from xnat_drop.core.config import DEFAULT_ROUTING, RoutingConfig
from xnat_drop.core.depth import (
    Place,
    Sibling,
    beside,
    label_check,
    looks_like_date,
    looks_like_series,
    series_key,
    shape_of,
    study_key,
)
from xnat_drop.core.model import DicomHeader, FileFacts, FileKind, Session, Violation
from xnat_drop.core.routing import route

MR = "1.2.840.10008.5.1.4.1.1.4"
STUDY = "1.2.826.0.1.3680043.8.498.111"
OTHER_STUDY = "1.2.826.0.1.3680043.8.498.222"
LAYOUT = ("project", "subject", "session")


def dicom(path: str, study: str, series: str, **values: str) -> FileFacts:
    header = DicomHeader(
        MR,
        f"{series}.{path}",
        study,
        series,
        1,
        "t1",
        ("ORIGINAL",),
        "MR",
        values=tuple(values.items()),
    )
    return FileFacts(path, 10, FileKind.DICOM, header)


def series_folder(relpath: tuple[str, ...], study: str, series: str) -> Session:
    """A "session" that is one series folder, with two images."""
    files = (dicom("IM0001.dcm", study, series), dicom("IM0002.dcm", study, series))
    return Session(relpath[-1], relpath, files)


def known(
    name: str, study: str, series: str, place: Place = "incoming", at: float = 0.0
) -> Sibling:
    """A sibling as the service finds it: by the keys of its first header or the ledger's."""
    return Sibling(name, place, frozenset({study_key(study)}), frozenset({series_key(series)}), at)


# -- one level too high: series side by side ---------------------------------------------------

PARTS = {"01_localizer": "1.2.3.1", "02_t1": "1.2.3.2", "03_rest": "1.2.3.3"}


@pytest.mark.parametrize("name", list(PARTS))
def test_each_series_folder_of_one_study_is_rejected_with_the_others(name: str) -> None:
    session = series_folder(("P1", "SUBJ15_MR1", name), STUDY, PARTS[name])
    siblings = [known(n, STUDY, s) for n, s in PARTS.items() if n != name]
    violation = beside(session, shape_of(session), siblings, LAYOUT)
    assert violation is not None and violation.rule == "wrong-depth"
    # The same sentence from every part's side: the rule sees the whole group, in any order.
    assert violation.sentence.startswith(
        "The folders “01_localizer”, “02_t1” and “03_rest” in incoming/P1/SUBJ15_MR1/ hold "
        "different series of one scanning session"
    )
    assert "probably dropped one level too high" in violation.sentence
    assert "e.g. incoming/P1/<subject>/SUBJ15_MR1/," in violation.sentence
    assert STUDY not in violation.sentence and PARTS[name] not in violation.sentence


def test_the_ledgers_filed_siblings_count_and_a_delivered_one_is_named() -> None:
    session = series_folder(("P1", "SUBJ15_MR1", "02_t1"), STUDY, "1.2.3.2")
    siblings = [
        known("01_localizer", STUDY, "1.2.3.1", "done", at=1_700_000_000.0),
        known("03_rest", STUDY, "1.2.3.3", "failed", at=1_700_000_100.0),
    ]
    violation = beside(session, shape_of(session), siblings, LAYOUT)
    assert violation is not None
    assert "“01_localizer” was already delivered to XNAT (2023-11-14" in violation.sentence
    assert "ask the data manager to delete it there" in violation.sentence


def test_one_sibling_known_twice_is_merged_by_name() -> None:
    session = series_folder(("P1", "S", "02_t1"), STUDY, "1.2.3.2")
    twice = [known("01_loc", STUDY, "1.2.3.1", "failed", 5.0), known("01_loc", STUDY, "1.2.3.1")]
    violation = beside(session, shape_of(session), twice, LAYOUT)
    assert violation is not None and violation.detail.startswith("1 other folder beside it")


def test_sessions_of_different_studies_side_by_side_are_not_touched() -> None:
    session = series_folder(("P1", "SUBJ15", "SUBJ15_MR2"), STUDY, "1.2.3.1")
    siblings = [known("SUBJ15_MR1", OTHER_STUDY, "1.2.9.1", "done", 1.0)]
    assert beside(session, shape_of(session), siblings, LAYOUT) is None


def test_a_copy_of_the_same_series_under_another_name_is_not_a_part() -> None:
    # A session renamed and dropped again after a failure shares its series: a re-drop.
    session = series_folder(("P1", "SUBJ15", "SUBJ15_MR1"), STUDY, "1.2.3.1")
    renamed = [known("SUBJ15 MR1", STUDY, "1.2.3.1", "failed", 1.0)]
    assert beside(session, shape_of(session), renamed, LAYOUT) is None


def test_its_own_earlier_drop_is_not_a_sibling() -> None:
    session = series_folder(("P1", "SUBJ15", "SUBJ15_MR1"), STUDY, "1.2.3.1")
    earlier = [known("SUBJ15_MR1", STUDY, "1.2.3.9", "done", 1.0)]  # more files, same folder
    assert beside(session, shape_of(session), earlier, LAYOUT) is None


def test_series_dropped_straight_into_incoming_name_the_missing_session_folder() -> None:
    session = series_folder(("01_localizer",), STUDY, "1.2.3.1")
    violation = beside(session, shape_of(session), [known("02_t1", STUDY, "1.2.3.2")], ("session",))
    assert violation is not None
    assert "in incoming/ hold" in violation.sentence
    assert "e.g. incoming/<session>/," in violation.sentence


def test_a_session_without_dicom_has_no_siblings() -> None:
    session = Session("E1", ("P1", "S1", "E1"), (FileFacts("a.txt", 3, FileKind.OTHER),))
    assert beside(session, shape_of(session), [known("E2", STUDY, "1")], LAYOUT) is None


def test_keys_are_hashes_of_the_uids_not_the_uids() -> None:
    assert study_key(STUDY) != series_key(STUDY)  # a study and a series never compare equal
    assert STUDY not in study_key(STUDY) and len(study_key(STUDY)) == 32
    assert study_key(STUDY) == study_key(STUDY)


# -- one level too deep: labels that look like a date or a series ------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "20240131",
        "2024-01-31",
        "2024_01_31",
        "2024.01.31",
        "31.01.2024",
        "01-31-2024",
        "20240131_093000",
        "2024-01-31T09-30",
        "20240131 0930",
    ],
)
def test_dates_as_export_tools_write_them(name: str) -> None:
    assert looks_like_date(name)


@pytest.mark.parametrize(
    "name", ["SUBJ15_MR1", "20241331", "2024-01_31", "12345678", "S01", "MR_20240131", "baseline"]
)
def test_labels_that_are_not_dates(name: str) -> None:
    assert not looks_like_date(name)


@pytest.mark.parametrize(
    "name",
    [
        "01_localizer",  # number, then description (dcm4che, many USB exports)
        "0005_t1_mprage",
        "3-T1w",  # XNAT's own scans/<id>-<description>
        "5 - t1_mprage_sag",  # Horos, OsiriX
        "Series_005",
        "SER00001",
        "SE000001",  # DICOMDIR exports (GE, Philips, PACS)
        "S0001",
        "t1_mprage_sag",  # Siemens protocol names
        "LOCALIZER_0001",  # syngo: description and series number
        "T1_MPRAGE_SAG_0002",
        "AAHead_Scout_32ch",
        "Ax_T2_FSE",  # GE
        "sT1W_3D_TFE",  # Philips
    ],
)
def test_series_folder_names_from_common_exports(name: str) -> None:
    assert looks_like_series(name)


@pytest.mark.parametrize(
    "name", ["SUBJ15_MR1", "S01_MR1", "S01", "S01_rest", "MR1", "baseline", "SUBJ15_2024", "V2"]
)
def test_session_labels_that_are_not_series_folders(name: str) -> None:
    assert not looks_like_series(name)


DICOM_TOO = RoutingConfig(LAYOUT, order=("layout", "dicom"))
COMMENT = {"PatientComments": "Project: P1 Subject: SUBJ15 Session: SUBJ15_MR1"}


def checked(
    relpath: tuple[str, ...], cfg: RoutingConfig, **values: str
) -> tuple[Violation | None, str]:
    files = tuple(dicom(f"{i}.dcm", STUDY, "1.2.3.1", **values) for i in range(2))
    session = Session(relpath[-1], relpath, files)
    return label_check(session, route(relpath, session, cfg), cfg)


@pytest.mark.parametrize(("folder", "what"), [("20240131", "a date"), ("01_localizer", "a series")])
def test_a_date_or_series_label_that_dicom_contradicts_is_rejected(folder: str, what: str) -> None:
    violation, note = checked(("P1", "SUBJ15_MR1", folder), DICOM_TOO, **COMMENT)
    assert violation is not None and violation.rule == "wrong-depth" and note == ""
    assert violation.sentence.startswith(f"The folder “{folder}” looks like {what} folder inside")
    assert "probably dropped one level too deep" in violation.sentence
    assert f"e.g. incoming/<project>/<subject>/<session>/{folder}/" in violation.sentence
    assert "SUBJ15_MR1" not in violation.sentence.replace("incoming/P1/SUBJ15_MR1", "")
    assert "SUBJ15_MR1" not in violation.detail  # the header's label is never quoted


def test_a_template_that_disagrees_is_named_by_its_setting() -> None:
    cfg = RoutingConfig(LAYOUT, order=("layout", "template"), templates=("", "", "{PatientID}_MR"))
    violation, _ = checked(("P1", "SUBJ15", "2024-01-31"), cfg, PatientID="SUBJ15")
    assert violation is not None
    assert "another session label comes from routing.session_template “{PatientID}_MR”." in (
        violation.sentence
    )


def test_a_date_label_alone_is_only_a_note() -> None:
    violation, note = checked(("P1", "SUBJ15", "20240131"), DEFAULT_ROUTING)
    assert violation is None
    assert note == (
        "session label “20240131” looks like a date: check that it is the session folder, "
        "not a folder inside it (layout project/subject/session)"
    )


def test_a_date_label_the_dicom_files_confirm_is_fine() -> None:
    assert checked(("P1", "S", "20240131"), DICOM_TOO, PatientComments="Session: 20240131") == (
        None,
        "",
    )


def test_a_plain_label_that_dicom_contradicts_is_left_to_routing() -> None:
    assert checked(("P1", "SUBJ15", "SUBJ15_V2"), DICOM_TOO, **COMMENT) == (None, "")


def test_a_label_taken_from_dicom_is_not_the_folders() -> None:
    cfg = RoutingConfig(LAYOUT, order=("dicom", "layout"))
    assert checked(("P1", "SUBJ15_MR1", "20240131"), cfg, **COMMENT) == (None, "")
