"""One connection to XNAT: a `requests.Session`, explicit timeouts, HTTP as typed errors.

Follows ../shared/xnat-api.md: Basic auth once, then the JSESSIONID cookie; a non-browser
User-Agent (no CSRF, no login redirects); TLS verified against the operating system's store
unless configured otherwise. Every 2xx is checked for HTML (a proxy or a login page).
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable, Iterator
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.utils import DEFAULT_CA_BUNDLE_PATH, get_environ_proxies

from xnat_drop import __version__
from xnat_drop.adapters.credentials import Credentials
from xnat_drop.adapters.xnat.answers import (
    Answers,
    error_message,
    first_line,
    is_html,
    retry_after,
)
from xnat_drop.core.errors import (
    XnatAuthError,
    XnatRejectedError,
    XnatServerError,
    XnatTlsError,
    XnatTransientError,
    XnatUnexpectedAnswerError,
)
from xnat_drop.core.xnatconfig import CERTIFI, XnatConfig

log = logging.getLogger(__name__)

USER_AGENT = f"xnat-drop/{__version__}"
SEND_BLOCK = 1 << 20
# Seconds to wait for the answer to a login or a check: they are cheap for XNAT, and the loop
# waits for them (the watchdog allows 60 s).
QUICK_READ_TIMEOUT = 30.0
# Outages: the session waits and the queue pauses. A plain 500 is not among them: it may be
# this session's fault, so it is XnatServerError and the loop asks a probe which it is.
TRANSIENT_STATUS = frozenset({408, 429, 502, 503, 504})
# Where distributions keep the system's CA bundle when Python's OpenSSL does not say:
# Debian/Ubuntu, RHEL/Fedora, Alpine/BSD.
SYSTEM_CA_FILES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
)


class Body(Protocol):
    """A request body produced on the fly: with a `__len__` (zipstream.ZipStream, FileBody) it
    goes out with that Content-Length; without one (zipdeflate.DeflatingZip), chunked."""

    def __iter__(self) -> Iterator[bytes | bytearray]: ...


class _LargeBlocks(HTTPAdapter):
    """Send request bodies in 1 MiB blocks instead of urllib3's 16 KiB: a multi-GB zip then
    costs far fewer read() and send() calls (measured: about a quarter less CPU)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["blocksize"] = SEND_BLOCK
        super().init_poolmanager(*args, **kwargs)


class _UnauthorizedError(Exception):
    """A 401: the caller decides between one re-login and giving up."""


