"""What stops a dropped folder or file from being taken, and what a person must do about it. Pure.

Three kinds of trouble keep something in incoming/ for good, and each is said in words with its
fix: a folder the service may not move (`refused`: its mode, group, the sticky bit, another
filesystem, a full disk, ...), a folder holding something the service may not read
(`unreadable`), and a file where the layout expects folders (`stray`: a zip, a loose DICOM
file, anything else). The facts come from the adapters (owner, group and mode of the folders
on the way, the service's own ids); the words, the note a lab member finds beside the folder,
how often the log repeats itself and how often a blocked folder is tried again are decided
here.
"""

from __future__ import annotations

import errno
import re
import shlex
import stat
from collections.abc import Mapping
from dataclasses import dataclass

from xnat_drop.core.names import is_junk_name, is_partial_name
from xnat_drop.core.shown import shown, shown_path

NOTE_SUFFIX = ".NOT-TAKEN.txt"
NOTE_HEAD = "xnat-drop did not take "  # the first line of every note: how ours are known
REMINDERS = (3600.0, 6 * 3600.0, 24 * 3600.0)  # after the first ERROR; then once a day
PACE = 10  # a blocked folder is tried again every PACE settle periods ...
PACE_CAP = 600.0  # ... but at least every 10 minutes (and never more often than it settles)
PACE_FLOOR = 1.0

READ, WRITE, SEARCH = 4, 2, 1
_STICKY = 0o1000

