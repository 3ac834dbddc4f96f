"""One request as the resources see it, and helpers to read its parameters."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path

from . import pages
from .httpbody import BadBodyError, FormPart, RequestBody, parse_multipart
from .pages import Reply

# RequestUtil.supported_upload_types, compared exactly (Restlet MediaType.equals).
SUPPORTED_UPLOAD_TYPES = frozenset(
    {
        "text/*",
        "text/plain",
        "text/xml",
        "text/csv",
        "application/*",
        "application/dicom",
        "application/zip",
        "application/xar",
        "application/x-gtar",
        "application/x-gzip",
        "application/octet-stream",
        "application/pdf",
        "application/vnd.ms-excel",
        "application/vnd.ms-powerpoint",
        "application/x-tar",
        "application/msword",
        "image/*",
        "image/gif",
        "image/jpeg",
        "image/png",
        "image/tiff",
        "image/bmp",
        "video/*",
        "video/mpeg",
        "video/mp4",
        "video/quicktime",
    }
)


@dataclass
class Call:
    """One request as the resources see it; ``user`` and response headers are filled in."""

    method: str
    segments: list[str]  # decoded path components, empty ones dropped
    query: dict[str, str]
    headers: Message
    body: RequestBody
    new_file: Callable[[], Path]
    user: str | None = None
    session_id: str | None = None
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    raw_segments: list[str] = field(default_factory=list)  # as sent, aligned with segments

    @property
    def user_agent(self) -> str:
        return self.headers.get("User-Agent", "")

    @property
    def format(self) -> str | None:
        return self.query.get("format")

    def with_headers(self, reply: Reply) -> Reply:
        if not self.response_headers:
            return reply
        return Reply(
            reply.status,
            reply.body,
            reply.content_type,
            reply.headers + tuple(self.response_headers),
        )


def flag(value: str | None) -> bool:
    """Java ``Boolean.parseBoolean``."""
    return (value or "").lower() == "true"


def media_params(content_type: str | None) -> dict[str, str]:
    params: dict[str, str] = {}
    for part in (content_type or "").split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key:
            params[key.strip().lower()] = value.strip().strip('"')
    return params


def media_type(content_type: str | None) -> tuple[str, str]:
    """(bare media type, the type as Restlet compares it: parameters other than charset kept)."""
    if not content_type:
        return "", ""
    media = content_type.split(";", 1)[0].strip().lower()
    extra = sorted(f"{k}={v}" for k, v in media_params(content_type).items() if k != "charset")
    return media, ";".join([media, *extra])


def read_form(call: Call) -> dict[str, str]:
    """Parameters of an urlencoded body (up to 1 MiB); other bodies give none."""
    media, _ = media_type(call.headers.get("Content-Type"))
    if media != "application/x-www-form-urlencoded":
        return {}
    data = b""
    while len(data) <= 1 << 20 and (chunk := call.body.read(1 << 16)):
        data += chunk
    form: dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(
        data.decode("utf-8", "replace"), keep_blank_values=True
    ):
        form.setdefault(key, value)
    return form


def no_length_message(size: int) -> str:
    return (
        "In-body File posts must include the file directly as the body of the message. In this "
        f"case, the request entity size is {size} but the media type is not application/zip "
        "(i.e. streaming compressed upload)."
    )


def form_parts(call: Call) -> list[FormPart] | Reply:
    """The parts of a multipart/form-data body, files spooled to the call's temporary files;
    or the 400 Commons FileUpload gives for a missing boundary or a malformed body (then no
    spooled file stays; nor after a dropped connection, which raises)."""
    boundary = media_params(call.headers.get("Content-Type")).get("boundary")
    if not boundary:
        return pages.status_page(
            400, "the request was rejected because no multipart boundary was found"
        )
    spooled: list[Path] = []

    def new_file() -> Path:
        spooled.append(call.new_file())
        return spooled[-1]

    try:
        return parse_multipart(call.body, boundary, new_file)
    except BaseException as error:
        for path in spooled:
            path.unlink(missing_ok=True)
        if isinstance(error, BadBodyError):
            return pages.status_page(400, str(error))
        raise
