"""incoming/ as the loop sees it: session candidates, how long each has been quiet, which are
ready to be claimed, and the empty folders left behind.

Rescans walk incoming/ only (never done/ or failed/), at most every few seconds however many
watcher events arrive. A folder is ready when consecutive looks find the same fingerprint for
`settle_seconds` (and, in marker mode, its ready marker), everything in it can be read, and it
is not blocked (notices.py: a folder the service may not move is tried again only now and
then). A folder that is not ready within `max_settle_seconds` is reported once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xnat_drop.adapters.fs.access import Gate, diagnose_unreadable
from xnat_drop.adapters.fs.filing import remove_empty_parents
from xnat_drop.adapters.fs.tree import (
    UNREADABLE,
    Layout,
    Stamp,
    find_sessions,
    folder_stamp,
    walk,
)
from xnat_drop.core.blocked import Problem
from xnat_drop.core.config import Config
from xnat_drop.core.model import Fingerprint, Seen
from xnat_drop.core.shown import shown_path
from xnat_drop.core.stability import (
    fingerprint,
    is_stable,
    observe,
    settles_at,
    waiting_for,
    waiting_phase,
)
from xnat_drop.core.text import duration
from xnat_drop.service.notices import Notices

log = logging.getLogger("xnat_drop.service")

Relpath = tuple[str, ...]
NEW_LOGGED = 20  # "new" lines per scan; a flood of folders gets one summary line after these
LISTED = 100  # candidates listed in the status snapshot; the rest are counted
BREATHE_EVERY = 2000  # candidates between calls of the scan's `breathe` (watchdog pings)
_EMPTY = fingerprint(())
LINK_REFUSED = (
    "refused: a symbolic link, which xnat-drop never follows; put the real folder here instead"
)


@dataclass(frozen=True, slots=True)
class Held:
    """A session put back as incomplete: as it was then, until when it may wait, and what
    `status` says of it ("series 5 (folder 05_bold): 88 of 176 images")."""

    fingerprint: Fingerprint | None
    until: float  # monotonic
    why: str


@dataclass(frozen=True, slots=True)
class _Quiet:
    """A folder whose candidates are all long empty: its stamp, and what they were."""

    stamp: Stamp
    seen: dict[Relpath, Seen]
    bare: dict[Relpath, Stamp]


class Intake:
    """The session candidates below incoming/ and their settling, for one daemon."""

    def __init__(self, config: Config) -> None:
        self.notices = Notices(config)  # blocked folders, stray files: status, log, notes
        self.config = config
        self.seen: dict[Relpath, Seen] = {}
        self.only: set[Relpath] | None = None  # `run --once`: only what was there at the start
        self.next_scan = 0.0
        self._last_scan = float("-inf")
        self._first_seen: dict[Relpath, float] = {}
        self._alarmed: set[Relpath] = set()
        self._empty_since: dict[Relpath, float] = {}
        # Candidates with nothing at all in them, by their folder's own (inode, mtime, ctime):
        # while that is unchanged they are still empty, and are not opened again.
        self._bare: dict[Relpath, Stamp] = {}
        self._next_full = 0.0  # polling: when long-empty folders are looked at again
        self._quiet: dict[Relpath, _Quiet] = {}  # folders holding only long-empty candidates
        self.links: tuple[Relpath, ...] = ()  # links in incoming/: refused, never followed
        self.held: dict[Relpath, Held] = {}  # put back as incomplete: not taken until changed

    @property
    def config(self) -> Config:
        return self._config

    @config.setter
    def config(self, config: Config) -> None:  # a reload reaches the notices too
        self._config = self.notices.config = config

    @property
    def _marker(self) -> bool:
        return bool(self.config.watch.ready_marker)

    def scan(self, now: float, breathe: Callable[[], None] | None = None) -> None:
        """Look at incoming/ again: fingerprint every candidate, forget vanished ones.

        `breathe` is called every few thousand candidates (a flood of folders must not keep
        the loop from pinging systemd's watchdog).
        """
        watch = self.config.watch
        # Writers trigger events per block: rescanning at most every `gap` keeps a big copy
        # from turning into a walk per write.
        gap = min(2.0, watch.settle / 4)
        if now - self._last_scan < gap:
            self.next_scan = self._last_scan + gap  # come back as soon as allowed
            return
        self._last_scan = now
        self.notices.begin()
        # Polling mode has no watcher: this rescan, every poll interval, is the one walk.
        polling = watch.observer == "polling"
        self.next_scan = now + (watch.poll_interval if polling else watch.rescan_interval)
        incoming = self.config.paths.incoming
        # Polling: folders that have stayed empty for a settle period are looked at only once
        # per rescan interval (a copy into one then starts at most that much later), and a
        # folder holding only such folders is not even listed while its own stamp is the same.
        # Every other candidate is looked at every poll. With inotify a change wakes each scan.
        full = not polling or now >= self._next_full
        if full:
            self._next_full = now + watch.rescan_interval
        quiet = {} if full else {p: group.stamp for p, group in self._quiet.items()}
        watched = self.notices.watched()
        layout = find_sessions(incoming, len(self.config.routing.layout), quiet, watched)
        self._tidy(layout.empty, now)
        current: dict[Relpath, Seen] = {}
        bare: dict[Relpath, Stamp] = {}
        for parent in layout.reused:
            current.update(self._quiet[parent].seen)
            bare.update(self._quiet[parent].bare)
        new: list[Relpath] = []
        for n, relpath in enumerate(layout.sessions):
            if breathe is not None and n % BREATHE_EVERY == BREATHE_EVERY - 1:
                breathe()
            if self.only is not None and relpath not in self.only:
                continue
            previous = self.seen.get(relpath)
            known = self._bare.get(relpath)
            if previous is not None and known is not None:
                if not full and now - previous.since >= watch.settle:
                    current[relpath], bare[relpath] = previous, known  # long empty: not now
                    continue
                if _folder_stamp(incoming, relpath) == known:
                    current[relpath], bare[relpath] = previous, known  # still nothing in it
                    continue
            folder_stamp = _folder_stamp(incoming, relpath)
            found, unreadable = self._fingerprint(incoming, relpath)
            if found is None:  # nothing at all in it: cheap from now on
                if folder_stamp is not None:
                    bare[relpath] = folder_stamp
                found = _EMPTY
            current[relpath] = observe(previous, found, now)
            if previous is None:
                new.append(relpath)
            self._readable(relpath, unreadable, now)
            if found.count and relpath not in self.notices.blocked:  # empty is not stuck
                self._alarm_if_stuck(relpath, current[relpath], now)
        self._log_new(new)
        self._quiet = {p: self._quiet[p] for p in layout.reused}
        self._group_quiet(layout, current, bare, now)
        self._refuse_links(layout.links)
        if self.only is not None:
            self.only &= set(current)
        self.seen = current
        self._bare = bare
        self._first_seen = {r: t for r, t in self._first_seen.items() if r in current}
        self.held = {r: h for r, h in self.held.items() if r in current}
        self.notices.update(now, current, dict(layout.access), layout.files, set(layout.reused))

    def _group_quiet(
        self,
        layout: Layout,
        current: dict[Relpath, Seen],
        bare: dict[Relpath, Stamp],
        now: float,
    ) -> None:
        """Remember the folders whose candidates are all long empty (see scan)."""
        settle = self.config.watch.settle
        members: dict[Relpath, list[Relpath]] = {}
        for relpath in layout.sessions:
            members.setdefault(relpath[:-1], []).append(relpath)
        for parent, stamp in layout.parents:
            group = members.get(parent, [])
            if group and all(
                r in bare and r in current and now - current[r].since >= settle for r in group
            ):
                self._quiet[parent] = _Quiet(
                    stamp, {r: current[r] for r in group}, {r: bare[r] for r in group}
                )

    def _fingerprint(
        self, incoming: Path, relpath: Relpath
    ) -> tuple[Fingerprint | None, tuple[str, int] | None]:
        """The candidate's fingerprint (None when it holds nothing at all), and the first entry
        below it the service cannot read with how many there are (None when there is none)."""
        walked = {"entries": 0, "denied": 0}
        first = [""]  # the first entry it cannot read

        def entries() -> Iterator[tuple[str, int, int]]:
            for e in walk(incoming.joinpath(*relpath)):
                walked["entries"] += 1
                if e.kind == UNREADABLE or not e.readable:
                    first[0] = first[0] or e.relpath
                    walked["denied"] += 1
                yield e.relpath, e.size, e.mtime_ns

        # Streamed into the fingerprint: no list of every entry (core/stability.py).
        found = fingerprint(entries(), self.config.watch.ready_marker)
        unreadable = (first[0], walked["denied"]) if walked["denied"] else None
        if not walked["entries"] and not _has_anything(incoming.joinpath(*relpath)):
            return None, None
        return found, unreadable

    def _readable(self, relpath: Relpath, unreadable: tuple[str, int] | None, now: float) -> None:
        """A candidate holding what the service cannot read is blocked until it can."""
        if unreadable is None:
            self.notices.readable(relpath)
            return
        first, count = unreadable
        cause = (first, "many" if count > 1 else "one")
        incoming = self.config.paths.incoming
        self.notices.unreadable(
            relpath, cause, lambda: diagnose_unreadable(incoming, relpath, first, count), now
        )

    def _refuse_links(self, links: tuple[Relpath, ...]) -> None:
        """Say once per link found in incoming/ that it is not followed (and what to do)."""
        fresh = sorted(set(links) - set(self.links))
        for relpath in fresh[:NEW_LOGGED]:
            log.error("incoming/%s: %s", shown_path(relpath), LINK_REFUSED)
        if len(fresh) > NEW_LOGGED:
            log.error("... and %d more symbolic links in incoming/", len(fresh) - NEW_LOGGED)
        self.links = links

    @staticmethod
    def _log_new(new: list[Relpath]) -> None:
        for relpath in new[:NEW_LOGGED]:
            log.info("%s: new, waiting until it stops changing", shown_path(relpath))
        if len(new) > NEW_LOGGED:
            log.info(
                "... and %d more new folders in incoming/ (xnat-drop status lists them)",
                len(new) - NEW_LOGGED,
            )

    def ready(self, now: float) -> list[tuple[Relpath, Seen]]:
        """Candidates that have settled and may be claimed now (a held one only once it
        changed, or its wait is over)."""
        settle = self.config.watch.settle
        return [
            (r, s)
            for r, s in self.seen.items()
            if is_stable(s, now, settle, needs_marker=self._marker)
            and not self._waits(r, s, now)
            and self.notices.due(r, now)
        ]

    def _waits(self, relpath: Relpath, seen: Seen, now: float) -> bool:
        """A held session, unchanged since it was put back, still within its wait."""
        held = self.held.get(relpath)
        return held is not None and held.fingerprint == seen.fingerprint and now < held.until

    def first_seen(self, relpath: Relpath, now: float) -> float:
        """When the candidate was first seen with files in it (`now` if not yet)."""
        return self._first_seen.get(relpath, now)

    def hold(
        self,
        relpath: Relpath,
        fingerprint: Fingerprint | None,
        first_seen: float,
        until: float,
        why: str,
        now: float,
    ) -> None:
        """A claimed session was put back as incomplete: it waits for its files to change
        (then it settles and is judged again) or until `until` (then it is judged for good);
        its first sight stays `first_seen`."""
        self.held[relpath] = Held(fingerprint, until, why)
        self._first_seen[relpath] = first_seen
        if fingerprint is not None:
            self.seen[relpath] = Seen(fingerprint, now)
        if self.only is not None:
            self.only.add(relpath)  # `run --once` waits for it too

    def taken(self, relpath: Relpath) -> None:
        """The folder was claimed (or is gone): it is no longer a candidate."""
        self.seen.pop(relpath, None)
        self.notices.clear(relpath)
        if self.only is not None:
            self.only.discard(relpath)
        self._first_seen.pop(relpath, None)
        self._alarmed.discard(relpath)
        self.held.pop(relpath, None)

    def try_later(self, relpath: Relpath, now: float) -> None:
        """The folder changed as it was claimed: wait another settle period."""
        seen = self.seen.get(relpath)
        if seen is not None:
            self.seen[relpath] = Seen(seen.fingerprint, now)

    def refused(self, relpath: Relpath, problem: Problem, gate: Gate, now: float) -> None:
        """The folder could not be taken: `status`, the log and a note beside it say why and
        what to do; it is tried again later (at once when its permissions change)."""
        self.notices.refused(relpath, problem, gate, now)

    def next_wake(self) -> float:
        """The next time the loop must look: a rescan, or a candidate that will have settled."""
        settle = self.config.watch.settle
        times = [self.next_scan]
        for relpath, seen in self.seen.items():
            at = settles_at(seen, settle, needs_marker=self._marker)
            held = self.held.get(relpath)
            if at is not None and held is not None and held.fingerprint == seen.fingerprint:
                at = max(at, held.until)  # held unchanged: taken again only when its wait ends
            if at is not None:
                at = self.notices.wake_at(relpath, at)
            if at is not None:
                times.append(at)
        return min(times)

    def settling(self, at: Callable[[float], str | None]) -> list[dict[str, Any]]:
        """The candidates for `status` (the first LISTED; `more` counts the rest): size, since
        when unchanged, what each waits for. Folders with something in them come first."""
        settle = self.config.watch.settle
        found = []
        blocked = self.notices.blocked  # listed by the notices, with their fixes
        ordered = sorted(
            ((r, s) for r, s in self.seen.items() if r not in blocked),
            key=lambda item: (not item[1].fingerprint.count, item[0]),
        )
        for relpath, seen in ordered[:LISTED]:
            fp = seen.fingerprint
            ready = settles_at(seen, settle, needs_marker=self._marker)
            state = waiting_for(seen, needs_marker=self._marker)
            # `phase` says the same as `state` as a key, for the status files' words.
            phase = waiting_phase(seen, needs_marker=self._marker)
            if ready is not None:
                state += f", taken at {at(ready)} if nothing changes"
            if relpath in self._alarmed:
                state = f"NOT READY for over {duration(self.config.watch.max_settle)}: {state}"
                phase = "stuck"
            held = self.held.get(relpath)
            if held is not None and held.fingerprint == fp:
                state = (
                    f"held, looks incomplete: {held.why}; waiting for the rest of the copy "
                    f"until {at(held.until)}"
                )
                phase = "held"
            elif held is not None:
                state = f"changed since it was held as incomplete ({held.why}): {state}"
            found.append(
                {
                    "session": shown_path(relpath),
                    "files": fp.count,
                    "bytes": fp.total_bytes,
                    "since": at(seen.since),
                    "state": state,
                    "phase": phase,
                    "ready_at": None if ready is None else at(ready),
                    "held_until": at(held.until) if held is not None and phase == "held" else None,
                }
            )
        for relpath in self.links[:LISTED]:
            found.append(
                {
                    "session": shown_path(relpath),
                    "files": 0,
                    "bytes": 0,
                    "since": None,
                    "state": LINK_REFUSED,
                    "phase": "link",
                    "ready_at": None,
                    "held_until": None,
                }
            )
        return found

    def _alarm_if_stuck(self, relpath: Relpath, seen: Seen, now: float) -> None:
        first = self._first_seen.setdefault(relpath, now)
        if now - first < self.config.watch.max_settle or relpath in self._alarmed:
            return
        self._alarmed.add(relpath)
        log.warning(
            "%s: still not taken after %s (%s); is the copy stuck?",
            shown_path(relpath),
            duration(now - first),
            waiting_for(seen, needs_marker=self._marker),
        )

    def _tidy(self, empty: tuple[Relpath, ...], now: float) -> None:
        """Remove project/subject folders left empty once their sessions were claimed.

        Only after they stayed empty for a settle period: a lab member may be about to copy
        the next session into one.
        """
        settle = self.config.watch.settle
        self._empty_since = {r: self._empty_since.get(r, now) for r in empty}
        ripe = [r for r, since in self._empty_since.items() if now - since >= settle]
        for relpath in remove_empty_parents(self.config.paths.incoming, ripe):
            self._empty_since.pop(relpath, None)
            log.debug("removed the empty folder incoming/%s", shown_path(relpath))

    @property
    def unlisted(self) -> int:
        """Candidates (and links) `settling` leaves out."""
        settling = len(self.seen) - len(self.notices.blocked)
        return max(0, settling - LISTED) + max(0, len(self.links) - LISTED)


def _folder_stamp(incoming: Path, relpath: Relpath) -> Stamp | None:
    """A candidate's own stamp (changes deeper down do not show in it, which is why only
    folders with nothing at all in them rely on it)."""
    try:
        return folder_stamp(os.lstat(incoming.joinpath(*relpath)))
    except OSError:
        return None


def _has_anything(folder: Path) -> bool:
    """True when `folder` holds any entry at all (an empty subfolder, junk, ...)."""
    try:
        with os.scandir(folder) as entries:
            return next(entries, None) is not None
    except OSError:
        return True  # unreadable: not "bare", so it is looked at again every scan
