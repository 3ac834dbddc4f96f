"""Where finished sessions go: done/ and failed/, the reports beside each folder, stale failure
reports moved to the history, force markers beside a session sent back, and the empty folders
left in incoming/.

done/ and failed/ are the lab's to read and take back, so lab members can write in them: a
folder there may have been swapped for a link to anywhere. Nothing here follows one. Each step
goes through open directories (beneath.py); a folder on the way that is not a folder is
passed by under a free name instead (`P2__2`), and the report says so. Names are made to fit:
a session name too long for `<name>.report.json` is shortened for its place in done/ or
failed/, never left stuck.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from xnat_drop.adapters.fs.beneath import NAME_MAX, Dir, UnsafePathError, name_fits
from xnat_drop.core.shown import shown, shown_path

REPORT_SUFFIXES = (".report.txt", ".report.json")
_ROOM = len("__9999") + len(".report.json")  # what a name may still get appended in done/
_HASH_MARK = "~"  # between a shortened name and the hash of the whole one
_CLAIM_IN_REPORT = re.compile(rb'"claim": "([0-9A-Za-z-]{1,64})"')
_REPORT_HEAD = 64 * 1024  # the claim id is near the top of a JSON report
FORCE_SUFFIX = ".xnat-drop-force"
HISTORY = ".history"  # failed/.history/<relpath>/<time>.report.*: reports no folder needs
# A failure report of ours, at its top (json.dumps with indent=2 keeps this order).
_FAILED_REPORT = re.compile(
    rb'\A\{\s*(?:"report": "xnat-drop report",\s*)?"schema": \d+,\s*"outcome": "failed",'
)
_MAX_TRIES = 100


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a finished session goes: `relpath` below `root` (done/ or failed/).

    `relpath` is the dropped one unless a folder on the way was not a folder or the name did
    not fit; `notes` then say why, in words for the report.
    """

    root: Path
    relpath: tuple[str, ...]
    notes: tuple[str, ...] = ()

    @property
    def path(self) -> Path:
        return self.root.joinpath(*self.relpath)

    @property
    def shown(self) -> str:
        return shown_path(self.relpath)


def fitted(name: str) -> str:
    """`name`, or a shortened form that leaves room for `__N.report.json` within NAME_MAX.

    The shortened form keeps the start of the name and ends in `~` and 8 hex digits of the
    whole name's SHA-256, so two long names that start alike stay apart.
    """
    if len(os.fsencode(name)) + _ROOM <= NAME_MAX:
        return name
    whole = os.fsencode(name)
    tail = _HASH_MARK + hashlib.sha256(whole).hexdigest()[:8]
    cut = whole[: NAME_MAX - _ROOM - len(tail)]
    # Not in the middle of a UTF-8 character: drop continuation bytes, then their lead byte.
    while cut and cut[-1] & 0xC0 == 0x80:
        cut = cut[:-1]
    if cut and cut[-1] >= 0xC0:
        cut = cut[:-1]
    return os.fsdecode(cut) + tail


def place(root: Path, claim_id: str, relpath: tuple[str, ...]) -> Placement:
    """Choose (and create the folders above) the place below `root` for a finished session.

    A name already taken, by a folder or a report, gets `__2`, `__3`: nothing is ever
    overwritten. Reports this very claim wrote before a crash (no folder beside them) mark
    the name it had chosen: it is used again. Raises OSError when `root` is unusable.
    """
    notes: list[str] = []
    used: list[str] = []
    with Dir.open(root) as top:
        current = Dir(os.dup(top.fd), root)
        try:
            for part in relpath[:-1]:
                name, child = _enter(current, part)
                if name != part:
                    where = shown_path((*used, part))
                    notes.append(
                        f"“{where}” in {root.name}/ is not a folder (someone put a link or a file "
                        f"there), so “{shown(name)}” was used instead"
                    )
                used.append(name)
                current.close()
                current = child
            name = fitted(relpath[-1])
            if name != relpath[-1]:
                notes.append(
                    f"the folder's name is too long to have a report beside it, so it was "
                    f"shortened to “{shown(name)}”"
                )
            final = _own_report_names(current, name, claim_id)
            chosen = final[0] if final else _free(current, name, REPORT_SUFFIXES)
        finally:
            current.close()
    return Placement(root, (*used, chosen), tuple(notes))


