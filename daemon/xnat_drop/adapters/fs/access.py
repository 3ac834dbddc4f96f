"""Who may do what in the drop tree: the service's own ids, and the facts that say why a folder
in incoming/ cannot be taken. Effect, read-only: fstat and lstat through directory fds (never
through a link), group names from the system.

core/blocked.py turns the facts into words and fixes.
"""

from __future__ import annotations

import contextlib
import functools
import grp
import os
import stat
from pathlib import Path

from xnat_drop.adapters.fs.beneath import Dir
from xnat_drop.core.blocked import Access, Me, Place, Problem, refused, unreadable
from xnat_drop.core.shown import shown

# The owner, group and mode of the folder holding a candidate and of the candidate itself, as
# the last look found them (None: it could not look). A change means someone fixed something.
Gate = tuple[Access | None, Access | None]


@functools.cache
def _ids() -> tuple[int, frozenset[int]]:
    """The service's user id and every group it is in (they do not change while it runs)."""
    return os.geteuid(), frozenset({os.getegid(), *os.getgroups()})


def may_read(st: os.stat_result, dir_fd: int, name: str) -> bool:
    """False when the service may not read the regular file `name` (lstat `st`) in the open
    folder `dir_fd`: its mode bits say so and the kernel agrees (an access control list may
    allow what the bits do not). Costs nothing but a few comparisons in the usual case."""
    uid, groups = _ids()
    if uid == 0:
        return True
    # core.blocked.Me.may, inlined: this runs for every file of every candidate at each scan.
    if st.st_uid == uid:
        bits = st.st_mode >> 6
    elif st.st_gid in groups:
        bits = st.st_mode >> 3
    else:
        bits = st.st_mode
    if bits & 4:
        return True
    try:
        return os.access(name, os.R_OK, dir_fd=dir_fd)
    except OSError:
        return False


def _me(lab_gid: int | None) -> Me:
    uid, groups = _ids()
    lab = group_name(lab_gid) if lab_gid is not None and lab_gid in groups else ""
    return Me(uid, groups, lab)


@functools.lru_cache(maxsize=64)
def group_name(gid: int) -> str:
    """The group's name, or its number when the system does not know it."""
    try:
        return grp.getgrgid(gid).gr_name
    except (KeyError, OverflowError):
        return str(gid)


def _access(st: os.stat_result) -> Access:
    return Access(st.st_uid, st.st_gid, st.st_mode)


def _look(incoming: Path, relpath: tuple[str, ...]) -> tuple[int | None, Gate]:
    """incoming/'s group, and the access of the folder holding `relpath` and of `relpath`
    itself (None for what could not be looked at, or is not a folder)."""
    lab = holder_access = own_access = None
    with contextlib.suppress(OSError), Dir.open(incoming) as top:
        lab = os.fstat(top.fd).st_gid
        with top.descend(relpath[:-1]) as holder:
            holder_access = _access(os.fstat(holder.fd))
            own = holder.lstat(relpath[-1])
            if own is not None and stat.S_ISDIR(own.st_mode):
                own_access = _access(own)
    return lab, (holder_access, own_access)


def diagnose(incoming: Path, relpath: tuple[str, ...], exc: OSError) -> tuple[Problem, Gate]:
    """Why the claim of incoming/`relpath` failed with `exc`, with the fix; and the gate (the
    access found, to notice when someone changes it)."""
    lab, gate = _look(incoming, relpath)
    holder, own = gate
    path = incoming.joinpath(*relpath)
    parent = None if holder is None else Place(shown(str(path.parent)), holder)
    folder = None if own is None else Place(shown(str(path)), own)
    names = {access.gid: group_name(access.gid) for access in gate if access is not None}
    detail = shown(exc.strerror or str(exc))
    return refused(exc.errno or 0, detail, _me(lab), parent, folder, names), gate


def diagnose_unreadable(
    incoming: Path, relpath: tuple[str, ...], first: str, count: int
) -> Problem:
    """Why incoming/`relpath` holds `count` entries the service cannot read, the first at
    `first` (a "/"-separated path below it, "." for the folder itself), with the fix."""
    lab, (_, own) = _look(incoming, relpath)
    inside = own
    if first != ".":
        parts = tuple(first.split("/"))
        inside = None
        with (
            contextlib.suppress(OSError),
            Dir.open(incoming) as top,
            top.descend((*relpath, *parts[:-1])) as holder,
        ):
            st = holder.lstat(parts[-1])
            inside = None if st is None else _access(st)
    folder = Place(shown(str(incoming.joinpath(*relpath))), own or Access(-1, -1, 0))
    names = {access.gid: group_name(access.gid) for access in (own, inside) if access is not None}
    return unreadable(_me(lab), folder, first, count, inside, names)
