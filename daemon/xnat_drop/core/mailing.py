"""Who gets each alert, by which channel, and when a storm becomes one digest. Pure.

An alert becomes one *letter* per recipient: each e-mail address (email_to, the project's
addresses, the session folder's owner), and the webhook. A letter's key is the alert's key,
its channel and its recipient: the outbox holds each key once, ever.

Storms: one recipient gets at most `storm_limit` messages in any `storm_window`. Past that,
its letters wait and go out together as one digest, at most one digest per window; the
letters in it are then sent, each once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from xnat_drop.core.messages import Alert
from xnat_drop.core.monitoring import NotifyConfig
from xnat_drop.core.seenoptions import WebhookFormat

Channel = Literal["email", "webhook"]
WEBHOOK = "webhook"  # the webhook's recipient name


@dataclass(frozen=True, slots=True)
class Letter:
    """One message to one recipient by one channel, as the outbox keeps it."""

    key: str
    kind: str
    channel: Channel
    recipient: str  # an e-mail address, or WEBHOOK
    subject: str
    body: str
    fields: tuple[tuple[str, str], ...]
    created_at: float
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class Plan:
    """What to send to one recipient now: `singles` one by one, `digest` as one message;
    the rest waits until `wake` (wall clock; None: nothing waits)."""

    singles: tuple[str, ...] = ()
    digest: tuple[str, ...] = ()
    wake: float | None = None


def addresses(config: NotifyConfig, alert: Alert) -> tuple[str, ...]:
    """The e-mail addresses for `alert`: email_to always; a session's project and owner
    theirs. None when e-mail is off. Each address once (case aside), in that order."""
    if not config.email:
        return ()
    found = list(config.email_to)
    if alert.project:
        found += config.project_addresses(alert.project)
    found += [address for user, address in config.owners if user in alert.owner]
    seen: set[str] = set()
    unique = []
    for address in found:
        if address.lower() not in seen:
            seen.add(address.lower())
            unique.append(address)
    return tuple(unique)


def letters(config: NotifyConfig, alerts: Sequence[Alert], now: float) -> list[Letter]:
    """Every letter of `alerts`: one per e-mail address, and one for the webhook if on."""
    found = []
    for alert in alerts:
        targets: list[tuple[Channel, str]] = [("email", a) for a in addresses(config, alert)]
        if config.webhook != "off":
            targets.append(("webhook", WEBHOOK))
        for channel, recipient in targets:
            found.append(
                Letter(
                    f"{alert.key}|{channel}|{recipient.lower()}",
                    alert.kind,
                    channel,
                    recipient,
                    alert.subject,
                    alert.body,
                    alert.fields,
                    now,
                )
            )
    return found


def plan(
    waiting: Sequence[tuple[str, float]],
    sent_in_window: int,
    last_digest: float | None,
    now: float,
    limit: int,
    window: float,
) -> Plan:
    """What to send now to one recipient. `waiting`: its due letters (key, created at),
    oldest first; `sent_in_window`: messages it got since `now - window` (a digest counts
    one); `last_digest`: when its last digest went out.

    Within the limit every letter goes at once. Past it, all of them wait for one digest: it
    goes when the oldest has waited a window (so a storm is gathered, and a backlog older
    than that goes at once), and never within a window of the last digest.
    """
    if not waiting:
        return Plan()
    keys = tuple(key for key, _ in waiting)
    if sent_in_window + len(waiting) <= limit:
        return Plan(singles=keys)
    oldest = min(at for _, at in waiting)
    due = oldest + window
    if last_digest is not None:
        due = max(due, last_digest + window)
    if now >= due:
        return Plan(digest=keys)
    return Plan(wake=due)


def digest_key(keys: Sequence[str]) -> str:
    """The key of a digest of these letters (stable: the same letters, the same key)."""
    return "digest:" + hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:32]


def message_id(key: str, domain: str) -> str:
    """A stable Message-ID for a letter or digest key: a repeat after a crash carries the same
    one, so a mail system (or person) can drop it."""
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:40]}@{domain or 'xnat-drop.invalid'}>"


def idempotency_key(key: str) -> str:
    """The webhook's Idempotency-Key header for a letter or digest key."""
    return hashlib.sha256(key.encode()).hexdigest()[:40]


def webhook_body(
    form: WebhookFormat, kind: str, key: str, subject: str, body: str, fields: Sequence[Any]
) -> bytes:
    """The webhook's JSON: "slack" {"text": ...} (Slack, Mattermost); "json" the event, its
    words and its fields."""
    if form == "slack":
        data: dict[str, Any] = {"text": f"*{subject}*\n{body}"}
    else:
        data = {"event": kind, "key": key, "subject": subject, "text": body}
        data.update({name: value for name, value in fields if name not in data})
    return json.dumps(data, ensure_ascii=False).encode("utf-8")
