"""Notifications, the loop's side: a sink of the status board that turns each report into the
alerts due (core/alerts.py), and queues their letters in the ledger's outbox; the sender
thread (sender.py) sends them.

Failed sessions are read from the ledger, not from the report's short list: every session
filed in failed/ since notifications were turned on is told once (a session is marked told
in the same transaction that queues its letters). Turning notifications on does not mail the
history: the ledger remembers when they were turned on (and off).

Runs on the loop's thread, with the loop's ledger connection; a failure here is logged by the
board and never stops the loop.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from xnat_drop.adapters import localzone
from xnat_drop.adapters.ledger import FILE_NAME as LEDGER_FILE
from xnat_drop.adapters.ledger import Entry, Ledger
from xnat_drop.adapters.notify import owners, secrets
from xnat_drop.adapters.notify.secrets import Secrets
from xnat_drop.adapters.notify.smtp import MailServer, default_sender
from xnat_drop.adapters.notify.webhook import Webhook
from xnat_drop.core import alerts, mailing, messages
from xnat_drop.core.alerts import Context, FailedSession, Memory
from xnat_drop.core.config import Config
from xnat_drop.core.monitoring import NotifyConfig
from xnat_drop.core.text import duration, plural
from xnat_drop.service.board import Board, Report
from xnat_drop.service.finish import shown_in_tree
from xnat_drop.service.sender import Channels, Sender
from xnat_drop.service.state import Clock

log = logging.getLogger("xnat_drop.notify")

STOP_WAIT = 5.0  # seconds the sender may take to send what is due at shutdown
CLOCK_MARGIN = 86400.0  # failed sessions are looked for this far before the last one told
DAY = 86400.0


class Notifications:
    """The notifications of one daemon. Reads the channels' secrets when made (ConfigError:
    exit 78); `attach` starts them, `close` stops the sender."""

    def __init__(
        self,
        config: Config,
        clock: Clock,
        env: Mapping[str, str],
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._env = env
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._secrets = secrets.load(config.notify, env)
        self._sender: Sender | None = None
        self._memory: Memory | None = None
        self._since: float | None = None  # failed sessions told: filed at or after this

    @property
    def enabled(self) -> bool:
        return self.config.notify.enabled

    def attach(self, board: Board, ledger: Ledger) -> None:
        """Hand the board our sink and health; note a switch on or off; start the sender."""
        board.sinks.append(self.sink)
        board.notifications = self.health
        self._switched(ledger)
        if self.enabled:
            self._start_sender()

    def check(self, config: Config) -> Secrets:
        """The secrets `config` needs (a reload checks them before it takes the new
        configuration). Raises ConfigError."""
        return secrets.load(config.notify, self._env)

    def reload(self, config: Config, found: Secrets, ledger: Ledger) -> None:
        self.config, self._secrets = config, found
        self._switched(ledger)
        if not self.enabled:
            self._stop_sender()
        elif self._sender is None:
            self._start_sender()
        else:
            self._sender.configure(self._channels())

    def close(self) -> None:
        self._stop_sender()

    def health(self) -> dict[str, Any] | None:
        """For status.json: None while notifications are off."""
        if self._sender is None:
            return None
        return self._sender.health()

    # -- the sink -------------------------------------------------------------------------------

    def sink(self, report: Report, ledger: Ledger | None) -> None:
        """Queue the letters of every alert due now. `ledger` None (a step runs): nothing now,
        the next report catches up."""
        if ledger is None or not self.enabled:
            return
        cfg = self.config.notify
        now = self._clock.wall()
        ctx = self._context()
        if self._memory is None:
            self._memory = Memory.from_json(ledger.notify_state("memory"))
        if self._since is None:
            self._since = _number(ledger.notify_state("failed_after"), now)
        facts = alerts.facts_of(report)
        memory, found = alerts.watch(self._memory, facts, now, cfg, ctx)
        found = [self._owned(alert) for alert in found]
        rows = ledger.untold_failures(self._since)
        found += alerts.new_failures([self._failed(e) for e in rows], cfg, ctx)
        day = alerts.daily_due(memory, now, cfg.digest_time, ctx.zone)
        if day is not None:
            found.append(self._daily(day, ledger, facts, now, ctx))
            memory = replace(memory, daily=day)
        state = {}
        if memory != self._memory:
            state["memory"] = memory.to_json()
        since = self._since
        if rows:
            since = max(since, rows[-1].updated_at - CLOCK_MARGIN)
            state["failed_after"] = repr(since)
        if not found and not state:
            return
        letters = mailing.letters(cfg, found, now)
        added = ledger.enqueue(letters, state, [e.claim_id for e in rows], now)
        self._memory, self._since = memory, since
        if added and self._sender is not None:
            self._sender.wake()

    def _failed(self, entry: Entry) -> FailedSession:
        paths = self.config.paths
        final = Path(entry.final_path) if entry.final_path else None
        report = (
            shown_in_tree(paths, final.with_name(final.name + ".report.txt"))
            if final is not None
            else "failed/"
        )
        owner = owners.owner_of(final) if final is not None and self.config.notify.owners else ()
        return FailedSession(
            entry.claim_id,
            entry.relpath,
            tuple(r.strip() for r in entry.reason.split(",") if r.strip()),
            report,
            entry.updated_at,
            entry.project,
            entry.subject,
            entry.label,
            owner,
        )

    def _owned(self, alert: alerts.Alert) -> alerts.Alert:
        """A stuck folder's or a retrying session's alert with its folder's owner (when the
        lab maps owners to addresses)."""
        if not self.config.notify.owners or alert.kind not in ("stuck", "retrying"):
            return alert
        paths = self.config.paths
        where = dict(alert.fields).get("session", "")
        if alert.kind == "stuck":
            folder = paths.incoming / where
        else:  # .work/<claim>/<name>
            folder = paths.work / alert.key.removeprefix("retrying:") / where.rsplit("/", 1)[-1]
        return replace(alert, owner=owners.owner_of(folder))

    def _daily(
        self, day: str, ledger: Ledger, facts: alerts.Facts, now: float, ctx: Context
    ) -> alerts.Alert:
        since = now - DAY
        done = ledger.count_since("done", since)
        failed_count = ledger.count_since("failed", since)
        recent = [e for e in ledger.recent("failed", messages.LISTED) if e.updated_at >= since]
        return messages.daily(
            day,
            done,
            [self._failed(e) for e in recent],
            failed_count,
            facts.waiting,
            facts.xnat_state,
            ctx,
        )

    def _context(self) -> Context:
        layout = self.config.routing.layout
        return Context(
            self.config.xnat.url,
            localzone.lab_zone(self.config.time_zone, self._env),
            layout.index("project") if "project" in layout else None,
        )

    # -- switching on and off, the sender ---------------------------------------------------

    def _switched(self, ledger: Ledger) -> None:
        """Turned on: failed sessions are told from now on (not the history), with a fresh
        memory. Turned off: said in the ledger, so that turning on again starts afresh."""
        was = ledger.notify_state("enabled") == "1"
        now = self._clock.wall()
        if self.enabled and not was:
            state = {"enabled": "1", "failed_after": repr(now), "memory": Memory().to_json()}
            ledger.enqueue([], state)
            self._memory, self._since = Memory(), now
        elif not self.enabled and was:
            ledger.enqueue([], {"enabled": "0"})

    def _start_sender(self) -> None:
        self._sender = Sender(
            self.config.paths.state / LEDGER_FILE, self._channels(), self._clock.wall, self._rng
        )
        self._sender.start()
        log.info("notifications on: %s", "; ".join(describe(self.config.notify, self._secrets)))

    def _stop_sender(self) -> None:
        if self._sender is not None:
            self._sender.stop(STOP_WAIT)
            self._sender = None

    def _channels(self) -> Channels:
        cfg, found = self.config.notify, self._secrets
        email = None
        if cfg.email:
            email = MailServer(
                cfg.smtp_host,
                cfg.port,
                cfg.smtp_security,
                cfg.email_from or default_sender(),
                cfg.smtp_ca_bundle,
                cfg.smtp_user,
                found.smtp_password,
            )
        hook = Webhook(found.webhook_url) if cfg.webhook != "off" else None
        return Channels(
            email,
            hook,
            cfg.webhook,
            cfg.storm_limit,
            cfg.storm_window,
            self.config.retry.first_delay,
            self.config.retry.max_delay,
            localzone.lab_zone(self.config.time_zone, self._env),
        )


def describe(cfg: NotifyConfig, found: Secrets) -> list[str]:
    """The notification settings in words (the log at start, `check-config`); the webhook
    by its host only, the password by where it comes from."""
    if not cfg.enabled:
        return ["off"]
    lines = []
    if cfg.email:
        login = (
            f" as {cfg.smtp_user!r} (password from {found.smtp_source})" if cfg.smtp_user else ""
        )
        whom = [plural(len(cfg.email_to), "address", "addresses")]
        if cfg.projects:
            whom.append(plural(len(cfg.projects), "project"))
        if cfg.owners:
            whom.append(plural(len(cfg.owners), "owner"))
        lines.append(
            f"e-mail via {cfg.smtp_host}:{cfg.port} ({cfg.smtp_security}){login} to "
            f"{', '.join(whom)}"
        )
    if cfg.webhook != "off":
        lines.append(
            f"webhook ({cfg.webhook}) to {found.webhook_host} (URL from {found.webhook_source})"
        )
    lines.append(
        f"events {', '.join(cfg.events) or 'none'}; an outage after {duration(cfg.outage_after)}; "
        f"at most {cfg.storm_limit} messages per {duration(cfg.storm_window)} to one recipient"
        + (f"; a daily digest at {cfg.digest_time}" if cfg.digest_time else "")
    )
    return lines


def _number(text: str | None, default: float) -> float:
    try:
        return float(text) if text else default
    except ValueError:
        return default
