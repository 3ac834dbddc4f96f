"""The XNAT adapter: one `requests.Session`, explicit timeouts, HTTP turned into typed errors.

Follows ../shared/xnat-api.md: Basic auth once, then the JSESSIONID cookie; a non-browser
User-Agent (no CSRF, no login redirects); the project checked before every upload because
XNAT silently files unknown projects under Unassigned; DICOM-zip in the raw body with
`Content-Type: application/zip` exactly and `prevent_auto_commit=true`.

Every answer is checked for shape: a proxy or single sign-on in front of XNAT answers with
login pages, redirects and empty bodies, and those must pause the queue
(XnatUnexpectedAnswerError), never send a session to failed/ as if its files were at fault.
"""

from __future__ import annotations

import html
import logging
import os
import re
import ssl
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from requests.utils import DEFAULT_CA_BUNDLE_PATH, get_environ_proxies

from xnat_drop import __version__
from xnat_drop.adapters import credentials as creds
from xnat_drop.adapters.credentials import Credentials
from xnat_drop.core.config import CERTIFI, XnatConfig
from xnat_drop.core.errors import (
    XnatAuthError,
    XnatRejectedError,
    XnatServerError,
    XnatTransientError,
    XnatUnexpectedAnswerError,
)
from xnat_drop.core.model import Target

log = logging.getLogger(__name__)

