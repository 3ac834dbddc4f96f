"""The status in words (core/statuswords.py) and as STATUS.txt / STATUS.html (core/statusview.py):
table tests on hand-made reports, no disk, no clock."""

from __future__ import annotations

import base64
import hashlib
import re
from html.parser import HTMLParser
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from xnat_drop.commands.status import render
from xnat_drop.core.model import Fingerprint, Seen
from xnat_drop.core.stability import waiting_phase
from xnat_drop.core.statusview import (
    STYLE,
    file_names,
    render_html,
    render_text,
    style_hash,
)
from xnat_drop.core.statuswords import STOPPED, project_of, view

ZONE = ZoneInfo("Europe/Berlin")  # UTC+1 in December
NOW = "2026-12-03T09:10:00Z"  # 10:10 in Berlin
SHARE = "/srv/lab"
URL = "https://xnat.example.org"
HOSTILE = "<script>alert('x&y')</script>\"q\udcff"  # a folder name, as Python sees it


def report(
    *,
    settling: list[dict[str, Any]] | None = None,
    not_taken: list[dict[str, Any]] | None = None,
    work: list[dict[str, Any]] | None = None,
    done: list[dict[str, Any]] | None = None,
    failed: list[dict[str, Any]] | None = None,
    xnat: dict[str, Any] | None = None,
    running: bool = True,
    now: str = NOW,
) -> dict[str, Any]:
    return {
        "running": running,
        "now": now,
        "snapshot": {
            "updated_at": now,
            "xnat": {"state": "ok", "url": URL} if xnat is None else {"url": URL, **xnat},
            "settling": settling or [],
            "settling_more": 0,
            "not_taken": not_taken or [],
            "not_taken_more": 0,
            "work": work or [],
            "work_more": 0,
            "storage": None,
            "today": {"done": 4, "failed": 1},
        },
        "last_done": done or [],
        "last_failed": failed or [],
    }


def settling(phase: str, session: str = "P1/S03/E1", **extra: Any) -> dict[str, Any]:
    item = {
        "session": session,
        "files": 120,
        "bytes": 1_234_000_000,
        "since": "2026-12-03T09:09:40Z",
        "state": "waiting for it to stop changing (the daemon's own words)",
        "phase": phase,
        "ready_at": None,
        "held_until": None,
    }
    return item | extra


def job(phase: str, session: str = "P1/S01/E1", **extra: Any) -> dict[str, Any]:
    item = {
        "session": session,
        "claim": "c1",
        "state": "the daemon's own words",
        "phase": phase,
        "attempts": 0,
        "since": NOW,
        "last_error": "",
        "progress": None,
        "retry_at": None,
        "project": session.split("/", maxsplit=1)[0],
    }
    return item | extra


def blocked(path: str = "P1/S07/E1", kind: str = "folder", **extra: Any) -> dict[str, Any]:
    item = {
        "path": path,
        "kind": kind,
        "reason": "the folder is not group-writable (xnat-drop needs that to move it)",
        "fix": f"chmod -R g+w '/srv/lab/incoming/{path}'",
        "since": NOW,
        "note": f"{path}.NOT-TAKEN.txt",
    }
    return item | extra


def finished(session: str, at: str, outcome: str, **extra: Any) -> dict[str, Any]:
    project, subject, label = session.split("/")
    item = {
        "session": session,
        "at": at,
        "where": f"{SHARE}/{outcome}/{session}",
        "xnat": f"/data/projects/{project}/subjects/{subject}/experiments/{label}"
        if outcome == "done"
        else None,
        "reason": "" if outcome == "done" else "derived-series, nifti",
        "project": project,
    }
    return item | extra


def words_of(data: dict[str, Any]) -> list[str]:
    """The words of every session listed, in the view's order."""
    v = view(data, ZONE, share=SHARE)
    return [w.words for w in (*v.attention, *v.progress, *v.arriving)]


