"""The XNAT adapter: one `requests.Session`, explicit timeouts, HTTP turned into typed errors.

Follows ../shared/xnat-api.md: Basic auth once, then the JSESSIONID cookie; a non-browser
User-Agent (no CSRF, no login redirects); the project checked before every upload because
XNAT silently files unknown projects under Unassigned; DICOM-zip in the raw body with
`Content-Type: application/zip` exactly and `prevent_auto_commit=true`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.utils import get_environ_proxies

from . import __version__
from . import credentials as creds
from .config import XnatConfig
from .credentials import Credentials
from .errors import XnatAuthError, XnatRejectedError, XnatServerError, XnatTransientError
from .model import Target

log = logging.getLogger(__name__)

USER_AGENT = f"xnat-drop/{__version__}"
SEND_BLOCK = 1 << 20
# Outages: the session waits and the queue pauses. A plain 500 is not among them: it may be
# this session's fault, so it is XnatServerError and the loop asks a probe which it is.
TRANSIENT_STATUS = frozenset({408, 429, 502, 503, 504})
# How XNAT says "I refuse to archive this" from action=commit (xnat-api.md §6.1, the
# correction): a 500 that is a verdict on the data, not an outage. <= 1.8.2 words it vaguely.
COMMIT_REFUSALS = ("FAILED: Unable to archive", "did not return a valid data URI")
_H3 = re.compile(r"<h3>(.*?)</h3>", re.IGNORECASE | re.DOTALL)
_TAGS = re.compile(r"<[^>]+>")


class Body(Protocol):
    """A request body of known length produced on the fly (bundle.ZipStream)."""

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[bytes]: ...
    def read(self, size: int = -1) -> bytes: ...


class _LargeBlocks(HTTPAdapter):
    """Send request bodies in 1 MiB blocks instead of urllib3's 16 KiB: a multi-GB zip then
    costs far fewer read() and send() calls (measured: about a quarter less CPU)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["blocksize"] = SEND_BLOCK
        super().init_poolmanager(*args, **kwargs)


class _UnauthorizedError(Exception):
    """A 401: the caller decides between one re-login and giving up."""


@dataclass(frozen=True, slots=True)
class ArchivedRef:
    """An imaging session in XNAT's archive."""

    label: str
    uid: str
    subject: str
    uri: str  # /data/projects/P/subjects/S/experiments/E


