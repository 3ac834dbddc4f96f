"""The pieces behind issue 11, one by one and without the daemon: size limits and the keep-list
(pure rules), escaped names in reports, the journal filter, sd_notify and the ledger, capped
reports and status, a flood of empty folders that costs one lstat each, and storage errors."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from xnat_drop.adapters.ledger import Ledger
from xnat_drop.adapters.systemd_api import EscapedNames, Notifier
from xnat_drop.core.config import DEFAULT_RULES, parse
from xnat_drop.core.errors import ConfigError, StorageError
from xnat_drop.core.model import (
    DicomHeader,
    FileFacts,
    FileKind,
    Outcome,
    Policy,
    Route,
    Session,
    Target,
    Violation,
)
from xnat_drop.core.report import JSON_LIST_LIMIT, Report, render_json, render_text
from xnat_drop.core.rules import derived_signal, evaluate
from xnat_drop.service import intake as intake_mod

MR = "1.2.840.10008.5.1.4.1.1.4"
TARGET = Target("P1", "S01", "S01_MR1")
LATIN1 = os.fsdecode(b"M\xfcller")


def _dicom(path: str, size: int = 1000, image_type: tuple[str, ...] = ("ORIGINAL",)) -> FileFacts:
    header = DicomHeader(MR, path, "1.2.3", "1.2.3.1", 1, "T1", image_type, "MR")
    return FileFacts(path, size, FileKind.DICOM, header)


# -- rules ---------------------------------------------------------------------------------------


def test_size_limits_are_off_by_default_and_name_the_file_and_the_limit() -> None:
    session = Session("E", ("P1", "S01", "E"), (_dicom("a.dcm", 5 * 10**9), _dicom("b.dcm")))
    assert evaluate(session, DEFAULT_RULES, Route(TARGET)).accepted
    limited = replace(DEFAULT_RULES, max_file_bytes=4 * 2**30, max_session_bytes=10**9)
    verdict = evaluate(session, limited, Route(TARGET))
    assert not verdict.accepted
    [per_file, whole] = [v for v in verdict.violations if v.rule == "size-limit"]
    assert per_file.files == ("a.dcm",) and "5.0 GB" in per_file.sentence
    assert "4.3 GB" in per_file.sentence and "max_file_size" in per_file.sentence
    assert whole.subject == "the whole session" and "max_session_size" in whole.sentence


@pytest.mark.parametrize(
    ("size", "expected"),
    [("4 GiB", 4 * 2**30), ("500 GB", 500 * 10**9), (1234, 1234), ("", 0), ("1.5 MiB", 1572864)],
)
def test_sizes_in_the_configuration(size: object, expected: int) -> None:
    data = {"paths": {"root": "/srv/x"}, "xnat": {"url": "https://x.example.org"}}
    data["rules"] = {"max_file_size": size}  # type: ignore[assignment]
    config = parse(data, base=Path("/"), env={})
    assert config.rules.max_file_bytes == expected


def test_a_size_that_is_not_one_is_a_configuration_error() -> None:
    data = {
        "paths": {"root": "/srv/x"},
        "xnat": {"url": "https://x.example.org"},
        "rules": {"max_session_size": "lots"},
    }
    with pytest.raises(ConfigError, match=r"rules\.max_session_size"):
        parse(data, base=Path("/"), env={})


def test_a_keep_list_entry_exempts_only_its_own_marker() -> None:
    def signal(image_type: tuple[str, ...], description: str = "mp2rage") -> str | None:
        h = DicomHeader(MR, "1", "1.2", "1.2.1", 1, description, image_type, "MR")
        return derived_signal(h, DEFAULT_RULES)

    assert signal(("DERIVED", "PRIMARY", "M", "ND", "UNI")) is None  # MP2RAGE UNI: kept
    moco = signal(("DERIVED", "PRIMARY", "M", "ND", "UNI", "MOCO"))
    assert moco is not None and "(MoCo)" in moco  # kept for UNI, still MoCo
    adc = signal(("ORIGINAL", "PRIMARY", "ADC"), "x_UNI_Images")
    assert adc is not None and "an ADC map" in adc  # a kept description excuses no ADC token
    assert signal(("DERIVED", "PRIMARY"), "x_UNI_Images") is None


# -- names in reports, logs, sd_notify and the ledger ---------------------------------------------


def _report(files: tuple[FileFacts, ...], violations: tuple[Violation, ...]) -> Report:
    session = Session(f"E\n{LATIN1}", ("P1", "S01", f"E\n{LATIN1}"), files)
    return Report(Outcome.FAILED, session, "failed/x", 0.0, None, TARGET, violations)


def test_reports_show_any_name_escaped_and_stay_valid_utf8() -> None:
    bad = FileFacts(f"{LATIN1}\x1b.pdf", 5, FileKind.OTHER, note="a PDF")
    verdict = evaluate(Session("E", ("E",), (bad,)), DEFAULT_RULES, Route(TARGET))
    report = _report((bad,), verdict.violations)
    text = render_text(report)
    assert "M\\xfcller\\x1b.pdf" in text and "E\\nM\\xfcller" in text and "\x1b" not in text
    text.encode("utf-8")
    data = json.loads(render_json(report).encode("utf-8"))
    assert data["session"] == "P1/S01/E\\nM\\xfcller"


def test_the_json_report_lists_at_most_a_thousand_violations_per_rule() -> None:
    many = tuple(FileFacts(f"f{i}.txt", 1, FileKind.OTHER) for i in range(5000))
    violations = tuple(
        Violation("non-dicom", Policy.REJECT, f.path, "a sentence " * 10, (f.path,)) for f in many
    )
    text = render_json(_report(many, violations))
    data = json.loads(text)
    assert len(data["violations"]) == JSON_LIST_LIMIT
    assert data["unlisted_violations"] == {"non-dicom": 5000 - JSON_LIST_LIMIT}
    assert len(text) < 1_000_000


def test_the_log_filter_escapes_names_and_journal_fields() -> None:
    record = logging.LogRecord("x", logging.INFO, "f", 1, "%s: new", (f"a\nb{LATIN1}",), None)
    record.SESSION = f"x\n{LATIN1}"
    assert EscapedNames().filter(record)
    assert record.getMessage() == "a\\nbM\\xfcller: new"
    assert record.SESSION == "x\\nM\\xfcller"  # type: ignore[attr-defined]


def test_sd_notify_status_never_carries_a_second_assignment(tmp_path: Path) -> None:
    sent: list[str] = []
    notifier = Notifier({})
    notifier.enabled = True
    notifier.send = lambda *lines: sent.extend(lines)  # type: ignore[method-assign]
    notifier.status("1 waiting · uploading E\nSTOPPING=1")
    notifier.ready("x\nWATCHDOG_USEC=1")
    assert sent == [
        "STATUS=1 waiting · uploading E\\nSTOPPING=1",
        "READY=1",
        "STATUS=x\\nWATCHDOG_USEC=1",
    ]


def test_the_ledger_keeps_any_name_and_final_path(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    try:
        ledger.claimed("c1", f"P1/S01/{LATIN1}\n", 1.0)
        final = f"/srv/done/P1/S01/{LATIN1}"
        ledger.update("c1", 2.0, final_path=final, state="done", outcome="done", reason="x\ny")
        ledger.spend_attempt("c1", 3.0, f"unexpected error: {LATIN1}")
        entry = ledger.entry("c1")
        assert entry is not None and entry.final_path == final  # byte-exact
        assert entry.relpath == "P1/S01/M\\xfcller\\n" and entry.reason == "x\\ny"
        assert "M\\xfcller" in ledger.events("c1")[0].detail
    finally:
        ledger.close()


def test_a_damaged_ledger_is_a_storage_error_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    path.write_bytes(b"SQLite format 3\0" + b"\xff" * 4096)
    with pytest.raises(StorageError, match="ledger cannot be used"):
        ledger = Ledger(path)  # the damage may show here already, or in probe()
        try:
            ledger.probe()
        finally:
            ledger.close()
    assert issubclass(StorageError, Exception) and not issubclass(StorageError, sqlite3.Error)


# -- a flood of empty folders ----------------------------------------------------------------------


def test_empty_folders_are_looked_at_with_one_lstat_once_they_are_known(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from xnat_drop.adapters.configfile import load

    root = tmp_path / "drop"
    (root / "incoming" / "P1" / "S01").mkdir(parents=True)
    for n in range(300):
        (root / "incoming" / "P1" / "S01" / f"E{n:03d}").mkdir()
    config_file = tmp_path / "c.toml"
    config_file.write_text(
        f'[paths]\nroot = "{root}"\nstate_dir = "{tmp_path}/s"\n'
        '[xnat]\nurl = "https://x.example.org"\n[watch]\nsettle_seconds = 1\n'
    )
    intake = intake_mod.Intake(load(config_file, {}))
    with caplog.at_level(logging.INFO, logger="xnat_drop.service"):
        intake.scan(0.0)
    new = [r for r in caplog.records if "new, waiting" in r.getMessage()]
    assert len(new) == intake_mod.NEW_LOGGED
    assert any("and 280 more new folders" in r.getMessage() for r in caplog.records)
    walked: list[Path] = []
    real_walk = intake_mod.walk
    monkeypatch.setattr(intake_mod, "walk", lambda p: walked.append(p) or real_walk(p))
    intake.scan(10.0)
    assert walked == []  # unchanged and empty: not opened again
    (root / "incoming" / "P1" / "S01" / "E007" / "IM1.dcm").write_bytes(b"x")
    intake.scan(20.0)
    assert [p.name for p in walked] == ["E007"]
    assert len(intake.settling(lambda t: None)) == intake_mod.LISTED
    assert intake.unlisted == 300 - intake_mod.LISTED
    assert intake.settling(lambda t: None)[0]["session"] == "P1/S01/E007"  # not empty: first
