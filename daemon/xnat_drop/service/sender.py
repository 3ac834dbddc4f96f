"""The notifications' sender: a daemon thread of its own that sends what waits in the outbox,
so that a slow or failing mail server or webhook never touches delivery.

Each round: the letters whose time has come, per recipient; a storm (core/mailing.py: plan)
waits and goes as one digest. A letter counts as sent when the server accepted it, and is
marked so at once, in the ledger, before the next one is sent. A failure is tried again with
backoff ([retry] first_delay_seconds, doubling up to max_delay_seconds, with jitter); the
first round after a start tries everything that waits at once.

Exactly once, and its one window: a kill -9 (or power cut) after the server accepted a message
and before the mark is written sends it again at the next start. That window is the length of
one SQLite commit; the repeat carries the same Message-ID (e-mail) or Idempotency-Key
(webhook), so the receiving side can drop it. Nothing is ever lost: a letter leaves the
outbox only as sent (or refused for good by the mail server).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import timezone, tzinfo
from pathlib import Path
from typing import Any

from xnat_drop.adapters.ledger import Outbox
from xnat_drop.adapters.notify import ChannelError, smtp, webhook
from xnat_drop.core import mailing, messages
from xnat_drop.core.backoff import backoff
from xnat_drop.core.errors import StorageError
from xnat_drop.core.mailing import Channel, Letter
from xnat_drop.core.seenoptions import WebhookFormat
from xnat_drop.core.text import iso
from xnat_drop.service import failpoints

log = logging.getLogger("xnat_drop.notify")

IDLE = 300.0  # seconds between rounds when nothing waits (a wake-up comes sooner)
STORAGE_WAIT = 30.0  # seconds before trying again when the ledger cannot be used
KEEP = 30 * 86400.0  # seconds a sent letter stays in the outbox (the storm window needs some)
PRUNE_EVERY = 86400.0
ACCEPTED = "notify-accepted"  # failpoint: the server accepted a message, not yet marked sent


@dataclass(frozen=True, slots=True)
class Channels:
    """How to send, as configured now."""

    email: smtp.MailServer | None = None
    hook: webhook.Webhook | None = None
    form: WebhookFormat = "json"
    storm_limit: int = 10
    storm_window: float = 900.0
    first_delay: float = 30.0
    max_delay: float = 3600.0
    zone: tzinfo = timezone.utc

    @property
    def names(self) -> tuple[Channel, ...]:
        found: list[Channel] = []
        if self.email is not None:
            found.append("email")
        if self.hook is not None:
            found.append("webhook")
        return tuple(found)


@dataclass
class _Job:
    """One message to send: a letter, or a digest of several."""

    channel: Channel
    recipient: str
    letters: list[Letter]
    digest: str = ""  # the digest's key ("" a single letter)

    @property
    def key(self) -> str:
        return self.digest or self.letters[0].key


@dataclass
class _Health:
    failing: dict[str, float] = field(default_factory=dict)  # channel: failing since (wall)
    last_error: str = ""
    pending: int = 0
    next_try: float | None = None


class Sender:
    """The thread. `wake` after queueing; `stop` at shutdown (what waits stays queued)."""

    def __init__(
        self, ledger_path: Path, channels: Channels, wall: Callable[[], float], rng: random.Random
    ) -> None:
        self._path = ledger_path
        self._channels = channels
        self._wall = wall
        self._rng = rng
        self._lock = threading.Lock()  # guards _channels and _health
        self._health = _Health()
        self._wake = threading.Event()
        self._stopping = False
        self._pruned = float("-inf")
        self._thread = threading.Thread(target=self._run, name="xnat-drop-notify", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def configure(self, channels: Channels) -> None:
        """New settings (a reload): used from the next round on."""
        with self._lock:
            self._channels = channels
            self._health.failing = {
                c: t for c, t in self._health.failing.items() if c in channels.names
            }
        self.wake()

    def stop(self, timeout: float) -> None:
        """One last round for what is due, then stop; waits at most `timeout` seconds (a hung
        server is left to the process exit: its letters stay queued)."""
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning(
                    "notifications: the sender is still busy; what waits is sent at the next start"
                )

    def health(self) -> dict[str, Any]:
        """For status.json: "ok" or "failing" since when, what waits, the last error."""
        with self._lock:
            h = self._health
            since = min(h.failing.values()) if h.failing else None
            return {
                "state": "failing" if h.failing else "ok",
                "since": None if since is None else iso(since),
                "pending": h.pending,
                "next_try": None if h.next_try is None or not h.pending else iso(h.next_try),
                "last_error": h.last_error if h.failing else "",
            }

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        outbox: Outbox | None = None
        everything = True  # the first round tries all that waits: a start is a retry
        try:
            while True:
                self._wake.clear()
                stopping = self._stopping
                try:
                    if outbox is None:
                        outbox = Outbox(self._path)
                    wait = self._round(outbox, everything)
                    everything = False
                except StorageError as exc:
                    log.error("notifications: the outbox cannot be used (%s); trying again", exc)
                    wait = STORAGE_WAIT
                except Exception:  # a bug here must never end the notifications for good
                    log.exception("notifications: unexpected error in the sender")
                    wait = STORAGE_WAIT
                if stopping:
                    return
                self._wake.wait(wait)
        finally:
            if outbox is not None:
                outbox.close()

    def _round(self, outbox: Outbox, everything: bool) -> float:
        """Send what is due; returns how long to sleep."""
        with self._lock:
            ch = self._channels
        now = self._wall()
        if now - self._pruned >= PRUNE_EVERY:
            outbox.prune(now - KEEP)
            self._pruned = now
        wakes: list[float] = []
        if ch.names:
            due = outbox.due(float("inf") if everything else now, ch.names)
            groups: dict[tuple[Channel, str], list[Letter]] = {}
            for letter in due:
                groups.setdefault((letter.channel, letter.recipient), []).append(letter)
            jobs: dict[Channel, list[_Job]] = {"email": [], "webhook": []}
            for (channel, recipient), letters in groups.items():
                sent, last_digest = outbox.window(channel, recipient, now - ch.storm_window)
                plan = mailing.plan(
                    [(x.key, x.created_at) for x in letters],
                    sent,
                    last_digest,
                    now,
                    ch.storm_limit,
                    ch.storm_window,
                )
                jobs[channel] += [
                    _Job(channel, recipient, [x]) for x in letters if x.key in plan.singles
                ]
                if plan.digest:
                    held = [x for x in letters if x.key in plan.digest]
                    digest = mailing.digest_key([x.key for x in held])
                    jobs[channel].append(_Job(channel, recipient, held, digest))
                if plan.wake is not None:
                    wakes.append(plan.wake)
            for channel, work in jobs.items():
                if work:
                    self._send_all(outbox, ch, channel, work)
        pending, first_due = outbox.waiting(ch.names) if ch.names else (0, None)
        with self._lock:
            self._health.pending = pending
            self._health.next_try = first_due
        if first_due is not None:
            wakes.append(first_due)
        soonest = min(wakes, default=now + IDLE)
        return min(IDLE, max(0.05, soonest - self._wall()))

    def _send_all(self, outbox: Outbox, ch: Channels, channel: Channel, jobs: list[_Job]) -> None:
        """Send the jobs of one channel over one connection; the first failure of the server
        (not of one recipient) puts the rest off too."""
        with ExitStack() as stack:
            try:
                session = None
                if channel == "email":
                    assert ch.email is not None
                    session = stack.enter_context(smtp.Session(ch.email))
                for i, job in enumerate(jobs):
                    try:
                        self._send(ch, job, session)
                    except ChannelError as exc:
                        self._failed(outbox, ch, [job], exc)
                        if exc.permanent:
                            continue
                        self._failed(outbox, ch, jobs[i + 1 :], exc)
                        return
                    failpoints.hit(ACCEPTED)
                    now = self._wall()
                    outbox.mark_sent([x.key for x in job.letters], now, job.digest)
                    self._worked(channel, job)
            except ChannelError as exc:  # the connection itself
                self._failed(outbox, ch, jobs, exc)

    def _send(self, ch: Channels, job: _Job, session: smtp.Session | None) -> None:
        if job.digest:
            subject, body = messages.storm(
                [(x.subject, x.body, x.created_at) for x in job.letters], ch.zone
            )
            kind = "digest"
            fields: tuple[tuple[str, str], ...] = (("count", str(len(job.letters))),)
        else:
            only = job.letters[0]
            subject, body, kind, fields = only.subject, only.body, only.kind, only.fields
        if job.channel == "email":
            assert session is not None and ch.email is not None
            domain = ch.email.sender.rpartition("@")[2]
            msg = smtp.compose(
                ch.email,
                job.recipient,
                subject,
                body,
                mailing.message_id(job.key, domain),
                self._wall(),
            )
            session.send(msg)
        else:
            assert ch.hook is not None
            data = mailing.webhook_body(ch.form, kind, job.key, subject, body, fields)
            webhook.post(ch.hook, data, mailing.idempotency_key(job.key))

    def _worked(self, channel: Channel, job: _Job) -> None:
        with self._lock:
            since = self._health.failing.pop(channel, None)
        if since is not None:
            log.info("notifications by %s work again", _words(channel))
        what = f"a digest of {len(job.letters)}" if job.digest else job.letters[0].kind
        log.info("notification sent (%s, %s to %s)", what, _words(channel), _shown(job))

    def _failed(
        self, outbox: Outbox, ch: Channels, jobs: Sequence[_Job], exc: ChannelError
    ) -> None:
        if not jobs:
            return
        now = self._wall()
        for job in jobs:
            tries = max(x.attempts for x in job.letters) + 1
            delay = backoff(tries, ch.first_delay, ch.max_delay, self._rng.random())
            outbox.mark_failed(
                [x.key for x in job.letters], str(exc), now + delay, refused=exc.permanent
            )
            if exc.permanent:
                log.error("notification to %s refused for good, not sent: %s", _shown(job), exc)
        if exc.permanent:
            return
        channel = jobs[0].channel
        with self._lock:
            first = channel not in self._health.failing
            self._health.failing.setdefault(channel, now)
            self._health.last_error = str(exc)
        if first:
            log.warning(
                "notifications by %s failing: %s; tried again with backoff (deliveries go on)",
                _words(channel),
                exc,
            )


def _words(channel: Channel) -> str:
    return "e-mail" if channel == "email" else "webhook"


def _shown(job: _Job) -> str:
    return job.recipient if job.channel == "email" else "the webhook"
