"""The metrics: a sample rendered by prometheus_client and parsed back by its own parser, the
health verdict, the ledger's running totals (kept with each row, counted again for an older
ledger), and the node_exporter textfile."""

from __future__ import annotations

import os
import sqlite3
import stat
from datetime import timezone
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from xnat_drop.adapters import prometheus
from xnat_drop.adapters.ledger import Ledger
from xnat_drop.adapters.ledger.rows import SCHEMA
from xnat_drop.core.metrics import (
    DURATION_BUCKETS,
    SESSION_STATES,
    Totals,
    bucket_key,
    sample,
    unhealthy,
)

NOW = 1_800_000_000.0


def parsed(text: bytes) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample by its name and labels, as prometheus_client's parser reads the text."""
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            found.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return found


def types(text: bytes) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text.decode())}


def a_report(**snapshot: Any) -> dict[str, Any]:
    snap = {
        "version": "0.1.0",
        "xnat": {"state": "ok", "last_answer": "2027-01-15T08:00:00Z"},
        "sessions": dict.fromkeys(SESSION_STATES, 0) | {"settling": 2, "waiting_xnat": 1},
        "oldest_waiting_since": "2027-01-15T07:00:00Z",
        "storage": None,
    }
    return {"running": True, "snapshot": snap | snapshot, "last_done": [], "last_failed": []}


TOTALS = Totals(
    delivered=(("P1", 3), ("P2", 1)),
    failed=(("", 2), ("P1", 1)),
    failed_by_rule=(("nifti", 2), ("unknown-project", 1)),
    sent_bytes=123_456_789,
    durations=(0, 2, 1, *([0] * (len(DURATION_BUCKETS) - 3)), 1),
    duration_sum=20_000.5,
    last_delivery=NOW - 60,
)


def test_a_sample_reads_back_through_prometheus_clients_parser() -> None:
    report = a_report()
    seen = sample(report, TOTALS, now=NOW)
    text = prometheus.render(seen)
    values = parsed(text)

    assert values["xnat_drop_sessions"] == {
        (("state", s),): {"settling": 2.0, "waiting_xnat": 1.0}.get(s, 0.0) for s in SESSION_STATES
    }
    assert values["xnat_drop_delivered_total"] == {(("project", "P1"),): 3, (("project", "P2"),): 1}
    assert values["xnat_drop_failed_total"] == {(("project", ""),): 2, (("project", "P1"),): 1}
    assert values["xnat_drop_failed_by_rule_total"] == {
        (("rule", "nifti"),): 2,
        (("rule", "unknown-project"),): 1,
    }
    assert values["xnat_drop_sent_bytes_total"] == {(): 123_456_789}
    buckets = values["xnat_drop_upload_duration_seconds_bucket"]
    assert buckets[(("le", "1.0"),)] == 0
    assert buckets[(("le", "5.0"),)] == 2
    assert buckets[(("le", "15.0"),)] == 3  # cumulative
    assert buckets[(("le", "14400.0"),)] == 3
    assert buckets[(("le", "+Inf"),)] == 4
    assert values["xnat_drop_upload_duration_seconds_count"] == {(): 4}
    assert values["xnat_drop_upload_duration_seconds_sum"] == {(): 20_000.5}
    assert values["xnat_drop_last_delivery_timestamp_seconds"] == {(): NOW - 60}
    assert values["xnat_drop_xnat_up"] == {(): 1}
    assert values["xnat_drop_credentials_ok"] == {(): 1}
    assert values["xnat_drop_info"] == {(("version", "0.1.0"),): 1}
    # Waiting since 07:00:00 UTC; NOW is 08:00:00 UTC.
    assert values["xnat_drop_oldest_waiting_age_seconds"] == {(): 3600}
    assert types(text) == {
        "xnat_drop_sessions": "gauge",
        "xnat_drop_delivered": "counter",
        "xnat_drop_failed": "counter",
        "xnat_drop_failed_by_rule": "counter",
        "xnat_drop_sent_bytes": "counter",
        "xnat_drop_upload_duration_seconds": "histogram",
        "xnat_drop_oldest_waiting_age_seconds": "gauge",
        "xnat_drop_last_delivery_timestamp_seconds": "gauge",
        "xnat_drop_xnat_up": "gauge",
        "xnat_drop_credentials_ok": "gauge",
        "xnat_drop_info": "gauge",  # the text format has no info type
    }
    assert b"# HELP xnat_drop_sent_bytes_total Bytes sent to XNAT" in text


