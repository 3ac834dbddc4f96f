"""The XNAT adapter: one `requests.Session`, explicit timeouts, HTTP turned into typed errors.

Follows ../shared/xnat-api.md: Basic auth once, then the JSESSIONID cookie; a non-browser
User-Agent (no CSRF, no login redirects); the project checked before every upload because
XNAT silently files unknown projects under Unassigned; DICOM-zip in the raw body with
`Content-Type: application/zip` exactly and `prevent_auto_commit=true`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import Any, Protocol
from urllib.parse import quote

import requests
from requests.utils import get_environ_proxies

from . import __version__
from .config import XnatConfig
from .credentials import Credentials
from .errors import XnatAuthError, XnatRejectedError, XnatTransientError
from .model import Target

log = logging.getLogger(__name__)

USER_AGENT = f"xnat-drop/{__version__}"
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_H3 = re.compile(r"<h3>(.*?)</h3>", re.IGNORECASE | re.DOTALL)
_TAGS = re.compile(r"<[^>]+>")


class Body(Protocol):
    """A request body of known length produced on the fly (bundle.ZipStream)."""

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[bytes]: ...
    def read(self, size: int = -1) -> bytes: ...


class _UnauthorizedError(Exception):
    """A 401: the caller decides between one re-login and giving up."""


class XnatClient:
    """Talks to one XNAT server for the whole process; not thread-safe (the loop is one thread)."""

    def __init__(self, config: XnatConfig, credentials: Credentials) -> None:
        self.base = config.url.rstrip("/")
        self._credentials = credentials
        self._timeout = (config.connect_timeout, config.read_timeout)
        self._session = requests.Session()
        # trust_env would also apply ~/.netrc to every request, defeating the cookie; keep
        # the proxy variables, which labs behind a proxy rely on.
        self._session.trust_env = False
        self._session.proxies.update(get_environ_proxies(self.base))
        self._session.headers["User-Agent"] = USER_AGENT
        if config.ca_bundle is not None:
            self._session.verify = str(config.ca_bundle)
        else:
            self._session.verify = config.verify_tls
        self._logged_in = False

    def close(self) -> None:
        self._session.close()

    # -- calls --------------------------------------------------------------------------------

    def server_version(self) -> str:
        """XNAT's version from the open `/xapi/siteConfig/buildInfo`, or "" if it won't say."""
        try:
            response = self._send("GET", "/xapi/siteConfig/buildInfo", auth=False)
            data = response.json()
        except (XnatTransientError, XnatRejectedError, ValueError):
            return ""
        return str(data.get("version", "")) if isinstance(data, dict) else ""

    def login(self) -> None:
        """Authenticate with Basic once and keep the JSESSIONID cookie.

        Raises XnatAuthError when XNAT refuses the credentials: retrying would lock the
        account after 20 failures, so the caller must not loop.
        """
        self._session.cookies.clear()
        self._logged_in = False
        try:
            self._send("GET", "/data/JSESSION", auth=True)
        except _UnauthorizedError as exc:
            raise XnatAuthError(
                f"XNAT refused the credentials of user {self._credentials.user!r} from "
                f"{self._credentials.source} (401). Uploads are paused until the secret is fixed."
            ) from exc
        self._logged_in = True

    def project_exists(self, project: str) -> bool:
        """True when `project` exists and this user can see it (404 means neither)."""
        path = f"/data/projects/{quote(project, safe='')}"
        response = self._call("GET", path, params={"format": "json"}, missing_ok=True)
        return response.status_code != 404

    def upload(self, make_body: Callable[[], Body], target: Target) -> tuple[str, ...]:
        """POST a zip of DICOM files to the import service; returns the URIs XNAT answered.

        `make_body` is called again if the session cookie expired and the upload must be sent
        once more. Raises XnatRejectedError when XNAT imported nothing.
        """
        params = {
            "import-handler": "DICOM-zip",
            "inbody": "true",
            "prevent_auto_commit": "true",
            "PROJECT_ID": target.project,
            "SUBJECT_ID": target.subject,
            "EXPT_LABEL": target.session,
        }
        response = self._call(
            "POST",
            "/data/services/import",
            params=params,
            body=make_body,
            headers={"Content-Type": "application/zip"},
        )
        uris = tuple(line.strip() for line in response.text.splitlines() if line.strip())
        if not uris:
            raise XnatRejectedError(
                "xnat-empty-answer",
                "XNAT accepted the upload but answered with no session: nothing was imported.",
                status=response.status_code,
            )
        return uris

    # -- plumbing -----------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Callable[[], Body] | None = None,
        headers: dict[str, str] | None = None,
        missing_ok: bool = False,
    ) -> requests.Response:
        """One authenticated call: log in if needed, and once more if the cookie expired."""
        if not self._logged_in:
            self.login()
        try:
            return self._send(
                method, path, params=params, body=body, headers=headers, missing_ok=missing_ok
            )
        except _UnauthorizedError:
            log.info("XNAT session expired; logging in again")
        self.login()
        try:
            return self._send(
                method, path, params=params, body=body, headers=headers, missing_ok=missing_ok
            )
        except _UnauthorizedError as exc:
            raise XnatAuthError(
                f"XNAT answered 401 to {method} {path} right after a successful login. "
                "Uploads are paused."
            ) from exc

    def _send(
        self,
        method: str,
        path: str,
        *,
        auth: bool = False,
        params: dict[str, str] | None = None,
        body: Callable[[], Body] | None = None,
        headers: dict[str, str] | None = None,
        missing_ok: bool = False,
    ) -> requests.Response:
        kwargs: dict[str, Any] = {
            "params": params,
            "headers": headers,
            "timeout": self._timeout,
            "allow_redirects": method == "GET",
        }
        if auth:
            kwargs["auth"] = (self._credentials.user, self._credentials.secret)
        if body is not None:
            kwargs["data"] = body()
        try:
            response = self._session.request(method, self.base + path, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise XnatTransientError(
                f"TLS problem talking to {self.base}: {_first_line(exc)}"
            ) from exc
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise XnatTransientError(
                f"cannot reach XNAT at {self.base}: {_first_line(exc)}"
            ) from exc
        except requests.RequestException as exc:
            raise XnatTransientError(f"{method} {path} failed: {_first_line(exc)}") from exc
        return self._check(response, method, path, missing_ok)

    def _check(
        self, response: requests.Response, method: str, path: str, missing_ok: bool
    ) -> requests.Response:
        status = response.status_code
        if status < 300 or (status == 404 and missing_ok):
            return response
        what = f"{method} {path}"
        message = error_message(response.text)
        if status == 401:
            raise _UnauthorizedError(what)
        if status == 403:
            raise XnatAuthError(
                f"XNAT denied user {self._credentials.user!r} access for {what} (403): {message}. "
                "Uploads are paused until the account's permissions are fixed."
            )
        if status in TRANSIENT_STATUS or status >= 500:
            raise XnatTransientError(
                f"XNAT answered {status} to {what}: {message}",
                retry_after=_retry_after(response.headers.get("Retry-After")),
            )
        if 300 <= status < 400:
            raise XnatRejectedError(
                "xnat-rejected",
                f"XNAT redirected {what} to {response.headers.get('Location', '?')}; "
                "check xnat.url in the configuration",
                status=status,
            )
        raise XnatRejectedError(
            "xnat-rejected", f"XNAT refused {what} ({status}): {message}", status=status
        )


def error_message(body: str) -> str:
    """XNAT's own words from an error page: the `<h3>` of a Restlet status page, else the text."""
    match = _H3.search(body)
    text = match.group(1) if match else _TAGS.sub(" ", body)
    text = " ".join(text.split())
    return text[:500] or "no message"


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from XNAT; the backoff decides instead


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]
