"""The status files on the share: the atomic write (adapters/fs/sharefiles.py) and the board's
sink that decides what to write when (service/sharestatus.py), with a hand-moved clock."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from test_service import ManualClock as ServiceClock
from test_service import start_service
from test_statusview import NOW, blocked, finished, job, report, settling
from xnat_drop.adapters.fs import sharefiles
from xnat_drop.adapters.fs.startup import problems
from xnat_drop.adapters.ledger import Ledger
from xnat_drop.core.config import Config, parse
from xnat_drop.core.text import iso
from xnat_drop.service.sharestatus import BOM, StatusFiles
from xnat_standin import Emulator
from xnat_standin.demo.samples import SeriesSpec, write_session

from conftest import Drop

ENV = {"TZ": "UTC"}


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def config_for(root: Path, **status: Any) -> Config:
    data: dict[str, Any] = {
        "paths": {"root": str(root), "state_dir": str(root.parent / "state")},
        "xnat": {"url": "https://xnat.example.org"},
        "report": {"time_zone": "UTC"},
        "status": {"interval_seconds": 5} | status,
    }
    return parse(data, base=root, env={})


class Sink:
    """A StatusFiles over a drop tree in tmp_path whose config the test may change."""

    def __init__(self, root: Path, **status: Any) -> None:
        (root / "incoming").mkdir(parents=True, exist_ok=True)
        self.root = root
        self.config = config_for(root, **status)
        self.clock = ManualClock()
        self.files = StatusFiles(lambda: self.config, self.clock, ENV)

    def text(self, name: str = "STATUS.txt") -> str:
        data = (self.root / name).read_bytes()
        assert data.startswith(BOM)
        return data[len(BOM) :].decode()

    def inode(self, name: str = "STATUS.txt") -> int:
        return (self.root / name).stat().st_ino


@pytest.fixture
def sink(tmp_path: Path) -> Sink:
    return Sink(tmp_path / "drop")


# -- the atomic write --------------------------------------------------------------------------


def test_a_reader_sees_the_old_file_or_the_new_one_never_part_of_one(tmp_path: Path) -> None:
    versions = [bytes([65 + n]) * 300_000 for n in range(3)]
    sharefiles.write(tmp_path, {"STATUS.txt": versions[0]})
    seen: set[bytes] = set()
    torn: list[int] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            data = (tmp_path / "STATUS.txt").read_bytes()
            if data in versions:
                seen.add(data)
            else:
                torn.append(len(data))

    reader = threading.Thread(target=read)
    reader.start()
    inodes = set()
    try:
        for n in range(150):
            ident = sharefiles.write(tmp_path, {"STATUS.txt": versions[n % 3]})["STATUS.txt"]
            inodes.add(ident[1])
    finally:
        stop.set()
        reader.join()
    assert torn == []
    assert len(seen) > 1  # the reader did see the file change under it
    assert len(inodes) > 1  # a new file each time, renamed over the name
    assert [p.name for p in tmp_path.iterdir()] == ["STATUS.txt"]  # no temporary file left


def test_a_link_planted_at_the_name_is_replaced_and_its_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "precious.txt"
    target.parent.mkdir()
    target.write_text("keep me")
    (tmp_path / "STATUS.txt").symlink_to(target)
    (tmp_path / "STATUS.html").symlink_to(tmp_path / "nowhere")  # dangling
    sharefiles.write(tmp_path, {"STATUS.txt": b"status", "STATUS.html": b"<p>"})
    assert target.read_text() == "keep me"
    assert (
        not (tmp_path / "STATUS.txt").is_symlink() and not (tmp_path / "STATUS.html").is_symlink()
    )
    assert (tmp_path / "STATUS.txt").read_bytes() == b"status"
    assert not (tmp_path / "nowhere").exists()


def test_the_files_are_readable_by_everyone_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        sharefiles.write(tmp_path, {"STATUS.txt": b"x"})
    finally:
        os.umask(old)
    assert (tmp_path / "STATUS.txt").stat().st_mode & 0o777 == 0o644


def test_only_a_file_still_ours_is_removed(tmp_path: Path) -> None:
    written = sharefiles.write(tmp_path, {"STATUS.txt": b"ours", "STATUS.html": b"ours"})
    (tmp_path / "STATUS.html").unlink()
    (tmp_path / "STATUS.html").write_text("someone else's")
    sharefiles.remove(tmp_path, written)
    assert not (tmp_path / "STATUS.txt").exists()
    assert (tmp_path / "STATUS.html").read_text() == "someone else's"


def test_project_folders_are_the_folders_straight_in_incoming(tmp_path: Path) -> None:
    for name in ("P1", "P2", ".hidden", "__MACOSX"):
        (tmp_path / name).mkdir()
    (tmp_path / "file.zip").write_bytes(b"")
    (tmp_path / "link").symlink_to(tmp_path / "P1")
    assert sharefiles.project_folders(tmp_path) == ["P1", "P2"]
    assert sharefiles.project_folders(tmp_path / "missing") == []


def test_the_files_beside_incoming_trouble_no_start_up_check(tmp_path: Path) -> None:
    cfg = config_for(tmp_path / "drop")
    for folder in (cfg.paths.incoming, cfg.paths.done, cfg.paths.failed):
        folder.mkdir(parents=True)
    before = problems(cfg.paths, "ledger.sqlite3")
    sharefiles.write(cfg.paths.incoming.parent, {"STATUS.txt": b"x", "STATUS-P1.html": b"y"})
    assert problems(cfg.paths, "ledger.sqlite3") == before


# -- when the sink writes ----------------------------------------------------------------------


def test_the_file_is_written_beside_incoming_never_inside(sink: Sink) -> None:
    sink.files(report(work=[job("next")]), None)
    assert sorted(p.name for p in sink.root.iterdir()) == ["STATUS.txt", "incoming"]
    assert list((sink.root / "incoming").iterdir()) == []
    assert "P1/S01/E1\r\n      checked; waiting its turn to upload\r\n" in sink.text()
    assert sink.files.state() == {
        "folder": str(sink.root),
        "files": ["STATUS.txt"],
        "problem": None,
    }


def test_a_change_is_written_at_most_every_interval(sink: Sink) -> None:
    first = report(work=[job("uploading", progress={"bytes_sent": 1, "bytes_total": 100})])
    sink.files(first, None)
    inode = sink.inode()
    sink.clock.now += 2
    changed = report(work=[job("uploading", progress={"bytes_sent": 50, "bytes_total": 100})])
    sink.files(changed, None)
    assert sink.inode() == inode and "uploading 1% of 100 B" in sink.text()  # too soon
    sink.clock.now += 3  # 5 s after the last write
    sink.files(changed, None)
    assert sink.inode() != inode and "uploading 50% of 100 B" in sink.text()


def test_an_unchanged_file_is_rewritten_only_to_show_it_is_alive(sink: Sink) -> None:
    sink.files(report(work=[job("next")]), None)
    inode = sink.inode()
    for seconds, now in ((10, "2026-12-03T09:10:10Z"), (49, "2026-12-03T09:10:59Z")):
        sink.clock.now += seconds
        sink.files(report(work=[job("next")], now=now), None)
        assert sink.inode() == inode  # only the time moved, less than a minute after
    sink.clock.now += 1  # a minute after the write
    sink.files(report(work=[job("next")], now="2026-12-03T09:11:00Z"), None)
    assert sink.inode() != inode and "Updated 09:11 UTC" in sink.text()


def test_a_folder_that_cannot_be_written_is_said_once_and_the_daemon_runs_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = Sink(tmp_path / "drop")
    # The folder holding incoming/ is a link: never written through (as if not writable).
    (tmp_path / "real").mkdir()
    sink.config = config_for(tmp_path / "link")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    caplog.set_level(logging.INFO, "xnat_drop")
    for _ in range(5):
        sink.files(report(), None)
        sink.clock.now += 6
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot write the status files" in warnings[0].getMessage()
    state = sink.files.state()
    assert state is not None and "cannot write the status files" in str(state["problem"])
    assert list((tmp_path / "real").iterdir()) == []

    (tmp_path / "link").unlink()
    (tmp_path / "link").mkdir()
    sink.files(report(), None)
    assert (tmp_path / "link" / "STATUS.txt").is_file()
    assert sink.files.state() == {
        "folder": str(tmp_path / "link"),
        "files": ["STATUS.txt"],
        "problem": None,
    }
    assert "written again" in caplog.records[-1].getMessage()


def test_stopping_says_so(sink: Sink) -> None:
    sink.files(report(work=[job("next")]), None)
    sink.files.stop()
    text = sink.text()
    assert "xnat-drop: NOT running (last seen at 09:10)" in text
    assert "waits for xnat-drop to run again" in text


def test_off_writes_nothing_and_removes_what_it_wrote(sink: Sink) -> None:
    sink.config = replace(sink.config, status=replace(sink.config.status, html=True))
    sink.files(report(), None)
    assert (sink.root / "STATUS.html").is_file()
    sink.config = replace(sink.config, status=replace(sink.config.status, html=False))
    sink.clock.now += 1
    sink.files(report(), None)
    assert not (sink.root / "STATUS.html").exists() and (sink.root / "STATUS.txt").is_file()
    sink.config = replace(sink.config, status=replace(sink.config.status, share="off"))
    sink.files(report(), None)
    assert sorted(p.name for p in sink.root.iterdir()) == ["incoming"]
    assert sink.files.state() is None


def test_html_beside_the_text(sink: Sink) -> None:
    sink.config = replace(sink.config, status=replace(sink.config.status, html=True))
    sink.files(report(work=[job("next", session="P1/<b>/E1")]), None)
    page = (sink.root / "STATUS.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "P1/&lt;b&gt;/E1" in page
    assert (sink.root / "STATUS.html").stat().st_mode & 0o777 == 0o644


# -- one file per project ----------------------------------------------------------------------


def test_per_project_one_file_per_project_folder_and_per_project_in_the_report(
    tmp_path: Path,
) -> None:
    sink = Sink(tmp_path / "drop", share="per-project")
    for name in ("P1", "P3 (old)"):
        (sink.root / "incoming" / name).mkdir()
    data = report(
        settling=[settling("copying", session="P1/S03/E1")],
        not_taken=[blocked("P2/S07/E1"), blocked("loose.dcm", kind="file")],
        done=[finished("P4/S00/E1", NOW, "done")],
    )
    sink.files(data, None)
    names = sorted(p.name for p in sink.root.iterdir() if p.name != "incoming")
    [p3] = [n for n in names if n.startswith("STATUS-P3")]
    assert names == sorted(["STATUS-P1.txt", "STATUS-P2.txt", p3, "STATUS-P4.txt"])
    assert "P1/S03/E1" in sink.text("STATUS-P1.txt") and "P2/" not in sink.text("STATUS-P1.txt")
    assert "Nothing waiting or in progress." in sink.text(p3)
    assert "project P3 (old)" in sink.text(p3)
    assert "loose.dcm" not in "".join(sink.text(n) for n in names)
    assert not (sink.root / "STATUS.txt").exists()

    # The folder goes (tidied after its last session), the file stays alive.
    (sink.root / "incoming" / "P3 (old)").rmdir()
    sink.clock.now += 61
    before = sink.inode(p3)
    sink.files(report(), None)
    assert sink.inode(p3) != before


def test_switching_to_per_project_removes_the_one_file(tmp_path: Path) -> None:
    sink = Sink(tmp_path / "drop")
    sink.files(report(work=[job("next")]), None)
    assert (sink.root / "STATUS.txt").is_file()
    sink.config = replace(sink.config, status=replace(sink.config.status, share="per-project"))
    sink.files(report(work=[job("next")]), None)
    assert sorted(p.name for p in sink.root.iterdir()) == ["STATUS-P1.txt", "incoming"]


def test_a_quiet_project_keeps_its_last_sessions_though_others_delivered_since(
    tmp_path: Path,
) -> None:
    sink = Sink(tmp_path / "drop", share="per-project", listed=3)
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    try:
        rows = [("P2/S1/E1", 100.0)] + [(f"P1/S{n}/E1", 200.0 + n) for n in range(5)]
        for n, (relpath, at) in enumerate(rows):
            ledger.claimed(f"c{n}", relpath, at)
            where = str(sink.root / "done" / relpath)
            ledger.update(f"c{n}", at, state="done", outcome="done", final_path=where)
        # The board's report holds the last `listed` of all projects: none of P2.
        data = report(done=[finished(f"P1/S{n}/E1", NOW, "done") for n in (4, 3, 2)])
        sink.files(data, ledger)
    finally:
        ledger.close()
    assert "LAST DELIVERED:\r\n  1 Jan 1970 00:01  P2/S1/E1\r\n" in sink.text("STATUS-P2.txt")
    p1 = sink.text("STATUS-P1.txt")
    assert "P1/S4/E1" in p1 and "P1/S2/E1" in p1 and "P1/S1/E1" not in p1  # `listed` each


def test_a_change_held_back_by_the_interval_is_written_when_the_loop_wakes_for_it(
    sink: Sink,
) -> None:
    sink.files(report(), None)
    assert sink.files.due() == float("inf")
    sink.clock.now += 1
    sink.files(report(settling=[settling("copying")]), None)  # the board calls no more
    assert "Nothing waiting" in sink.text() and sink.files.due() == 1005.0
    sink.files.flush()  # too early: nothing
    assert "Nothing waiting" in sink.text()
    sink.clock.now = sink.files.due()
    sink.files.flush()
    assert "still being copied" in sink.text() and sink.files.due() == float("inf")


def test_a_folder_that_cannot_be_written_never_makes_the_loop_spin(tmp_path: Path) -> None:
    sink = Sink(tmp_path / "drop")
    sink.files(report(), None)
    sink.clock.now += 1
    sink.files(report(settling=[settling("copying")]), None)
    (sink.root / "STATUS.txt").unlink()
    sink.root.rename(tmp_path / "gone")
    sink.clock.now = sink.files.due()
    sink.files.flush()  # fails: said once, tried again at the next call
    assert sink.files.due() == float("inf")
    assert "cannot write" in str((sink.files.state() or {})["problem"])


# -- in the service ----------------------------------------------------------------------------


def test_the_service_writes_the_files_and_a_reload_changes_them(
    drop: Drop, emulator: Emulator
) -> None:
    drop.write_config(emulator.url, settle=10.0)
    clock = ServiceClock()
    service = start_service(drop, clock)
    try:
        write_session(drop.incoming / "P1" / "S01" / "E1", [SeriesSpec(1, "T1", images=1)])
        clock.now += 6  # past the status files' interval since the start
        service.waker.wake()
        service.tick()
        [item] = service.snapshot()["settling"]
        assert (item["phase"], item["ready_at"]) == ("copying", iso(clock.now + 10.0))
        text = (drop.root / "STATUS.txt").read_bytes().decode("utf-8-sig")
        assert "P1/S01/E1\r\n      still being copied (1 file, " in text
        assert service.snapshot()["share_status"] == {
            "folder": str(drop.root),
            "files": ["STATUS.txt"],
            "problem": None,
        }

        drop.write_config(
            emulator.url, settle=10.0, extra='[status]\nshare = "per-project"\nhtml = true\n'
        )
        service.request_reload()
        service._take_signals()
        clock.now += 1
        service.waker.wake()
        service.tick()
        assert sorted(p.name for p in drop.root.glob("STATUS*")) == [
            "STATUS-P1.html",
            "STATUS-P1.txt",
        ]
    finally:
        service.close()
    assert "xnat-drop: NOT running" in (drop.root / "STATUS-P1.txt").read_text(encoding="utf-8-sig")


def test_a_held_change_is_written_at_its_time_whatever_the_rounding(sink: Sink) -> None:
    sink.clock.now = 1019.004
    assert (1019.004 + 5.0) - 1019.004 < 5.0  # floating point: its age is not yet 5 s
    sink.files(report(), None)
    sink.clock.now = 1019.1
    sink.files(report(settling=[settling("copying")]), None)
    sink.clock.now = sink.files.due()
    sink.files.flush()
    assert "still being copied" in sink.text() and sink.files.due() == float("inf")
