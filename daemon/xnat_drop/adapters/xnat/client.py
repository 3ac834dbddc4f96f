"""XNAT's REST calls that xnat-drop makes, each answer checked for shape.

The project is checked before every upload, because XNAT silently files unknown projects
under Unassigned; DICOM-zip goes in the raw body with `Content-Type: application/zip` exactly
and `prevent_auto_commit=true` (../shared/xnat-api.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from xnat_drop.adapters import credentials as creds
from xnat_drop.adapters.xnat.answers import data_uri, media_type
from xnat_drop.adapters.xnat.connection import Body
from xnat_drop.adapters.xnat.receivercalls import ReceiverCalls
from xnat_drop.adapters.xnat.resourcecalls import ResourceCalls
from xnat_drop.core.errors import (
    XnatAuthError,
    XnatRejectedError,
    XnatServerError,
    XnatTransientError,
)
from xnat_drop.core.model import Target
from xnat_drop.core.noheader import scrubbed
from xnat_drop.core.xnatconfig import XnatConfig

# How XNAT says "I refuse to archive this" from action=commit (xnat-api.md §6.1, the
# correction): a 500 that is a verdict on the data, not an outage. <= 1.8.2 words it vaguely.
COMMIT_REFUSALS = ("FAILED: Unable to archive", "did not return a valid data URI")
# What the import service answers: URIs of the sessions it wrote (xnat-api.md §3.6).
XNAT_URI_PREFIXES = ("/data/", "/archive/", "/prearchive/")
# An empty 200 of this type (or of none) is XNAT saying "nothing imported" (§3.6).
URI_LIST_TYPES = ("text/uri-list", "")
# The inbox handler's answer: <siteUrl path>/xapi/dicom/<id>, never under /data (round 2 §4).
INBOX_REQUEST_URI = re.compile(r"(?:/[^\s]*)?/xapi/dicom/(\d+)")
# A user name of this shape is an alias token (XNAT's AliasToken.isAliasFormat, a UUID).
ALIAS_FORMAT = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")


@dataclass(frozen=True, slots=True)
class Account:
    """What a check of the account found: XNAT took the credentials of `user`."""

    user: str
    server_version: str  # "" when XNAT would not say
    token_expires: float | None  # epoch seconds: an alias token's expiry, when XNAT says


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


@dataclass(frozen=True, slots=True)
class FilterRow:
    """A series import filter as XNAT's config service holds it (xnat-api-round2.md §2): the
    row's status decides whether it applies; contents is a JSON string."""

    status: str
    contents: str


@dataclass(frozen=True, slots=True)
class InboxRequest:
    """An inbox import request as `/xapi/dicom/{id}` shows it (round 2 §4): `status` Queued,
    Accepted, Importing, Processed, Completed or Failed; `resolution` XNAT's words (scrubbed);
    `session_path` the server path it imports, exactly as XNAT holds it."""

    id: str
    status: str
    resolution: str
    session_path: str


# The site preferences XNAT copies into the site filter's config row, readable by any user.
SITE_FILTER_PREFERENCES = (
    "enableSitewideSeriesImportFilter",
    "sitewideSeriesImportFilterMode",
    "sitewideSeriesImportFilter",
)