# -- each state in words ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "words"),
    [
        (
            settling("copying", ready_at="2026-12-03T09:11:00Z"),
            "still being copied (120 files, 1.2 GB so far); taken at 10:11 if nothing changes",
        ),
        (
            settling("partial"),
            "still being copied (120 files, 1.2 GB so far; unfinished copies such as *.part in it)",
        ),
        (settling("marker"), "copied (120 files, 1.2 GB); waiting for its ready marker file"),
        (settling("empty", files=0, bytes=0), "empty folder: nothing to take yet"),
        (
            settling("stuck", since="2026-12-02T23:00:00Z"),
            "still not finished after a long time (last change at 00:00, 120 files, 1.2 GB): "
            "is the copy stuck?",
        ),
        (
            settling("held", held_until="2026-12-03T09:40:00Z"),
            "held: it looks incomplete (images missing); waiting for the rest of the copy until "
            "10:40, then it is checked as it is",
        ),
        (
            settling("link", files=0, bytes=0),
            "refused: a symbolic link, which xnat-drop never follows; put the real folder here",
        ),
    ],
    ids=["copying", "partial", "marker", "empty", "stuck", "held", "link"],
)
def test_a_folder_not_yet_taken_in_words(item: dict[str, Any], words: str) -> None:
    assert words_of(report(settling=[item])) == [words]


DOWN = {"state": "unreachable", "since": "2026-12-03T09:02:00Z", "detail": "Connection refused"}


@pytest.mark.parametrize(
    ("item", "xnat", "words"),
    [
        (
            job("uploading", progress={"bytes_sent": 900_000_000, "bytes_total": 2_100_000_000}),
            None,
            "uploading 42% of 2.1 GB",
        ),
        (job("uploading", progress={"bytes_sent": 0, "bytes_total": 0}), None, "uploading"),
        (
            job(
                "uploading",
                progress={
                    "bytes_sent": 1_050_000_000,
                    "bytes_total": 2_100_000_000,
                    "bytes_per_second": 11_800_000,
                    "packing": "auto: 100% compressed, 1.8:1",
                },
            ),
            None,
            "uploading 50% of 2.1 GB at 11.8 MB/s (auto: 100% compressed, 1.8:1)",
        ),
        (job("filing-done"), None, "delivered to XNAT; being moved to done/"),
        (job("filing-failed"), None, "not uploaded; being moved to failed/ with a report"),
        (job("inspecting"), None, "taken; being checked against the upload rules"),
        (job("next"), None, "checked; waiting its turn to upload"),
        (job("xnat-down"), DOWN, "waiting for XNAT (down since 10:02)"),
        (
            job("credentials"),
            {"state": "credentials refused", "since": NOW},
            "waiting: XNAT refused xnat-drop's login (the administrator must fix it)",
        ),
        (
            job("retrying", attempts=2, retry_at="2026-12-03T09:30:00Z"),
            None,
            "retrying at 10:30 (after 2 failed attempts)",
        ),
    ],
    ids=[
        "uploading",
        "uploading-unknown-size",
        "uploading-compressed",
        "filing-done",
        "filing-failed",
        "inspecting",
        "next",
        "xnat-down",
        "credentials",
        "retrying",
    ],
)
def test_a_claimed_session_in_words(
    item: dict[str, Any], xnat: dict[str, Any] | None, words: str
) -> None:
    assert words_of(report(work=[item], xnat=xnat)) == [words]


