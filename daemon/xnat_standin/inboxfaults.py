"""Faults of the inbox import handler: a stalled queue, a failing import, a late mount.

The HTTP faults (``faults.py``) act on requests as they arrive; these act on what the inbox
handler does with a server path, so they match on that path instead.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any

from . import faults


@dataclass(frozen=True, slots=True)
class InboxFault:
    """What to do to inbox imports whose server path (as normalised) starts with ``path``.

    Exactly one effect:

    - ``stuck``: the request stays ``Queued`` (a stalled JMS queue) until the inbox faults are
      cleared, when the worker takes it up as usual.
    - ``fail``: the worker sets ``Accepted``, ``Importing``, then ``Failed`` with this
      resolution, importing nothing and deleting nothing.
    - ``invisible_seconds``: the synchronous check treats the path as missing (the generic
      400) until this many seconds after it appeared (its ctime: created or renamed into
      place), as a share whose attribute cache lags on the XNAT server would.

    ``times``: how many requests a ``stuck`` or ``fail`` fault takes (0: forever); an
    ``invisible_seconds`` fault stays until cleared.
    """

    path: str = "/"
    stuck: bool = False
    fail: str | None = None
    invisible_seconds: float = 0.0
    times: int = 1

    def matches(self, server_path: str) -> bool:
        return server_path.startswith(self.path)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> InboxFault:
        """Build one from a JSON object; raises ValueError on unknown or mistyped keys."""
        return faults.from_json(cls, data, "inbox fault")

    def validate(self) -> None:
        effects = [self.stuck is True, self.fail is not None, bool(self.invisible_seconds)]
        checks = (
            (isinstance(self.path, str) and self.path.startswith("/"), "path must start with /"),
            (isinstance(self.stuck, bool), "stuck must be true or false"),
            (self.fail is None or isinstance(self.fail, str), "fail must be a string"),
            (
                isinstance(self.invisible_seconds, (int, float)) and self.invisible_seconds >= 0,
                "invisible_seconds must be >= 0",
            ),
            (isinstance(self.times, int) and self.times >= 0, "times must be >= 0"),
            (
                effects.count(True) == 1,
                "exactly one of stuck, fail and invisible_seconds must be set",
            ),
        )
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


class InboxFaultBook:
    """The inbox faults in force; ``stuck`` and ``fail`` are counted as requests take them."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._entries: list[list[Any]] = []  # [fault, uses left or None for forever]

    def add(self, fault: InboxFault) -> None:
        fault.validate()
        with self._lock:
            self._entries.append([fault, fault.times or None])

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def take(self, server_path: str) -> InboxFault | None:
        """The first ``stuck`` or ``fail`` fault for a new request on this path, counted."""
        with self._lock:
            for entry in self._entries:
                fault: InboxFault = entry[0]
                if fault.invisible_seconds or not fault.matches(server_path):
                    continue
                if entry[1] is not None:
                    entry[1] -= 1
                    if entry[1] <= 0:
                        self._entries.remove(entry)
                return fault
        return None

    def hides(self, server_path: str, age: float) -> bool:
        """Is a path that appeared ``age`` seconds ago still invisible?"""
        return any(
            fault.matches(server_path) and age < fault.invisible_seconds for fault in self.pending()
        )

    def pending(self) -> list[InboxFault]:
        with self._lock:
            return [entry[0] for entry in self._entries]
