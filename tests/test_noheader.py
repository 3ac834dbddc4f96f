"""core/noheader.py and its users, without disk: how a series and a study are named by their
files, and how text from outside loses what may be a header value (issue 16)."""

from __future__ import annotations

import io
import logging

import pytest

from xnat_drop.adapters.dicom.pydicomheader import _pydicom_says
from xnat_drop.adapters.xnat.answers import error_message, first_line
from xnat_drop.commands.logs import ScrubbedTracebacks
from xnat_drop.core.counting import count_problem, expected, verified, without_dropped
from xnat_drop.core.model import DicomHeader, FileFacts, FileKind
from xnat_drop.core.noheader import Files, scrubbed, scrubbed_traceback, series_words, studies_words

MR = "1.2.840.10008.5.1.4.1.1.4"
UID = "1.2.826.0.1.3680043.8.498.77777.1.47"


@pytest.mark.parametrize(
    ("paths", "words"),
    [
        (
            ["T1_MPR_cor/IM0002.dcm", "T1_MPR_cor/IM0001.dcm"],
            "the series of 2 files under T1_MPR_cor/ (first: T1_MPR_cor/IM0001.dcm)",
        ),
        (["IM1.dcm", "IM2.dcm"], "the series of 2 files in the session folder (first: IM1.dcm)"),
        (["a/b/1.dcm", "a/c/2.dcm"], "the series of 2 files under a/ (first: a/b/1.dcm)"),
        (["x.dcm", "a/y.dcm"], "the series of 2 files in the session folder (first: a/y.dcm)"),
        (["dwi/1.dcm"], "the series of 1 file, dwi/1.dcm"),
        (["d\nw/1", "d\nw/2"], "the series of 2 files under d\\nw/ (first: d\\nw/1)"),  # escaped
    ],
)
def test_a_series_is_named_by_its_files(paths: list[str], words: str) -> None:
    assert series_words(paths) == words


def test_studies_are_named_by_their_files_largest_first() -> None:
    assert studies_words([["B/1", "B/2"], ["A/1", "A/2", "A/3"]]) == (
        "2 studies: 3 files under A/, 2 files under B/"
    )
    # In one folder, each study also names its first file.
    assert studies_words([["2.dcm"], ["1.dcm", "3.dcm"], ["x/1"]]) == (
        "3 studies: 2 files in the session folder (first: 1.dcm), 1 file in the session folder "
        "(first: 2.dcm), 1 file under x/"
    )
    assert Files.of(["x/1", "x/2"]).listed == "2 files under x/ (first: x/1)"


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        (f"Cannot take study {UID}, instance {UID}.", "Cannot take study <UID>, instance <UID>."),
        ("2.25.329800735698586629295641978511506172918 exists", "<UID> exists"),
        ("1.2.840.10008.5.1.4.1.1.4", "<UID>"),
        ("XNAT 1.8.10 at 127.0.0.1:8080, 10.0.0.12", "XNAT 1.8.10 at 127.0.0.1:8080, 10.0.0.12"),
        ("int() with base 10: 'Zyxwq'", "int() with base 10: <value>"),
        ("received b'DOE^JANE' with length 8", "received <value> with length 8"),
        ("can't read it, it's “Doe” or \"Roe\"", "can't read it, it's <value> or <value>"),
        ("object IM1.dcm contains no SOP Class UID", "object IM1.dcm contains no SOP Class UID"),
    ],
)  # fmt: skip
def test_foreign_text_loses_uids_and_quoted_values(text: str, clean: str) -> None:
    assert scrubbed(text) == clean


def test_a_traceback_keeps_its_frames_and_loses_the_values() -> None:
    text = (
        "Traceback (most recent call last):\n"
        '  File "/opt/xnat-drop/x.py", line 3, in f\n'
        "    raise KeyError(uid)\n"
        f"KeyError: '{UID}'"
    )
    assert scrubbed_traceback(text) == (
        "Traceback (most recent call last):\n"
        '  File "/opt/xnat-drop/x.py", line 3, in f\n'
        "    raise KeyError(uid)\n"
        "KeyError: <value>"
    )


def test_xnats_words_and_request_errors_lose_uids() -> None:
    page = f"<html><body><h3>Session with UID {UID} exists for 'Zyxwq^Leak'</h3></body></html>"
    assert error_message(page) == "Session with UID <UID> exists for <value>"
    failed = ConnectionError(
        "HTTPConnectionPool(host='127.0.0.1', port=8080): Max retries exceeded with url: "
        f"/data/projects/P1/experiments?format=json&UID={UID} (Caused by X)"
    )
    said = first_line(failed)
    assert UID not in said and "url: /data/projects/P1/experiments (Caused by X)" in said


def test_pydicoms_words_lose_what_it_quotes() -> None:
    said = _pydicom_says(ValueError("Expected even length, received b'Zyxwq^Leakcheck'"))
    assert said == "pydicom says: Expected even length, received <value>"


def test_a_logged_traceback_loses_the_values() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(ScrubbedTracebacks())
    logger = logging.getLogger("test_noheader")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise KeyError(UID)
        except KeyError:
            logger.exception("unexpected error")
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    assert "unexpected error\nTraceback (most recent call last):" in text
    assert "KeyError: <value>" in text and UID not in text


def dicom(path: str, number: int | None, series: str) -> FileFacts:
    header = DicomHeader(MR, f"{series}.{path}", UID, series, number, "Qvorp", (), "MR")
    return FileFacts(path, 10, FileKind.DICOM, header)


def test_counts_name_series_by_their_files_never_by_scan_id() -> None:
    """XNAT's scan IDs are SeriesNumbers: matched by them, never shown."""
    sent = expected(
        (
            dicom("t1/1.dcm", 9137451, "1.2.3.1"),
            dicom("t1/2.dcm", 9137451, "1.2.3.1"),
            dicom("loc/1.dcm", 9137452, "1.2.3.2"),
        )
    )
    problem = count_problem(sent, {"9137451": 2}, merged=False)
    assert problem == (
        "sent 3 files in 2 series; XNAT holds 2 in 1 scan: the series of 1 file, loc/1.dcm is "
        "missing"
    )
    extra = count_problem(sent, {"9137451": 2, "9137452": 1, "77": 5}, merged=False)
    assert extra.endswith(": XNAT also holds 1 scan that was not sent")
    assert verified(sent, {"9137451": 2, "9137452": 1, "77": 5}) == (
        (
            ("the series of 2 files under t1/ (first: t1/1.dcm)", 2, 2),
            ("the series of 1 file, loc/1.dcm", 1, 1),
        ),
        1,
    )
    kept, gone = without_dropped(sent, {"9137451": 2}, frozenset({"1.2.3.2"}))
    assert gone == ("the series of 1 file, loc/1.dcm",) and kept.files == 2
    for text in (problem, extra, *gone):
        assert "913745" not in text and "Qvorp" not in text and UID not in text


def test_without_distinct_numbers_series_are_matched_by_count() -> None:
    sent = expected(
        (
            dicom("a/1.dcm", None, "1.2.3.1"),
            dicom("a/2.dcm", None, "1.2.3.1"),
            dicom("b/1.dcm", None, "1.2.3.2"),
        )
    )
    rows, others = verified(sent, {"1": 1, "2": 2})
    assert others == 0 and rows == (
        ("the series of 2 files under a/ (first: a/1.dcm)", 2, 2),
        ("the series of 1 file, b/1.dcm", 1, 1),
    )