def _enter(parent: Dir, part: str) -> tuple[str, Dir]:
    """The folder `part` in `parent` (made if missing), or a free `part__N` where `part` is
    not a folder."""
    name = part
    for _ in range(_MAX_TRIES):
        try:
            return name, parent.child(name, create=True)
        except UnsafePathError:
            name = _free(parent, part, ())
    raise UnsafePathError(parent.shown(part), "keeps being replaced by a link")


def _free(parent: Dir, name: str, suffixes: tuple[str, ...]) -> str:
    """`name`, or `name__N` for the smallest N where neither it nor a report exists."""
    candidate, n = name, 1
    while parent.exists(candidate) or any(parent.exists(candidate + s) for s in suffixes):
        n += 1
        candidate = f"{name}__{n}"
    return candidate


def _own_report_names(parent: Dir, base: str, claim_id: str) -> list[str]:
    """Names in `parent` whose JSON report names this claim and whose folder is absent."""
    found = []
    for entry in parent.names():
        if not entry.endswith(".report.json"):
            continue
        name = entry.removesuffix(".report.json")
        if not (name == base or name.startswith(f"{base}__")) or parent.exists(name):
            continue
        if _claim_of(parent, entry) == claim_id:
            found.append(name)
    return sorted(found)


def _claim_of(parent: Dir, report: str) -> str:
    """The claim id a JSON report of ours names, or "" (not a report of ours, or unreadable)."""
    try:
        fd = parent.open_file(report)
    except OSError:  # a link, or gone: never ours
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        head = os.read(fd, _REPORT_HEAD)
    except OSError:
        return ""
    finally:
        os.close(fd)
    match = _CLAIM_IN_REPORT.search(head)
    return match.group(1).decode() if match else ""


def write_reports(placement: Placement, reports: Mapping[str, str | Iterable[str]]) -> None:
    """Write each report beside the placed folder (`<name>.report.txt`, ...), atomically: a
    text, or the pieces of one (written as they come).

    Text is written as UTF-8; anything that cannot be (it should all be escaped already)
    becomes a backslash escape rather than an error.
    """
    with Dir.open(placement.root) as top, top.descend(placement.relpath[:-1], create=True) as at:
        for suffix, text in reports.items():
            name = placement.relpath[-1] + suffix
            pieces = (text,) if isinstance(text, str) else text
            data = (piece.encode("utf-8", "backslashreplace") for piece in pieces)
            at.write_atomic(name, data, 0o644)


def discard_own_reports(root: Path, claim_id: str, relpath: tuple[str, ...]) -> None:
    """Remove reports this claim wrote below `root` before a crash, for a decision that
    changed (e.g. failed/ first, done/ after the restart): they describe no folder."""
    with contextlib.suppress(OSError), Dir.open(root) as top:
        parent = _existing(top, relpath[:-1])
        if parent is None:
            return
        with parent:
            for name in _own_report_names(parent, fitted(relpath[-1]), claim_id):
                for suffix in REPORT_SUFFIXES:
                    with contextlib.suppress(FileNotFoundError):
                        parent.unlink(name + suffix)


def _existing(top: Dir, parts: tuple[str, ...]) -> Dir | None:
    try:
        return top.descend(parts)
    except OSError:
        return None


# -- stale failure reports: a session delivered after it failed --------------------------------