@dataclass(frozen=True, slots=True)
class PrearchiveRef:
    """A session in XNAT's prearchive."""

    name: str
    tag: str  # StudyInstanceUID
    subject: str
    status: str
    uri: str  # /data/prearchive/projects/P/TIMESTAMP/FOLDER


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
        for prefix in ("http://", "https://"):
            self._session.mount(prefix, _LargeBlocks())
        if config.ca_bundle is not None:
            self._session.verify = str(config.ca_bundle)
        else:
            self._session.verify = config.verify_tls
        self._logged_in = False
        self.on_request: Callable[[], None] | None = None  # called before every request

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

    def probe(self) -> None:
        """One cheap authenticated call: is XNAT answering, and does it know us?

        Raises XnatTransientError, XnatServerError or XnatAuthError like any other call.
        """
        self._call("GET", "/data/JSESSION")

    def project_exists(self, project: str) -> bool:
        """True when `project` exists and this user can see it (404 means neither)."""
        path = f"/data/projects/{quote(project, safe='')}"
        response = self._call("GET", path, params={"format": "json"}, missing_ok=True)
        return response.status_code != 404

    def find_archived(self, project: str, label: str, study_uid: str) -> list[ArchivedRef]:
        """Archived sessions of `project` with this label or this StudyInstanceUID.

        Asks with filters and filters again here, so a server that ignores a filter is fine.
        """
        path = f"/data/projects/{quote(project, safe='')}/experiments"
        found: dict[str, ArchivedRef] = {}
        for key, value in (("label", label), ("UID", study_uid)):
            if not value:
                continue
            params = {"format": "json", "columns": "ID,label,UID,subject_label", key: value}
            for row in _rows(self._call("GET", path, params=params)):
                if row.get(key) != value:
                    continue
                subject, label = row.get("subject_label", ""), row.get("label", "")
                uri = f"/data/projects/{project}/subjects/{subject}/experiments/{label}"
                if not subject:
                    uri = row.get("URI", "")
                found[uri] = ArchivedRef(label, row.get("UID", ""), subject, uri)
        return list(found.values())

    def find_prearchive(self, project: str, study_uid: str) -> list[PrearchiveRef]:
        """Prearchive sessions of `project` holding this StudyInstanceUID (their `tag`)."""
        path = f"/data/prearchive/projects/{quote(project, safe='')}"
        response = self._call("GET", path, params={"format": "json"}, missing_ok=True)
        if response.status_code == 404:
            return []
        return [
            PrearchiveRef(
                row.get("name", ""),
                row.get("tag", ""),
                row.get("subject", ""),
                row.get("status", ""),
                _data_uri(row.get("url", "")),
            )
            for row in _rows(response)
            if row.get("tag") == study_uid
        ]

    def delete_prearchive(self, uri: str) -> None:
        """Delete one prearchive session (only ever one this daemon created)."""
        self._call("DELETE", _data_uri(uri), missing_ok=True)

    def build(self, uri: str) -> None:
        """Build a prearchive session (its XML and scan listing): status READY."""
        self._call("POST", _data_uri(uri), params={"action": "build"})

    def commit(self, uri: str, *, overwrite: bool = False) -> str:
        """Archive a prearchive session (`action=commit&AA=true`); returns its archive URI.

        `overwrite` lets XNAT replace the files of an existing session (overwrite=delete).
        A 500 whose message says XNAT refused to archive is a verdict, not an outage:
        XnatRejectedError.
        """
        params = {"action": "commit", "AA": "true"}
        if overwrite:
            params["overwrite"] = "delete"
        try:
            response = self._call("POST", _data_uri(uri), params=params)
        except XnatServerError as exc:
            if any(words in str(exc) for words in COMMIT_REFUSALS):
                raise XnatRejectedError(
                    "xnat-rejected", f"XNAT refused to archive: {exc.message}", status=500
                ) from exc
            raise
        answer = response.text.strip()
        if response.status_code == 301 and answer.startswith("/data/archive/"):
            return answer.splitlines()[0].strip()
        raise XnatRejectedError(
            "xnat-rejected",
            f"XNAT did not archive the session (answer {response.status_code}: {answer[:200]!r}); "
            "check the project's prearchive settings",
            status=response.status_code,
        )

    def scan_counts(self, uri: str) -> dict[str, int]:
        """DICOM files per scan of a prearchive (built) or archived session: {scan ID: count}."""
        base = _data_uri(uri)
        counts = {}
        for scan in _rows(self._call("GET", f"{base}/scans", params={"format": "json"})):
            scan_id = str(scan.get("ID", ""))
            resources = self._call(
                "GET",
                f"{base}/scans/{quote(scan_id, safe='')}/resources",
                params={"format": "json"},
            )
            counts[scan_id] = sum(
                int(r.get("file_count") or 0) for r in _rows(resources) if r.get("label") == "DICOM"
            )
        return counts

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
            # XNAT answers a commit with 301 and the archive URI in the body: keep it.
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
        if status < 300 or (status == 404 and missing_ok) or (status == 301 and method == "POST"):
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
        if status in TRANSIENT_STATUS:
            raise XnatTransientError(
                f"XNAT answered {status} to {what}: {message}",
                retry_after=_retry_after(response.headers.get("Retry-After")),
            )
        if status >= 500:
            raise XnatServerError(f"XNAT answered {status} to {what}: {message}", message=message)
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


def connect(config: XnatConfig, env: Mapping[str, str]) -> XnatClient:
    """A client for the configured XNAT with the credentials from their protected source.

    Raises ConfigError when the credentials are missing or unsafe.
    """
    host = urlsplit(config.url).hostname or ""
    return XnatClient(config, creds.load(config.secret_file, env, host))


def _rows(response: requests.Response) -> list[dict[str, str]]:
    """The rows of an XNAT ResultSet answer (every value a string, xnat-api.md §1.3)."""
    try:
        data = response.json()
        rows = data["ResultSet"]["Result"]
    except (ValueError, KeyError, TypeError) as exc:
        raise XnatRejectedError(
            "xnat-rejected",
            f"XNAT answered {response.url} without a ResultSet: {response.text[:200]!r}",
        ) from exc
    return [{str(k): str(v) for k, v in row.items()} for row in rows if isinstance(row, dict)]


def _data_uri(uri: str) -> str:
    """Prearchive listings give `/prearchive/...`; every call needs `/data/prearchive/...`."""
    return uri if uri.startswith("/data/") else "/data" + uri


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
