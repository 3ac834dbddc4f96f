"""The notifications' secrets: the SMTP password and the webhook URL (which is itself a
secret: whoever has it may post). Never from the TOML, the command line or the environment.

Sources, first found wins (as for the XNAT secret, adapters/credentials.py):
1. the systemd credential `$CREDENTIALS_DIRECTORY/smtp-password` or `.../webhook-url`
   (`LoadCredential=`);
2. notify.smtp_password_file or notify.webhook_url_file.

Each file must be readable by its owner only (systemd's own copy may be group-readable). Read
at start and at a reload; a channel that is configured but lacks its secret is a
configuration error (exit 78). Only the webhook's host is ever shown.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from xnat_drop.adapters.credentials import read_private
from xnat_drop.core.errors import ConfigError
from xnat_drop.core.monitoring import NotifyConfig, is_loopback

SMTP_CREDENTIAL = "smtp-password"
WEBHOOK_CREDENTIAL = "webhook-url"


@dataclass(frozen=True, slots=True)
class Secrets:
    """What the channels need and the configuration may not hold."""

    smtp_password: str = field(default="", repr=False)
    smtp_source: str = ""
    webhook_url: str = field(default="", repr=False)
    webhook_source: str = ""

    @property
    def webhook_host(self) -> str:
        """The webhook's host (and port): what may be shown of it."""
        return urllib.parse.urlsplit(self.webhook_url).netloc.rpartition("@")[2]


def load(config: NotifyConfig, env: Mapping[str, str]) -> Secrets:
    """The secrets of the channels `config` turns on. Raises ConfigError naming every
    problem (a missing, unreadable or too readable file; a webhook URL that is not one)."""
    problems: list[str] = []
    password = source = url = url_source = ""
    if config.email and config.smtp_user:
        try:
            password, source = _secret(
                SMTP_CREDENTIAL, config.smtp_password_file, "notify.smtp_password_file", env
            )
        except ConfigError as exc:
            problems += exc.problems
    if config.webhook != "off":
        try:
            url, url_source = _secret(
                WEBHOOK_CREDENTIAL, config.webhook_url_file, "notify.webhook_url_file", env
            )
            _check_url(url, url_source)
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)
    return Secrets(password, source, url, url_source)


def _secret(
    name: str, configured: Path | None, key: str, env: Mapping[str, str]
) -> tuple[str, str]:
    """The first line of the credential `name` or of the configured file, and where it was."""
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    from_systemd = bool(cred_dir) and os.path.exists(Path(cred_dir or "") / name)
    if from_systemd:
        path = Path(cred_dir or "") / name
    elif configured is not None:
        path = configured
    else:
        raise ConfigError(
            [
                f"{key}: the channel is on but has no secret: pass the systemd credential "
                f"{name!r} with LoadCredential=, or set {key} (a file readable by its owner "
                "only)"
            ]
        )
    # systemd >= 254 grants the credential through an ACL (mode 0440): its own directory.
    holds = "the webhook's URL" if name == WEBHOOK_CREDENTIAL else "the password"
    text = read_private(
        path, key, allowed=0o040 if from_systemd else 0, credential=name, holds=holds
    )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ConfigError([f"{key}: {path} is empty"])
    return lines[0], str(path)


def _check_url(url: str, source: str) -> None:
    """An http(s) URL with a host; plain http only to this machine (the URL is a secret)."""
    parts = urllib.parse.urlsplit(url)
    key = "notify.webhook_url_file"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError([f"{key}: {source} does not hold an http(s) URL"])
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigError(
            [
                f"{key}: the URL in {source} is plain http to {parts.hostname}: the URL is a "
                "secret, and would cross the network in clear text; use https"
            ]
        )
