"""adapters/localzone.py: the lab's zone from report.time_zone, TZ or /etc/localtime."""

from __future__ import annotations

import os
import zoneinfo
from datetime import datetime, timezone
from pathlib import Path

import pytest

from xnat_drop.adapters.localzone import lab_zone, system_zone


def zone_file(name: str) -> Path:
    for base in zoneinfo.TZPATH:
        if (Path(base) / name).is_file():
            return Path(base) / name
    pytest.skip("no tz database on this machine")


def key(zone: object) -> str:
    return str(getattr(zone, "key", zone))


def test_the_configured_zone_wins(tmp_path: Path) -> None:
    zone = lab_zone("Asia/Tokyo", {"TZ": "Europe/Berlin"}, tmp_path / "none")
    assert key(zone) == "Asia/Tokyo"


@pytest.mark.parametrize("tz", ["Europe/Berlin", ":Europe/Berlin"])
def test_tz_names_the_system_zone(tz: str, tmp_path: Path) -> None:
    assert key(lab_zone("", {"TZ": tz}, tmp_path / "none")) == "Europe/Berlin"


def test_a_tz_file_path_is_read(tmp_path: Path) -> None:
    zone = system_zone({"TZ": str(zone_file("America/New_York"))}, tmp_path / "none")
    assert datetime(2026, 1, 1, tzinfo=zone).tzname() == "EST"


def test_etc_localtime_as_a_link_gives_the_zones_name(tmp_path: Path) -> None:
    link = tmp_path / "localtime"
    os.symlink(zone_file("Europe/Berlin"), link)
    assert key(system_zone({}, link)) == "Europe/Berlin"


def test_etc_localtime_as_a_copy_is_read(tmp_path: Path) -> None:
    copy = tmp_path / "localtime"
    copy.write_bytes(zone_file("Europe/Berlin").read_bytes())
    zone = system_zone({}, copy)
    assert datetime(2026, 7, 1, tzinfo=zone).tzname() == "CEST"


def test_without_any_hint_it_is_utc(tmp_path: Path) -> None:
    assert system_zone({}, tmp_path / "none") is timezone.utc


def test_status_text_shows_the_labs_clock() -> None:
    from zoneinfo import ZoneInfo

    from xnat_drop.commands.status import render

    stamp = "2026-12-03T16:02:00Z"
    data = {
        "running": False,
        "snapshot": {"updated_at": stamp},
        "last_done": [{"at": stamp, "session": "P1/S1/E1", "xnat": "/data/x"}],
    }
    text = render(data, 1.8e9, ZoneInfo("Europe/Berlin"))
    assert "NOT running (last seen 2026-12-03 17:02 CET)" in text
    assert "  2026-12-03 17:02 CET  P1/S1/E1  /data/x" in text
