"""The shape of XNAT's answers: what is data, what is a web page, and how to say so.

A proxy or single sign-on in front of XNAT answers with login pages, redirects and empty
bodies; those must pause the queue (XnatUnexpectedAnswerError), never send a session to
failed/ as if its files were at fault. Messages quote a short excerpt of the body, never a
query string and never the secret; what XNAT says passes through core.noheader.scrubbed, so
that no UID or quoted value of a header reaches a report or the log.
"""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from xnat_drop.core.errors import XnatUnexpectedAnswerError
from xnat_drop.core.noheader import scrubbed

EXCERPT_CHARS = 120
_H3 = re.compile(r"<h3>(.*?)</h3>", re.IGNORECASE | re.DOTALL)
_TAGS = re.compile(r"<[^>]+>")
_QUERY = re.compile(r"\?[^\s()]*")  # a URL's query string, up to a space or a parenthesis
_INVISIBLE = re.compile(r"<(script|style)\b.*?</\1\s*>|<!--.*?-->", re.IGNORECASE | re.DOTALL)


class Answers:
    """Checks answers for shape and words the errors, redacting one secret."""

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def json(self, response: requests.Response, what: str, shape: str) -> Any:
        """The JSON of an answer; raises XnatUnexpectedAnswerError if it is empty or not JSON."""
        if not response.content.strip():
            raise self.unexpected(response, what, f"instead of {shape}")
        try:
            return response.json()
        except ValueError as exc:
            raise self.unexpected(response, what, f"that is not {shape}") from exc

    def rows(self, response: requests.Response, what: str) -> list[dict[str, str]]:
        """The rows of an XNAT ResultSet answer (every value a string, xnat-api.md §1.3)."""
        shape = "XNAT's JSON table (ResultSet)"
        data = self.json(response, what, shape)
        result_set = data.get("ResultSet") if isinstance(data, dict) else None
        rows = result_set.get("Result") if isinstance(result_set, dict) else None
        if not isinstance(rows, list):
            raise self.unexpected(response, what, f"that is not {shape}")
        return [{str(k): str(v) for k, v in row.items()} for row in rows if isinstance(row, dict)]

    def unexpected(
        self, response: requests.Response, what: str, instead: str
    ) -> XnatUnexpectedAnswerError:
        """The error for an answer that is not XNAT's: what came back, the likely cause.

        `instead` completes "XNAT answered GET /x with ...", e.g. "instead of data". Quotes
        at most a short excerpt of the body and no query string, and never the secret.
        """
        status = response.status_code
        media = media_type(response) or "no content type"
        after = f" after a redirect to {self.where(response.url)}" if response.history else ""
        if 300 <= status < 400:
            location = response.headers.get("Location")
            to = f"to {self.where(location)}" if location else "without a Location"
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
        excerpt = self.excerpt(response.text)
        says = f' The page says: "{excerpt}"' if excerpt else ""
        if is_html(response):
            return XnatUnexpectedAnswerError(
                f"XNAT answered {what} with a web page ({media}){after} {instead}: a proxy or "
                f"single sign-on page in front of XNAT? Check xnat.url.{says}"
            )
        return XnatUnexpectedAnswerError(
            f"XNAT answered {what} with {media} ({status}){after} {instead}: a proxy in front "
            f'of XNAT, or xnat.url not pointing at XNAT? Check xnat.url. It says: "{excerpt}"'
        )

    def excerpt(self, body: str) -> str:
        """The visible text of a body, short, without the secret (a page could echo it)."""
        text = html.unescape(_TAGS.sub(" ", _INVISIBLE.sub(" ", body)))
        text = " ".join(scrubbed(self.redact(text)).split())
        if len(text) > EXCERPT_CHARS:
            text = text[: EXCERPT_CHARS - 1].rstrip() + "…"
        return text

    def where(self, url: str) -> str:
        """A redirect target for a message: scheme, host and path only (a query may hold
        single sign-on state, the user part a secret)."""
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
        where = urlunsplit((parts.scheme, host, parts.path, "", ""))
        return self.redact(where)[:200] or "?"

    def redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text


def media_type(response: requests.Response) -> str:
    """The media type alone ("text/html" of "text/html;charset=UTF-8"); "" if none."""
    return response.headers.get("Content-Type", "").split(";")[0].strip().lower()


def is_html(response: requests.Response) -> bool:
    """An HTML page, by its Content-Type or by its first bytes (proxies mislabel pages)."""
    if "html" in media_type(response):
        return True
    head = response.content[:512].lstrip().lower()
    return head.startswith(b"<") and (b"<html" in head or b"<!doctype html" in head)


def data_uri(uri: str) -> str:
    """Prearchive listings give `/prearchive/...`; every call needs `/data/prearchive/...`."""
    return uri if uri.startswith("/data/") else "/data" + uri


def error_message(body: str) -> str:
    """XNAT's own words from an error page: the `<h3>` of a Restlet status page, else the text;
    without what may be a header value (noheader.scrubbed)."""
    match = _H3.search(body)
    text = match.group(1) if match else _TAGS.sub(" ", body)
    text = " ".join(scrubbed(html.unescape(text)).split())
    return text[:500] or "no message"


def retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from XNAT; the backoff decides instead


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (requests names the URL it failed on), without
    the URL's query (it may hold a StudyInstanceUID) or anything else that may be a header's
    value."""
    line = (str(exc).splitlines() or [type(exc).__name__])[0]
    return scrubbed(_QUERY.sub("", line))[:300]