def test_the_oldest_waiting_age_is_counted_from_its_first_sighting() -> None:
    since = "2027-01-15T07:00:00Z"
    from xnat_drop.core.text import from_iso

    start = from_iso(since)
    assert start is not None
    assert sample(a_report(), Totals(), start + 90).oldest_waiting_age == 90
    nothing = a_report(oldest_waiting_since=None)
    assert sample(nothing, Totals(), start + 90).oldest_waiting_age == 0


def test_a_fresh_daemon_has_no_last_delivery_and_zero_counts() -> None:
    values = parsed(prometheus.render(sample(a_report(), Totals(), NOW)))
    assert "xnat_drop_last_delivery_timestamp_seconds" not in values
    assert values["xnat_drop_upload_duration_seconds_count"] == {(): 0}
    assert values["xnat_drop_sent_bytes_total"] == {(): 0}
    assert "xnat_drop_delivered_total" not in values  # no project yet: no series


@pytest.mark.parametrize(
    ("xnat", "up", "credentials"),
    [
        ({"state": "ok", "last_answer": "2027-01-15T08:00:00Z"}, True, True),
        ({"state": "not yet contacted"}, False, False),
        ({"state": "unreachable", "last_answer": "2027-01-15T08:00:00Z"}, False, True),
        ({"state": "unreachable"}, False, False),
        ({"state": "credentials refused", "last_answer": "2027-01-15T08:00:00Z"}, False, False),
    ],
)
def test_xnat_up_and_credentials_ok(xnat: dict[str, str], up: bool, credentials: bool) -> None:
    seen = sample(a_report(xnat=xnat), Totals(), NOW)
    assert (seen.xnat_up, seen.credentials_ok) == (up, credentials)


@pytest.mark.parametrize(
    ("snapshot", "reason"),
    [
        ({"xnat": {"state": "ok"}}, None),
        ({"xnat": {"state": "not yet contacted"}}, "XNAT not yet contacted"),
        (
            {
                "xnat": {
                    "state": "unreachable",
                    "since": "2027-01-15T10:02:00Z",
                    "detail": "connection refused",
                }
            },
            "XNAT unreachable since 2027-01-15 10:02 UTC: connection refused",
        ),
        (
            {"xnat": {"state": "credentials refused", "detail": "XNAT refused 'alice' (401)"}},
            "XNAT refused the credentials: XNAT refused 'alice' (401)",
        ),
        (
            {"xnat": {"state": "ok"}, "storage": {"state": "paused", "detail": "disk full"}},
            "work paused: disk full",
        ),
    ],
)
def test_health_says_why_in_one_sentence(snapshot: dict[str, Any], reason: str | None) -> None:
    assert unhealthy(a_report(**snapshot), timezone.utc) == reason


def test_no_report_is_not_healthy() -> None:
    assert unhealthy({"snapshot": None}, timezone.utc) == "the daemon has not reported yet"


def test_durations_fall_in_the_bucket_of_their_upper_bound() -> None:
    assert [bucket_key(s) for s in (0.2, 1, 1.01, 59, 60, 14400, 14400.1)] == [
        "1",
        "1",
        "5",
        "60",
        "60",
        "14400",
        "+Inf",
    ]


# --- the ledger's totals -----------------------------------------------------------------


