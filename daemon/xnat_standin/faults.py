"""Fault injection: make chosen requests fail, stall or lose their connection."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol, TypeVar


@dataclass(frozen=True, slots=True)
class Fault:
    """What to do to requests whose method and path match.

    - ``method``: HTTP method, or "*" for any.
    - ``path``: a prefix of the request path (e.g. "/data/services/import").
    - ``status``: answer with this status without processing the request (body drained first);
      None processes the request normally.
    - ``body``: response body for ``status`` (default: an HTML status page).
    - ``times``: how many matching requests the fault applies to; 0 means forever.
    - ``delay``: seconds to wait before answering (with no ``status``: after processing, so the
      work is done while the client waits, as behind a slow proxy).
    - ``read_delay``: seconds of sleep per MiB of request body read (a slow server).
    - ``drop_after_bytes``: read at most this many body bytes (processing them as usual, so
      entries already imported stay in the prearchive), then reset the connection unanswered.
    - ``retry_after``: value of a ``Retry-After`` header on the answer.
    - ``content_type``: Content-Type of the answer (e.g. "text/html" for a proxy's login page
      answered with 200); None keeps the usual one.
    - ``location``: value of a ``Location`` header on the answer (e.g. with ``status`` 302).
    """

    method: str = "*"
    path: str = "/"
    status: int | None = None
    body: str | None = None
    times: int = 1
    delay: float = 0.0
    read_delay: float = 0.0
    drop_after_bytes: int | None = None
    retry_after: int | None = None
    content_type: str | None = None
    location: str | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.method == "*" or self.method.upper() == method.upper()) and path.startswith(
            self.path
        )

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> Fault:
        """Build a Fault from a JSON object; raises ValueError on unknown or mistyped keys."""
        return from_json(cls, data, "fault")

    def validate(self) -> None:
        checks = (
            (isinstance(self.method, str), "method must be a string"),
            (isinstance(self.path, str) and self.path.startswith("/"), "path must start with /"),
            (
                self.status is None or (isinstance(self.status, int) and 100 <= self.status <= 599),
                "status must be an HTTP status",
            ),
            (self.body is None or isinstance(self.body, str), "body must be a string"),
            (isinstance(self.times, int) and self.times >= 0, "times must be >= 0"),
            (isinstance(self.delay, (int, float)) and self.delay >= 0, "delay must be >= 0"),
            (
                isinstance(self.read_delay, (int, float)) and self.read_delay >= 0,
                "read_delay must be >= 0",
            ),
            (
                self.drop_after_bytes is None
                or (isinstance(self.drop_after_bytes, int) and self.drop_after_bytes >= 0),
                "drop_after_bytes must be >= 0",
            ),
            (
                self.retry_after is None or isinstance(self.retry_after, int),
                "retry_after must be an integer",
            ),
            (_is_header_value(self.content_type), "content_type must be one line of text"),
            (_is_header_value(self.location), "location must be one line of text"),
        )
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def _is_header_value(value: object) -> bool:
    """None, or a string that cannot break out of its header line."""
    return value is None or (isinstance(value, str) and not any(c in value for c in "\r\n"))


class FaultBook:
    """The injected faults, consumed as matching requests arrive (first match wins)."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._entries: list[list[Any]] = []  # [fault, uses left or None for forever]

    def add(self, fault: Fault) -> None:
        fault.validate()
        with self._lock:
            self._entries.append([fault, fault.times or None])

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def take(self, method: str, path: str) -> Fault | None:
        """The first fault matching this request, counting one use of it."""
        with self._lock:
            for entry in self._entries:
                fault: Fault = entry[0]
                if fault.matches(method, path):
                    if entry[1] is not None:
                        entry[1] -= 1
                        if entry[1] <= 0:
                            self._entries.remove(entry)
                    return fault
        return None

    def pending(self) -> list[Fault]:
        with self._lock:
            return [entry[0] for entry in self._entries]


class _Checked(Protocol):
    def validate(self) -> None: ...


_F = TypeVar("_F", bound=_Checked)


def from_json(cls: type[_F], data: object, what: str) -> _F:
    """A fault dataclass `cls` from a JSON object (the control API's body), checked by its
    own `validate`; raises ValueError on unknown or mistyped keys. `what` names it in words."""
    if not isinstance(data, dict):
        raise ValueError(f"a {what} is a JSON object")
    known = {field.name for field in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what} fields: {', '.join(unknown)}")
    fault = cls(**data)
    fault.validate()
    return fault
