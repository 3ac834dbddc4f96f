"""One step of the service loop on a helper thread, while the loop itself keeps breathing; and
the loop's wake-up.

A step (judging a session, streaming it to XNAT, filing it) can take minutes. Meanwhile the main
loop stays responsive: it pings systemd's watchdog, refreshes STATUS and notices SIGTERM. It
pings only while the step shows signs of life (a `Heartbeat` the step beats as it makes
progress), so a step hung beyond its budget stops the pings and systemd restarts the service.

A step returns a value and changes nothing the loop owns: the loop applies the value once the
step is over. The only things a step and the loop share while it runs are the `Heartbeat` and
the `Progress` record, both behind a lock.

`Waker` is the loop's wake-up: a pipe, which a watcher thread, another thread and (through
`signal.set_wakeup_fd`) a signal can all write to without taking any lock. A signal handler that
took a lock the interrupted main thread already held would hang the daemon.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from xnat_drop.core.linkpace import Pace

T = TypeVar("T")


class Heartbeat:
    """Until when the current step counts as alive; the step extends it as it progresses."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._until = float("inf")  # no step running: the loop itself is the sign of life

    def start(self, seconds: float) -> None:
        """A step begins; it must show progress within `seconds`."""
        with self._lock:
            self._until = self._clock() + seconds

    def beat(self, seconds: float) -> None:
        """Progress: the step may now stay quiet for `seconds` (e.g. an HTTP read timeout)."""
        with self._lock:
            self._until = max(self._until, self._clock() + seconds)

    def end(self) -> None:
        with self._lock:
            self._until = float("inf")

    def alive(self) -> bool:
        with self._lock:
            return self._clock() < self._until


@dataclass
class Progress:
    """How far the running upload is, for the status line: written by the step, read by
    the loop."""

    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _claim: str = ""
    _done: int = 0
    _total: int = 0
    _rate: float = 0.0
    _packing: str = ""
    _link: Pace | None = None  # what the last upload measured of the link, kept for the next

    def uploading(
        self, claim_id: str, done: int, total: int, rate: float = 0.0, packing: str = ""
    ) -> None:
        """`done` of `total` session bytes taken; `rate` wire bytes/s; how it is packed."""
        with self._lock:
            self._claim, self._done, self._total = claim_id, done, total
            self._rate, self._packing = rate, packing

    def clear(self) -> None:
        with self._lock:
            self._claim, self._done, self._total = "", 0, 0
            self._rate, self._packing = 0.0, ""

    def read(self) -> tuple[str, int, int]:
        """(claim id, bytes sent, bytes to send); claim id "" when nothing is uploading."""
        with self._lock:
            return self._claim, self._done, self._total

    def pace(self) -> tuple[float, str]:
        """The running upload's rate on the wire (bytes/s) and how it is packed."""
        with self._lock:
            return self._rate, self._packing

    def remember_link(self, pace: Pace) -> None:
        with self._lock:
            self._link = pace

    def last_link(self) -> Pace | None:
        """What the last upload measured of the link and the compression, if any."""
        with self._lock:
            return self._link


class Step(Generic[T]):
    """`fn()` running on a daemon thread; `wait` follows it from the loop."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self._done = threading.Event()
        self._result: T | None = None
        self._failure: BaseException | None = None

        def target() -> None:
            try:
                self._result = fn()
            except BaseException as exc:
                self._failure = exc
            finally:
                self._done.set()

        self._thread = threading.Thread(target=target, name="xnat-drop-step", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def wait(self, on_wait: Callable[[], bool], interval: float) -> tuple[bool, T | None]:
        """(True, the step's value) once it finished; (False, None) when `on_wait()`, called
        every `interval` seconds meanwhile, gave up on it (the thread is left to die with the
        process: whatever it was doing is resumed at the next start). An exception escaping
        the step is raised here."""
        while not self._done.wait(interval):
            if not on_wait():
                return False, None
        if self._failure is not None:
            raise self._failure
        return True, self._result


class Waker:
    """A self-pipe: `wake()` from anywhere (any thread, a signal via its fd), `wait()` and
    `drain()` in the loop. Never blocks a writer and takes no lock."""

    def __init__(self) -> None:
        self._read, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._routes_signals = False

    def route_signals(self) -> None:
        """Have the interpreter's C-level signal handler write to this pipe (main thread only),
        so a signal wakes `wait()` without any Python code in the handler."""
        signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)
        self._routes_signals = True

    def wake(self) -> None:
        # Full: a wake-up is pending anyway. Closed: the loop is gone.
        with contextlib.suppress(OSError):
            os.write(self.write_fd, b"\0")

    def wait(self, timeout: float | None) -> bool:
        """Wait until woken or `timeout` seconds passed; True if woken (not drained)."""
        readable, _, _ = select.select([self._read], [], [], timeout)
        return bool(readable)

    def drain(self) -> bool:
        """Empty the pipe; True when anything had been written since the last drain."""
        woken = False
        while True:
            try:
                data = os.read(self._read, 4096)
            except BlockingIOError:
                return woken
            if not data:
                return woken
            woken = True

    def close(self) -> None:
        """Close both ends, once: a second close could hit a number reused by another file.
        Signals are unrouted first: a signal arriving later must not write to a closed (or
        reused) descriptor."""
        if self._routes_signals:
            signal.set_wakeup_fd(-1)
            self._routes_signals = False
        for fd in (self._read, self.write_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._read = self.write_fd = -1
