"""One step of the service loop on a helper thread, while the loop itself keeps breathing.

A step (judging a session, streaming it to XNAT, verifying it) can take minutes. Meanwhile the
main loop stays responsive: it pings systemd's watchdog, refreshes STATUS and notices SIGTERM.
It pings only while the step shows signs of life (a `Heartbeat` the step beats as it makes
progress), so a step hung beyond its budget stops the pings and systemd restarts the service.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


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


def run_step(step: Callable[[], None], on_wait: Callable[[], bool], interval: float) -> bool:
    """Run `step` on a daemon thread; call `on_wait()` every `interval` seconds meanwhile.

    Returns True when the step finished, False when `on_wait` gave up on it (the thread is
    left to die with the process: whatever it was doing is resumed at the next start).
    An exception escaping `step` is raised here, in the caller's thread.
    """
    done = threading.Event()
    failure: list[BaseException] = []

    def target() -> None:
        try:
            step()
        except BaseException as exc:
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=target, name="xnat-drop-step", daemon=True).start()
    while not done.wait(interval):
        if not on_wait():
            return False
    if failure:
        raise failure[0]
    return True
