"""report.py: what a lab member and a script read beside a finished session."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from xnat_drop.core.config import DEFAULT_RULES
from xnat_drop.core.model import (
    DicomHeader,
    FileFacts,
    FileKind,
    Outcome,
    Route,
    Session,
    Target,
    UploadReceipt,
)
from xnat_drop.core.receipt import uploaded_words
from xnat_drop.core.report import Report, render_json, render_text
from xnat_drop.core.rules import evaluate
from xnat_drop.core.text import local, plural

MR = "1.2.840.10008.5.1.4.1.1.4"


def h(series: str, number: int, desc: str, image_type: tuple[str, ...]) -> DicomHeader:
    return DicomHeader(MR, f"{series}.{number}", "1.2.3", series, number, desc, image_type, "MR")


def failed_report() -> Report:
    files = [
        FileFacts(
            f"moco/{i}.dcm",
            10,
            FileKind.DICOM,
            h("1.2.3.7", 7, "MoCoSeries", ("ORIGINAL", "PRIMARY", "MOCO")),
        )
        for i in range(3)
    ]
    files += [
        FileFacts(f"nii/{i}.nii.gz", 10, FileKind.NIFTI, note="NIfTI-1 image") for i in range(25)
    ]
    files.append(
        FileFacts("t1/1.dcm", 10, FileKind.DICOM, h("1.2.3.2", 2, "T1", ("ORIGINAL", "PRIMARY")))
    )
    files.append(FileFacts(".DS_Store", 1, FileKind.JUNK))
    session = Session("E1", ("P1", "S1", "E1"), tuple(files))
    target = Target("P1", "S1", "E1")
    verdict = evaluate(session, DEFAULT_RULES, Route(target))
    return Report(
        outcome=Outcome.FAILED,
        session=session,
        location="failed/P1/S1/E1",
        decided_at=1_795_000_000.0,
        verdict=verdict,
        target=target,
        violations=verdict.violations,
        incoming="incoming/P1/S1/E1",
    )


def test_failed_text_report_names_rules_files_series_and_what_to_do() -> None:
    text = render_text(failed_report())
    assert text.startswith("xnat-drop report: NOT uploaded")
    assert "Why it was not uploaded (26 problems):" in text
    assert "[derived-series] Scanner-derived series" in text
    assert "The series of 3 files under moco/ (first: moco/0.dcm) was derived" in text
    assert "marks it as motion-corrected by the scanner (MoCo)" in text
    assert "MoCoSeries" not in text and "1.2.3" not in text and "Series 7" not in text
    assert "[nifti] Converted data (NIfTI, Analyze, MINC, MGH, NRRD, side-cars): 25 files" in text
    assert "Remove these converted files" in text
    assert "    - nii/0.nii.gz: NIfTI-1 image\n" in text
    assert "... and 5 more (all listed in the .report.json)" in text  # 25 NIfTI files, 20 shown
    assert "move the folder back to incoming/P1/S1/E1 to try again" in " ".join(text.split())
    assert "Ignored:   1 operating-system file" in text
    assert all(len(line) <= 100 for line in text.splitlines())


def test_json_report_lists_everything() -> None:
    data = json.loads(render_json(failed_report()))
    assert data["schema"] == 1 and data["outcome"] == "failed"
    assert data["relpath"] == ["P1", "S1", "E1"]
    assert data["target"] == {"project": "P1", "subject": "S1", "session": "E1"}
    rules = [v["rule"] for v in data["violations"]]
    assert rules.count("nifti") == 25 and rules.count("derived-series") == 1
    assert data["counts"] == {"dicom": 4, "junk": 1, "nifti": 25}
    assert data["uploaded"] == [] and data["ignored"] == [".DS_Store"]
    assert data["decided_at"].endswith("Z")


def test_done_receipt_lists_uris_and_counts() -> None:
    session = Session(
        "E1",
        ("P1", "S1", "E1"),
        (FileFacts("1.dcm", 2_500_000, FileKind.DICOM, h("1", 1, "T1", ())),),
    )
    verdict = evaluate(session, DEFAULT_RULES, Route(Target("P1", "S1", "E1")))
    uri = "/data/prearchive/projects/P1/20261121_101112345/E1"
    receipt = UploadReceipt((uri,), 1, 2_500_300, 1.25, "1.8.10")
    report = Report(
        Outcome.DONE, session, "done/P1/S1/E1", 0.0, verdict, verdict.target, (), receipt
    )
    text = render_text(report)
    assert text.startswith("xnat-drop report: DELIVERED to XNAT")
    assert f"In XNAT:   {uri}" in text
    assert "Uploaded:  1 DICOM file, 2.5 MB in 1.2 s" in text
    data = json.loads(render_json(report))
    assert data["xnat"]["uris"] == [uri] and data["uploaded"] == ["1.dcm"]


@pytest.mark.parametrize(
    ("sent", "packing", "words"),
    [
        (2_000_300, "stored", "2.0 GB in 100.0 s at 20.0 MB/s (stored)"),
        (1_100_000, "auto: 98% compressed, 1.8:1",
         "2.0 GB in 100.0 s, sent as 1.1 GB at 11.0 MB/s (auto: 98% compressed, 1.8:1)"),
        (2_000_300, "", "2.0 GB in 100.0 s"),  # a receipt from before packing was recorded
        (2_000_900, "auto: 2% compressed, 1.0:1",  # the zip's own headers: nothing saved
         "2.0 GB in 100.0 s at 20.0 MB/s (auto: 2% compressed, 1.0:1)"),
    ],
)  # fmt: skip
def test_the_receipt_says_how_the_zip_was_packed_and_how_fast_it_went(
    sent: int, packing: str, words: str
) -> None:
    receipt = UploadReceipt(("/u",), 3, sent * 1000, 100.0, packing=packing,
                            session_bytes=2_000_000_000 if packing else 0)  # fmt: skip
    if not packing:
        receipt = UploadReceipt(("/u",), 3, 2_000_000_000, 100.0)
    assert uploaded_words(receipt) == words
    data = json.loads(render_json(Report(
        Outcome.DONE, Session("E", ("E",), ()), "done/E", 0.0, None, None, (), receipt
    )))  # fmt: skip
    assert data["xnat"]["packing"] == packing


# -- plurals, times, receipts ------------------------------------------------------------------

WINTER = datetime(2026, 12, 3, 16, 2, tzinfo=timezone.utc).timestamp()
SUMMER = datetime(2026, 7, 3, 15, 2, tzinfo=timezone.utc).timestamp()
URL = "https://xnat.example.org"


@pytest.mark.parametrize(
    ("n", "words", "said"),
    [
        (1, ("problem",), "1 problem"),
        (0, ("problem",), "0 problems"),
        (2, ("problem",), "2 problems"),
        (12_000, ("DICOM file",), "12,000 DICOM files"),
        (1, ("identical copy", "identical copies"), "1 identical copy"),
        (3, ("identical copy", "identical copies"), "3 identical copies"),
    ],
)
def test_plural(n: int, words: tuple[str, ...], said: str) -> None:
    assert plural(n, *words) == said


def test_no_report_says_s_in_brackets() -> None:
    one = dataclasses.replace(
        failed_report(), violations=failed_report().violations[:1], zone=ZoneInfo("Europe/Berlin")
    )
    text = render_text(one)
    assert "Why it was not uploaded (1 problem):" in text
    assert "(s)" not in text and "(s)" not in render_text(failed_report())


@pytest.mark.parametrize(
    ("zone", "ts", "said"),
    [
        ("Europe/Berlin", WINTER, "2026-12-03 17:02 CET"),
        ("Europe/Berlin", SUMMER, "2026-07-03 17:02 CEST"),
        ("America/New_York", WINTER, "2026-12-03 11:02 EST"),
        ("America/Sao_Paulo", WINTER, "2026-12-03 13:02 UTC-03:00"),  # the zone's name is "-03"
        ("UTC", WINTER, "2026-12-03 16:02 UTC"),
    ],
)
def test_local_times_name_their_zone(zone: str, ts: float, said: str) -> None:
    assert local(ts, ZoneInfo(zone)) == said


def test_text_reports_use_the_labs_zone_and_json_keeps_utc() -> None:
    report = dataclasses.replace(failed_report(), decided_at=WINTER, zone=ZoneInfo("Europe/Berlin"))
    assert "Decided:   2026-12-03 17:02 CET\n" in render_text(report)
    assert json.loads(render_json(report))["decided_at"] == "2026-12-03T16:02:00.000Z"


def receipt_report(destination: str, uri: str) -> Report:
    session = Session(
        "E1", ("P1", "S1", "E1"), (FileFacts("1.dcm", 10, FileKind.DICOM, h("1", 1, "T1", ())),)
    )
    verdict = evaluate(session, DEFAULT_RULES, Route(Target("P1", "S1", "E1")))
    verified = (("the series of 1 file, 1.dcm", 1, 1),)
    receipt = UploadReceipt((uri,), 1, 10, 0.5, "1.8.10", verified, destination)
    return Report(
        Outcome.DONE,
        session,
        "done/P1/S1/E1",
        WINTER,
        verdict,
        verdict.target,
        (),
        receipt,
        xnat_url=URL + "/",
    )


def test_a_prearchive_receipt_links_the_session_and_says_who_must_archive_it() -> None:
    uri = "/data/prearchive/projects/P1/20261203_170200123/E1"
    text = render_text(receipt_report("prearchive", uri))
    assert f"In XNAT:   {URL}{uri}\n" in text
    assert (
        "It is in XNAT's prearchive, not yet archived: someone with the project's owner or "
        f"member role must archive it at {URL}/app/template/XDATScreen_prearchives.vm"
    ) in " ".join(text.split())


def test_an_archive_receipt_links_the_sessions_page_and_asks_for_nothing() -> None:
    uri = "/data/archive/projects/P1/subjects/S1/experiments/E1"
    text = render_text(receipt_report("archive", uri))
    assert f"In XNAT:   {URL}{uri}?format=html\n" in text
    assert "not yet archived" not in text
    assert "Verified in the archive: XNAT holds the 1 file of 1 series as sent\n" in text
    assert not re.search(r"\(s\)", text)
    assert json.loads(render_json(receipt_report("archive", uri)))["xnat"]["verified"] == [
        {"series": "the series of 1 file, 1.dcm", "sent": 1, "held": 1}
    ]


def test_a_receipt_names_series_by_their_files_never_by_scan_id() -> None:
    """XNAT's scan IDs are SeriesNumbers: the receipt names each series by its files, and
    those XNAT holds more of (a session that existed before) are listed."""
    verified = (
        ("the series of 3 files under t1/ (first: t1/1.dcm)", 3, 3),
        ("the series of 2 files under dwi/ (first: dwi/1.dcm)", 2, 4),
    )
    report = receipt_report("archive", "/data/archive/projects/P1/subjects/S1/experiments/E1")
    receipt = dataclasses.replace(report.receipt, verified=verified)  # type: ignore[type-var]
    text = " ".join(render_text(dataclasses.replace(report, receipt=receipt)).split())
    assert (
        "Verified in the archive: XNAT holds the 5 files of 2 series as sent, and more of some "
        "(the session existed before): the series of 2 files under dwi/ (first: dwi/1.dcm): 4 "
        "in XNAT"
    ) in text