class Connection:
    """The session with one XNAT server: logs in, sends, and turns answers into errors.

    Not thread-safe: the loop is one thread.
    """

    def __init__(self, config: XnatConfig, credentials: Credentials) -> None:
        self.base = config.url.rstrip("/")
        self._credentials = credentials
        self._timeout = (config.connect_timeout, config.read_timeout)
        self._quick = (config.connect_timeout, min(config.read_timeout, QUICK_READ_TIMEOUT))
        self._session = requests.Session()
        # trust_env would also apply ~/.netrc to every request, defeating the cookie; keep
        # the proxy variables, which labs behind a proxy rely on.
        self._session.trust_env = False
        self._session.proxies.update(get_environ_proxies(self.base))
        self._session.headers["User-Agent"] = USER_AGENT
        for prefix in ("http://", "https://"):
            self._session.mount(prefix, _LargeBlocks())
        self._session.verify = trust_store(config)
        if not config.verify_tls:
            # Said at every start and reconnect, so it cannot scroll out of sight for good.
            log.warning(
                "TLS verification is off (xnat.verify_tls = false): anyone on the network "
                "between this server and %s can pose as XNAT and intercept the XNAT password",
                urlsplit(self.base).hostname or self.base,
            )
        self._logged_in = False
        self.answers = Answers(credentials.secret)
        self.on_request: Callable[[], None] | None = None  # called before every request

    @property
    def user(self) -> str:
        """The user name (or alias token) this connection logs in as."""
        return self._credentials.user

    @property
    def secret_source(self) -> str:
        """Where the secret was read from (a path), for messages."""
        return self._credentials.source

    def close(self) -> None:
        self._session.close()

    def login(self) -> None:
        """Authenticate with Basic once and keep the JSESSIONID cookie.

        Raises XnatAuthError when XNAT refuses the credentials: retrying would lock the
        account after 20 failures, so the caller must not loop. Raises
        XnatUnexpectedAnswerError when the answer is not a session id (a login page).
        """
        self._session.cookies.clear()
        self._logged_in = False
        try:
            response = self.send("GET", "/data/JSESSION", auth=True, missing_ok=True, quick=True)
        except _UnauthorizedError as exc:
            raise XnatAuthError(
                f"XNAT refused user {self._credentials.user!r} (401): the password or alias "
                f"token in {self._credentials.source} is wrong or has expired (an alias token "
                "lasts XNAT's aliasTokenTimeout, two days by default)"
            ) from exc
        self._expect_session_id(response)
        self._logged_in = True

    def probe(self) -> None:
        """One cheap authenticated call: is XNAT answering, and does it know us?

        Raises XnatTransientError, XnatServerError or XnatAuthError like any other call.
        """
        self._expect_session_id(self.call("GET", "/data/JSESSION", missing_ok=True, quick=True))

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Callable[[], Body] | None = None,
        headers: dict[str, str] | None = None,
        missing_ok: bool = False,
        archive_301: bool = False,
        quick: bool = False,
        html_ok: bool = False,
    ) -> requests.Response:
        """One authenticated call: log in if needed, and once more if the cookie expired.

        `missing_ok` returns a 404 instead of raising; `archive_301` accepts action=commit's
        documented 301 whose body is the archive URI; `quick` waits QUICK_READ_TIMEOUT at most;
        `html_ok` takes a 2xx labelled HTML (XNAT's duplicates answer to a file upload is JSON
        sent as text/html).
        """
        if not self._logged_in:
            self.login()
        options: dict[str, Any] = {
            "params": params,
            "body": body,
            "headers": headers,
            "missing_ok": missing_ok,
            "archive_301": archive_301,
            "quick": quick,
            "html_ok": html_ok,
        }
        try:
            return self.send(method, path, **options)
        except _UnauthorizedError:
            log.info("XNAT session expired; logging in again")
        self.login()
        try:
            return self.send(method, path, **options)
        except _UnauthorizedError as exc:
            raise XnatAuthError(
                f"XNAT answered 401 to {method} {path} right after a successful login. "
                "Uploads are paused."
            ) from exc

    def send(
        self,
        method: str,
        path: str,
        *,
        auth: bool = False,
        params: dict[str, str] | None = None,
        body: Callable[[], Body] | None = None,
        headers: dict[str, str] | None = None,
        missing_ok: bool = False,
        archive_301: bool = False,
        quick: bool = False,
        html_ok: bool = False,
    ) -> requests.Response:
        kwargs: dict[str, Any] = {
            "params": params,
            "headers": headers,
            "timeout": self._quick if quick else self._timeout,
            # XNAT answers a commit with 301 and the archive URI in the body: keep it. A POST
            # must not be replayed elsewhere anyway; a GET that ends on a login page is caught
            # by the checks of its answer.
            "allow_redirects": method == "GET",
        }
        if auth:
            kwargs["auth"] = (self._credentials.user, self._credentials.secret)
        if body is not None:
            kwargs["data"] = body()
        if self.on_request is not None:
            self.on_request()
        try:
            response = self._session.request(method, self.base + path, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise XnatTlsError(
                f"TLS problem talking to {self.base}: {first_line(exc)}. If XNAT's certificate "
                "comes from an in-house CA, set xnat.ca_bundle to that CA's PEM file"
            ) from exc
        except requests.TooManyRedirects as exc:
            raise XnatUnexpectedAnswerError(
                f"XNAT answered {method} {path} with redirect after redirect (a loop) instead of "
                "data: a proxy or single sign-on in front of XNAT? Check xnat.url"
            ) from exc
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise XnatTransientError(
                f"cannot reach XNAT at {self.base}: {first_line(exc)}"
            ) from exc
        except requests.RequestException as exc:
            raise XnatTransientError(f"{method} {path} failed: {first_line(exc)}") from exc
        return self._check(response, method, path, missing_ok, archive_301, html_ok)

    def _check(
        self,
        response: requests.Response,
        method: str,
        path: str,
        missing_ok: bool,
        archive_301: bool,
        html_ok: bool = False,
    ) -> requests.Response:
        status = response.status_code
        what = f"{method} {path}"
        if status < 300:
            # No call of ours is answered with HTML by XNAT: this is a proxy or a login page.
            # (With `html_ok`, a body that is not markup is taken as the answer.)
            markup = response.content.lstrip()[:1] == b"<"
            if is_html(response) and (markup or not html_ok):
                raise self.answers.unexpected(response, what, "instead of data")
            return response
        if status == 404 and missing_ok:
            return response
        if archive_301 and status == 301 and response.text.strip().startswith("/data/archive/"):
            return response
        if 300 <= status < 400:
            raise self.answers.unexpected(response, what, "instead of data")
        message = error_message(response.text)
        if status == 401:
            raise _UnauthorizedError(what)
        if status == 403:
            raise XnatAuthError(
                f"XNAT denied user {self._credentials.user!r} access for {what} (403): {message}. "
                "Uploads are paused until the account's permissions are fixed."
            )
        if status in TRANSIENT_STATUS:
            raise XnatTransientError(
                f"XNAT answered {status} to {what}: {message}",
                retry_after=retry_after(response.headers.get("Retry-After")),
            )
        if status >= 500:
            raise XnatServerError(f"XNAT answered {status} to {what}: {message}", message=message)
        raise XnatRejectedError(
            "xnat-rejected", f"XNAT refused {what} ({status}): {message}", status=status
        )

    def _expect_session_id(self, response: requests.Response) -> None:
        """`/data/JSESSION` answers a session id as plain text (xnat-api.md §2.2).

        XNAT always has that route, so a 404 means xnat.url is not XNAT's REST API.
        """
        what = "GET /data/JSESSION"
        if response.status_code == 404:
            raise XnatUnexpectedAnswerError(
                f"XNAT answered {what} with 404 (not found), which XNAT never does: xnat.url "
                "does not point at XNAT (host, http/https, context path such as /xnat)? "
                "Check xnat.url"
            )
        if not response.text.strip():
            raise self.answers.unexpected(response, what, "instead of a session id")


def trust_store(config: XnatConfig) -> str | bool:
    """What XNAT's certificate is verified against: a CA bundle file, or False (verify_tls off).

    ca_bundle None means the operating system's store, as the configuration documents
    (requests alone would use certifi's); "certifi" means certifi's; a path that file.
    """
    if not config.verify_tls:
        return False
    if config.ca_bundle == CERTIFI:
        return DEFAULT_CA_BUNDLE_PATH
    if config.ca_bundle is not None:
        return str(config.ca_bundle)
    found = system_ca_file()
    if found is None:
        log.warning(
            "no CA bundle file of the operating system found (looked where OpenSSL and the "
            "distributions keep it: %s); verifying XNAT's certificate against certifi's bundle "
            'instead. Set xnat.ca_bundle to a PEM file, or to "certifi" to silence this',
            ", ".join(SYSTEM_CA_FILES),
        )
        return DEFAULT_CA_BUNDLE_PATH
    return found


def system_ca_file() -> str | None:
    """The operating system's CA bundle: OpenSSL's default file (SSL_CERT_FILE overrides it),
    else the first of SYSTEM_CA_FILES that exists; None when there is none."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, *SYSTEM_CA_FILES):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None
