"""Walking the drop tree without ever following a link or opening a file. Read-only effects.

Every folder is opened from its parent's descriptor (beneath.Dir), never by a path, and every
entry is looked at with `lstat`, so symlinks, FIFOs, sockets and devices are reported as what
they are and never followed or opened, even when a writer swaps a folder for a link while the
walk runs. Paths of any length work (each call names one component), and nesting is cut off
at MAX_DEPTH: a `mkdir` loop costs a line in a report, not the daemon's file descriptors.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Collection, Generator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from xnat_drop.adapters.fs.access import may_read
from xnat_drop.adapters.fs.beneath import Dir, UnsafePathError, stamp
from xnat_drop.core.blocked import Access
from xnat_drop.core.names import is_hidden_dir

# What a non-directory entry is, by its lstat mode.
REGULAR = "file"
TOO_DEEP = "too deep"
UNREADABLE = "unreadable"
MAX_DEPTH = 64  # folder levels below a session; scanner exports use 1 to 6
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
    kind: str  # REGULAR, "symlink", "fifo", "socket", "... device", UNREADABLE, TOO_DEEP
    size: int
    mtime_ns: int
    stamp: int = 0  # beneath.stamp of the entry's lstat (0 when there was none)
    readable: bool = True  # False: a regular file the service may not read (access.may_read)


def kind_of(mode: int) -> str:
    """Name the kind of a file from its lstat mode."""
    if stat.S_ISREG(mode):
        return REGULAR
    for test, name in _SPECIAL:
        if test(mode):
            return name
    return "special file"


def walk(root: Path | Dir) -> Iterator[Entry]:
    """Yield every non-directory entry below `root`, never following links.

    Files of a folder come in name order, before those of its subfolders. A folder that
    cannot be opened or listed, or whose entries cannot be looked at, is yielded as one entry
    of kind UNREADABLE (size 0), a folder deeper than MAX_DEPTH as one of kind TOO_DEEP, so the
    caller sees them instead of silently missing their files. A folder that turned into a link
    is yielded as a "symlink". A regular file the service may not read has `readable` False.
    """
    try:
        top = _opened(root)
    except OSError:
        yield Entry(".", UNREADABLE, 0, 0)
        return
    # One open folder per level of the current path: at most MAX_DEPTH descriptors.
    stack: list[tuple[Dir, str, Iterator[str]]] = []
    try:
        subfolders = yield from _list(top, "")
        stack.append((top, "", iter(subfolders)))
        while stack:
            folder, prefix, pending = stack[-1]
            name = next(pending, None)
            if name is None:
                folder.close()
                stack.pop()
                continue
            rel = f"{prefix}/{name}" if prefix else name
            if len(stack) > MAX_DEPTH:
                yield Entry(rel, TOO_DEEP, 0, 0)
                continue
            try:
                child = folder.child(name)
            except FileNotFoundError:  # removed since it was listed: a writer is busy
                continue
            except UnsafePathError:  # swapped for a link (or a file) since it was listed
                st = folder.lstat(name)
                if st is not None:
                    yield Entry(rel, kind_of(st.st_mode), st.st_size, st.st_mtime_ns)
                continue
            except OSError:
                yield Entry(rel, UNREADABLE, 0, 0)
                continue
            subfolders = yield from _list(child, rel)
            stack.append((child, rel, iter(subfolders)))
    finally:
        for folder, _, _ in stack:
            folder.close()
        top.close()


def _opened(root: Path | Dir) -> Dir:
    """A Dir of its own for `root` (a copy of a given Dir's descriptor)."""
    return Dir(os.dup(root.fd), root.path) if isinstance(root, Dir) else Dir.open(root)


def _list(folder: Dir, prefix: str) -> Generator[Entry, None, list[str]]:
    """Yield the non-folder entries of one open folder; return the names of its folders."""
    # Names only, then one lstat each: a folder of 10,000 DirEntry objects with their cached
    # stat results would hold about 7 MB while it is walked, names about 0.6 MB.
    try:
        names = folder.names()
    except OSError:
        yield Entry(prefix or ".", UNREADABLE, 0, 0)
        return []
    names.sort()  # in place: no second list of a big folder's names
    subfolders = []
    for name in names:
        rel = f"{prefix}/{name}" if prefix else name
        try:
            st = os.stat(name, dir_fd=folder.fd, follow_symlinks=False)
        except FileNotFoundError:  # vanished between listing and stat: a writer is still busy
            continue
        except OSError:  # a folder that may be listed but not searched (mode r--): its files
            yield Entry(prefix or ".", UNREADABLE, 0, 0)  # cannot be looked at, nor read
            return []
        if stat.S_ISDIR(st.st_mode):
            subfolders.append(name)
        else:
            kind = kind_of(st.st_mode)
            readable = kind != REGULAR or may_read(st, folder.fd, name)
            yield Entry(rel, kind, st.st_size, st.st_mtime_ns, stamp(st), readable)
    return subfolders


Stamp = tuple[int, int, int]  # a folder's own (inode, mtime, ctime)


def folder_stamp(st: os.stat_result) -> Stamp:
    """Unchanged, nothing was added to, removed from or renamed in the folder itself."""
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True, slots=True)
class Layout:
    """What a look at incoming/ found: session candidates, and empty folders above them.

    `parents` gives the stamp of each folder that holds candidates, taken before it was
    listed; `reused` names the ones not listed again because their stamp was the one given in
    `unchanged` (the caller still knows their candidates). `files` names, for each folder
    above the session level that has any, the entries that are neither folders nor links
    (hidden ones included: the caller judges names), with the folder's stamp taken before it
    was listed (unchanged, so are they). `access` gives, for each candidate named in `look`,
    the owner, group and mode of the folder holding it and of itself.
    """

    sessions: tuple[tuple[str, ...], ...]
    empty: tuple[tuple[str, ...], ...]  # project/subject folders with nothing in them
    links: tuple[tuple[str, ...], ...] = ()  # links where a folder could be: never followed
    parents: tuple[tuple[tuple[str, ...], Stamp], ...] = ()
    reused: tuple[tuple[str, ...], ...] = ()
    files: tuple[tuple[tuple[str, ...], Stamp, tuple[str, ...]], ...] = ()
    access: tuple[tuple[tuple[str, ...], tuple[Access, Access]], ...] = ()


