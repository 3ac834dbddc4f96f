"""The lab's time zone, for the times people read (text reports, `xnat-drop status`).

report.time_zone names it; "" means the system's: TZ, else /etc/localtime. Finding the
system's reads the environment and the filesystem, so it happens here, and core gets a tzinfo.
"""

from __future__ import annotations

import os
import time
import zoneinfo
from collections.abc import Mapping
from datetime import timedelta, timezone, tzinfo
from pathlib import Path

LOCALTIME = Path("/etc/localtime")
_MARK = "zoneinfo/"  # /etc/localtime -> /usr/share/zoneinfo/Europe/Berlin


def lab_zone(configured: str, env: Mapping[str, str], localtime: Path = LOCALTIME) -> tzinfo:
    """The zone named by report.time_zone, else the system's. Never raises: a zone that
    cannot be found (no tz database installed) gives the system's offset, or UTC."""
    return named(configured) or system_zone(env, localtime)


def system_zone(env: Mapping[str, str], localtime: Path = LOCALTIME) -> tzinfo:
    """The system's zone: TZ ("Europe/Berlin", ":Europe/Berlin" or a file), else
    /etc/localtime (by the name its link points to, else its content), else UTC."""
    tz = env.get("TZ", "").removeprefix(":")
    if tz:
        return named(tz) or _from_file(Path(tz)) or _offset_now()
    try:
        target = os.readlink(localtime)
    except OSError:  # not a link (a copy of the zone file), or absent
        target = ""
    if _MARK in target:
        found = named(target.rsplit(_MARK, 1)[1])
        if found is not None:
            return found
    return _from_file(localtime) or timezone.utc


def named(name: str) -> tzinfo | None:
    """The zone the tz database knows by `name`, else None."""
    if not name or name.startswith("/"):
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


def _from_file(path: Path) -> tzinfo | None:
    if not path.is_absolute():
        return None
    try:
        with path.open("rb") as f:
            return zoneinfo.ZoneInfo.from_file(f, key=path.name)
    except (OSError, ValueError):
        return None


def _offset_now() -> tzinfo:
    """A TZ the tz database does not know (a POSIX rule such as "CET-1CEST"): the C library
    understands it; take its current offset and abbreviation."""
    now = time.localtime()
    return timezone(timedelta(seconds=now.tm_gmtoff), now.tm_zone)
