"""The status in words for lab members, one view for STATUS.txt, STATUS.html and the status
page, built from the report `xnat-drop status --json` prints. Pure: the time zone and every
time come from the caller (the report's `now`).

Every state is said here once ("still being copied", "uploading 42% of 2.1 GB", "waiting for
XNAT (down since 10:02)", "retrying at 10:30", "blocked: ... / fix: ..."), so the text and the
HTML always say the same. Only folder names, XNAT labels and addresses, rule ids, counts and
times appear: never a DICOM header value, nor an error text that could quote one. Names are
escaped again (core/shown.py) whatever the report holds; HTML escaping is the renderer's.

Times are the lab's clock: "10:02" today, "3 Dec 10:02" another day of this year.

Which project a session belongs to (`project=`, for the STATUS-<project> files): with a layout
whose first level is the project (the default, "project/subject/session") it is the folder it
was dropped in, the first part of its path, whatever XNAT label it is routed to: that is the
folder a lab member knows. With another layout it is its XNAT project once judged (claimed
sessions and finished ones carry it); one not yet judged belongs to no project, and every
project's file counts such sessions without naming them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, tzinfo
from typing import Any

from xnat_drop.core.receipt import xnat_page
from xnat_drop.core.shown import shown
from xnat_drop.core.text import from_iso, local, plural, size

Item = Mapping[str, Any]
# What was true of a session when the daemon stopped says nothing of it now.
STOPPED = "waits for xnat-drop to run again"


@dataclass(frozen=True, slots=True)
class Waiting:
    """A session in incoming/ or in progress: its path below incoming/ as it was dropped, and
    its state in words; a blocked one also what to do and the note beside it."""

    path: str
    words: str
    fix: str = ""
    note: str = ""  # below incoming/


@dataclass(frozen=True, slots=True)
class Finished:
    """A delivered or failed session: when, where in XNAT (delivered) or which rules (failed),
    and where its report is."""

    path: str
    at: str
    xnat: str = ""  # a person's link to XNAT
    rules: str = ""  # "nifti, derived-series"
    report: str = ""


@dataclass(frozen=True, slots=True)
class View:
    """What a status file says, in words. `updated` is the one part that changes by itself:
    `content()` leaves it out, to tell a change from the passing of time."""

    title: str
    updated: str  # "10:02 CET"
    daemon: str  # "running", "NOT running ..."
    xnat: str  # XNAT's state in words
    today: str  # "4 delivered, 1 failed" ("" per project: the tally is not by project)
    attention: tuple[Waiting, ...]  # blocked: a person must act
    progress: tuple[Waiting, ...]  # claimed: being checked, uploaded, retried, filed
    arriving: tuple[Waiting, ...]  # still in incoming/: being copied, held
    unlisted: int  # sessions the daemon counts but does not name (over its listing limit)
    unassigned: int  # per project: sessions of no project yet (counted, never named)
    delivered: tuple[Finished, ...]
    failed: tuple[Finished, ...]

    @property
    def waiting(self) -> int:
        return len(self.attention) + len(self.progress) + len(self.arriving)

    def content(self) -> View:
        """The view without its time: equal while nothing but the clock moved."""
        return replace(self, updated="")


def view(
    report: Item,
    zone: tzinfo,
    *,
    project: str | None = None,
    by_folder: bool = True,
    share: str = "",
) -> View:
    """The words for `report` (what `status --json` prints). `project`: only that project's
    sessions (see the module's docstring; `by_folder` False when the layout's first level is
    not the project). `share`: the folder paths are shown relative to (the one holding
    incoming/, where STATUS.txt is), e.g. "done/P1/S01/E1.report.txt"."""
    snap: Item = report.get("snapshot") or {}
    now = from_iso(str(report.get("now", ""))) or 0.0
    when = LabClock(zone, now)
    running = bool(report.get("running"))
    xnat: Item = snap.get("xnat") or {}
    mine = _Filter(project, by_folder)
    settling = [i for i in snap.get("settling") or [] if mine.keeps(i)]
    blocked = [i for i in snap.get("not_taken") or [] if mine.keeps(i)]
    work = [i for i in snap.get("work") or [] if mine.keeps(i)]
    unassigned = 0
    if project is not None:
        every = [*(snap.get(k) or [] for k in ("settling", "not_taken", "work"))]
        unassigned = sum(1 for items in every for i in items if mine.of(i) is None)
    unlisted = sum(int(snap.get(f"{k}_more") or 0) for k in ("settling", "not_taken", "work"))
    return View(
        title="xnat-drop upload status" + (f": project {shown(project)}" if project else ""),
        updated=f"{when(report.get('now'))} {local(now, zone).rsplit(' ', 1)[-1]}",
        daemon=_daemon(report, snap, when),
        xnat=_xnat(xnat, when) if running else "not known while xnat-drop is not running",
        today="" if project is not None or not snap else _tally(snap.get("today") or {}),
        attention=tuple(_blocked(i) for i in blocked),
        progress=tuple(
            Waiting(_path(i), job_words(i, xnat, when) if running else STOPPED) for i in work
        ),
        arriving=tuple(
            Waiting(_path(i), settling_words(i, when) if running else STOPPED) for i in settling
        ),
        unlisted=unlisted,
        unassigned=unassigned,
        delivered=tuple(
            _finished(i, when, share, str(xnat.get("url") or ""))
            for i in report.get("last_done") or []
            if mine.keeps(i)
        ),
        failed=tuple(
            _finished(i, when, share, "") for i in report.get("last_failed") or [] if mine.keeps(i)
        ),
    )


def settling_words(item: Item, when: LabClock) -> str:
    """A folder in incoming/ not taken yet: being copied, held as incomplete, stuck, a link."""
    phase = item.get("phase")
    files, found = int(item.get("files") or 0), size(int(item.get("bytes") or 0))
    amount = f"{plural(files, 'file')}, {found}"
    if phase == "empty":
        return "empty folder: nothing to take yet"
    if phase == "link":
        return "refused: a symbolic link, which xnat-drop never follows; put the real folder here"
    if phase == "held":
        return (
            f"held: it looks incomplete (images missing); waiting for the rest of the copy "
            f"until {when(item.get('held_until'))}, then it is checked as it is"
        )
    if phase == "stuck":
        return (
            f"still not finished after a long time (last change at {when(item.get('since'))}, "
            f"{amount}): is the copy stuck?"
        )
    if phase == "partial":
        return f"still being copied ({amount} so far; unfinished copies such as *.part in it)"
    if phase == "marker":
        return f"copied ({amount}); waiting for its ready marker file"
    taken = (
        f"; taken at {when(item['ready_at'])} if nothing changes" if item.get("ready_at") else ""
    )
    return f"still being copied ({amount} so far){taken}"


def job_words(item: Item, xnat: Item, when: LabClock) -> str:
    """A claimed session: being checked, uploading N% of X, waiting for XNAT, retrying."""
    phase = item.get("phase")
    if phase == "uploading":
        progress: Item = item.get("progress") or {}
        sent, total = int(progress.get("bytes_sent") or 0), int(progress.get("bytes_total") or 0)
        if not total:
            return "uploading"
        words = f"uploading {100 * min(sent, total) // total}% of {size(total)}"
        rate = float(progress.get("bytes_per_second") or 0)
        packing = str(progress.get("packing") or "")
        if rate:
            words += f" at {size(round(rate))}/s"
        if packing:
            words += f" ({packing})"
        return words
    if phase == "filing-done":
        return "delivered to XNAT; being moved to done/"
    if phase == "filing-failed":
        return "not uploaded; being moved to failed/ with a report"
    if phase == "inspecting":
        return "taken; being checked against the upload rules"
    if phase == "credentials":
        return "waiting: XNAT refused xnat-drop's login (the administrator must fix it)"
    if phase == "xnat-down" and xnat.get("state") == INBOX_UNUSABLE:
        return f"waiting: XNAT's inbox cannot be used (since {when(xnat.get('since'))})"
    if phase == "xnat-down" and xnat.get("state") == RECEIVER_REFUSED:
        return f"waiting: XNAT's DICOM receiver refuses xnat-drop (since {when(xnat.get('since'))})"
    if phase == "xnat-down":
        return f"waiting for XNAT (down since {when(xnat.get('since'))})"
    if phase == "retrying":
        failed = plural(int(item.get("attempts") or 0), "failed attempt")
        return f"retrying at {when(item.get('retry_at'))} (after {failed})"
    if phase == "next":
        return "checked; waiting its turn to upload"
    return "taken; in progress"


class LabClock:
    """ISO 8601 times from the report as the lab's clock reads them, relative to `now`."""

    def __init__(self, zone: tzinfo, now: float) -> None:
        self.zone = zone
        self.today = datetime.fromtimestamp(now, tz=zone).date()

    def __call__(self, stamp: object) -> str:
        at = from_iso(stamp) if isinstance(stamp, str) else None
        if at is None:
            return "?"
        then = datetime.fromtimestamp(at, tz=self.zone)
        if then.date() == self.today:
            return f"{then:%H:%M}"
        year = "" if then.year == self.today.year else f" {then.year}"
        return f"{then.day} {then:%b}{year} {then:%H:%M}"