def find_sessions(
    incoming: Path | Dir,
    depth: int,
    unchanged: Mapping[tuple[str, ...], Stamp] | None = None,
    look: Collection[tuple[str, ...]] = (),
) -> Layout:
    """Folders exactly `depth` levels below `incoming`: the session candidates.

    Hidden and OS-clutter folders are skipped at every level. Links are never followed: they
    are listed as `links`, for people to hear about. Folders above the session level that hold
    nothing at all are listed as `empty`, other entries there as `files`. A folder of
    candidates whose stamp is still the one `unchanged` gives is not listed (see Layout). The
    candidates in `look` get their `access` (one lstat each, relative to the open folder).
    """
    found: list[tuple[str, ...]] = []
    empty: list[tuple[str, ...]] = []
    links: list[tuple[str, ...]] = []
    parents: list[tuple[tuple[str, ...], Stamp]] = []
    reused: list[tuple[str, ...]] = []
    files: list[tuple[tuple[str, ...], Stamp, tuple[str, ...]]] = []
    access: list[tuple[tuple[str, ...], tuple[Access, Access]]] = []

    def descend(folder: Dir, parts: tuple[str, ...]) -> None:
        here = None
        try:
            st = os.fstat(folder.fd)
        except OSError:  # renamed away since it was opened (a FUSE or network share says so)
            return
        now = folder_stamp(st)  # before the listing: a later change shows
        if len(parts) + 1 == depth:
            if unchanged is not None and unchanged.get(parts) == now:
                reused.append(parts)
                return
            parents.append((parts, now))
            here = Access(st.st_uid, st.st_gid, st.st_mode)
        try:
            entries = list(folder.scandir())
        except OSError:
            return
        if parts and not entries:
            empty.append(parts)
            return
        children = []
        names = []
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                if not is_hidden_dir(e.name):
                    children.append(e.name)
            elif e.is_symlink():
                if not is_hidden_dir(e.name):
                    links.append((*parts, e.name))
            else:
                names.append(e.name)
        if names:
            files.append((parts, now, tuple(names)))
        children.sort()
        for name in children:
            if len(parts) + 1 == depth:
                relpath = (*parts, name)
                found.append(relpath)  # a folder, by its type in the listing
                if here is not None and relpath in look:
                    with contextlib.suppress(OSError):
                        own = os.stat(name, dir_fd=folder.fd, follow_symlinks=False)
                        itself = Access(own.st_uid, own.st_gid, own.st_mode)
                        access.append((relpath, (here, itself)))
                continue
            try:
                child = folder.child(name)
            except OSError:  # gone, or swapped for a link since the listing
                continue
            with child:
                descend(child, (*parts, name))

    try:
        top = _opened(incoming)
    except OSError:
        return Layout((), ())
    with top:
        descend(top, ())
    return Layout(
        tuple(found),
        tuple(empty),
        tuple(sorted(links)),
        tuple(parents),
        tuple(reused),
        tuple(files),
        tuple(access),
    )