def counted_by_sql(path: Path) -> dict[str, Any]:
    """The same totals, straight from the sessions table: what the counters must equal."""
    db = sqlite3.connect(path)
    try:

        def by(outcome: str) -> dict[str, int]:
            rows = db.execute(
                "SELECT project, COUNT(*) FROM sessions WHERE outcome = ? GROUP BY project",
                (outcome,),
            )
            return {str(p): int(n) for p, n in rows}

        rules: dict[str, int] = {}
        for (reason,) in db.execute("SELECT reason FROM sessions WHERE outcome = 'failed'"):
            for rule in {r.strip() for r in reason.split(",")} - {""}:
                rules[rule] = rules.get(rule, 0) + 1
        sent, seconds, timed = db.execute(
            "SELECT COALESCE(SUM(bytes_sent), 0), COALESCE(SUM(upload_seconds), 0), "
            "COUNT(upload_seconds) FROM sessions WHERE outcome = 'done'"
        ).fetchone()
        return {
            "delivered": by("done"),
            "failed": by("failed"),
            "rules": rules,
            "sent": sent,
            "seconds": seconds,
            "timed": timed,
        }
    finally:
        db.close()


def as_counted(totals: Totals) -> dict[str, Any]:
    return {
        "delivered": dict(totals.delivered),
        "failed": dict(totals.failed),
        "rules": dict(totals.failed_by_rule),
        "sent": totals.sent_bytes,
        "seconds": totals.duration_sum,
        "timed": totals.duration_count,
    }


def file_one(
    ledger: Ledger, claim: str, outcome: str, project: str = "", at: float = 100.0, **fields: Any
) -> None:
    ledger.claimed(claim, f"{project or 'X'}/S/{claim}", at)
    if project:
        ledger.update(claim, at, state="checked", project=project)
    ledger.update(claim, at + 1, state=outcome, outcome=outcome, **fields)


def test_the_totals_follow_every_filed_row_and_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(path)
    file_one(ledger, "a", "done", "P1", bytes_sent=1000, upload_seconds=3.5)
    file_one(ledger, "b", "done", "P1", bytes_sent=500, upload_seconds=7000.0)
    file_one(ledger, "c", "done", "P2", at=300.0, bytes_sent=20, upload_seconds=0.5)
    file_one(ledger, "d", "failed", reason="nifti, derived-series")
    file_one(ledger, "e", "failed", "P1", reason="count-mismatch")
    ledger.claimed("f", "P1/S/f", 400.0)  # still claimed: not counted
    # Filing again after a crash records the same outcome twice: counted once.
    ledger.update("a", 500.0, state="done", outcome="done", bytes_sent=1000, upload_seconds=3.5)
    # Unrelated updates of a filed row change nothing.
    ledger.update("d", 501.0, final_path="/elsewhere")
    totals = ledger.totals()
    assert as_counted(totals) == counted_by_sql(path)
    assert dict(totals.delivered) == {"P1": 2, "P2": 1}
    assert dict(totals.failed) == {"": 1, "P1": 1}
    assert dict(totals.failed_by_rule) == {"nifti": 1, "derived-series": 1, "count-mismatch": 1}
    assert totals.sent_bytes == 1520 and totals.duration_count == 3
    assert totals.durations[0] == 1  # 0.5 s: le 1
    assert totals.durations[1] == 1  # 3.5 s: le 5
    assert totals.durations[DURATION_BUCKETS.index(7200)] == 1
    assert totals.last_delivery == 500.0  # "a", filed again last
    ledger.close()

    again = Ledger(path)
    try:
        assert again.totals() == totals
    finally:
        again.close()


