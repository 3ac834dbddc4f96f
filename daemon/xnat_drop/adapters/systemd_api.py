"""systemd: sd_notify messages (READY, WATCHDOG, STATUS, RELOADING, STOPPING) and journald.

Everything goes through systemd-python. Without `NOTIFY_SOCKET` (not started by systemd)
notifications are skipped; without `JOURNAL_STREAM` logs stay plain lines on stderr.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from xnat_drop.core.shown import shown

_daemon: Any = None
_journal: Any = None
try:  # systemd-python is a Linux-only dependency
    import systemd.daemon
    import systemd.journal
except ImportError:  # pragma: no cover - other platforms
    pass
else:
    _daemon, _journal = systemd.daemon, systemd.journal

# Structured journal fields the daemon attaches to its log lines (`journalctl SESSION=...`).
FIELDS = ("SESSION", "PROJECT", "RULE", "XNAT_URI")


class Notifier:
    """sd_notify for the service loop; every method is a no-op outside systemd.

    The watchdog interval is half of `WATCHDOG_USEC` (systemd's advice), and only when
    `WATCHDOG_PID` is unset or names this process.
    """

    def __init__(self, env: Mapping[str, str], clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = bool(env.get("NOTIFY_SOCKET")) and _daemon is not None
        self._clock = clock
        self.watchdog_interval: float | None = None
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if (
            self.enabled
            and usec.isdigit()
            and int(usec) > 0
            and (not pid or pid == str(os.getpid()))
        ):
            self.watchdog_interval = int(usec) / 1e6 / 2
        self._last_ping = float("-inf")
        self._last_status = ""

    def send(self, *lines: str) -> None:
        if self.enabled and _daemon is not None:
            _daemon.notify("\n".join(lines))

    def ready(self, status: str = "") -> None:
        self.send("READY=1", *([f"STATUS={shown(status)}"] if status else []))
        self._last_status = status

    def reloading(self) -> None:
        # MONOTONIC_USEC lets newer systemd (Type=notify-reload) match it to its own clock.
        self.send(
            "RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
        )

    def stopping(self, status: str = "") -> None:
        self.send("STOPPING=1", *([f"STATUS={shown(status)}"] if status else []))

    def status(self, line: str) -> None:
        """Send STATUS= when it changed (one line; systemctl status shows it)."""
        if line != self._last_status:
            # Escaped: a newline in a folder name must never start another assignment.
            self.send(f"STATUS={shown(line)}")
            self._last_status = line

    def watchdog(self) -> None:
        """Ping the watchdog if half the interval has passed since the last ping."""
        if self.watchdog_interval is None:
            return
        now = self._clock()
        if now - self._last_ping >= self.watchdog_interval:
            self.send("WATCHDOG=1")
            self._last_ping = now


def journal_handler(sender: Callable[..., Any] | None = None) -> logging.Handler | None:
    """A logging handler that writes to the journal with SYSLOG_IDENTIFIER=xnat-drop, or None.

    Structured fields (FIELDS) given in a log call's `extra` travel as journal fields.
    """
    if _journal is None:
        return None
    kwargs: dict[str, Any] = {"SYSLOG_IDENTIFIER": "xnat-drop"}
    if sender is not None:
        kwargs["sender_function"] = sender
    handler: logging.Handler = _journal.JournalHandler(**kwargs)
    return handler


class EscapedNames(logging.Filter):
    """Log lines and journal fields with names made safe (shown.py): a folder name that is
    not UTF-8 would make the journal handler fail, a newline in one would forge a line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        escaped = shown(message)
        if escaped != message:
            record.msg, record.args = escaped, None
        for key in FIELDS:
            value = getattr(record, key, None)
            if isinstance(value, str):
                setattr(record, key, shown(value))
        return True


def under_journal(env: Mapping[str, str]) -> bool:
    """True when stderr is connected to journald (systemd sets JOURNAL_STREAM then)."""
    return bool(env.get("JOURNAL_STREAM")) and _journal is not None
