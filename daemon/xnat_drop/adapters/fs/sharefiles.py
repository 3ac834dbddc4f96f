"""The status files on the share (STATUS.txt, ...): in the folder holding incoming/, never in
it, so the watcher and the scans (which see incoming/ only) never take them for sessions or
stray files. Effect.

Each file is replaced whole: a temporary file is created beside it (O_EXCL | O_NOFOLLOW: never
an existing file, never through a link), written and renamed over the name, so a
reader on the share sees the old file or the new one, never half of one, and a link planted
at the name is replaced, its target untouched. Mode 0644 whatever the umask: every lab member
reads it. A file is only ever removed while it is still the one written here (same inode).
No fsync: the files are rewritten every few seconds and at every start, so a crash can cost
nothing a reader would miss, and a sync every few seconds would cost a busy share.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from xnat_drop.adapters.fs.beneath import Dir, take_group
from xnat_drop.core.names import is_junk_dir

# A file as written: device, inode, size, ctime. The inode alone is not enough: a file removed
# and another made may get the same number.
Ident = tuple[int, int, int, int]
MODE = 0o644


def folder_of(incoming: Path) -> Path:
    """Where the status files go: beside incoming/."""
    return incoming.parent


def write(folder: Path, files: Mapping[str, bytes]) -> dict[str, Ident]:
    """Replace each file in `folder` atomically; returns what each name now is.

    Raises OSError when the folder cannot be written (the files written before stay).
    """
    written: dict[str, Ident] = {}
    with Dir.open(folder) as where:
        parent = os.fstat(where.fd)
        for name, data in files.items():
            written[name] = _replace(where, parent, name, data)
    return written


def _replace(where: Dir, parent: os.stat_result, name: str, data: bytes) -> Ident:
    # Exact mode: the service's umask (0007) would keep others out.
    found = where.write_atomic(
        name, data, MODE, exact=True, sync=False, prepare=lambda fd: take_group(fd, parent)
    )
    return _ident(found)


def _ident(st: os.stat_result) -> Ident:
    return st.st_dev, st.st_ino, st.st_size, st.st_ctime_ns


def remove(folder: Path, files: Mapping[str, Ident]) -> None:
    """Remove each file that is still the one written (`files`: what `write` returned);
    whatever else now has the name is left alone. Raises OSError when the folder cannot be
    opened."""
    with Dir.open(folder) as where:
        for name, ident in files.items():
            st = where.lstat(name)
            if st is not None and stat.S_ISREG(st.st_mode) and _ident(st) == ident:
                with contextlib.suppress(FileNotFoundError):
                    where.unlink(name)


def replaced(folder: Path, files: Mapping[str, Ident]) -> list[str]:
    """The names of `files` (what `write` returned) that something else has since replaced:
    another daemon writing the status files of the same share, or a person. A name now
    missing is not counted. Raises OSError when the folder cannot be opened."""
    found = []
    with Dir.open(folder) as where:
        for name, ident in files.items():
            st = where.lstat(name)
            if st is not None and (not stat.S_ISREG(st.st_mode) or _ident(st) != ident):
                found.append(name)
    return found


def project_folders(incoming: Path) -> list[str]:
    """The folders directly in incoming/ (the project folders of a "project/..." layout),
    not links, not hidden, not the operating systems' clutter (`__MACOSX`). [] when it cannot
    be read."""
    try:
        with Dir.open(incoming) as top:
            return sorted(
                e.name
                for e in top.scandir()
                if e.is_dir(follow_symlinks=False)
                and not e.name.startswith(".")
                and not is_junk_dir(e.name)
            )
    except OSError:
        return []
