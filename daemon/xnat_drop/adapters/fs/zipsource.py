"""The files of a zip being streamed: opened below the session folder through no link, and
checked to be still the files inspection judged (zipstream.py and zipdeflate.py share this).
"""

from __future__ import annotations

import errno
import os
import stat

from xnat_drop.adapters.fs.beneath import Beneath, Dir, UnsafePathError, stamp
from xnat_drop.adapters.fs.zipformat import Planned, dos_datetime
from xnat_drop.core.errors import SessionChangedError

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class EntryFiles:
    """Opens the entries' files: given a `root` (an open folder, which this then owns), each
    source is a "/"-separated path below it, opened one folder at a time without following
    any link; without one, an absolute path opened with O_NOFOLLOW."""

    def __init__(self, root: Dir | None) -> None:
        self._root = root
        self._files = Beneath(root) if root is not None else None

    def close(self) -> None:
        """Close the folders: every file has been read, or none will be."""
        if self._files is not None:
            self._files.close()
        if self._root is not None:
            self._root.close()

    def open(self, p: Planned) -> tuple[int, int, int]:
        """Open the entry planned as `p` without following a link or blocking on a FIFO;
        check it. Returns the fd, the stamp it must keep until it has been read (the entry's
        own, or when it has none the one it has now) and its MS-DOS date (date << 16 | time).
        """
        try:
            if self._files is not None:
                fd = self._files.open(os.fspath(p.source))
            else:
                fd = os.open(p.source, _OPEN_FLAGS)
        except UnsafePathError as exc:  # a folder on its path is a link (or a file) now
            raise SessionChangedError(
                f"{p.source}: {exc.strerror} (zip entry {p.arcname!r})"
            ) from exc
        except OSError as exc:
            reason = {
                errno.ENOENT: "vanished",
                errno.ENOTDIR: "vanished (a parent folder is gone)",
                errno.ELOOP: "is now a symbolic link",
                errno.ENXIO: "is now a socket or a device",
            }.get(exc.errno or 0)
            if reason is None:
                raise
            raise SessionChangedError(f"{p.source}: {reason} (zip entry {p.arcname!r})") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "not a regular file"
                raise SessionChangedError(f"{p.source}: is now {kind} (zip entry {p.arcname!r})")
            check_size(p, st)
            now = stamp(st)
            if p.stamp and now != p.stamp:
                raise SessionChangedError(
                    f"{p.source}: changed after it was inspected (zip entry {p.arcname!r})"
                )
            tm, dt = dos_datetime(float(int(st.st_mtime)))  # DOS time has 2 s steps
        except BaseException:
            os.close(fd)
            raise
        # O_NONBLOCK stays set: it has no effect on reads from regular files.
        return fd, p.stamp or now, dt << 16 | tm


def check_unchanged(fd: int, p: Planned, expected: int) -> None:
    """Raise SessionChangedError unless the file open at `fd` still has the stamp `expected`."""
    st = os.fstat(fd)
    check_size(p, st)
    if stamp(st) != expected:
        raise SessionChangedError(f"{p.source}: changed while being read (zip entry {p.arcname!r})")


def check_size(p: Planned, st: os.stat_result) -> None:
    if st.st_size != p.size:
        raise SessionChangedError(
            f"{p.source}: size is now {st.st_size} bytes, {p.size} expected"
            f" (zip entry {p.arcname!r})"
        )


def shrank(p: Planned, got: int) -> SessionChangedError:
    return SessionChangedError(
        f"{p.source}: shrank while being read, {got} of {p.size} bytes (zip entry {p.arcname!r})"
    )


def read_into(fd: int, slots: list[memoryview]) -> int:
    """Fill `slots` from `fd` in order (scattered reads); returns the bytes read, fewer only
    where the file ends."""
    got = 0
    while slots:
        n = os.readv(fd, slots)
        if n == 0:
            break
        got += n
        while slots and n >= len(slots[0]):
            n -= len(slots[0])
            slots = slots[1:]
        if n:
            slots = [slots[0][n:], *slots[1:]]
    return got