USER_AGENT = f"xnat-drop/{__version__}"
SEND_BLOCK = 1 << 20
# Outages: the session waits and the queue pauses. A plain 500 is not among them: it may be
# this session's fault, so it is XnatServerError and the loop asks a probe which it is.
TRANSIENT_STATUS = frozenset({408, 429, 502, 503, 504})
# How XNAT says "I refuse to archive this" from action=commit (xnat-api.md §6.1, the
# correction): a 500 that is a verdict on the data, not an outage. <= 1.8.2 words it vaguely.
COMMIT_REFUSALS = ("FAILED: Unable to archive", "did not return a valid data URI")
# What the import service answers: URIs of the sessions it wrote (xnat-api.md §3.6).
XNAT_URI_PREFIXES = ("/data/", "/archive/", "/prearchive/")
# Where distributions keep the system's CA bundle when Python's OpenSSL does not say:
# Debian/Ubuntu, RHEL/Fedora, Alpine/BSD.
SYSTEM_CA_FILES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
)
# An empty 200 of this type (or of none) is XNAT saying "nothing imported" (§3.6).
URI_LIST_TYPES = ("text/uri-list", "")
EXCERPT_CHARS = 120
_H3 = re.compile(r"<h3>(.*?)</h3>", re.IGNORECASE | re.DOTALL)
_TAGS = re.compile(r"<[^>]+>")
_INVISIBLE = re.compile(r"<(script|style)\b.*?</\1\s*>|<!--.*?-->", re.IGNORECASE | re.DOTALL)


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
        self._session.verify = trust_store(config)
        if not config.verify_tls:
            # Said at every start and reconnect, so it cannot scroll out of sight for good.
            log.warning(
                "TLS verification is off (xnat.verify_tls = false): anyone on the network "
                "between this server and %s can pose as XNAT and intercept the XNAT password",
                urlsplit(self.base).hostname or self.base,
            )
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
        account after 20 failures, so the caller must not loop. Raises
        XnatUnexpectedAnswerError when the answer is not a session id (a login page).
        """
        self._session.cookies.clear()
        self._logged_in = False
        try:
            response = self._send("GET", "/data/JSESSION", auth=True, missing_ok=True)
        except _UnauthorizedError as exc:
            raise XnatAuthError(
                f"XNAT refused the credentials of user {self._credentials.user!r} from "
                f"{self._credentials.source} (401). Uploads are paused until the secret is fixed."
            ) from exc
        self._expect_session_id(response)
        self._logged_in = True

    def probe(self) -> None:
        """One cheap authenticated call: is XNAT answering, and does it know us?

        Raises XnatTransientError, XnatServerError or XnatAuthError like any other call.
        """
        self._expect_session_id(self._call("GET", "/data/JSESSION", missing_ok=True))

    def project_exists(self, project: str) -> bool:
        """True when `project` exists and this user can see it, False on XNAT's 404.

        Anything but a 200 with the project's item JSON (xnat-api.md §6.2) raises
        XnatUnexpectedAnswerError: "not found" must come from XNAT itself.
        """
        path = f"/data/projects/{quote(project, safe='')}"
        response = self._call("GET", path, params={"format": "json"}, missing_ok=True)
        if response.status_code == 404:
            return False
        what = f"GET {path}"
        shape = "XNAT's description of the project"
        data = self._json(response, what, shape)
        items = data.get("items") if isinstance(data, dict) else None
        if response.status_code != 200 or not isinstance(items, list) or not items:
            raise self._unexpected(response, what, f"that is not {shape}")
        return True

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
            for row in self._rows(self._call("GET", path, params=params), f"GET {path}"):
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
            for row in self._rows(response, f"GET {path}")
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
        XnatRejectedError, like an answer without the archive URI; a web page or a redirect
        elsewhere is XnatUnexpectedAnswerError.
        """
        params = {"action": "commit", "AA": "true"}
        if overwrite:
            params["overwrite"] = "delete"
        try:
            response = self._call("POST", _data_uri(uri), params=params, archive_301=True)
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
        scans = self._call("GET", f"{base}/scans", params={"format": "json"})
        for scan in self._rows(scans, f"GET {base}/scans"):
            scan_id = str(scan.get("ID", ""))
            path = f"{base}/scans/{quote(scan_id, safe='')}/resources"
            resources = self._rows(
                self._call("GET", path, params={"format": "json"}), f"GET {path}"
            )
            counts[scan_id] = sum(
                int(r.get("file_count") or 0) for r in resources if r.get("label") == "DICOM"
            )
        return counts

    def upload(self, make_body: Callable[[], Body], target: Target) -> tuple[str, ...]:
        """POST a zip of DICOM files to the import service; returns the URIs XNAT answered.

        `make_body` is called again if the session cookie expired and the upload must be sent
        once more. Raises XnatRejectedError when XNAT imported nothing (its documented empty
        `text/uri-list`), XnatUnexpectedAnswerError when the answer is not a list of XNAT URIs.
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
        what = "POST /data/services/import"
        uris = tuple(line.strip() for line in response.text.splitlines() if line.strip())
        if not uris and response.status_code == 200 and _media_type(response) in URI_LIST_TYPES:
            raise XnatRejectedError(
                "xnat-empty-answer",
                "XNAT accepted the upload but answered with no session: nothing was imported.",
                status=response.status_code,
            )
        if not uris:
            raise self._unexpected(response, what, "instead of the imported sessions")
        if not all(uri.startswith(XNAT_URI_PREFIXES) for uri in uris):
            raise self._unexpected(response, what, "that is not a list of XNAT URIs")
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
        archive_301: bool = False,
    ) -> requests.Response:
        """One authenticated call: log in if needed, and once more if the cookie expired.

        `missing_ok` returns a 404 instead of raising; `archive_301` accepts action=commit's
        documented 301 whose body is the archive URI.
        """
        if not self._logged_in:
            self.login()
        options: dict[str, Any] = {
            "params": params,
            "body": body,
            "headers": headers,
            "missing_ok": missing_ok,
            "archive_301": archive_301,
        }
        try:
            return self._send(method, path, **options)
        except _UnauthorizedError:
            log.info("XNAT session expired; logging in again")
        self.login()
        try:
            return self._send(method, path, **options)
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
        archive_301: bool = False,
    ) -> requests.Response:
        kwargs: dict[str, Any] = {
            "params": params,
            "headers": headers,
            "timeout": self._timeout,
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
            raise XnatTransientError(
                f"TLS problem talking to {self.base}: {_first_line(exc)}"
            ) from exc
        except requests.TooManyRedirects as exc:
            raise XnatUnexpectedAnswerError(
                f"XNAT answered {method} {path} with redirect after redirect (a loop) instead of "
                "data: a proxy or single sign-on in front of XNAT? Check xnat.url"
            ) from exc
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise XnatTransientError(
                f"cannot reach XNAT at {self.base}: {_first_line(exc)}"
            ) from exc
        except requests.RequestException as exc:
            raise XnatTransientError(f"{method} {path} failed: {_first_line(exc)}") from exc
        return self._check(response, method, path, missing_ok, archive_301)

    def _check(
        self,
        response: requests.Response,
        method: str,
        path: str,
        missing_ok: bool,
        archive_301: bool,
    ) -> requests.Response:
        status = response.status_code
        what = f"{method} {path}"
        if status < 300:
            # No call of ours is answered with HTML by XNAT: this is a proxy or a login page.
            if _is_html(response):
                raise self._unexpected(response, what, "instead of data")
            return response
        if status == 404 and missing_ok:
            return response
        if archive_301 and status == 301 and response.text.strip().startswith("/data/archive/"):
            return response
        if 300 <= status < 400:
            raise self._unexpected(response, what, "instead of data")
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
        raise XnatRejectedError(
            "xnat-rejected", f"XNAT refused {what} ({status}): {message}", status=status
        )

    # -- the shape of answers -----------------------------------------------------------------

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
            raise self._unexpected(response, what, "instead of a session id")

    def _json(self, response: requests.Response, what: str, shape: str) -> Any:
        """The JSON of an answer; raises XnatUnexpectedAnswerError if it is empty or not JSON."""
        if not response.content.strip():
            raise self._unexpected(response, what, f"instead of {shape}")
        try:
            return response.json()
        except ValueError as exc:
            raise self._unexpected(response, what, f"that is not {shape}") from exc

    def _rows(self, response: requests.Response, what: str) -> list[dict[str, str]]:
        """The rows of an XNAT ResultSet answer (every value a string, xnat-api.md §1.3)."""
        shape = "XNAT's JSON table (ResultSet)"
        data = self._json(response, what, shape)
        result_set = data.get("ResultSet") if isinstance(data, dict) else None
        rows = result_set.get("Result") if isinstance(result_set, dict) else None
        if not isinstance(rows, list):
            raise self._unexpected(response, what, f"that is not {shape}")
        return [{str(k): str(v) for k, v in row.items()} for row in rows if isinstance(row, dict)]

    def _unexpected(
        self, response: requests.Response, what: str, instead: str
    ) -> XnatUnexpectedAnswerError:
        """The error for an answer that is not XNAT's: what came back, the likely cause.

        `instead` completes "XNAT answered GET /x with ...", e.g. "instead of data". Quotes
        at most a short excerpt of the body and no query string, and never the secret.
        """
        status = response.status_code
        media = _media_type(response) or "no content type"
        after = f" after a redirect to {self._where(response.url)}" if response.history else ""
        if 300 <= status < 400:
            location = response.headers.get("Location")
            to = f"to {self._where(location)}" if location else "without a Location"
            return XnatUnexpectedAnswerError(
                f"XNAT answered {what} with a redirect ({status}) {to} {instead}: a proxy or "
                "single sign-on in front of XNAT, or xnat.url not XNAT's own address (http or "
                "https, host, context path)? Check xnat.url"
            )
        if not response.content.strip():
            return XnatUnexpectedAnswerError(
                f"XNAT answered {what} with an empty body ({status}, {media}){after} {instead}: "
                "a proxy in front of XNAT, or XNAT itself failing? Check xnat.url and XNAT's logs"
            )
        excerpt = self._excerpt(response.text)
        says = f' The page says: "{excerpt}"' if excerpt else ""
        if _is_html(response):
            return XnatUnexpectedAnswerError(
                f"XNAT answered {what} with a web page ({media}){after} {instead}: a proxy or "
                f"single sign-on page in front of XNAT? Check xnat.url.{says}"
            )
        return XnatUnexpectedAnswerError(
            f"XNAT answered {what} with {media} ({status}){after} {instead}: a proxy in front "
            f'of XNAT, or xnat.url not pointing at XNAT? Check xnat.url. It says: "{excerpt}"'
        )

    def _excerpt(self, body: str) -> str:
        """The visible text of a body, short, without the secret (a page could echo it)."""
        text = html.unescape(_TAGS.sub(" ", _INVISIBLE.sub(" ", body)))
        text = " ".join(self._redact(text).split())
        if len(text) > EXCERPT_CHARS:
            text = text[: EXCERPT_CHARS - 1].rstrip() + "…"
        return text

    def _where(self, url: str) -> str:
        """A redirect target for a message: scheme, host and path only (a query may hold
        single sign-on state, the user part a secret)."""
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
        where = urlunsplit((parts.scheme, host, parts.path, "", ""))
        return self._redact(where)[:200] or "?"

    def _redact(self, text: str) -> str:
        secret = self._credentials.secret
        return text.replace(secret, "***") if secret else text


def connect(config: XnatConfig, env: Mapping[str, str]) -> XnatClient:
    """A client for the configured XNAT with the credentials from their protected source.

    Raises ConfigError when the credentials are missing or unsafe.
    """
    host = urlsplit(config.url).hostname or ""
    return XnatClient(config, creds.load(config.secret_file, env, host))


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


def _media_type(response: requests.Response) -> str:
    """The media type alone ("text/html" of "text/html;charset=UTF-8"); "" if none."""
    return response.headers.get("Content-Type", "").split(";")[0].strip().lower()


def _is_html(response: requests.Response) -> bool:
    """An HTML page, by its Content-Type or by its first bytes (proxies mislabel pages)."""
    if "html" in _media_type(response):
        return True
    head = response.content[:512].lstrip().lower()
    return head.startswith(b"<") and (b"<html" in head or b"<!doctype html" in head)


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
