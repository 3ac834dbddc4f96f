"""Numbers and times in words, the same way everywhere: reports, status, logs. Pure: the time
zone is an argument (adapters/localzone.py finds the lab's)."""

from __future__ import annotations

from datetime import datetime, timezone, tzinfo


def plural(n: int, word: str, many: str = "") -> str:
    """A count and its noun, agreeing: "1 problem", "2 problems", "0 files", "3 copies".

    `many` is the plural when it is not `word` + "s" ("copies", "series").
    """
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def size(n: int) -> str:
    """A byte count for people, in decimal units: "512 B", "42.1 MB", "2.1 GB"."""
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("KB", "MB", "GB"):
        value /= 1000
        if value < 1000:
            return f"{value:.1f} {unit}"
    return f"{value / 1000:.1f} TB"


def duration(seconds: float) -> str:
    """A duration for logs: "45 s", "12 min", "3.5 h"."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def age(seconds: float) -> str:
    """How long ago, whole units: "45 s", "12 min", "5 h", "3 days"."""
    whole = max(0, int(seconds))
    if whole < 120:
        return f"{whole} s"
    if whole < 7200:
        return f"{whole // 60} min"
    if whole < 172800:
        return f"{whole // 3600} h"
    return f"{whole // 86400} days"


def iso(ts: float, timespec: str = "seconds") -> str:
    """Seconds since the epoch as an ISO 8601 UTC time: "2026-12-03T10:15:03Z"."""
    stamp = datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec=timespec)
    return stamp.replace("+00:00", "Z")


def local(ts: float, zone: tzinfo) -> str:
    """Seconds since the epoch as people in `zone` read a clock, the zone named:
    "2026-12-03 17:02 CET" (or "... UTC+05:30" where the zone has no abbreviation)."""
    when = datetime.fromtimestamp(ts, tz=zone)
    name = when.tzname() or ""
    # Some zones abbreviate by offset only ("+0530", "-03"): say it the way people read it.
    if not name or name[0] in "+-":
        offset = when.strftime("%z")
        name = "UTC" if offset == "+0000" else f"UTC{offset[:3]}:{offset[3:]}"
    return f"{when:%Y-%m-%d %H:%M} {name}"


def from_iso(stamp: str) -> float | None:
    """The inverse of `iso`, or None for anything else."""
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
