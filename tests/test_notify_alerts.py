"""Which notifications are due, their words, their recipients, storms and digests: the pure
core (core/alerts.py, core/messages.py, core/mailing.py). Tables, no I/O."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from xnat_drop.core import alerts, mailing, messages
from xnat_drop.core.alerts import Context, FailedSession, Memory
from xnat_drop.core.monitoring import NotifyConfig
from xnat_drop.core.text import iso

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc).timestamp()  # 10:00 in Berlin
BERLIN = ZoneInfo("Europe/Berlin")
CTX = Context("https://xnat.example.org", BERLIN, 0)
CONFIG = NotifyConfig(
    email_to=("admin@example.org",),
    smtp_host="smtp.example.org",
    outage_after=600,
    retrying_after=3600,
)


def report(
    xnat: str = "ok",
    since: float | None = None,
    *,
    settling: list[dict[str, Any]] | None = None,
    not_taken: list[dict[str, Any]] | None = None,
    work: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    state: dict[str, Any] = {"state": xnat}
    if since is not None:
        state["since"] = iso(since)
    return {
        "running": True,
        "snapshot": {
            "xnat": state,
            "settling": settling or [],
            "not_taken": not_taken or [],
            "work": work or [],
        },
    }


def run(
    steps: list[tuple[float, dict[str, Any]]],
    config: NotifyConfig = CONFIG,
    memory: Memory | None = None,
) -> tuple[Memory, list[alerts.Alert]]:
    """Feed reports at times (seconds after T0); every alert, and the memory at the end."""
    memory = memory or Memory()
    told: list[alerts.Alert] = []
    for at, data in steps:
        memory, found = alerts.watch(memory, alerts.facts_of(data), T0 + at, config, CTX)
        told += found
    return memory, told


# -- outages -----------------------------------------------------------------------------------

DOWN = "unreachable"


@pytest.mark.parametrize(
    ("steps", "kinds"),
    [
        # A short flap: down 5 minutes, back: nothing at all.
        ([(0, report(DOWN, T0)), (300, report(DOWN, T0)), (310, report())], []),
        # Down 10 minutes: the start once (however many reports), then the end once.
        (
            [(0, report(DOWN, T0)), (599, report(DOWN, T0)), (600, report(DOWN, T0)),
             (900, report(DOWN, T0)), (1000, report()), (1010, report())],
            ["outage-started", "outage-ended"],
        ),
        # Web pages instead of data count as an outage too.
        ([(0, report("answering with web pages, not data", T0)),
          (700, report("answering with web pages, not data", T0))], ["outage-started"]),
        # The first reports after a start know nothing yet: no end, no start.
        ([(0, report("not yet contacted")), (700, report("not yet contacted"))], []),
        # XNAT answers but refuses the credentials: the outage has ended.
        ([(0, report(DOWN, T0)), (700, report(DOWN, T0)),
          (800, report("credentials refused", T0 + 800))],
         ["outage-started", "outage-ended", "credentials"]),
    ],
)  # fmt: skip
def test_outages_are_told_only_past_outage_after(
    steps: list[tuple[float, dict[str, Any]]], kinds: list[str]
) -> None:
    _, told = run(steps)
    assert [a.kind for a in told] == kinds


def test_an_outage_told_before_a_restart_is_not_told_again_and_its_end_is() -> None:
    memory, told = run([(0, report(DOWN, T0)), (700, report(DOWN, T0))])
    assert [a.key for a in told] == [f"outage-started:{iso(T0)}"]
    stored = Memory.from_json(memory.to_json())  # the ledger keeps it across the restart
    assert stored == memory
    # The new process dates the outage from its own first probe: the same outage all the same.
    _, after = run(
        [(900, report("not yet contacted")), (910, report(DOWN, T0 + 910)), (2000, report())],
        memory=stored,
    )
    assert [a.key for a in after] == [f"outage-ended:{iso(T0)}"]
    assert "answers again" in after[0].body and "33 min" in after[0].body


def test_an_untold_outage_is_dated_by_the_run_that_sees_it() -> None:
    memory, told = run([(0, report(DOWN, T0)), (100, report(DOWN, T0))])
    assert told == [] and memory.outage == iso(T0)
    _, told = run([(5000, report(DOWN, T0 + 5000)), (5100, report(DOWN, T0 + 5000))], memory=memory)
    assert told == []  # not "down since an hour and a half ago": that run's view is gone


def test_an_unwanted_event_is_remembered_but_not_told() -> None:
    quiet = replace(CONFIG, events=("failed",))
    memory, told = run([(0, report(DOWN, T0)), (700, report(DOWN, T0)), (800, report())], quiet)
    assert told == [] and memory.outage == ""


def test_the_outage_message_says_since_when_in_the_lab_zone() -> None:
    _, [started] = run([(0, report(DOWN, T0)), (600, report(DOWN, T0))])
    assert started.subject == "[xnat-drop] XNAT unreachable since 2026-03-02 10:00 CET"
    assert "https://xnat.example.org" in started.body and "10 min" in started.body
    assert "nothing is failed" in started.body
    assert "resume by themselves once XNAT answers" in started.body


def test_a_refusing_receiver_is_told_as_the_administrators_to_fix() -> None:
    refusing = "answering, but its DICOM receiver refuses xnat-drop"
    _, [started] = run([(0, report(refusing, T0)), (600, report(refusing, T0))])
    assert "DICOM receiver refuses xnat-drop since 2026-03-02 10:00 CET" in started.subject
    assert "This needs the XNAT administrator" in started.body
    assert "once the receiver takes xnat-drop; nothing is failed or lost" in started.body


# -- credentials, stuck folders, retrying sessions ---------------------------------------------


def test_refused_credentials_are_told_once_until_they_work_again() -> None:
    refused = report("credentials refused", T0)
    memory, told = run(
        [(0, refused), (10, refused), (20, report("not yet contacted")), (30, refused)]
    )
    assert [a.key for a in told] == [f"credentials:{iso(T0)}"]
    _, told = run([(40, report()), (50, report("credentials refused", T0 + 50))], memory=memory)
    assert [a.key for a in told] == [f"credentials:{iso(T0 + 50)}"]
    assert "PAUSED" in told[0].body


BLOCKED = {"path": "P1/S01/E1", "kind": "folder", "reason": "owned by root, 0700", "fix": "chmod"}
STRAY = {"path": "P1/notes.zip", "kind": "file", "reason": "a file where folders go", "fix": "x"}
NOT_READY = {
    "session": "P1/S02/E2",
    "state": "NOT READY for over 6.0 h: waiting for the copy",
    "phase": "stuck",
}
SETTLING = {"session": "P1/S03/E3", "state": "waiting for the copy to finish"}


def test_a_blocked_or_never_ready_folder_is_told_once_per_episode() -> None:
    stuck = report(not_taken=[BLOCKED, STRAY], settling=[NOT_READY, SETTLING])
    memory, told = run([(0, stuck), (10, stuck)])
    assert [a.key for a in told] == ["stuck:P1/S01/E1:2026-03-02", "stuck:P1/S02/E2:2026-03-02"]
    assert "owned by root, 0700" in told[0].body and "Fix: chmod" in told[0].body
    assert told[0].project == "P1"  # the layout's project folder
    # Still stuck after a restart: nothing new; fixed, then blocked again: told again.
    memory, again = run([(86400 * 2, stuck)], memory=Memory.from_json(memory.to_json()))
    assert again == []
    memory, _ = run([(86400 * 2 + 10, report())], memory=memory)
    _, again = run([(86400 * 3, stuck)], memory=memory)
    assert [a.key for a in again] == ["stuck:P1/S01/E1:2026-03-05", "stuck:P1/S02/E2:2026-03-05"]


def claimed(claim: str, attempts: int, since: float) -> dict[str, Any]:
    return {
        "session": f"P1/S01/{claim}",
        "claim": claim,
        "attempts": attempts,
        "since": iso(since),
        "project": "NEURO",
        "retry_at": iso(T0 + 4000),
    }


def test_a_session_retrying_past_retrying_after_is_told_once() -> None:
    work = report(work=[claimed("a", 2, T0), claimed("b", 0, T0), claimed("c", 1, T0 + 3000)])
    memory, told = run([(3599, work), (3600, work), (3700, work)])
    assert [a.key for a in told] == ["retrying:a"]  # b spent no attempt; c is not old enough
    assert told[0].project == "NEURO" and "2 attempts failed" in told[0].body
    memory, _ = run([(3800, report())], memory=memory)
    assert memory.retrying == ()  # filed: forgotten


# -- failed sessions, recipients ---------------------------------------------------------------

FAILED = FailedSession(
    "c-1",
    "P1/S01/S01_MR1",
    ("derived-series", "nifti"),
    "failed/P1/S01/S01_MR1.report.txt",
    T0,
    "P1",
    "S01",
    "S01_MR1",
    ("1002", "bob"),
)


def test_a_failed_session_names_its_folder_rules_labels_and_report() -> None:
    [alert] = alerts.new_failures([FAILED], CONFIG, CTX)
    assert alert.key == "failed:c-1"
    assert alert.subject == "[xnat-drop] NOT uploaded: P1/S01/S01_MR1 (derived-series, nifti)"
    for words in (
        "incoming/P1/S01/S01_MR1",
        "derived-series, nifti",
        "project P1, subject S01, session S01_MR1",
        "failed/P1/S01/S01_MR1.report.txt",
        "2026-03-02 10:00 CET",
    ):
        assert words in alert.body
    assert dict(alert.fields)["rules"] == "derived-series,nifti"
    assert alerts.new_failures([FAILED], replace(CONFIG, events=("outage",)), CTX) == []


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (CONFIG, ("admin@example.org",)),
        (replace(CONFIG, projects=(("P1", ("p1@example.org", "ADMIN@example.org")),)),
         ("admin@example.org", "p1@example.org")),
        (replace(CONFIG, owners=(("bob", "bob@example.org"), ("alice", "alice@example.org"))),
         ("admin@example.org", "bob@example.org")),
        (replace(CONFIG, owners=(("1002", "bob@example.org"),)),
         ("admin@example.org", "bob@example.org")),
        (replace(CONFIG, email_to=(), projects=(("P2", ("p2@example.org",)),)), ()),
        (replace(CONFIG, smtp_host=""), ()),
    ],
)  # fmt: skip
def test_recipients_are_everyone_plus_the_project_and_the_owner(
    config: NotifyConfig, expected: tuple[str, ...]
) -> None:
    [alert] = alerts.new_failures([FAILED], config, CTX)
    assert mailing.addresses(config, alert) == expected


def test_one_letter_per_address_and_one_for_the_webhook() -> None:
    config = replace(CONFIG, projects=(("P1", ("p1@example.org",)),), webhook="slack")
    [alert] = alerts.new_failures([FAILED], config, CTX)
    found = mailing.letters(config, [alert], T0)
    assert [(x.channel, x.recipient, x.key) for x in found] == [
        ("email", "admin@example.org", "failed:c-1|email|admin@example.org"),
        ("email", "p1@example.org", "failed:c-1|email|p1@example.org"),
        ("webhook", "webhook", "failed:c-1|webhook|webhook"),
    ]


def test_webhook_bodies() -> None:
    [alert] = alerts.new_failures([FAILED], CONFIG, CTX)
    slack = json.loads(mailing.webhook_body("slack", "failed", "k", alert.subject, alert.body, ()))
    assert list(slack) == ["text"] and slack["text"].startswith(f"*{alert.subject}*\n")
    data = json.loads(
        mailing.webhook_body("json", "failed", "k", alert.subject, alert.body, alert.fields)
    )
    assert data["event"] == "failed" and data["session"] == "P1/S01/S01_MR1"
    assert data["rules"] == "derived-series,nifti" and data["text"] == alert.body


# -- storms ------------------------------------------------------------------------------------


def waiting(*ages: float) -> list[tuple[str, float]]:
    return [(f"k{i}", T0 - age) for i, age in enumerate(ages)]


@pytest.mark.parametrize(
    ("queued", "sent", "last_digest", "expected"),
    [
        (waiting(), 0, None, mailing.Plan()),
        (waiting(0, 0, 0), 0, None, mailing.Plan(singles=("k0", "k1", "k2"))),
        (waiting(0, 0), 3, None, mailing.Plan(singles=("k0", "k1"))),  # 5: the limit
        # Past the limit: gathered until the oldest waited a window.
        (waiting(10, 0), 4, None, mailing.Plan(wake=T0 - 10 + 900)),
        (waiting(900, 0), 4, None, mailing.Plan(digest=("k0", "k1"))),
        # A backlog (e.g. the mail server was down) goes at once, as one digest.
        (waiting(*[3600] * 12), 0, None, mailing.Plan(digest=tuple(f"k{i}" for i in range(12)))),
        # Never two digests within a window.
        (waiting(3600, 3600), 6, T0 - 100, mailing.Plan(wake=T0 - 100 + 900)),
    ],
)
def test_a_storm_waits_for_one_digest_per_window(
    queued: list[tuple[str, float]], sent: int, last_digest: float | None, expected: mailing.Plan
) -> None:
    assert mailing.plan(queued, sent, last_digest, T0, 5, 900) == expected


def test_a_digest_lists_every_message() -> None:
    items = [(f"[xnat-drop] NOT uploaded: P1/S{i}", f"body {i}\n", T0 + i) for i in range(12)]
    subject, body = messages.storm(items, BERLIN)
    assert subject == "[xnat-drop] 12 notifications (digest)"
    assert all(f"- NOT uploaded: P1/S{i}\n" in body and f"body {i}" in body for i in range(12))
    assert "since 2026-03-02 10:00 CET" in body


def test_stable_ids_for_repeats() -> None:
    assert mailing.message_id("failed:c-1|email|a@b", "lab.org") == mailing.message_id(
        "failed:c-1|email|a@b", "lab.org"
    )
    assert mailing.message_id("a", "lab.org").endswith("@lab.org>")
    assert mailing.digest_key(["b", "a"]) == mailing.digest_key(["a", "b"])
    assert mailing.idempotency_key("a") != mailing.idempotency_key("b")


# -- the daily digest --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hhmm", "at", "told", "due"),
    [
        ("", 0, "", None),
        ("07:30", 0, "", "2026-03-02"),  # 10:00 in Berlin: past 07:30
        ("07:30", 0, "2026-03-02", None),  # sent today already
        ("11:00", 0, "", None),  # not yet
        ("11:00", 3600, "", "2026-03-02"),
        ("00:30", 14 * 3600 - 10, "2026-03-02", None),  # 23:59:50 in Berlin
        ("00:30", 14 * 3600 + 1800, "2026-03-02", "2026-03-03"),  # 00:30
    ],
)
def test_the_daily_digest_is_due_once_a_day_at_its_time(
    hhmm: str, at: float, told: str, due: str | None
) -> None:
    assert alerts.daily_due(Memory(daily=told), T0 + at, hhmm, BERLIN) == due


def test_the_daily_digest_counts_and_lists_the_failures() -> None:
    alert = messages.daily("2026-03-02", 7, [FAILED], 1, 3, "ok", CTX)
    assert alert.key == "daily:2026-03-02"
    assert "7 sessions delivered, 1 NOT uploaded" in alert.body
    assert "P1/S01/S01_MR1  (derived-series, nifti)" in alert.body
    assert "3 sessions waiting; XNAT ok" in alert.body


def test_messages_hold_no_header_value_only_report_fields() -> None:
    """The failed message is made of the ledger's row only; nothing else reaches it."""
    [alert] = alerts.new_failures([FAILED], CONFIG, CTX)
    fields = {FAILED.folder, FAILED.report, FAILED.project, FAILED.subject, FAILED.label}
    for line in alert.body.splitlines():
        if ":" in line and line.startswith(("Folder", "XNAT", "Report")):
            assert any(f in line for f in fields), line


def test_a_memory_that_cannot_be_read_is_empty() -> None:
    assert Memory.from_json("not json") == Memory()
    assert Memory.from_json(None) == Memory()
    assert Memory.from_json('{"stuck": 3}') == Memory()