def test_a_blocked_folder_says_why_and_the_fix_and_a_stray_file_is_not_taken() -> None:
    stray = blocked(
        "P1/scan.zip",
        kind="file",
        reason="a zip file where a subject folder is expected",
        fix="unpack it into '/srv/lab/incoming/P1/<subject>/scan/', then delete the archive",
        note=None,
    )
    v = view(report(not_taken=[blocked(), stray]), ZONE, share=SHARE)
    folder, file = v.attention
    assert folder.words == (
        "blocked: the folder is not group-writable (xnat-drop needs that to move it)"
    )
    assert folder.fix == "chmod -R g+w '/srv/lab/incoming/P1/S07/E1'"
    assert folder.note == "incoming/P1/S07/E1.NOT-TAKEN.txt"
    assert file.words == "not taken: a zip file where a subject folder is expected"
    assert file.note == ""
    text = render_text(report(not_taken=[blocked()]), ZONE)
    assert "      fix: chmod -R g+w '/srv/lab/incoming/P1/S07/E1'\r\n" in text


@pytest.mark.parametrize(
    ("xnat", "words"),
    [
        ({"state": "ok"}, f"up ({URL})"),
        ({"state": "not yet contacted"}, f"not contacted yet (xnat-drop has just started) ({URL})"),
        (DOWN, f"down since 10:02; uploads wait and resume by themselves ({URL})"),
        (
            {"state": "credentials refused", "since": "2026-12-03T08:00:00Z", "detail": "401"},
            "refused xnat-drop's login since 09:00; uploads are paused until the administrator "
            f"fixes it ({URL})",
        ),
        (
            {"state": "answering with web pages, not data", "since": "2026-12-03T09:02:00Z"},
            "not answering properly since 10:02 (the administrator must look); uploads wait "
            f"({URL})",
        ),
        (
            {"state": "ok", "token_warning": "XNAT token expires in 5.0 h"},
            f"up; its access token expires soon (the administrator must renew it) ({URL})",
        ),
    ],
    ids=["ok", "not-contacted", "down", "credentials", "web-pages", "token"],
)
def test_xnat_in_words(xnat: dict[str, Any], words: str) -> None:
    assert view(report(xnat=xnat), ZONE).xnat == words


def test_the_last_delivered_and_failed_say_when_where_in_xnat_which_rules_and_the_report() -> None:
    data = report(
        done=[finished("P1/S00/E1", "2026-12-02T17:01:00Z", "done")],
        failed=[finished("P2/S05/E1", "2026-12-03T08:58:00Z", "failed")],
    )
    v = view(data, ZONE, share=SHARE)
    [delivered], [failed] = v.delivered, v.failed
    assert delivered.at == "2 Dec 18:01"  # another day: its date
    assert delivered.xnat == f"{URL}/data/projects/P1/subjects/S00/experiments/E1?format=html"
    assert delivered.report == "done/P1/S00/E1.report.txt"  # beside STATUS.txt: relative
    assert (failed.at, failed.rules, failed.report) == (
        "09:58",  # today: the time only
        "derived-series, nifti",
        "failed/P2/S05/E1.report.txt",
    )
    text = render_text(data, ZONE, share=SHARE)
    assert (
        "LAST DELIVERED:\r\n  2 Dec 18:01  P1/S00/E1\r\n"
        f"      in XNAT: {URL}/data/projects/P1/subjects/S00/experiments/E1?format=html\r\n"
        "      report: done/P1/S00/E1.report.txt\r\n"
    ) in text
    assert (
        "LAST FAILED:\r\n  09:58  P2/S05/E1\r\n      not uploaded: derived-series, nifti\r\n"
        "      report: failed/P2/S05/E1.report.txt\r\n"
    ) in text


def test_a_report_elsewhere_is_shown_by_its_full_path() -> None:
    item = finished("P1/S00/E1", NOW, "done", where="/data/done/P1/S00/E1")
    [delivered] = view(report(done=[item]), ZONE, share=SHARE).delivered
    assert delivered.report == "/data/done/P1/S00/E1.report.txt"


