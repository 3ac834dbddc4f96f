"""The [status], [page], [metrics] and [notify] tables: how the daemon shows what it does, and
whom it tells. Frozen config values and their parsing (the keys live in core/options.py)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from xnat_drop.core.schema import Section
from xnat_drop.core.seenoptions import (
    NOTIFY_EVENTS,
    NotifyEvent,
    ShareStatus,
    SmtpSecurity,
    WebhookFormat,
)

_ADDRESS = re.compile(r"^[^@\s,;<>\"]+@[^@\s,;<>\"]+$")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_LABEL = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class StatusConfig:
    """[status]: the status files on the share, beside incoming/."""

    share: ShareStatus = "one"
    html: bool = False
    interval: float = 5.0  # seconds: rewritten at most this often
    listed: int = 10  # last delivered and last failed sessions shown


@dataclass(frozen=True, slots=True)
class PageConfig:
    """[page]: the read-only HTTP status page; `host` "" means no page."""

    host: str = ""
    port: int = 0
    refresh: float = 10.0

    @property
    def enabled(self) -> bool:
        return bool(self.host)

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """[metrics]: the node_exporter textfile, if any (the page serves /metrics anyway)."""

    textfile: Path | None = None


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    """[notify]: who hears of what, and how. Secrets are not here: they are credentials."""

    email_to: tuple[str, ...] = ()
    projects: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (project, addresses)
    owners: tuple[tuple[str, str], ...] = ()  # (login name or uid, address)
    email_from: str = ""
    smtp_host: str = ""
    smtp_port: int = 0  # 0: the security's usual port
    smtp_security: SmtpSecurity = "starttls"
    smtp_ca_bundle: Path | None = None
    smtp_user: str = ""
    smtp_password_file: Path | None = None
    webhook: WebhookFormat = "off"
    webhook_url_file: Path | None = None
    events: tuple[NotifyEvent, ...] = NOTIFY_EVENTS
    outage_after: float = 600.0
    retrying_after: float = 6 * 3600.0
    digest_time: str = ""  # "HH:MM" in the lab's zone, or ""
    storm_limit: int = 10
    storm_window: float = 900.0

    @property
    def email(self) -> bool:
        """Whether e-mail is on: a server and at least one address to send to."""
        return bool(self.smtp_host) and bool(self.email_to or self.projects or self.owners)

    @property
    def enabled(self) -> bool:
        return self.email or self.webhook != "off"

    @property
    def port(self) -> int:
        if self.smtp_port:
            return self.smtp_port
        return {"starttls": 587, "ssl": 465, "none": 25}[self.smtp_security]

    def project_addresses(self, project: str) -> tuple[str, ...]:
        return dict(self.projects).get(project, ())

    def wants(self, event: NotifyEvent) -> bool:
        return event in self.events


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) is this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_status(t: Section) -> StatusConfig:
    return StatusConfig(
        cast(ShareStatus, t.text("share")),
        t.flag("html"),
        t.seconds("interval_seconds"),
        t.count("listed"),
    )


def parse_page(t: Section) -> PageConfig:
    listen = t.text("listen").strip()
    if not listen:
        return PageConfig(refresh=t.seconds("refresh_seconds"))
    host, sep, port_text = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        t.problem("listen", f'expected "host:port" such as "127.0.0.1:8870", got {listen!r}')
        return PageConfig()
    return PageConfig(host, int(port_text), t.seconds("refresh_seconds"))


def parse_metrics(t: Section, base: Path) -> MetricsConfig:
    textfile = t.path("textfile", base)
    if textfile is not None and textfile.suffix != ".prom":
        t.problem("textfile", f"node_exporter reads only files ending in .prom, got {textfile}")
    return MetricsConfig(textfile)


def parse_notify(t: Section, base: Path) -> NotifyConfig:
    """Raises nothing: every problem is added to the section's list."""
    email_to = t.strings("email_to")
    for address in email_to:
        _check_address(t, "email_to", address)
    projects: list[tuple[str, tuple[str, ...]]] = []
    for item in t.strings("projects"):
        project, _, addresses = item.partition("=")
        listed = tuple(a.strip() for a in addresses.split(",") if a.strip())
        if not _LABEL.match(project.strip()) or not listed:
            t.problem("projects", f'expected "PROJECT=address,address", got {item!r}')
            continue
        for address in listed:
            _check_address(t, "projects", address)
        projects.append((project.strip(), listed))
    owners: list[tuple[str, str]] = []
    for item in t.strings("owners"):
        user, _, address = item.partition("=")
        if not user.strip() or not address.strip():
            t.problem("owners", f'expected "user=address", got {item!r}')
            continue
        _check_address(t, "owners", address.strip())
        owners.append((user.strip(), address.strip()))
    sender = t.text("email_from")
    if sender:
        _check_address(t, "email_from", sender)
    digest = t.text("digest_time")
    if digest and not _HHMM.match(digest):
        t.problem("digest_time", f'expected "HH:MM" such as "07:30", got {digest!r}')
    events = t.strings("events")
    for event in events:
        if event not in NOTIFY_EVENTS:
            listed_events = ", ".join(map(repr, NOTIFY_EVENTS))
            t.problem("events", f"{event!r} is not one of {listed_events}")
    config = NotifyConfig(
        email_to,
        tuple(projects),
        tuple(owners),
        sender,
        t.text("smtp_host"),
        t.count("smtp_port"),
        cast(SmtpSecurity, t.text("smtp_security")),
        t.path("smtp_ca_bundle", base),
        t.text("smtp_user"),
        t.path("smtp_password_file", base),
        cast(WebhookFormat, t.text("webhook")),
        t.path("webhook_url_file", base),
        tuple(e for e in events if e in NOTIFY_EVENTS),
        t.seconds("outage_after_seconds"),
        t.seconds("retrying_after_seconds"),
        digest,
        t.count("storm_limit"),
        t.seconds("storm_window_seconds"),
    )
    if config.smtp_port > 65535:
        t.problem("smtp_port", f"must be a TCP port (1 to 65535), got {config.smtp_port}")
    has_addresses = bool(email_to or projects or owners)
    if has_addresses and not config.smtp_host:
        t.problem("smtp_host", "addresses are set (email_to, projects or owners) but no server")
    if config.smtp_security == "none" and config.smtp_host and not is_loopback(config.smtp_host):
        t.problem(
            "smtp_security",
            '"none" sends mail (and any password) in clear text: only for a relay on this '
            'machine (localhost); use "starttls" or "ssl" for another host',
        )
    return config


def _check_address(t: Section, name: str, address: str) -> None:
    if not _ADDRESS.match(address):
        t.problem(name, f"{address!r} is not an e-mail address")
