"""What incoming/ holds but the daemon cannot take, said to the people who can fix it.

Two kinds: *blocked* folders (the service may not move them or read what is in them: see
core/blocked.py for the causes and their fixes) and *stray* files (a zip, a loose DICOM file,
anything lying where the layout expects folders). For each, once:

- `status` lists it with the reason and the fix;
- the log says it once (ERROR for a blocked folder, WARNING for a stray file), again when the
  reason changes, and reminds of a blocked folder after 1 h, 6 h, 24 h, then daily; never every
  interval;
- a plain-text note goes beside it (`<name>.NOT-TAKEN.txt`, adapters/fs/notes.py) when a lab
  member can fix it, and goes away when it is taken, fixed or gone.

A blocked folder is tried again at a slow pace (core.blocked.retry_pace), and at once when the
owner, group or mode of the folder or of the folder holding it changes (its *gate*, from each
scan's cheap look). One that holds what the service cannot read is looked at by every scan
instead (the walk that fingerprints it sees the modes). Log lines and stray notes are capped
per scan, so a flood costs a few lines and a bounded status. Runs on the loop's thread.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from xnat_drop.adapters.fs import notes
from xnat_drop.adapters.fs.access import Gate
from xnat_drop.adapters.fs.tree import Stamp
from xnat_drop.core.blocked import (
    NOTE_SUFFIX,
    Problem,
    next_reminder,
    note_text,
    retry_pace,
    stray,
    stray_kind,
)
from xnat_drop.core.config import Config
from xnat_drop.core.shown import shown, shown_path
from xnat_drop.core.text import duration

log = logging.getLogger("xnat_drop.service")

Relpath = tuple[str, ...]
LOGGED = 20  # lines per scan; a flood gets one summary line after these
LISTED = 100  # entries in the status snapshot; the rest are counted
NOTED = 100  # notes beside stray files, in all ...
NOTED_HERE = 3  # ... and per folder


@dataclass
class _Blocked:
    problem: Problem
    since: float  # when it was first found blocked (monotonic)
    retry_at: float  # math.inf: not tried until a scan finds it readable
    gate: Gate | None  # None: blocked by what it holds, looked at by every scan
    cause: tuple[str, ...] = ()  # what the words were made from, to make them only once
    reminded: int = 0
    noted: bool = False  # a note of ours beside it says `problem`


@dataclass
class _Stray:
    kind: str
    since: float
    noted: bool = False


@dataclass
class _Folder:
    """The stray files of one folder above the session level, and its stamp when listed."""

    stamp: Stamp
    strays: dict[str, _Stray]


@dataclass
class Notices:
    """The blocked folders and stray files of one daemon, and what was said about them."""

    config: Config
    blocked: dict[Relpath, _Blocked] = field(default_factory=dict)
    folders: dict[Relpath, _Folder] = field(default_factory=dict)  # with files where folders go
    _strays: int = 0  # stray files in `folders`
    _noted: int = 0  # of which have a note of ours beside them
    _top: list[Relpath] | None = None  # the first LISTED stray files (None: to be found again)
    _foreign: set[Relpath] = field(default_factory=set)  # notes' names on files not ours
    _said: int = 0  # lines logged since the scan began
    _unsaid: int = 0  # lines left out since then

    # -- blocked folders ------------------------------------------------------------------------

    def refused(self, relpath: Relpath, problem: Problem, gate: Gate, now: float) -> None:
        """A claim of incoming/`relpath` failed: say why, note it, try again later."""
        self._block(relpath, problem, now, now + retry_pace(self.config.watch.settle), gate)

    def unreadable(
        self, relpath: Relpath, cause: tuple[str, ...], words: Callable[[], Problem], now: float
    ) -> None:
        """A scan found entries below incoming/`relpath` the service cannot read: it is not
        taken while that lasts. `words` is asked only when `cause` changed."""
        entry = self.blocked.get(relpath)
        if entry is not None and entry.gate is None and entry.cause == cause:
            return
        self._block(relpath, words(), now, math.inf, None, cause)

    def readable(self, relpath: Relpath) -> None:
        """The scan found everything below incoming/`relpath` readable (again)."""
        entry = self.blocked.get(relpath)
        if entry is not None and entry.gate is None:
            self.clear(relpath)

    def clear(self, relpath: Relpath) -> None:
        """Not blocked any more (taken, gone, or readable again): its note goes."""
        entry = self.blocked.pop(relpath, None)
        if entry is not None and entry.noted:
            notes.remove(self.config.paths.incoming, relpath)

    def due(self, relpath: Relpath, now: float) -> bool:
        """True unless `relpath` is blocked and not to be tried yet."""
        entry = self.blocked.get(relpath)
        return entry is None or entry.retry_at <= now

    def wake_at(self, relpath: Relpath, at: float) -> float | None:
        """When a candidate that settles at `at` may be tried (None: not before a scan)."""
        entry = self.blocked.get(relpath)
        if entry is None:
            return at
        return None if entry.retry_at == math.inf else max(at, entry.retry_at)

    def watched(self) -> set[Relpath]:
        """The blocked folders whose gate each scan looks at."""
        return {r for r, entry in self.blocked.items() if entry.gate is not None}

    def _block(
        self,
        relpath: Relpath,
        problem: Problem,
        now: float,
        retry_at: float,
        gate: Gate | None,
        cause: tuple[str, ...] = (),
    ) -> None:
        entry = self.blocked.get(relpath)
        if entry is None:
            entry = self.blocked[relpath] = _Blocked(problem, now, retry_at, gate, cause)
        else:
            entry.retry_at, entry.gate, entry.cause = retry_at, gate, cause
            if entry.problem == problem:
                return
            entry.problem = problem
        if math.isfinite(retry_at):
            again = f"tried again every {duration(retry_at - now)} and at once when its "
            again += "permissions change"
        else:
            again = "taken as soon as it can be read"
        self._say(
            logging.ERROR,
            "%s: cannot be taken: %s. To fix: %s. It stays in incoming/ (%s)",
            shown_path(relpath),
            problem.reason,
            problem.fix,
            again,
        )
        self._note(relpath, entry)

    def _note(self, relpath: Relpath, entry: _Blocked) -> None:
        incoming = self.config.paths.incoming
        if entry.problem.lab:
            text = note_text(relpath, entry.problem, folder=True)
            entry.noted = notes.put(incoming, relpath, text)
        elif entry.noted:
            notes.remove(incoming, relpath)
            entry.noted = False

    # -- each scan ------------------------------------------------------------------------------

    def begin(self) -> None:
        """A scan begins: its log lines are counted from here."""
        self._said = self._unsaid = 0

    def update(
        self,
        now: float,
        current: Collection[Relpath],
        gates: Mapping[Relpath, Gate],
        files: Iterable[tuple[Relpath, Stamp, tuple[str, ...]]],
        reused: Collection[Relpath],
    ) -> None:
        """After a scan: forget what is gone, try at once what someone changed, remind of what
        is still blocked, and take in the files found above the session level (`files`; those
        in the folders `reused` were not listed again and are as they were)."""
        for relpath in [r for r in self.blocked if r not in current]:
            self.clear(relpath)
        for relpath, entry in self.blocked.items():
            seen = gates.get(relpath)
            if entry.gate is not None and None not in entry.gate and seen not in (None, entry.gate):
                entry.gate, entry.retry_at = seen, now
                log.info("%s: its permissions changed; trying it again now", shown_path(relpath))
            if now - entry.since >= next_reminder(entry.reminded):
                entry.reminded += 1
                self._say(
                    logging.WARNING,
                    "%s: still cannot be taken after %s: %s. To fix: %s",
                    shown_path(relpath),
                    duration(now - entry.since),
                    entry.problem.reason,
                    entry.problem.fix,
                )
        self._take_files(now, current, files, reused)
        self.flush()

    def _take_files(
        self,
        now: float,
        current: Collection[Relpath],
        files: Iterable[tuple[Relpath, Stamp, tuple[str, ...]]],
        reused: Collection[Relpath],
    ) -> None:
        """Only folders whose stamp changed are looked at name by name: a flood of files costs
        a comparison per folder at each scan."""
        folders: dict[Relpath, _Folder] = {}
        for parts, stamp, names in files:
            old = self.folders.get(parts)
            if old is not None and old.stamp == stamp:
                folders[parts] = old
            else:
                folders[parts] = self._look_at(parts, stamp, names, old, now, current)
        for parts in reused:
            if parts in self.folders:
                folders[parts] = self.folders[parts]
        for parts, old in self.folders.items():
            if parts not in folders:
                self._gone(parts, old.strays)
        self.folders = folders
        self._strays = sum(len(f.strays) for f in folders.values())

    def _look_at(
        self,
        parts: Relpath,
        stamp: Stamp,
        names: tuple[str, ...],
        old: _Folder | None,
        now: float,
        current: Collection[Relpath],
    ) -> _Folder:
        """The files in the folder incoming/`parts`, new or changed since the last scan."""
        before = old.strays if old is not None else {}
        strays: dict[str, _Stray] = {}
        new = []
        for name in names:
            info = before.get(name)
            if info is None:
                kind = stray_kind(name)
                if kind is None:
                    continue
                info = _Stray(kind, now)
                new.append(name)
            strays[name] = info
        gone = {name: info for name, info in before.items() if name not in strays}
        self._gone(parts, gone)
        if new:
            self._top = None
        noted_here = sum(1 for info in strays.values() if info.noted)
        for name in sorted(new):
            relpath = (*parts, name)
            problem = self._stray_problem(relpath, strays[name].kind)
            self._say(
                logging.WARNING,
                "%s: %s; it is not taken. To fix: %s",
                shown_path(relpath),
                problem.reason,
                problem.fix,
            )
            if self._noted < NOTED and noted_here < NOTED_HERE:
                text = note_text(relpath, problem, folder=False)
                if notes.put(self.config.paths.incoming, relpath, text):
                    strays[name].noted = True
                    self._noted += 1
                noted_here += 1
        self._remove_orphan_notes(parts, names, current)
        return _Folder(stamp, strays)

    def _gone(self, parts: Relpath, gone: Mapping[str, _Stray]) -> None:
        """Stray files no longer there: their notes go too."""
        for name, info in gone.items():
            self._top = None
            if info.noted:
                notes.remove(self.config.paths.incoming, (*parts, name))
                self._noted -= 1

    def _remove_orphan_notes(
        self, parts: Relpath, names: tuple[str, ...], current: Collection[Relpath]
    ) -> None:
        """Notes of ours in incoming/`parts` with nothing of their name beside them (taken while
        the daemon was stopped, or by another daemon) are removed."""
        if self._foreign:
            here = set(names)
            self._foreign = {r for r in self._foreign if r[:-1] != parts or r[-1] in here}
        found = [n for n in names if n.endswith(NOTE_SUFFIX) and (*parts, n) not in self._foreign]
        if not found:
            return
        beside = set(names)
        for name in found:
            base = name.removesuffix(NOTE_SUFFIX)
            if base in beside or (*parts, base) in current:
                continue
            others = chain(beside, (r[-1] for r in current if r[:-1] == parts))
            if "~" in base and any(notes.note_name(other) == name for other in others):
                continue  # the note of a name too long for it, shortened
            if notes.remove_named(self.config.paths.incoming, parts, name):
                log.debug("removed incoming/%s: nothing beside it", shown_path((*parts, name)))
            else:
                self._foreign.add((*parts, name))  # not ours: left alone, not looked at again

    def _stray_problem(self, relpath: Relpath, kind: str) -> Problem:
        routing, incoming = self.config.routing, self.config.paths.incoming
        return stray(relpath, kind, routing.layout, shown(str(incoming)))

    # -- the log and the status ---------------------------------------------------------------

    def _say(self, level: int, message: str, *args: object) -> None:
        if self._said < LOGGED:
            self._said += 1
            log.log(level, message, *args)
        else:
            self._unsaid += 1

    def flush(self) -> None:
        """One summary line for the lines left out since the scan began."""
        if self._unsaid:
            log.warning(
                "... and %d more lines about folders and files in incoming/ that cannot be "
                "taken (xnat-drop status lists them)",
                self._unsaid,
            )
            self._unsaid = 0

    def listed(self, at: Callable[[float], str | None]) -> list[dict[str, Any]]:
        """The first LISTED blocked folders, then stray files, for `status`."""
        items = []
        for relpath in heapq.nsmallest(LISTED, self.blocked):
            entry = self.blocked[relpath]
            items.append(_item(relpath, "folder", entry.problem, at(entry.since), entry.noted))
        if self._top is None:  # recomputed only when the stray files changed
            every = ((*parts, name) for parts, f in self.folders.items() for name in f.strays)
            self._top = heapq.nsmallest(LISTED, every)
        for relpath in self._top[: LISTED - len(items)]:
            info = self.folders[relpath[:-1]].strays[relpath[-1]]
            problem = self._stray_problem(relpath, info.kind)
            items.append(_item(relpath, "file", problem, at(info.since), info.noted))
        return items

    @property
    def count(self) -> int:
        return len(self.blocked) + self._strays

    @property
    def unlisted(self) -> int:
        return max(0, self.count - LISTED)


def _item(
    relpath: Relpath, kind: str, problem: Problem, since: str | None, noted: bool
) -> dict[str, Any]:
    note = shown_path((*relpath[:-1], notes.note_name(relpath[-1]))) if noted else None
    return {
        "path": shown_path(relpath),
        "kind": kind,
        "reason": problem.reason,
        "fix": problem.fix,
        "since": since,
        "note": note,
    }