def retire_stale_reports(
    failed: Path, incoming: Path, relpath: tuple[str, ...], stamp: str
) -> list[str]:
    """Move the "NOT uploaded" reports of a session now delivered into
    `failed/.history/<relpath>/<stamp>.report.*`, as `xnat-drop retry` does.

    A lab member who moved the folder back by hand left them in failed/ (or carried them
    into incoming/, beside the folder); they now say the opposite of the receipt. Only reports
    the daemon wrote for a failure (the JSON report's first keys) move, only where no folder
    of that name is beside them (then they are that folder's), never through a link; the
    text report moves with its JSON report. Returns where each moved pair went, for people.
    Raises OSError when failed/ or the history refuses.
    """
    name = fitted(relpath[-1])
    moved: list[str] = []
    with Dir.open(failed) as top:
        for root in (failed, incoming):
            with contextlib.suppress(FileNotFoundError, UnsafePathError), Dir.open(root) as base:
                parent = _existing(base, relpath[:-1])
                if parent is None:
                    continue
                with parent:
                    if parent.exists(name) or not _is_failure_report(parent, name):
                        continue
                    with top.descend((HISTORY, *relpath), create=True) as history:
                        kept = _free(history, stamp, REPORT_SUFFIXES)
                        for suffix in (".report.txt", ".report.json"):  # the JSON last
                            st = parent.lstat(name + suffix)
                            if st is not None and stat.S_ISREG(st.st_mode):
                                parent.move(name + suffix, history, kept + suffix)
                    moved.append(shown_path((HISTORY, *relpath, kept + ".report.txt")))
    return moved


def _is_failure_report(parent: Dir, name: str) -> bool:
    try:
        fd = parent.open_file(name + ".report.json")
    except OSError:  # absent, or a link: never ours
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        head = os.read(fd, 256)
    except OSError:
        return False
    finally:
        os.close(fd)
    return _FAILED_REPORT.match(head) is not None


# -- force markers: `xnat-drop retry --force` -------------------------------------------------


def force_marker_name(session: str) -> str:
    """The marker beside a session sent back with --force: upload it even if the ledger says
    the same session was delivered before. A dot-file beside the folder, never inside it."""
    name = f".{session}{FORCE_SUFFIX}"
    if name_fits(name):
        return name
    return f".{hashlib.sha256(os.fsencode(session)).hexdigest()[:32]}{FORCE_SUFFIX}"


def leave_force_marker(parent: Dir, session: str) -> None:
    """Create the force marker for `session` in `parent` (kept if already there).

    Never writes through a link: something else with the marker's name is an error.
    """
    name = force_marker_name(session)
    try:
        os.close(parent.open_file(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        st = parent.lstat(name)
        if st is None or not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(
                parent.shown(name), "is in the way of the force marker (not a plain file)"
            ) from None


def take_force_marker(incoming: Path, relpath: tuple[str, ...]) -> bool:
    """True (and the marker removed) when the session was sent back with --force."""
    name = force_marker_name(relpath[-1])
    with contextlib.suppress(OSError), Dir.open(incoming) as top:
        parent = _existing(top, relpath[:-1])
        if parent is None:
            return False
        with parent:
            st = parent.lstat(name)
            if st is None or not stat.S_ISREG(st.st_mode):
                return False  # a link with the marker's name is nobody's order
            parent.unlink(name)
            return True
    return False


# -- incoming/ --------------------------------------------------------------------------------


def remove_empty_parents(incoming: Path, folders: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """Remove these folders below incoming/ (and their parents) if they are empty.

    incoming/ itself is never removed. `rmdir` only removes an empty folder, so a file a lab
    member adds at the same moment wins. Returns the folders removed.
    """
    removed = []
    with Dir.open(incoming) as top:
        for relpath in sorted(folders, key=len, reverse=True):
            parts = relpath
            while parts:
                parent = _existing(top, parts[:-1])
                if parent is None:
                    break
                try:
                    with parent:
                        parent.rmdir(parts[-1])
                except OSError:
                    break
                removed.append(parts)
                parts = parts[:-1]
    return removed
