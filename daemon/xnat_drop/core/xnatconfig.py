"""[xnat]: where XNAT is, how xnat-drop reaches it over HTTPS, and what a delivery ends as.
Pure: part of core/config.py's parse."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, cast
from urllib.parse import urlsplit

from xnat_drop.core.monitoring import is_loopback
from xnat_drop.core.options import Destination, OnExisting
from xnat_drop.core.schema import Section

# xnat.ca_bundle value for the CA bundle of the certifi package (what requests ships with).
CERTIFI: Final = "certifi"


@dataclass(frozen=True, slots=True)
class XnatConfig:
    url: str
    secret_file: Path | None
    verify_tls: bool
    ca_bundle: Path | Literal["certifi"] | None  # None: the system's CA store
    connect_timeout: float
    read_timeout: float
    destination: Destination = "prearchive"  # built, verified, left READY; "archive": committed
    on_existing: OnExisting = "reject"  # the session already exists in XNAT
    check_interval: float = 900.0  # seconds between checks of the account (login, token)


def parse_xnat(t: Section, base: Path) -> XnatConfig | None:
    """The [xnat] table (problems reported on `t`); None without a URL."""
    url = t.text("url")
    verify = t.flag("verify_tls")
    ca_bundle = _parse_ca_bundle(t, base)
    if not url:
        t.problem("url", "required: the XNAT base URL, e.g. https://xnat.example.org")
        return None
    problem = _url_problem(url, t.flag("allow_plain_http"))
    if problem:
        t.problem("url", problem)
    if ca_bundle is not None and not verify:
        t.problem("ca_bundle", "is ignored while verify_tls = false; remove one of them")
    return XnatConfig(
        url.rstrip("/"),
        t.path("secret_file", base),
        verify,
        ca_bundle,
        t.seconds("connect_timeout_seconds"),
        t.seconds("read_timeout_seconds"),
        cast(Destination, t.text("destination")),
        cast(OnExisting, t.text("on_existing")),
        t.seconds("check_interval_seconds"),
    )


def _parse_ca_bundle(t: Section, base: Path) -> Path | Literal["certifi"] | None:
    """xnat.ca_bundle: "" is the system's store (None), "certifi" certifi's, else a PEM file."""
    value = t.text("ca_bundle")
    if not value:
        return None
    if value == CERTIFI:
        return CERTIFI
    path = base / Path(value).expanduser()
    if not path.is_file():
        # requests would only find out at the first upload, and then not as a TLS problem.
        t.problem(
            "ca_bundle",
            f'no such file: {path} (give a PEM file of CA certificates, "certifi", '
            'or "" for the system\'s store)',
        )
    return path


def _url_problem(url: str, plain_http: bool) -> str:
    """Why `url` is unusable as an XNAT base URL, or "" when it is fine."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return f"must be an https:// URL with a host name, got {url!r}"
    if parts.username or parts.password:
        return "must not contain credentials; put them in the secret file"
    if parts.query or parts.fragment:
        return "must not contain a query or fragment"
    if parts.scheme == "http" and not plain_http and not is_loopback(parts.hostname):
        return (
            "plain http:// would send the XNAT password in clear text; use https:// "
            "(or set xnat.allow_plain_http = true for a test server)"
        )
    return ""
