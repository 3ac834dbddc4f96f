"""The words of the notifications: a subject and a plain-text body per event. Pure.

A message holds only what `xnat-drop status` shows without reading a file: folder names as
dropped, XNAT labels, rule ids, counts and times (in the lab's zone). Never a DICOM header
value, never an error text from XNAT or the mail server (either may quote one): the report
beside the folder and `xnat-drop status` have the details.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timezone, tzinfo

from xnat_drop.core.statuswords import INBOX_UNUSABLE, RECEIVER_REFUSED
from xnat_drop.core.text import duration, from_iso, local, plural

# What ends a pause that XNAT answering does not end: the setup must change.
_OUTAGE_NEXT = {
    INBOX_UNUSABLE: "This needs the XNAT administrator (`xnat-drop status` says why); uploads "
    "wait and resume by themselves once XNAT can use its inbox;",
    RECEIVER_REFUSED: "This needs the XNAT administrator (`xnat-drop status` says why); "
    "uploads wait and resume by themselves once the receiver takes xnat-drop;",
}

PREFIX = "[xnat-drop]"
LISTED = 50  # sessions named in a daily digest; the rest are counted


@dataclass(frozen=True, slots=True)
class Context:
    """What every message may say besides its event."""

    xnat_url: str = ""
    zone: tzinfo = timezone.utc
    project_level: int | None = 0  # which folder level below incoming/ is the project


@dataclass(frozen=True, slots=True)
class Alert:
    """One event to tell: `key` names it for good (one message per key, ever)."""

    kind: str  # failed, outage-started, outage-ended, credentials, stuck, retrying, daily
    key: str
    subject: str
    body: str
    project: str = ""  # a session's XNAT project (or its folder): the project's addresses
    owner: tuple[str, ...] = ()  # the session folder's owner (uid, login name): their address
    fields: tuple[tuple[str, str], ...] = field(default=())  # for the JSON webhook


@dataclass(frozen=True, slots=True)
class Stuck:
    """A folder in incoming/ that cannot be taken, or is not ready after max_settle."""

    path: str  # below incoming/, as shown
    why: str
    fix: str = ""


@dataclass(frozen=True, slots=True)
class Claimed:
    """A claimed session as `status` lists it."""

    claim: str
    session: str
    project: str
    attempts: int
    since: float  # wall clock: when it was claimed
    retry_at: str  # ISO, or ""


@dataclass(frozen=True, slots=True)
class FailedSession:
    """A session filed in failed/, as the ledger has it."""

    claim: str
    folder: str  # below incoming/, as dropped (shown)
    rules: tuple[str, ...]
    report: str  # where its report is, as lab members see the share
    at: float  # when it was filed (wall clock)
    project: str = ""  # XNAT labels, when routing found them
    subject: str = ""
    label: str = ""
    owner: tuple[str, ...] = ()


def failed(s: FailedSession, ctx: Context) -> Alert:
    rules = ", ".join(s.rules) or "see the report"
    labels = _labels(s.project, s.subject, s.label)
    lines = [
        f"The session folder {s.folder} was NOT uploaded to XNAT.",
        "",
        f"Folder as dropped:  incoming/{s.folder}",
        f"Rules:              {rules}",
    ]
    if labels:
        lines.append(f"XNAT labels:        {labels}")
    lines += [
        f"Filed:              {local(s.at, ctx.zone)}",
        f"Report:             {s.report}",
        "",
        "The report says what each rule means and what to do. The folder is in failed/, "
        "unchanged: fix what the report names, then move the folder back into incoming/ "
        "(or ask for `xnat-drop retry`).",
    ]
    return Alert(
        "failed",
        f"failed:{s.claim}",
        f"{PREFIX} NOT uploaded: {s.folder} ({rules})",
        _body(lines, ctx),
        s.project or _folder_project(s.folder, ctx),
        s.owner,
        (
            ("session", s.folder),
            ("project", s.project),
            ("subject", s.subject),
            ("label", s.label),
            ("rules", ",".join(s.rules)),
            ("report", s.report),
        ),
    )


def outage_started(since: str, state: str, now: float, waiting: int, ctx: Context) -> Alert:
    began = from_iso(since) or now
    lines = [
        f"XNAT at {ctx.xnat_url} has been {state} since {local(began, ctx.zone)} "
        f"({duration(now - began)}).",
        "",
        _OUTAGE_NEXT.get(state, "Uploads wait and resume by themselves once XNAT answers;")
        + " nothing is failed or lost.",
        f"Waiting now: {plural(waiting, 'session')}.",
        "",
        "A message follows when XNAT answers again. `xnat-drop status` shows the details.",
    ]
    return Alert(
        "outage-started",
        f"outage-started:{since}",
        f"{PREFIX} XNAT {state} since {local(began, ctx.zone)}",
        _body(lines, ctx),
        fields=(("since", since), ("state", state)),
    )


def outage_ended(since: str, now: float, ctx: Context) -> Alert:
    began = from_iso(since) or now
    lines = [
        f"XNAT at {ctx.xnat_url} answers again ({local(now, ctx.zone)}), after "
        f"{duration(now - began)} (since {local(began, ctx.zone)}).",
        "",
        "Uploads have resumed by themselves.",
    ]
    return Alert(
        "outage-ended",
        f"outage-ended:{since}",
        f"{PREFIX} XNAT answers again (down {duration(now - began)})",
        _body(lines, ctx),
        fields=(("since", since),),
    )


def credentials_refused(since: str, waiting: int, ctx: Context) -> Alert:
    began = from_iso(since)
    when = local(began, ctx.zone) if began is not None else "now"
    lines = [
        f"XNAT at {ctx.xnat_url} refuses xnat-drop's credentials (since {when}).",
        "",
        "Uploads are PAUSED: nothing is sent and nothing is failed until the secret works "
        f"again. Waiting now: {plural(waiting, 'session')}.",
        "",
        "Fix: renew the XNAT password or alias token of the service account, write it into "
        "the secret file and restart xnat-drop (README: Troubleshooting). `xnat-drop status` "
        "shows XNAT's answer.",
    ]
    return Alert(
        "credentials",
        f"credentials:{since}",
        f"{PREFIX} XNAT refuses the credentials: uploads paused",
        _body(lines, ctx),
        fields=(("since", since),),
    )


def stuck(item: Stuck, key: str, ctx: Context) -> Alert:
    lines = [f"The folder incoming/{item.path} is not being taken.", "", f"Why: {item.why}"]
    if item.fix:
        lines.append(f"Fix: {item.fix}")
    lines += ["", "`xnat-drop status` lists every folder that waits, and why."]
    return Alert(
        "stuck",
        key,
        f"{PREFIX} Not taken: incoming/{item.path}",
        _body(lines, ctx),
        _folder_project(item.path, ctx),
        fields=(("session", item.path),),
    )


def retrying(item: Claimed, now: float, ctx: Context) -> Alert:
    lines = [
        f"The session {item.session} has been in the work folder since "
        f"{local(item.since, ctx.zone)} ({duration(now - item.since)}) and is not delivered "
        f"yet: {plural(item.attempts, 'attempt')} failed.",
    ]
    when = from_iso(item.retry_at) if item.retry_at else None
    if when is not None:
        lines.append(f"Next attempt: {local(when, ctx.zone)}.")
    lines += [
        "",
        "It is retried by itself until the attempts run out, then filed in failed/ with a "
        "report. `xnat-drop status` shows the last error.",
    ]
    return Alert(
        "retrying",
        f"retrying:{item.claim}",
        f"{PREFIX} Still not delivered: {item.session}",
        _body(lines, ctx),
        item.project or _folder_project(item.session, ctx),
        fields=(("session", item.session), ("project", item.project)),
    )


def daily(
    day: str,
    done: int,
    failures: Sequence[FailedSession],
    failed_count: int,
    waiting: int,
    xnat_state: str,
    ctx: Context,
) -> Alert:
    """The daily digest: the last 24 hours' tally, the failed sessions, what waits now."""
    lines = [
        f"The last 24 hours: {plural(done, 'session')} delivered, {failed_count:,} NOT uploaded.",
        f"Now: {plural(waiting, 'session')} waiting; XNAT {xnat_state}.",
    ]
    if failures:
        lines += ["", "Not uploaded:"]
        for s in failures[:LISTED]:
            lines.append(f"  {s.folder}  ({', '.join(s.rules) or '?'})  report: {s.report}")
        if failed_count > LISTED:
            lines.append(f"  ... and {failed_count - LISTED:,} more")
    return Alert(
        "daily",
        f"daily:{day}",
        f"{PREFIX} Daily digest {day}: {done:,} delivered, {failed_count:,} not uploaded",
        _body(lines, ctx),
        fields=(("date", day), ("delivered", str(done)), ("failed", str(failed_count))),
    )