# Names that say what a file is, for a file where folders belong.
_ARCHIVES = (
    ".zip", ".7z", ".rar", ".tar", ".tgz", ".tar.gz", ".tbz", ".tbz2", ".tar.bz2", ".txz",
    ".tar.xz", ".tar.zst", ".gz", ".bz2", ".xz", ".zst", ".iso",
)  # fmt: skip
_DICOM_SUFFIXES = (".dcm", ".dicom", ".dic", ".ima")
# IM0001, IM_0001, I0001, 00000001, and UIDs used as names (1.3.12.2.1107.5.2...).
_DICOM_NAMES = re.compile(r"(?:IM_?|I|MR|CT|EE)?\d{1,12}|\d+(?:\.\d+){3,}", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Access:
    """Who owns a file or folder and what its mode allows (from lstat)."""

    uid: int
    gid: int
    mode: int


@dataclass(frozen=True, slots=True)
class Me:
    """The service's own user and groups, and the lab's group (the group of incoming/)."""

    uid: int
    groups: frozenset[int]
    lab_group: str = ""  # its name, for `chgrp`; "" when xnat-drop is not in incoming/'s group

    def may(self, access: Access, bits: int) -> bool:
        """True when the mode bits that apply to the service allow `bits` (READ, WRITE, ...)."""
        if self.uid == 0:
            return True
        if access.uid == self.uid:
            shift = 6
        elif access.gid in self.groups:
            shift = 3
        else:
            shift = 0
        return (access.mode >> shift) & bits == bits

    def outsider(self, access: Access) -> bool:
        """True when neither the owner's nor the group's bits apply to the service."""
        return self.uid not in (0, access.uid) and access.gid not in self.groups


@dataclass(frozen=True, slots=True)
class Place:
    """A folder (or file) as the diagnosis saw it: its path as people read it, and its access."""

    path: str
    access: Access


@dataclass(frozen=True, slots=True)
class Problem:
    """Why something is not taken and what to do, each in words. `lab`: a lab member can fix
    it (a note goes beside it); otherwise it is the administrator's (a full disk, ...)."""

    reason: str
    fix: str
    lab: bool = True


def quoted(path: str) -> str:
    """A path for a shell command, always in single quotes (people copy it as it is)."""
    return "'" + path.replace("'", "'\"'\"'") + "'"


# -- a folder that cannot be moved ------------------------------------------------------------


def refused(
    code: int,
    detail: str,
    me: Me,
    parent: Place | None,
    folder: Place | None,
    group_names: Mapping[int, str],
) -> Problem:
    """Why the rename of `folder` out of `parent` failed with `code` (an errno), and the fix.

    `detail` is the error as the system said it; `parent` and `folder` are what a look after
    the failure found (None when it could not look); `group_names` names their groups.
    """
    where = folder.path if folder is not None else ""
    if code in (errno.EACCES, errno.EPERM):
        return _not_permitted(me, parent, folder, group_names, detail)
    if code == errno.ELOOP:
        return Problem(detail, "put the real folder there instead of the link")
    if code in (errno.EXDEV, errno.EBUSY):
        return Problem(
            "it is another filesystem mounted (or bind-mounted) into incoming/, so it cannot be "
            "moved by a rename",
            f"unmount it and copy the data into a plain folder in incoming/ instead ({where})",
        )
    if code == errno.ENAMETOOLONG:
        return Problem("its name is too long for the work folder", "rename it to a shorter name")
    if code in (errno.ENOSPC, errno.EDQUOT):
        return Problem(
            f"cannot take it into the work folder ({detail}): the drop tree's filesystem is full "
            "or over its quota",
            "free space on the drop tree's filesystem; xnat-drop takes it by itself then",
            lab=False,
        )
    if code == errno.EROFS:
        return Problem(
            f"cannot take it into the work folder ({detail}): the drop tree is read-only",
            "mount it read-write (under systemd: the drop tree must be in ReadWritePaths= of the "
            "unit's drop-in)",
            lab=False,
        )
    return Problem(
        f"cannot take it into the work folder ({detail})",
        "tell the xnat-drop administrator (the service's log has the details)",
        lab=False,
    )


def _not_permitted(
    me: Me,
    parent: Place | None,
    folder: Place | None,
    group_names: Mapping[int, str],
    detail: str,
) -> Problem:
    """EACCES or EPERM on the rename: which mode, group or sticky bit is in the way."""
    # Moving a folder to another parent needs write (and search) permission on the folder it
    # leaves and write permission on the folder itself (its ".." entry changes).
    faults: list[tuple[Place, str]] = []
    if parent is not None and not me.may(parent.access, WRITE | SEARCH):
        faults.append((parent, "the folder holding it"))
    if folder is not None and not me.may(folder.access, WRITE):
        faults.append((folder, "the folder"))
    if faults:
        top, who = faults[0]
        found = [place.access for place, _ in faults]
        group, fix = _remedy(me, found, WRITE, top.path, group_names)
        if group is not None:
            who = next(w for place, w in faults if me.outsider(place.access))
            reason = f"{who} belongs to the group {group}, which xnat-drop is not in"
        elif top.access.uid == me.uid:
            reason = f"{who} is not writable by its owner (xnat-drop)"
        else:
            reason = f"{who} is not group-writable"
        return Problem(f"{reason} (xnat-drop needs that to move it)", fix)
    if (
        parent is not None
        and folder is not None
        and parent.access.mode & _STICKY
        and me.uid not in (0, parent.access.uid, folder.access.uid)
    ):
        return Problem(
            "the folder holding it has the sticky bit set (only owners may move folders out of it)",
            f"chmod -t {quoted(parent.path)}",
        )
    path = quoted(folder.path if folder is not None else parent.path if parent else "")
    return Problem(
        f"xnat-drop may not move it ({detail}) although the modes allow it: an access control "
        "list, an immutable flag or the share's own settings forbid it",
        f"ask the xnat-drop administrator to look at: getfacl {path}; lsattr -d {path}",
        lab=False,
    )


def _remedy(
    me: Me, found: list[Access], bits: int, path: str, group_names: Mapping[int, str]
) -> tuple[str | None, str]:
    """The commands that let the service in everywhere below `path` (-R covers what lies
    below), and the name of the group that keeps it out, if any."""
    letters = "rX" if bits & READ else "w"
    target = quoted(path)
    if all(access.uid == me.uid for access in found):
        return None, f"chmod -R u+{letters} {target}"
    commands = []
    group = None
    foreign = [access for access in found if me.outsider(access)]
    if foreign:
        group = shown(group_names.get(foreign[0].gid, str(foreign[0].gid)))
        commands.append(f"chgrp -R {shlex.quote(me.lab_group or '<the lab group>')} {target}")
    if any(access.mode & (bits << 3) != bits << 3 for access in found):
        commands.append(f"chmod -R g+{letters} {target}")
    return group, " && ".join(commands) or f"chmod -R g+{letters} {target}"


# -- a folder holding what cannot be read ------------------------------------------------------


def unreadable(
    me: Me,
    folder: Place,
    first: str,
    count: int,
    inside: Access | None,
    group_names: Mapping[int, str],
) -> Problem:
    """Entries below `folder` the service cannot read (`count` of them: only one or more
    matters, so that the words stay the same while a lab member fixes them one by one), the
    first at `first` ("." for the folder itself) with access `inside` (None when it could not
    be looked at)."""
    if first == ".":
        who = "the folder is"
    elif count == 1:
        who = f"{shown(first)} in it is"
    else:
        who = f"files or folders in it (the first: {shown(first)}) are"
    # A folder must be searchable too: its files cannot even be looked at otherwise.
    need = READ | SEARCH if inside is not None and stat.S_ISDIR(inside.mode) else READ
    if inside is None or me.may(inside, need):
        inside = folder.access  # its own mode allows it: the folder around it does not
    group, fix = _remedy(me, [inside], need, folder.path, group_names)
    if group is not None:
        why = f"its group, {group}, is not one xnat-drop is in"
    elif inside.uid == me.uid:
        why = "not even by its owner, xnat-drop"
    else:
        why = "its group may not read it"
    return Problem(
        f"{who} not readable by xnat-drop ({why}); it reads every file before it takes a folder",
        fix,
    )


# -- a file where folders belong ----------------------------------------------------------------


def stray_kind(name: str) -> str | None:
    """ "archive", "dicom" or "file" for a file lying where the layout expects folders, or None
    for what is never reported: hidden files, operating-system clutter, copies in progress and
    the daemon's own notes."""
    if name.startswith(".") or is_junk_name(name) or is_partial_name(name):
        return None
    lowered = name.lower()
    if lowered.endswith(NOTE_SUFFIX.lower()):
        return None
    if lowered.endswith(_ARCHIVES):
        return "archive"
    if lowered.endswith(_DICOM_SUFFIXES) or _DICOM_NAMES.fullmatch(name):
        return "dicom"
    return "file"


def stray(relpath: tuple[str, ...], kind: str, layout: tuple[str, ...], incoming: str) -> Problem:
    """What is wrong with the file at incoming/`relpath` (`kind` from stray_kind), and where
    its content belongs. `layout` names the folder levels; `incoming` is incoming/'s path."""
    level = len(relpath) - 1  # the level whose folder the file stands in for
    name = relpath[-1]
    here = [incoming, *(shown(p) for p in relpath[:-1])]
    missing = [f"<{_level_name(layout, n)}>" for n in range(level, len(layout) - 1)]
    if kind == "archive":
        what = "a zip file" if name.lower().endswith(".zip") else "an archive"
        stem = _archive_stem(name)
        target = "/".join([*here, *missing, shown(stem)]) + "/"
        fix = f"unpack it into {quoted(target)}, then delete the archive"
    elif kind == "dicom":
        what = "a DICOM file"
        target = "/".join([*here, *missing, f"<{_level_name(layout, len(layout) - 1)}>"]) + "/"
        fix = f"DICOM files belong inside a session folder: move it into {quoted(target)}"
    else:
        what = "a file"
        fix = (
            "only folders belong here and xnat-drop does nothing with it: move it out of "
            "incoming/ (or into the session folder it belongs to)"
        )
    expected = _level_name(layout, level)
    expected = "a folder" if expected == "folder" else f"a {expected} folder"
    return Problem(f"{what} where {expected} is expected", fix)


def _level_name(layout: tuple[str, ...], level: int) -> str:
    """The layout's name for a level ("project", ...; "folder" for a "*" level)."""
    name = layout[level] if level < len(layout) else "session"
    return "folder" if name == "*" else name


def _archive_stem(name: str) -> str:
    lowered = name.lower()
    for suffix in sorted(_ARCHIVES, key=len, reverse=True):
        if lowered.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


# -- the note beside it, the log, the pace ----------------------------------------------------


def note_text(relpath: tuple[str, ...], problem: Problem, *, folder: bool) -> str:
    """The note a lab member finds beside what was not taken: plain text, CRLF line ends (so
    that Notepad shows the lines), no time in it (the same problem gives the same bytes)."""
    what = "this folder" if folder else "this file"
    again = (
        "xnat-drop looks again by itself and takes the folder as soon as it can (at once "
        "after a chmod or chgrp)."
        if folder
        else "xnat-drop looks again by itself."
    )
    gone = "taken, moved or deleted" if folder else "moved or deleted"
    lines = [
        f"{NOTE_HEAD}incoming/{shown_path(relpath)}",
        "",
        f"What is wrong with {what}: {problem.reason}.",
        "",
        f"What to do: {problem.fix}",
        "(If you cannot do this yourself, send this note to whoever looks after xnat-drop.)",
        "",
        again,
        "This note was written by xnat-drop (the upload service); it goes away by itself once "
        f"{what} is {gone}. Please do not edit it.",
    ]
    return "\r\n".join(lines) + "\r\n"


def next_reminder(reminded: int) -> float:
    """Seconds after the first report at which reminder number `reminded` (0 first) is due:
    1 h, 6 h, 24 h, then once a day."""
    if reminded < len(REMINDERS):
        return REMINDERS[reminded]
    return REMINDERS[-1] * (reminded - len(REMINDERS) + 2)


def retry_pace(settle: float) -> float:
    """Seconds between two tries of a blocked folder: PACE settle periods, capped."""
    return max(settle, min(max(PACE * settle, PACE_FLOOR), PACE_CAP))