@dataclass(frozen=True, slots=True)
class _Filter:
    project: str | None
    by_folder: bool

    def of(self, item: Item) -> str | None:
        """The project `item` belongs to (see the module's docstring), None for none yet."""
        if self.by_folder:
            path = _path(item)
            head, sep, _ = path.partition("/")
            return head if sep else None  # a file straight in incoming/ is no project's
        label = item.get("project")
        return shown(str(label)) if label else None

    def keeps(self, item: Item) -> bool:
        return self.project is None or self.of(item) == self.project


def _path(item: Item) -> str:
    return shown(str(item.get("session") or item.get("path") or "?"))


def _blocked(item: Item) -> Waiting:
    """A folder that cannot be taken, or a file where folders belong, with its fix."""
    prefix = "blocked" if item.get("kind", "folder") == "folder" else "not taken"
    note = f"incoming/{shown(str(item['note']))}" if item.get("note") else ""
    return Waiting(
        _path(item),
        f"{prefix}: {shown(str(item.get('reason', '')))}",
        shown(str(item.get("fix", ""))),
        note,
    )


def _finished(item: Item, when: LabClock, share: str, base: str) -> Finished:
    where = shown(str(item.get("where") or ""))
    if share and where.startswith(share.rstrip("/") + "/"):
        where = where[len(share.rstrip("/")) + 1 :]
    uri = shown(str(item.get("xnat") or ""))
    return Finished(
        _path(item),
        when(item.get("at")),
        xnat_page(base, uri) if base and uri.startswith("/") else uri,
        shown(str(item.get("reason") or "")),
        f"{where}.report.txt" if where else "",
    )