@pytest.mark.parametrize(
    ("stamp", "shown"),
    [
        ("2026-12-03T09:02:00Z", "10:02"),
        ("2026-12-02T23:30:00Z", "00:30"),  # 3 Dec in Berlin: today
        ("2026-12-02T22:59:00Z", "2 Dec 23:59"),
        ("2025-12-03T09:02:00Z", "3 Dec 2025 10:02"),
        ("not a time", "?"),
    ],
)
def test_times_are_the_labs_clock(stamp: str, shown: str) -> None:
    item = job("retrying", attempts=1, retry_at=stamp)
    assert words_of(report(work=[item])) == [f"retrying at {shown} (after 1 failed attempt)"]


def test_the_header_says_when_whether_it_runs_and_todays_tally() -> None:
    text = render_text(report(), ZONE)
    assert text.startswith(
        "xnat-drop upload status\r\n"
        "Updated 10:10 CET (rewritten within seconds of a change, at least every minute)\r\n"
        "\r\nxnat-drop: running\r\n"
        f"XNAT: up ({URL})\r\n"
        "Today: 4 delivered, 1 failed\r\n"
        "\r\nNothing waiting or in progress.\r\n"
    )


def test_a_stopped_daemon_says_so_and_claims_nothing_about_its_sessions() -> None:
    data = report(
        work=[job("uploading", progress={"bytes_sent": 1, "bytes_total": 2})],
        settling=[settling("copying")],
        not_taken=[blocked()],
        running=False,
    )
    v = view(data, ZONE)
    assert v.daemon.startswith("NOT running (last seen at 10:10)")
    assert v.xnat == "not known while xnat-drop is not running"
    assert [w.words for w in (*v.progress, *v.arriving)] == [STOPPED, STOPPED]
    assert v.attention[0].words.startswith("blocked: ")  # the fix still holds


def test_storage_paused_is_said() -> None:
    data = report()
    data["snapshot"]["storage"] = {"state": "paused", "detail": "disk full"}
    assert "PAUSED" in view(data, ZONE).daemon


def test_only_the_time_moves_while_nothing_else_changes() -> None:
    items = {"work": [job("retrying", attempts=1, retry_at="2026-12-03T09:30:00Z")]}
    first = view(report(**items), ZONE)
    later = view(report(**items, now="2026-12-03T09:11:30Z"), ZONE)
    assert first != later and first.content() == later.content()
    progressed = report(work=[job("uploading", progress={"bytes_sent": 5, "bytes_total": 9})])
    assert view(progressed, ZONE).content() != first.content()


# -- what never appears ----------------------------------------------------------------------


def test_no_dicom_header_value_nor_error_text_reaches_the_files() -> None:
    """Only names, labels, rule ids, counts and times: the daemon's own state sentences (which
    may quote a series description), XNAT's error detail and a job's last error stay out."""
    secret = "DOE^JOHN"
    data = report(
        settling=[settling("held", state=f"held, looks incomplete: series 5 ({secret})")],
        work=[job("xnat-down", last_error=f"XNAT said: PatientName {secret}")],
        xnat={**DOWN, "detail": f"500 {secret}"},
    )
    for rendered in (render_text(data, ZONE), render_html(data, ZONE)):
        assert secret not in rendered


def test_text_has_crlf_line_ends_only() -> None:
    data = report(
        settling=[settling("copying", session=f"P1/{HOSTILE}\n\r/E1")],
        not_taken=[blocked()],
        work=[job("next")],
        done=[finished("P1/S00/E1", NOW, "done")],
        failed=[finished("P1/S05/E1", NOW, "failed")],
    )
    text = render_text(data, ZONE)
    assert text.endswith("\r\n")
    assert "\n" not in text.replace("\r\n", "") and "\r" not in text.replace("\r\n", "")
    assert f"P1/{HOSTILE[:-1]}\\xff\\n\\r/E1" in text  # escaped as shown.py does, not raw


# -- the HTML ----------------------------------------------------------------------------------