def storm(subjects_and_bodies: Sequence[tuple[str, str, float]], zone: tzinfo) -> tuple[str, str]:
    """One digest of many messages to one recipient (a storm): its subject and body.
    Each item is (subject, body, created at)."""
    n = len(subjects_and_bodies)
    first = min(at for _, _, at in subjects_and_bodies)
    lines = [
        f"{plural(n, 'notification')} since {local(first, zone)}, gathered into one message "
        "(too many to send one by one):",
        "",
    ]
    lines += [
        f"  - {subject.removeprefix(PREFIX).strip()}" for subject, _, _ in subjects_and_bodies
    ]
    for subject, body, _ in subjects_and_bodies[:LISTED]:
        lines += ["", "-" * 72, subject.removeprefix(PREFIX).strip(), "", body]
    if n > LISTED:
        lines += ["", f"... the details of {n - LISTED:,} more are left out."]
    return f"{PREFIX} {plural(n, 'notification')} (digest)", "\n".join(lines) + "\n"


def _labels(project: str, subject: str, label: str) -> str:
    parts = [f"{name} {value}" for name, value in (("project", project), ("subject", subject),
             ("session", label)) if value]  # fmt: skip
    return ", ".join(parts)


def _folder_project(path: str, ctx: Context) -> str:
    """The project folder of a path below incoming/, when the layout names one."""
    if ctx.project_level is None:
        return ""
    parts = path.split("/")
    return parts[ctx.project_level] if len(parts) > ctx.project_level + 1 else ""


def _body(lines: list[str], ctx: Context) -> str:
    footer = f"-- \nxnat-drop, delivering to XNAT at {ctx.xnat_url}" if ctx.xnat_url else ""
    return "\n".join([*lines, "", footer]).rstrip() + "\n"
