"""Notes beside what incoming/ holds but the daemon cannot take: `<name>.NOT-TAKEN.txt` in the
same folder, never inside a session folder. Effect.

The folder holding a note is the lab's, so a file with a note's name may be anyone's. Nothing
here follows a link or overwrites what is not ours: a note is created with O_EXCL, and an
existing one is rewritten or removed only after the open file itself shows it is ours (a
regular file owned by the service, starting with core.blocked.NOTE_HEAD). A note gets the group
of its folder and is readable by whoever may read that folder. No call raises OSError: a note
that cannot be written (a folder the service may not write, a full disk) is not there, and the
caller says so.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from xnat_drop.adapters.fs.beneath import Dir, name_fits, take_group
from xnat_drop.adapters.fs.filing import fitted
from xnat_drop.core.blocked import NOTE_HEAD, NOTE_SUFFIX

_HEAD = NOTE_HEAD.encode()
_LIMIT = 64 * 1024  # bytes of a note: far more than any note of ours


def note_name(name: str) -> str:
    """The note's name for the folder or file `name` (shortened when it would not fit)."""
    note = name + NOTE_SUFFIX
    return note if name_fits(note) else fitted(name) + NOTE_SUFFIX


def put(incoming: Path, relpath: tuple[str, ...], text: str) -> bool:
    """Write the note for incoming/`relpath` beside it (or leave it, if it says `text`
    already). False when it cannot: nothing of anyone else's is touched then."""
    data = text.encode("utf-8", "backslashreplace")
    try:
        with Dir.open(incoming) as top, top.descend(relpath[:-1]) as folder:
            return _put(folder, note_name(relpath[-1]), data)
    except OSError:
        return False


def remove(incoming: Path, relpath: tuple[str, ...]) -> None:
    """Remove the note for incoming/`relpath`, if there is one and it is ours."""
    remove_named(incoming, relpath[:-1], note_name(relpath[-1]))


def remove_named(incoming: Path, folder: tuple[str, ...], name: str) -> bool:
    """Remove the note `name` in incoming/`folder` if it is ours; True when it was."""
    with contextlib.suppress(OSError), Dir.open(incoming) as top, top.descend(folder) as here:
        fd = _ours(here, name, os.O_RDONLY)
        if fd is None:
            return False
        try:
            mine = os.fstat(fd)
        finally:
            os.close(fd)
        now = here.lstat(name)
        if now is not None and (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
            here.unlink(name)
            return True
    return False


def _put(folder: Dir, name: str, data: bytes) -> bool:
    try:
        fd = folder.open_file(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        fd_or_none = _ours(folder, name, os.O_RDWR)
        if fd_or_none is None:
            return False  # someone else's file has the name: it stays as it is
        fd = fd_or_none
        try:
            if os.pread(fd, len(data) + 1, 0) != data:
                os.ftruncate(fd, 0)
                _write(fd, data)
        finally:
            os.close(fd)
        return True
    try:
        parent = os.fstat(folder.fd)
        take_group(fd, parent)
        # Readable by whoever may read the folder; written by the service only.
        os.fchmod(fd, (stat.S_IMODE(parent.st_mode) & 0o444) | 0o200)
        _write(fd, data)
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            folder.unlink(name)
        return False
    os.close(fd)
    return True


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _ours(folder: Dir, name: str, flags: int) -> int | None:
    """An fd for the note `name` if it is one of ours (else None): a regular file, owned by
    the service, that starts like a note. Never follows a link or waits on a FIFO."""
    try:
        fd = folder.open_file(name, flags | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (
            stat.S_ISREG(st.st_mode)
            and st.st_uid == os.geteuid()
            and st.st_size <= _LIMIT
            and os.pread(fd, len(_HEAD), 0) == _HEAD
        ):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None
