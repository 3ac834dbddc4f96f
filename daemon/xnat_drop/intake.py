"""incoming/ as the loop sees it: session candidates, how long each has been quiet, which are
ready to be claimed, and the empty folders left behind.

Rescans walk incoming/ only (never done/ or failed/), at most every few seconds however many
watcher events arrive. A folder is ready when consecutive looks find the same fingerprint for
`settle_seconds` (and, in marker mode, its ready marker). A folder that is not ready within
`max_settle_seconds` is reported once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from . import store
from .availability import duration
from .config import Config
from .model import Seen
from .stability import fingerprint, is_stable, observe, settles_at, waiting_for
from .tree import find_sessions, walk

log = logging.getLogger("xnat_drop.service")

Relpath = tuple[str, ...]


class Intake:
    """The session candidates below incoming/ and their settling, for one daemon."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.seen: dict[Relpath, Seen] = {}
        self.only: set[Relpath] | None = None  # `run --once`: only what was there at the start
        self.next_scan = 0.0
        self._last_scan = float("-inf")
        self._first_seen: dict[Relpath, float] = {}
        self._alarmed: set[Relpath] = set()
        self._empty_since: dict[Relpath, float] = {}

    @property
    def _marker(self) -> bool:
        return bool(self.config.watch.ready_marker)

    def scan(self, now: float) -> None:
        """Look at incoming/ again: fingerprint every candidate, forget vanished ones."""
        watch = self.config.watch
        # Writers trigger events per block: rescanning at most every `gap` keeps a big copy
        # from turning into a walk per write.
        gap = min(2.0, watch.settle / 4)
        if now - self._last_scan < gap:
            self.next_scan = self._last_scan + gap  # come back as soon as allowed
            return
        self._last_scan = now
        # Polling mode has no watcher: this rescan, every poll interval, is the one walk.
        polling = watch.observer == "polling"
        self.next_scan = now + (watch.poll_interval if polling else watch.rescan_interval)
        incoming = self.config.paths.incoming
        layout = find_sessions(incoming, len(self.config.routing.layout))
        self._tidy(layout.empty, now)
        current = {}
        for relpath in layout.sessions:
            if self.only is not None and relpath not in self.only:
                continue
            entries = ((e.relpath, e.size, e.mtime_ns) for e in walk(incoming.joinpath(*relpath)))
            previous = self.seen.get(relpath)
            current[relpath] = observe(previous, fingerprint(entries, watch.ready_marker), now)
            if previous is None:
                log.info("%s: new, waiting until it stops changing", "/".join(relpath))
            self._alarm_if_stuck(relpath, current[relpath], now)
        if self.only is not None:
            self.only &= set(current)
        self.seen = current
        self._first_seen = {r: t for r, t in self._first_seen.items() if r in current}

    def ready(self, now: float) -> list[tuple[Relpath, Seen]]:
        """Candidates that have settled and may be claimed now."""
        settle = self.config.watch.settle
        return [
            (r, s)
            for r, s in self.seen.items()
            if is_stable(s, now, settle, needs_marker=self._marker)
        ]

    def taken(self, relpath: Relpath) -> None:
        """The folder was claimed (or is gone): it is no longer a candidate."""
        self.seen.pop(relpath, None)
        if self.only is not None:
            self.only.discard(relpath)
        self._first_seen.pop(relpath, None)
        self._alarmed.discard(relpath)

    def try_later(self, relpath: Relpath, now: float) -> None:
        """Claiming failed (a full disk, ...): wait another settle period before trying again."""
        seen = self.seen.get(relpath)
        if seen is not None:
            self.seen[relpath] = Seen(seen.fingerprint, now)

    def next_wake(self) -> float:
        """The next time the loop must look: a rescan, or a candidate that will have settled."""
        settle = self.config.watch.settle
        times = [self.next_scan]
        for seen in self.seen.values():
            at = settles_at(seen, settle, needs_marker=self._marker)
            if at is not None:
                times.append(at)
        return min(times)

    def settling(self, at: Callable[[float], str | None]) -> list[dict[str, Any]]:
        """Each candidate for `status`: its size, since when it is unchanged, what it waits for."""
        settle = self.config.watch.settle
        found = []
        for relpath, seen in sorted(self.seen.items()):
            fp = seen.fingerprint
            ready = settles_at(seen, settle, needs_marker=self._marker)
            state = waiting_for(seen, needs_marker=self._marker)
            if ready is not None:
                state += f", taken at {at(ready)} if nothing changes"
            if relpath in self._alarmed:
                state = f"NOT READY for over {duration(self.config.watch.max_settle)}: {state}"
            found.append(
                {
                    "session": "/".join(relpath),
                    "files": fp.count,
                    "bytes": fp.total_bytes,
                    "since": at(seen.since),
                    "state": state,
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
            "/".join(relpath),
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
        for relpath in store.remove_empty_parents(self.config.paths.incoming, ripe):
            self._empty_since.pop(relpath, None)
            log.debug("removed the empty folder incoming/%s", "/".join(relpath))