def _tally(today: Item) -> str:
    return f"{int(today.get('done') or 0):,} delivered, {int(today.get('failed') or 0):,} failed"


def _daemon(report: Item, snap: Item, when: LabClock) -> str:
    if not report.get("running"):
        last = f" (last seen at {when(snap.get('updated_at'))})" if snap else ""
        return f"NOT running{last}: nothing is taken or uploaded until it is started again"
    storage: Item = snap.get("storage") or {}
    if storage:
        return (
            "running, but PAUSED: it cannot write its state folder (the administrator must "
            "fix it); nothing is lost, and work resumes by itself"
        )
    return "running"


INBOX_UNUSABLE = "answering, but its inbox cannot be used"  # availability.Outage.state
RECEIVER_REFUSED = "answering, but its DICOM receiver refuses xnat-drop"  # the same


def _xnat(xnat: Item, when: LabClock) -> str:
    """XNAT's state in words, with what it means for uploads."""
    state = xnat.get("state")
    since = when(xnat.get("since"))
    if state == "ok":
        words = "up"
    elif state == "not yet contacted":
        words = "not contacted yet (xnat-drop has just started)"
    elif state == "unreachable":
        words = f"down since {since}; uploads wait and resume by themselves"
    elif state == INBOX_UNUSABLE:
        detail = shown(str(xnat.get("detail") or ""))
        words = (
            f"up, but its inbox cannot be used since {since} ({detail}); uploads wait until "
            "the administrator fixes it, and nothing is failed"
        )
    elif state == RECEIVER_REFUSED:
        detail = shown(str(xnat.get("detail") or ""))
        words = (
            f"up, but its DICOM receiver refuses xnat-drop since {since} ({detail}); uploads "
            "wait until the administrator fixes it, and nothing is failed"
        )
    elif state == "credentials refused":
        words = (
            f"refused xnat-drop's login since {since}; uploads are paused until the "
            "administrator fixes it"
        )
    elif state:
        words = f"not answering properly since {since} (the administrator must look); uploads wait"
    else:
        words = "unknown"
    if xnat.get("token_warning"):
        words += "; its access token expires soon (the administrator must renew it)"
    url = shown(str(xnat.get("url") or ""))
    return f"{words} ({url})" if url else words


def within(items: Sequence[Item], project: str, *, by_folder: bool = True) -> list[Item]:
    """The items (sessions of the report) that belong to `project`."""
    mine = _Filter(project, by_folder)
    return [i for i in items if mine.keeps(i)]


def project_of(item: Item, *, by_folder: bool = True) -> str | None:
    """The project a session of the report belongs to (see the module's docstring)."""
    return _Filter(None, by_folder).of(item)