class XnatClient(ResourceCalls, ReceiverCalls):
    """The calls xnat-drop makes to one XNAT server, on one connection."""

    def server_version(self) -> str:
        """XNAT's version from the open `/xapi/siteConfig/buildInfo`, or "" if it won't say."""
        try:
            response = self.send("GET", "/xapi/siteConfig/buildInfo", auth=False, quick=True)
            data = response.json()
        except (XnatTransientError, XnatRejectedError, ValueError):
            return ""
        return str(data.get("version", "")) if isinstance(data, dict) else ""

    def check(self) -> Account:
        """A fresh login with the configured secret (a cookie would hide a changed password),
        XNAT's version, and when an alias token expires.

        Raises XnatAuthError when the credentials are refused, XnatTransientError (and its
        TLS and unexpected-answer kinds) or XnatServerError when XNAT cannot say.
        """
        self.login()
        return Account(self.user, self.server_version(), self._token_expiry())

    def _token_expiry(self) -> float | None:
        """`/data/services/tokens/show` lists the user's alias tokens with their
        `estimatedExpirationTime` in epoch milliseconds (xnat-api.md §2.3; `validate` says only
        whose a token is). None for a user name that is not an alias, or when XNAT won't say."""
        if not ALIAS_FORMAT.fullmatch(self.user):
            return None
        try:
            response = self.call("GET", "/data/services/tokens/show", quick=True)
            tokens = response.json()
        except (XnatTransientError, XnatServerError, XnatRejectedError, XnatAuthError, ValueError):
            return None
        for token in tokens if isinstance(tokens, list) else ():
            if isinstance(token, dict) and token.get("alias") == self.user:
                expires = token.get("estimatedExpirationTime")
                if isinstance(expires, (int, float)) or (
                    isinstance(expires, str) and expires.isdigit()
                ):
                    return int(expires) / 1000
        return None

    def archives_automatically(self, project: str) -> bool | None:
        """Whether `project` archives what reaches its prearchive at once (prearchive code 4
        or 5); None when XNAT does not say (no such project, or another answer)."""
        path = f"/data/projects/{quote(project, safe='')}/prearchive_code"
        response = self.call("GET", path, missing_ok=True, html_ok=True)
        code = response.text.strip()
        if response.status_code != 200 or not code.isdigit():
            return None
        return int(code) in (4, 5)

    def project_exists(self, project: str) -> bool:
        """True when `project` exists and this user can see it, False on XNAT's 404.

        Anything but a 200 with the project's item JSON (xnat-api.md §6.2) raises
        XnatUnexpectedAnswerError: "not found" must come from XNAT itself.
        """
        path = f"/data/projects/{quote(project, safe='')}"
        response = self.call("GET", path, params={"format": "json"}, missing_ok=True)
        if response.status_code == 404:
            return False
        what = f"GET {path}"
        shape = "XNAT's description of the project"
        data = self.answers.json(response, what, shape)
        items = data.get("items") if isinstance(data, dict) else None
        if response.status_code != 200 or not isinstance(items, list) or not items:
            raise self.answers.unexpected(response, what, f"that is not {shape}")
        return True

    def series_filter(self, project: str | None) -> FilterRow | None:
        """The project's (or, for None, the site's) series import filter; None when XNAT has
        none (404, or 204 with an empty table).

        A 403 raises XnatAuthError (uploads pause: the filter cannot be known), 5xx and timeouts
        the transient errors, like every call.
        """
        if project is None:
            path = "/data/config/seriesImportFilter/config"
        else:
            path = f"/data/projects/{quote(project, safe='')}/config/seriesImportFilter/config"
        response = self.call("GET", path, params={"format": "json"}, missing_ok=True)
        if response.status_code in (204, 404):
            return None
        rows = self.answers.rows(response, f"GET {path}")
        if not rows:
            return None
        return FilterRow(rows[0].get("status", ""), rows[0].get("contents", ""))

    def site_filter_preferences(self) -> tuple[bool, str, str]:
        """The site filter from the site preferences any user may read (the fallback when
        `/data/config` is refused): (enabled, mode, list)."""
        path = "/xapi/siteConfig/values/" + ",".join(SITE_FILTER_PREFERENCES)
        what = f"GET {path}"
        response = self.call("GET", path)
        data = self.answers.json(response, what, "XNAT's site preferences")
        if not isinstance(data, dict):
            raise self.answers.unexpected(response, what, "instead of a JSON map")
        enabled, mode, text = (data.get(name) for name in SITE_FILTER_PREFERENCES)
        return str(enabled).lower() == "true", str(mode or ""), str(text or "")

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
            for row in self.answers.rows(self.call("GET", path, params=params), f"GET {path}"):
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
        response = self.call("GET", path, params={"format": "json"}, missing_ok=True)
        if response.status_code == 404:
            return []
        return [
            PrearchiveRef(
                row.get("name", ""),
                row.get("tag", ""),
                row.get("subject", ""),
                row.get("status", ""),
                data_uri(row.get("url", "")),
            )
            for row in self.answers.rows(response, f"GET {path}")
            if row.get("tag") == study_uid
        ]

    def delete_prearchive(self, uri: str) -> None:
        """Delete one prearchive session (only ever one this daemon created)."""
        self.call("DELETE", data_uri(uri), missing_ok=True)

    def build(self, uri: str) -> None:
        """Build a prearchive session (its XML and scan listing): status READY."""
        self.call("POST", data_uri(uri), params={"action": "build"})

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
            response = self.call("POST", data_uri(uri), params=params, archive_301=True)
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
        base = data_uri(uri)
        counts = {}
        scans = self.call("GET", f"{base}/scans", params={"format": "json"})
        for scan in self.answers.rows(scans, f"GET {base}/scans"):
            scan_id = str(scan.get("ID", ""))
            path = f"{base}/scans/{quote(scan_id, safe='')}/resources"
            resources = self.answers.rows(
                self.call("GET", path, params={"format": "json"}), f"GET {path}"
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
        response = self.call(
            "POST",
            "/data/services/import",
            params=params,
            body=make_body,
            headers={"Content-Type": "application/zip"},
        )
        what = "POST /data/services/import"
        uris = tuple(line.strip() for line in response.text.splitlines() if line.strip())
        if not uris and response.status_code == 200 and media_type(response) in URI_LIST_TYPES:
            raise XnatRejectedError(
                "xnat-empty-answer",
                "XNAT accepted the upload but answered with no session: nothing was imported.",
                status=response.status_code,
            )
        if not uris:
            raise self.answers.unexpected(response, what, "instead of the imported sessions")
        if not all(uri.startswith(XNAT_URI_PREFIXES) for uri in uris):
            raise self.answers.unexpected(response, what, "that is not a list of XNAT URIs")
        return uris

    def import_inbox(self, server_path: str, project: str, target: Target | None) -> str:
        """Ask XNAT to import the file or folder at `server_path` (as the server sees it) in
        place; returns XNAT's request id. No body, no Content-Type; XNAT must never delete
        what it imported (`cleanupAfterImport=false`) nor archive it on its own account
        (`prevent_auto_commit=true`); labels explicit. `target` None (a path check): only
        the project is named.

        Raises XnatRejectedError with XNAT's message for a refusal (400, 409),
        XnatUnexpectedAnswerError when the answer is not a request's URI.
        """
        params = {
            "import-handler": "inbox",
            "path": server_path,
            "cleanupAfterImport": "false",
            "prevent_auto_commit": "true",
            "PROJECT_ID": project,
        }
        if target is not None:
            params |= {"SUBJECT_ID": target.subject, "EXPT_LABEL": target.session}
        response = self.call("POST", "/data/services/import", params=params)
        answer = response.text.strip()
        match = INBOX_REQUEST_URI.fullmatch(answer)
        if match is None:
            what = "POST /data/services/import (inbox)"
            raise self.answers.unexpected(response, what, "instead of an import request's URI")
        return match.group(1)

    def inbox_request(self, request_id: str) -> InboxRequest:
        """An inbox import request's state (`GET /xapi/dicom/{id}`; 404 if not ours)."""
        path = f"/xapi/dicom/{quote(request_id, safe='')}"
        response = self.call("GET", path)
        found = _inbox_request(self.answers.json(response, f"GET {path}", "an import request"))
        if found is None:
            raise self.answers.unexpected(response, f"GET {path}", "that is not an import request")
        return found

    def inbox_requests(self) -> list[InboxRequest]:
        """Every inbox import request of this account (`GET /xapi/dicom/list/all`)."""
        path = "/xapi/dicom/list/all"
        data = self.answers.json(self.call("GET", path), f"GET {path}", "a list of requests")
        rows = data if isinstance(data, list) else []
        return [r for r in map(_inbox_request, rows) if r is not None]


def _inbox_request(data: object) -> InboxRequest | None:
    if not isinstance(data, dict) or "id" not in data or "status" not in data:
        return None
    return InboxRequest(
        str(data["id"]),
        str(data["status"]),
        scrubbed(str(data.get("resolution") or "")),
        str(data.get("sessionPath") or ""),
    )


def connect(config: XnatConfig, env: Mapping[str, str]) -> XnatClient:
    """A client for the configured XNAT with the credentials from their protected source.

    Raises ConfigError when the credentials are missing or unsafe.
    """
    host = urlsplit(config.url).hostname or ""
    return XnatClient(config, creds.load(config.secret_file, env, host))
