"""Walking the drop tree without ever following a link or opening a file. Read-only effects.

Everything here uses `lstat`-level information from `os.scandir`, so symlinks, FIFOs, sockets
and devices are reported as what they are and never followed or opened.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .names import is_hidden_dir

# What a non-directory entry is, by its lstat mode.
REGULAR = "file"
_SPECIAL = (
    (stat.S_ISLNK, "symlink"),
    (stat.S_ISFIFO, "fifo"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


@dataclass(frozen=True, slots=True)
class Entry:
    """A non-directory entry below some root: `relpath` uses "/" separators."""

    relpath: str
    kind: str  # REGULAR, "symlink", "fifo", "socket", "... device", "unreadable"
    size: int
    mtime_ns: int


def kind_of(mode: int) -> str:
    """Name the kind of a file from its lstat mode."""
    if stat.S_ISREG(mode):
        return REGULAR
    for test, name in _SPECIAL:
        if test(mode):
            return name
    return "special file"


def walk(root: Path) -> Iterator[Entry]:
    """Yield every non-directory entry below `root`, never following links.

    Files of a folder come in name order, before those of its subfolders.

    A folder that cannot be listed is yielded as one entry of kind "unreadable" (size 0) so the
    caller sees it instead of silently missing its files.
    """
    stack = [""]
    while stack:
        prefix = stack.pop()
        # A subfolder was a folder when listed; if it is a link now, it is not followed.
        flags = _DIR_FLAGS | (os.O_NOFOLLOW if prefix else 0)
        try:
            fd = os.open(root / prefix if prefix else root, flags)
        except OSError:
            yield Entry(prefix or ".", "unreadable", 0, 0)
            continue
        try:
            # Names only, then one lstat each: a folder of 10,000 DirEntry objects with their
            # cached stat results would hold about 7 MB while it is walked, names about 0.6 MB.
            try:
                names = sorted(os.listdir(fd))
            except OSError:
                yield Entry(prefix or ".", "unreadable", 0, 0)
                continue
            subfolders = []
            for name in names:
                rel = f"{prefix}/{name}" if prefix else name
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except OSError:  # vanished between listing and stat: a writer is still busy
                    continue
                if stat.S_ISDIR(st.st_mode):
                    subfolders.append(rel)
                else:
                    yield Entry(rel, kind_of(st.st_mode), st.st_size, st.st_mtime_ns)
            stack.extend(reversed(subfolders))
        finally:
            os.close(fd)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class Layout:
    """What a look at incoming/ found: session candidates, and empty folders above them."""

    sessions: tuple[tuple[str, ...], ...]
    empty: tuple[tuple[str, ...], ...]  # project/subject folders with nothing in them


def find_sessions(incoming: Path, depth: int) -> Layout:
    """Folders exactly `depth` levels below `incoming`: the session candidates.

    Hidden and OS-clutter folders are skipped at every level, as are symlinks to folders.
    Folders above the session level that hold nothing at all are listed as `empty`.
    """
    found: list[tuple[str, ...]] = []
    empty: list[tuple[str, ...]] = []

    def descend(folder: Path, parts: tuple[str, ...]) -> None:
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            return
        if parts and not entries:
            empty.append(parts)
            return
        children = sorted(
            e.name for e in entries if e.is_dir(follow_symlinks=False) and not is_hidden_dir(e.name)
        )
        for name in children:
            if len(parts) + 1 == depth:
                found.append((*parts, name))
            else:
                descend(folder / name, (*parts, name))

    descend(incoming, ())
    return Layout(tuple(found), tuple(empty))
