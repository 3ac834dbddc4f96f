"""Filesystem events, only to wake the service loop early. The periodic rescan is the truth.

inotify sees nothing written by other machines on a network share, so `observer = "polling"`
uses watchdog's polling observer there.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

log = logging.getLogger(__name__)


class _StopRaceFilter(logging.Filter):
    """Drop watchdog's ERROR for an event that arrives while the observer stops.

    watchdog (7.x) logs "queue_events() called when the thread is inactive" when an inotify
    event races the shutdown; nothing is lost (the loop is stopping), so it is not an error.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


logging.getLogger("watchdog.observers.inotify").addFilter(_StopRaceFilter())


class _Waker(FileSystemEventHandler):
    def __init__(self, wake: threading.Event) -> None:
        self._wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        # No work here: this runs on watchdog's thread, and the loop re-reads the folders.
        self._wake.set()


class Watcher:
    """Sets `wake` whenever anything below `folder` changes."""

    def __init__(
        self, folder: Path, wake: threading.Event, *, observer: str, poll_interval: float
    ) -> None:
        self._observer: Any = (
            PollingObserver(timeout=poll_interval) if observer == "polling" else Observer()
        )
        self._observer.daemon = True
        self._observer.schedule(_Waker(wake), str(folder), recursive=True)
        self.kind = observer

    def start(self) -> None:
        self._observer.start()
        log.debug("watching with %s", type(self._observer).__name__)

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)