class _Page(HTMLParser):
    """Tags, attributes and text of a page, with a check that every tag is closed."""

    VOID = frozenset({"meta", "link", "br", "img", "input", "hr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.style = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()

    def handle_data(self, data: str) -> None:
        if self.open and self.open[-1] == "style":
            self.style += data
        else:
            self.text.append(data)


def parsed(page: str) -> _Page:
    found = _Page()
    found.feed(page)
    found.close()
    assert found.open == [], f"not closed: {found.open}"
    return found


def hostile_report() -> dict[str, Any]:
    session = f"P1/{HOSTILE}/E1"
    return report(
        settling=[settling("copying", session=session)],
        not_taken=[blocked(f"P1/{HOSTILE}", fix=f"chmod -R g+w '/srv/lab/incoming/P1/{HOSTILE}'")],
        work=[job("next", session=session)],
        done=[finished("P1/S00/E1", NOW, "done") | {"session": session}],
        failed=[finished("P1/S05/E1", NOW, "failed") | {"session": session}],
    )


def test_html_escapes_every_hostile_name() -> None:
    page = render_html(hostile_report(), ZONE, share=SHARE)
    assert "<script" not in page.lower() and "alert('" not in page
    assert "&lt;script&gt;alert(&#x27;x&amp;y&#x27;)&lt;/script&gt;&quot;q\\xff" in page
    found = parsed(page)
    names = "".join(found.text)
    assert names.count(f"P1/{HOSTILE[:-1]}\\xff/E1") == 4  # arriving, next, delivered, failed


def test_html_is_one_static_page_with_only_its_own_style() -> None:
    page = render_html(hostile_report(), ZONE, share=SHARE)
    assert page.startswith("<!DOCTYPE html>\n")
    found = parsed(page)
    tags = [tag for tag, _ in found.tags]
    assert (
        "script" not in tags and "link" not in tags and "img" not in tags and "iframe" not in tags
    )
    assert not any(name.startswith("on") for _, attrs in found.tags for name in attrs)
    assert not re.search(r"\b(src|srcset|action|formaction)=", page)
    assert found.style == STYLE and tags.count("style") == 1
    digest = base64.b64encode(hashlib.sha256(found.style.encode()).digest()).decode()
    assert style_hash() == f"'sha256-{digest}'"
    metas = [attrs for tag, attrs in found.tags if tag == "meta"]
    assert {"name": "viewport", "content": "width=device-width, initial-scale=1"} in metas
    assert not any(attrs.get("http-equiv") for attrs in metas)  # STATUS.html: no refresh
    links = [attrs["href"] for tag, attrs in found.tags if tag == "a"]
    assert links == [f"{URL}/data/projects/P1/subjects/S00/experiments/E1?format=html"]
    assert "@media (max-width:40em)" in STYLE  # tables reflow on a phone


def test_the_live_page_refreshes_itself() -> None:
    found = parsed(render_html(report(), ZONE, refresh=10))
    metas = [attrs for tag, attrs in found.tags if tag == "meta"]
    assert {"http-equiv": "refresh", "content": "10"} in metas


def test_text_and_html_say_the_same_words() -> None:
    data = report(
        settling=[settling("held", held_until="2026-12-03T09:40:00Z")],
        work=[job("xnat-down")],
        not_taken=[blocked()],
        xnat=DOWN,
    )
    text = render_text(data, ZONE)
    page_text = " ".join(parsed(render_html(data, ZONE)).text)
    for words in words_of(data):
        assert words in text and words in page_text


# -- one file per project ----------------------------------------------------------------------


def project_report() -> dict[str, Any]:
    return report(
        settling=[settling("copying", session="P1/S03/E1"), settling("copying", session="P2/S9/E")],
        not_taken=[blocked("P2/S07/E1"), blocked("stray.zip", kind="file")],
        work=[job("next", session="P1/S01/E1"), job("next", session="p2/S02/E1", project="P2")],
        done=[finished("P1/S00/E1", NOW, "done"), finished("P2/S08/E1", NOW, "done")],
        failed=[finished("P2/S05/E1", NOW, "failed")],
    )


def test_per_project_keeps_the_sessions_dropped_in_that_project_folder() -> None:
    v = view(project_report(), ZONE, project="P2")
    assert v.title == "xnat-drop upload status: project P2"
    assert [w.path for w in (*v.attention, *v.progress, *v.arriving)] == ["P2/S07/E1", "P2/S9/E"]
    assert [f.path for f in (*v.delivered, *v.failed)] == ["P2/S08/E1", "P2/S05/E1"]
    assert v.unassigned == 1  # stray.zip, straight in incoming/: counted, never named
    assert v.today == ""  # the tally is not by project
    text = render_text(project_report(), ZONE, project="P2")
    assert "P1/" not in text and "p2/S02" not in text and "stray.zip" not in text
    assert "and 1 more in incoming/ not yet assigned to a project" in text


def test_without_a_project_level_sessions_belong_to_their_xnat_project_once_judged() -> None:
    data = project_report()
    v = view(data, ZONE, project="P2", by_folder=False)
    assert [w.path for w in v.progress] == ["p2/S02/E1"]  # its XNAT project is P2
    assert v.arriving == () and v.attention == ()  # not judged yet: no project's
    assert v.unassigned == 4  # two folders settling, a blocked one, a stray file
    assert project_of(data["snapshot"]["settling"][0], by_folder=False) is None
    assert project_of(data["snapshot"]["work"][1], by_folder=False) == "P2"
    assert project_of(data["snapshot"]["work"][1]) == "p2"


def test_a_project_with_nothing_to_say_says_nothing_waits() -> None:
    text = render_text(project_report(), ZONE, project="P3")
    assert "Nothing waiting or in progress." in text and "LAST" not in text


@pytest.mark.parametrize(
    ("project", "html", "names"),
    [
        (None, False, ("STATUS.txt",)),
        (None, True, ("STATUS.txt", "STATUS.html")),
        ("P1", False, ("STATUS-P1.txt",)),
        ("Lab_2.b-x", True, ("STATUS-Lab_2.b-x.txt", "STATUS-Lab_2.b-x.html")),
    ],
)
def test_file_names(project: str | None, html: bool, names: tuple[str, ...]) -> None:
    assert file_names(project, html=html) == names


def test_a_project_name_unfit_for_a_file_name_is_made_safe_and_never_shared() -> None:
    names = {file_names(p, html=False)[0] for p in (HOSTILE, "a b", "a_b", "a/b", "x" * 300)}
    assert len(names) == 5
    for name in names:
        assert re.fullmatch(r"STATUS-[A-Za-z0-9._-]+\.txt", name) and len(name) < 100
    assert file_names("a_b", html=False) == ("STATUS-a_b.txt",)
    assert re.fullmatch(r"STATUS-a_b-[0-9a-f]{8}\.txt", file_names("a b", html=False)[0])


@pytest.mark.parametrize(
    ("count", "partial", "marker", "needs_marker", "phase"),
    [
        (0, False, False, False, "empty"),
        (3, True, False, False, "partial"),
        (3, False, False, True, "marker"),
        (3, False, True, True, "copying"),
        (3, False, False, False, "copying"),
    ],
)
def test_the_intakes_phase_says_what_a_folder_waits_for(
    count: int, partial: bool, marker: bool, needs_marker: bool, phase: str
) -> None:
    seen = Seen(Fingerprint("h", count, 10 * count, 1, partial, marker), 100.0)
    assert waiting_phase(seen, needs_marker=needs_marker) == phase


def test_xnat_drop_status_names_status_files_that_cannot_be_written() -> None:
    data = report()
    data["snapshot"]["share_status"] = {
        "folder": "/srv/lab",
        "files": [],
        "problem": "cannot write the status files in /srv/lab: [Errno 30] Read-only file system",
    }
    assert (
        "Status files on the share: cannot write the status files in /srv/lab: [Errno 30] "
        "Read-only file system\n"
    ) in render(data, 0.0, ZONE)
