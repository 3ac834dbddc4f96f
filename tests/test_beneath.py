"""beneath.py, tree.py and shown.py on real folders: nothing is followed through a link, any
name survives, and odd trees cost bounded resources."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xnat_drop.adapters.fs.beneath import Beneath, Dir, UnsafePathError, check_name, stamp
from xnat_drop.adapters.fs.tree import MAX_DEPTH, TOO_DEEP, find_sessions, walk
from xnat_drop.core.shown import shown, shown_path


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("S01_MR1", "S01_MR1"),
        (os.fsdecode(b"M\xfcller"), "M\\xfcller"),
        ("a\nSTOPPING=1", "a\\nSTOPPING=1"),
        ("\x1b[2Jx", "\\x1b[2Jx"),
        ("abc\u202egpj.exe", "abc\\u202egpj.exe"),
        ("Bild_ß_图像 1", "Bild_ß_图像 1"),
        ("DERIVED\\PRIMARY", "DERIVED\\PRIMARY"),
    ],
)
def test_shown_escapes_what_cannot_be_printed_and_keeps_the_rest(name: str, expected: str) -> None:
    assert shown(name) == expected
    shown(name).encode("utf-8")  # always encodable: journal, JSON, SQLite


def test_shown_path_escapes_each_part() -> None:
    assert shown_path(("P1", "a\tb")) == "P1/a\\tb"


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\0b"])
def test_names_that_could_leave_a_folder_are_refused(name: str) -> None:
    with pytest.raises(UnsafePathError):
        check_name(name)


def test_a_link_is_never_opened_as_a_folder_or_a_file(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f").write_text("secret")
    os.symlink(tmp_path / "real", tmp_path / "link")
    os.symlink(tmp_path / "real" / "f", tmp_path / "flink")
    with Dir.open(tmp_path) as top:
        with pytest.raises(UnsafePathError, match="symbolic link"):
            top.child("link")
        with pytest.raises(OSError):
            top.open_file("flink")
        with pytest.raises(UnsafePathError, match="symbolic link"):
            top.descend(("link", "f"))
    with pytest.raises(UnsafePathError):
        Dir.open(tmp_path / "link")


def test_move_never_replaces_and_write_atomic_never_writes_through_a_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("keep")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with Dir.open(tmp_path) as top:
        with pytest.raises(FileExistsError):
            top.move("a", top, "b")
        os.symlink(outside, tmp_path / "report.txt")
        top.write_atomic("report.txt", b"new")
    assert outside.read_text() == "keep" and not (tmp_path / "report.txt").is_symlink()
    assert (tmp_path / "report.txt").read_bytes() == b"new"


def test_beneath_opens_files_below_but_not_through_a_swapped_folder(tmp_path: Path) -> None:
    session, other = tmp_path / "session", tmp_path / "other"
    (session / "series").mkdir(parents=True)
    (session / "series" / "IM1").write_bytes(b"mine")
    (other / "series").mkdir(parents=True)
    (other / "series" / "IM1").write_bytes(b"another patient")
    with Dir.open(session) as root, Beneath(root) as files:
        fd = files.open("series/IM1")
        assert os.read(fd, 10) == b"mine"
        os.close(fd)
        files.close()  # drop the cached folder, as a new task would
        os.rename(session / "series", session / "old")
        os.symlink(other / "series", session / "series")
        with pytest.raises(UnsafePathError):
            files.open("series/IM1")


def test_stamp_changes_with_a_same_size_rewrite_even_when_the_mtime_is_put_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"ORIGINAL")
    before = os.stat(path)
    fd = os.open(path, os.O_RDWR)
    os.pwrite(fd, b"DERIVED ", 0)
    os.utime(fd, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.close(fd)
    after = os.stat(path)
    assert after.st_size == before.st_size and after.st_mtime_ns == before.st_mtime_ns
    assert stamp(after) != stamp(before) and stamp(after) == stamp(os.stat(path))


def test_walk_reports_links_and_cuts_off_deep_nesting(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "IM1").write_bytes(b"x")
    os.symlink("/etc", tmp_path / "a" / "etc")
    deep = tmp_path.joinpath(*[f"d{n}" for n in range(MAX_DEPTH + 3)])
    deep.mkdir(parents=True)
    (deep / "lost").write_bytes(b"y")
    entries = {e.relpath: e.kind for e in walk(tmp_path)}
    assert entries["a/IM1"] == "file" and entries["a/etc"] == "symlink"
    assert [k for k in entries.values() if k == TOO_DEEP] == [TOO_DEEP]
    assert not any(p.endswith("lost") for p in entries)


def test_find_sessions_lists_links_and_never_descends_them(tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    (incoming / "P1" / "S01" / "E1").mkdir(parents=True)
    (tmp_path / "elsewhere" / "S02" / "E2").mkdir(parents=True)
    os.symlink(tmp_path / "elsewhere", incoming / "P2")
    layout = find_sessions(incoming, 3)
    assert layout.sessions == (("P1", "S01", "E1"),)
    assert layout.links == (("P2",),)


def test_find_sessions_passes_over_a_folder_renamed_away_while_it_is_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a FUSE or network share, fstat of an open folder that another host has just moved
    away (its claim) fails with ENOENT: the scan passes over it and sees the rest."""
    incoming = tmp_path / "incoming"
    for subject in ("S1", "S2"):
        (incoming / "P1" / subject / f"{subject}_MR1").mkdir(parents=True)
    real = os.fstat
    gone = os.stat(incoming / "P1" / "S1").st_ino

    def fstat(fd: int) -> os.stat_result:
        st = real(fd)
        if st.st_ino == gone:
            raise FileNotFoundError(2, "No such file or directory")
        return st

    monkeypatch.setattr(os, "fstat", fstat)
    layout = find_sessions(incoming, 3)
    assert layout.sessions == (("P1", "S2", "S2_MR1"),)
