"""May uploads go to XNAT now? Outages (probe schedule) and refused credentials. Pure state.

While XNAT is unreachable the whole queue waits and one probe per backoff interval asks
whether it is back; the outage is logged once when it starts and once when it ends. While
XNAT refuses our credentials nothing is sent at all (an account locks after 20 failures) until
the secret changes. The service does the talking; this keeps the state and the schedule.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from xnat_drop.adapters.credentials import SecretStamp
from xnat_drop.core.backoff import backoff
from xnat_drop.core.config import RetryConfig
from xnat_drop.core.text import duration, plural

log = logging.getLogger("xnat_drop.service")


@dataclass
class Outage:
    reason: str
    since: float  # wall clock, for logs and status
    started: float  # monotonic
    failures: int
    next_probe: float
    # XNAT (or something in front of it) answers, but with web pages or redirects instead of
    # data: a proxy or single sign-on page, a wrong xnat.url. Waited out like an outage, but
    # said louder: it usually needs an administrator.
    wrong_answers: bool = False

    @property
    def state(self) -> str:
        return "answering with web pages, not data" if self.wrong_answers else "unreachable"


@dataclass
class AuthPause:
    reason: str
    stamp: SecretStamp | None  # the secret file as it was refused; a change is worth one login
    since: float  # wall clock


class Availability:
    """The outage and credential state of one daemon, with its probe schedule."""

    def __init__(
        self,
        retry: RetryConfig,
        monotonic: Callable[[], float],
        wall: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self.retry = retry
        self._monotonic = monotonic
        self._wall = wall
        self._rng = rng
        self.outage: Outage | None = None
        self.auth: AuthPause | None = None

    @property
    def blocked(self) -> bool:
        """True while nothing may be sent to XNAT."""
        return self.outage is not None or self.auth is not None

    def outage_begins(
        self, reason: str, *, retry_after: float | None = None, web_pages: bool = False
    ) -> None:
        """XNAT did not answer (or answered with `web_pages`, not data): log it once, and
        schedule the next probe (not before XNAT's own `retry_after`)."""
        now = self._monotonic()
        if self.outage is None:
            self.outage = Outage(reason, self._wall(), now, 0, now, web_pages)
            if web_pages:
                log.error(
                    "XNAT unavailable (%s): uploads wait, nothing is failed; check xnat.url and "
                    "whatever is in front of XNAT",
                    reason,
                )
            else:
                log.warning("XNAT unavailable (%s): uploads wait and resume by themselves", reason)
        else:
            self.outage.reason, self.outage.wrong_answers = reason, web_pages
        self._reschedule(retry_after)

    def probe_due(self, now: float) -> bool:
        return self.outage is not None and self.auth is None and now >= self.outage.next_probe

    def probe_failed(self, exc: BaseException) -> None:
        self._reschedule(getattr(exc, "retry_after", None))
        assert self.outage is not None
        delay = self.outage.next_probe - self._monotonic()
        log.debug("XNAT still unavailable (%s); next probe in %.1f s", exc, delay)

    def outage_ends(self, waiting: int) -> None:
        """XNAT answers again: log how long it was away, once."""
        if self.outage is None:
            return
        lasted = self._monotonic() - self.outage.started
        log.info(
            "XNAT reachable again after %s; %s resume", duration(lasted), plural(waiting, "session")
        )
        self.outage = None

    def pause(self, reason: str, stamp: SecretStamp | None) -> None:
        self.auth = AuthPause(reason, stamp, self._wall())
        log.error("UPLOADS PAUSED: %s", reason)

    def resume(self) -> None:
        self.auth = None
        log.info("logged in to XNAT again; uploads resume")

    def next_probe(self) -> float | None:
        """When the loop must wake for a probe (monotonic), if it must."""
        if self.outage is None or self.auth is not None:
            return None
        return self.outage.next_probe

    def state(
        self, at: Callable[[float], str | None], iso: Callable[[float], str | None]
    ) -> dict[str, Any]:
        """XNAT's state for `status`: ok, unreachable since ..., credentials refused."""
        if self.auth is not None:
            return {
                "state": "credentials refused",
                "detail": self.auth.reason,
                "since": iso(self.auth.since),
            }
        if self.outage is not None:
            return {
                "state": self.outage.state,
                "detail": self.outage.reason,
                "since": iso(self.outage.since),
                "next_probe": at(self.outage.next_probe),
            }
        return {"state": "ok"}

    def _reschedule(self, after: float | None) -> None:
        assert self.outage is not None
        self.outage.failures += 1
        retry = self.retry
        delay = backoff(
            self.outage.failures, retry.first_delay, retry.max_delay, self._rng.random(), after
        )
        self.outage.next_probe = self._monotonic() + delay
