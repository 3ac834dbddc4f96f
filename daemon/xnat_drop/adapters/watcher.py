"""Filesystem events, only to wake the service loop early. The periodic rescan is the truth.

inotify sees nothing written by other machines on a network share; there, `observer =
"polling"` runs no observer at all and the loop rescans every poll interval instead, so the
tree is walked once per interval, not twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

log = logging.getLogger(__name__)

# Changes only. Opening and reading (IN_OPEN, IN_CLOSE_NOWRITE, IN_ACCESS) are left out of the
# inotify mask: the daemon's own scans open every folder, and waking on them made each scan
# wake the next one (a core kept busy by 100,000 empty folders).
# A file created (or moved in) is told by its folder's DirModifiedEvent, which watchdog queues
# beside it: FileCreatedEvent is left out, since watchdog makes one for every file of a folder
# moved in (50,000 events, and as many wakes, for a session dropped by a move).
CHANGES = [
    DirCreatedEvent,
    FileDeletedEvent,
    DirDeletedEvent,
    FileModifiedEvent,
    DirModifiedEvent,
    FileMovedEvent,
    DirMovedEvent,
    FileClosedEvent,  # closed after writing: a copy finished
]


class _StopRaceFilter(logging.Filter):
    """Drop watchdog's ERROR for an event that arrives while the observer stops.

    watchdog (7.x) logs "queue_events() called when the thread is inactive" when an inotify
    event races the shutdown; nothing is lost (the loop is stopping), so it is not an error.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


_STOP_RACE = _StopRaceFilter()  # one instance: adding it again is a no-op


class _Waker(FileSystemEventHandler):
    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        # No work here: this runs on watchdog's thread, and the loop re-reads the folders.
        self._wake()


class Watcher:
    """Calls `wake()` whenever anything below `folder` changes (inotify), on its own thread."""

    def __init__(self, folder: Path, wake: Callable[[], None]) -> None:
        # Installed here, not at import: importing this module changes no logging setup.
        logging.getLogger("watchdog.observers.inotify").addFilter(_STOP_RACE)
        self._observer: Any = Observer()
        self._observer.daemon = True
        self._observer.schedule(_Waker(wake), str(folder), recursive=True, event_filter=CHANGES)

    def start(self) -> None:
        self._observer.start()
        log.debug("watching with %s", type(self._observer).__name__)

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)
