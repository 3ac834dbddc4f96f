"""stability and names: pure, time passed in."""

from __future__ import annotations

import pytest

from xnat_drop.core.names import is_hidden_dir, is_junk_path, is_partial_name
from xnat_drop.core.stability import fingerprint, is_stable, observe, settles_at

FILES = [("a/1.dcm", 100, 5), ("a/2.dcm", 200, 7)]


def test_fingerprint_summarises_names_sizes_and_newest_mtime() -> None:
    fp = fingerprint(FILES)
    assert (fp.count, fp.total_bytes, fp.newest_mtime_ns, fp.has_partial) == (2, 300, 7, False)
    assert fingerprint(reversed(FILES)) == fp  # order of listing does not matter


@pytest.mark.parametrize(
    "changed",
    [
        [("a/1.dcm", 100, 5), ("a/2.dcm", 201, 7)],  # a file grew
        [("a/1.dcm", 100, 5), ("a/2.dcm", 200, 8)],  # rewritten, same size
        [("a/1.dcm", 100, 5), ("a/3.dcm", 200, 7)],  # renamed
        [*FILES, ("a/3.dcm", 0, 1)],  # a new empty file
    ],
)
def test_any_change_changes_the_fingerprint(changed: list[tuple[str, int, int]]) -> None:
    assert fingerprint(changed) != fingerprint(FILES)


def test_junk_does_not_count() -> None:
    assert fingerprint(
        [*FILES, (".DS_Store", 6, 99), ("__MACOSX/a/._1.dcm", 4, 99)]
    ) == fingerprint(FILES)


def test_partial_names_are_flagged() -> None:
    assert fingerprint([*FILES, ("a/3.dcm.part", 10, 9)]).has_partial


def test_observe_keeps_since_while_unchanged_and_restarts_on_change() -> None:
    first = observe(None, fingerprint(FILES), now=10.0)
    assert first.since == 10.0
    assert observe(first, fingerprint(FILES), now=50.0).since == 10.0
    changed = observe(first, fingerprint(FILES[:1]), now=50.0)
    assert changed.since == 50.0


def test_is_stable_after_settle_seconds() -> None:
    seen = observe(None, fingerprint(FILES), now=10.0)
    assert not is_stable(seen, now=39.9, settle=30)
    assert is_stable(seen, now=40.0, settle=30)
    assert settles_at(seen, 30) == 40.0


def test_empty_or_partial_folders_never_settle() -> None:
    empty = observe(None, fingerprint([]), now=0.0)
    partial = observe(None, fingerprint([("x.crdownload", 1, 1)]), now=0.0)
    for seen in (empty, partial):
        assert not is_stable(seen, now=1e9, settle=1)
        assert settles_at(seen, 1) is None


@pytest.mark.parametrize(
    ("name", "partial"),
    [
        ("IM1.dcm.part", True),
        ("IM1.dcm.partial", True),
        ("download.crdownload", True),
        ("x.TMP", True),
        ("~$report.docx", True),
        (".~lock.sheet.ods#", True),
        (".IM0001.dcm.Ab3dE9", True),  # rsync's temporary name
        ("IM0001.dcm", False),
        (".DS_Store", False),
        ("IM0001", False),
    ],
)
def test_partial_names(name: str, partial: bool) -> None:
    assert is_partial_name(name) is partial


@pytest.mark.parametrize(
    ("path", "junk"),
    [
        (".DS_Store", True),
        ("a/Thumbs.db", True),
        ("a/desktop.ini", True),
        ("a/._IM1.dcm", True),
        ("__MACOSX/a/IM1.dcm", True),
        ("DICOMDIR", True),
        ("a/IM1.dcm", False),
        ("a/.hidden.dcm", False),
    ],
)
def test_junk_paths(path: str, junk: bool) -> None:
    assert is_junk_path(path) is junk


def test_hidden_dirs() -> None:
    assert is_hidden_dir(".work") and is_hidden_dir("$RECYCLE.BIN") and is_hidden_dir("@eaDir")
    assert not is_hidden_dir("S01")
