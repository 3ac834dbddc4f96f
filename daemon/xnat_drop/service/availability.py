"""May uploads go to XNAT now? Contact, outages (probe schedule) and refused credentials.
Pure state.

Until XNAT first answers, it is "not yet contacted", never "ok". The account is checked at
start and every `xnat.check_interval` (a fresh login, the version, an alias token's expiry);
a reload or a changed secret asks for a check at once. While XNAT is unreachable the whole
queue waits and one probe per backoff interval asks whether it is back; the outage is logged
once when it starts and once when it ends. While XNAT refuses our credentials nothing is sent
at all (an account locks after 20 failures) until the secret changes or a reload asks. The
service does the talking; this keeps the state and the schedule.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from xnat_drop.adapters.credentials import SecretStamp
from xnat_drop.adapters.xnat.client import ALIAS_FORMAT, Account
from xnat_drop.core.backoff import backoff
from xnat_drop.core.config import RetryConfig
from xnat_drop.core.statuswords import INBOX_UNUSABLE, RECEIVER_REFUSED
from xnat_drop.core.text import duration, iso, plural

log = logging.getLogger("xnat_drop.service")

TOKEN_WARNING = 24 * 3600.0  # seconds before an alias token's expiry that it is warned of
RENEW = (
    "issue a new one (log in to XNAT as the service account, open /data/services/tokens/issue), "
    "write its alias:secret into the secret file and restart xnat-drop; a longer "
    "aliasTokenTimeout is the XNAT administrator's to set"
)


@dataclass
class Contact:
    """The last check XNAT answered: whose credentials it took, its version, the token."""

    at: float  # wall clock
    account: Account

    def token_left(self, now: float) -> float | None:
        """Seconds until the alias token expires (wall `now`), if XNAT said."""
        expires = self.account.token_expires
        return None if expires is None else expires - now


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
    # XNAT answers, but its inbox cannot be used as configured (issue 18: the path check
    # failed, a link would cross filesystems, the queue stalls) for this project: the
    # administrator must look. The probe proves the project's inbox path again.
    inbox: str = ""
    # XNAT answers, but its DICOM receiver refuses xnat-drop (issue 19: not on the whitelist,
    # no such AE title, disabled, a public address): the probe's C-ECHO ends it.
    receiver: bool = False

    @property
    def state(self) -> str:
        if self.inbox:
            return INBOX_UNUSABLE
        if self.receiver:
            return RECEIVER_REFUSED
        return "answering with web pages, not data" if self.wrong_answers else "unreachable"


@dataclass
class AuthPause:
    reason: str
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
        self.contact: Contact | None = None  # None: XNAT never answered yet
        self.check_interval = 900.0  # xnat.check_interval, set by the service
        self.next_check = 0.0  # monotonic: when the account is checked next (0: at once)
        self.forced = False  # a reload or a changed secret asked for a check now, even paused
        # The secret file as the current client read it: a change is worth one check.
        self.secret_stamp: SecretStamp | None = None
        self._warned: float | None = None  # the token expiry already warned of

    @property
    def blocked(self) -> bool:
        """True while nothing may be sent to XNAT."""
        return self.outage is not None or self.auth is not None

    def outage_begins(
        self,
        reason: str,
        *,
        retry_after: float | None = None,
        web_pages: bool = False,
        inbox: str = "",
        receiver: bool = False,
    ) -> None:
        """XNAT did not answer (or answered with `web_pages`, not data, or its inbox cannot be
        used for the project `inbox`, or its DICOM `receiver` refuses xnat-drop): log it once,
        and schedule the next probe (not before XNAT's own `retry_after`)."""
        now = self._monotonic()
        if self.outage is None:
            self.outage = Outage(reason, self._wall(), now, 0, now, web_pages, inbox, receiver)
            if receiver:
                log.error(
                    "XNAT's DICOM receiver refuses xnat-drop (%s): uploads wait, nothing is failed",
                    reason,
                )
            elif inbox:
                log.error(
                    "XNAT's inbox cannot be used (%s): uploads wait, nothing is failed", reason
                )
            elif web_pages:
                log.error(
                    "XNAT unavailable (%s): uploads wait, nothing is failed; check xnat.url and "
                    "whatever is in front of XNAT",
                    reason,
                )
            else:
                log.warning("XNAT unavailable (%s): uploads wait and resume by themselves", reason)
        else:
            self.outage.reason, self.outage.wrong_answers = reason, web_pages
            self.outage.inbox, self.outage.receiver = inbox, receiver
        self._reschedule(retry_after)

    def check_due(self, now: float) -> bool:
        """True when the account is to be checked now (during an outage: probed)."""
        due = self.next_probe()
        return due is not None and now >= due

    def check_now(self) -> None:
        """A reload or a changed secret: check at the next turn, outage or pause alike."""
        self.forced = True

    def checked(self, account: Account, waiting: int) -> None:
        """XNAT took the credentials: the outage or pause ends, the next check is scheduled
        (before an alias token is due to be warned of), and a near expiry is warned of."""
        now, wall = self._monotonic(), self._wall()
        first = self.contact is None
        was = self.contact.account if self.contact is not None else None
        self.contact = Contact(wall, account)
        self.forced = False
        self.outage_ends(waiting)
        if self.auth is not None:
            self.resume()
        version = account.server_version or "(version unknown)"
        if first:
            log.info("XNAT %s answers; logged in as %s", version, _user(account.user))
        elif was is not None and was.server_version != account.server_version:
            log.info("XNAT's version changed from %s to %s", was.server_version or "?", version)
        self.next_check = now + self.check_interval
        left = self.contact.token_left(wall)
        if left is None:
            return
        if left > TOKEN_WARNING:
            # Wake in time to warn a day ahead, whatever the interval.
            self.next_check = min(self.next_check, now + left - TOKEN_WARNING + 1)
        elif self._warned != account.token_expires:
            self._warned = account.token_expires
            log.warning(
                "the XNAT alias token %s expires in %s (%s): uploads stop then. Renew it: %s",
                _user(account.user),
                duration(max(0.0, left)),
                iso(wall + left),
                RENEW,
            )

    def token_warning(self) -> str:
        """ "XNAT token expires in 5.0 h" while an alias token is near its expiry, else ""."""
        left = None if self.contact is None else self.contact.token_left(self._wall())
        if left is None or left > TOKEN_WARNING:
            return ""
        return f"XNAT token expires in {duration(max(0.0, left))}"

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

    def pause(self, reason: str) -> None:
        """The credentials were refused (or cannot be read): nothing is sent until the secret
        changes or a reload asks for a check."""
        self.forced = False
        if self.auth is not None and self.auth.reason == reason:
            return
        self.auth = AuthPause(reason, self._wall())
        log.error("UPLOADS PAUSED: %s. They resume once the secret is fixed", reason)

    def resume(self) -> None:
        self.auth = None
        log.info("logged in to XNAT again; uploads resume")

    def next_probe(self) -> float | None:
        """When the loop must wake to check the account or probe XNAT (monotonic), if it
        must: never while the credentials are refused, unless a check was asked for."""
        if self.forced:
            return 0.0
        if self.auth is not None:
            return None
        return self.outage.next_probe if self.outage is not None else self.next_check

    def state(self, at: Callable[[float], str | None]) -> dict[str, Any]:
        """XNAT's state for `status`: not yet contacted, ok, unreachable since ..., credentials
        refused; with the last answer, the next check and an alias token's expiry."""
        found: dict[str, Any] = {"state": "ok" if self.contact is not None else "not yet contacted"}
        if self.auth is not None:
            found = {"state": "credentials refused", "detail": self.auth.reason}
            found["since"] = iso(self.auth.since)
        elif self.outage is not None:
            found = {"state": self.outage.state, "detail": self.outage.reason}
            found["since"] = iso(self.outage.since)
            found["next_probe"] = at(self.outage.next_probe)
        else:
            found["next_check"] = at(self.next_check)
        contact = self.contact
        if contact is not None:
            found["last_answer"] = iso(contact.at)
            found["user"] = _user(contact.account.user)
            expires = contact.account.token_expires
            if expires is not None:
                found["token_expires"] = iso(expires)
                found["token_warning"] = self.token_warning()
        return found

    def _reschedule(self, after: float | None) -> None:
        assert self.outage is not None
        self.outage.failures += 1
        retry = self.retry
        delay = backoff(
            self.outage.failures, retry.first_delay, retry.max_delay, self._rng.random(), after
        )
        self.outage.next_probe = self._monotonic() + delay


def _user(user: str) -> str:
    """A user name as logs and status show it: an alias token only by its first characters
    (with its secret it is a credential)."""
    return f"token {user[:8]}..." if ALIAS_FORMAT.fullmatch(user) else repr(user)
