"""A claimed folder is filed only as inspection read it (service/unchanged.py):
compared side by side with a new walk, for files kept in memory and on disk alike."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xnat_drop.adapters.dicom.inspection import inspect
from xnat_drop.core.errors import SessionChangedError
from xnat_drop.service.unchanged import unchanged_since_inspection


def folder_of(tmp_path: Path) -> Path:
    folder = tmp_path / "S1"
    for series in ("a", "b"):
        (folder / series).mkdir(parents=True)
        for i in range(5):
            (folder / series / f"f{i}.txt").write_text(f"{series}{i}")
    (folder / "a" / ".DS_Store").write_bytes(b"junk")
    return folder


@pytest.fixture(params=[None, 0], ids=["in-memory", "on-disk"])
def bound(request: pytest.FixtureRequest) -> int | None:
    return request.param  # type: ignore[no-any-return]


def check(folder: Path, bound: int | None, change: str, tmp_path: Path) -> None:
    session = inspect(folder, ("S1",), spill=tmp_path, bound=bound)
    if change == "appeared":
        (folder / "b" / "f9.txt").write_text("new")
    elif change == "vanished":
        (folder / "b" / "f4.txt").unlink()
    elif change == "written":
        path = folder / "a" / "f2.txt"
        path.write_text("changed!")
        os.utime(path, ns=(1, 1))
    elif change == "renamed":
        (folder / "a" / "f1.txt").rename(folder / "b" / "f7.txt")
    elif change == "new-junk":
        (folder / "b" / "Thumbs.db").write_bytes(b"x")
    elif change == "junk-gone":
        (folder / "a" / ".DS_Store").unlink()
    unchanged_since_inspection(folder, session)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ("appeared", "b/f9.txt appeared"),
        ("vanished", "b/f4.txt vanished"),
        ("written", "a/f2.txt was written"),
        ("renamed", "b/f7.txt appeared"),
    ],
)
def test_a_change_since_inspection_is_named(
    tmp_path: Path, bound: int | None, change: str, words: str
) -> None:
    with pytest.raises(SessionChangedError, match=words):
        check(folder_of(tmp_path), bound, change, tmp_path)


@pytest.mark.parametrize("change", ["none", "new-junk", "junk-gone"])
def test_junk_coming_or_going_changes_nothing(
    tmp_path: Path, bound: int | None, change: str
) -> None:
    check(folder_of(tmp_path), bound, change, tmp_path)