def test_a_row_that_changes_outcome_moves_its_counts(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(path)
    try:
        file_one(ledger, "a", "failed", "P1", reason="count-mismatch")
        ledger.update("a", 200.0, outcome="done", reason="", bytes_sent=10, upload_seconds=2.0)
        totals = ledger.totals()
        assert dict(totals.failed) == {"P1": 0} and dict(totals.delivered) == {"P1": 1}
        assert dict(totals.failed_by_rule) == {"count-mismatch": 0}
        assert as_counted(totals) | {"failed": {}, "rules": {}} == counted_by_sql(path)
    finally:
        ledger.close()


def old_ledger(path: Path) -> None:
    """A ledger as an earlier version left it: no byte or time columns, no totals table."""
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    rows = [
        ("a", "P1/S/a", "done", "P1", "", 10.0),
        ("b", "P2/S/b", "done", "P2", "", 20.0),
        ("c", "X/S/c", "failed", "", "nifti", 30.0),
        ("d", "P1/S/d", "failed", "P1", "session-exists, count-mismatch", 40.0),
        ("e", "P1/S/e", "claimed", "", "", 50.0),
    ]
    db.executemany(
        "INSERT INTO sessions (claim_id, relpath, state, project, reason, outcome, created_at, "
        "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(c, r, s, p, why, s if s != "claimed" else "", at, at) for c, r, s, p, why, at in rows],
    )
    db.commit()
    db.close()


def test_an_older_ledger_gains_the_columns_and_counts_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    old_ledger(path)
    ledger = Ledger(path)
    try:
        db = sqlite3.connect(path)
        columns = {row[1] for row in db.execute("PRAGMA table_info(sessions)")}
        db.close()
        assert {"bytes_sent", "upload_seconds"} <= columns
        totals = ledger.totals()
        assert dict(totals.delivered) == {"P1": 1, "P2": 1}
        assert dict(totals.failed) == {"": 1, "P1": 1}
        assert dict(totals.failed_by_rule) == {
            "nifti": 1,
            "session-exists": 1,
            "count-mismatch": 1,
        }
        # Filed before bytes and times were recorded: unknown, so neither sent nor timed.
        assert (totals.sent_bytes, totals.duration_count) == (0, 0)
        assert totals.last_delivery == 20.0
        assert as_counted(totals) == counted_by_sql(path)
        # It goes on counting from there.
        file_one(ledger, "f", "done", "P1", at=60.0, bytes_sent=5, upload_seconds=1.0)
        assert dict(ledger.totals().delivered) == {"P1": 2, "P2": 1}
    finally:
        ledger.close()
    read_only = Ledger(path, readonly=True)  # `xnat-drop status` reads it as it is
    read_only.close()


def test_a_changed_counting_layout_counts_the_rows_again(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(path)
    file_one(ledger, "a", "done", "P1", bytes_sent=7, upload_seconds=2.0)
    ledger.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE totals SET key = 'an older layout' WHERE kind = 'layout'")
    db.execute("UPDATE totals SET value = 99 WHERE kind = 'delivered'")  # stale counts
    db.commit()
    db.close()
    ledger = Ledger(path)
    try:
        assert dict(ledger.totals().delivered) == {"P1": 1}
    finally:
        ledger.close()


# --- the textfile ------------------------------------------------------------------------


def test_the_textfile_is_replaced_whole_and_readable_by_node_exporter(tmp_path: Path) -> None:
    target = tmp_path / "xnat-drop.prom"
    text = prometheus.render(sample(a_report(), TOTALS, NOW))
    old = os.umask(0o077)  # stricter than the unit's 0007
    try:
        prometheus.write_textfile(target, b"# old\n")
        prometheus.write_textfile(target, text)
    finally:
        os.umask(old)
    assert target.read_bytes() == text
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["xnat-drop.prom"]  # no temporary left
    assert parsed(target.read_bytes())["xnat_drop_delivered_total"][(("project", "P1"),)] == 3


def test_a_textfile_that_cannot_be_written_leaves_nothing_behind(tmp_path: Path) -> None:
    (tmp_path / "xnat-drop.prom").mkdir()  # a folder where the file should be
    with pytest.raises(OSError):
        prometheus.write_textfile(tmp_path / "xnat-drop.prom", b"x 1\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["xnat-drop.prom"]
