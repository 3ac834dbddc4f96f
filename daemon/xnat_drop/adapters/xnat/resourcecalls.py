"""XNAT's session resource calls (xnat-api-round2.md §3), each answer checked for shape.

Traps handled here: a resource that exists answers 409 (fine); an in-body upload of zero bytes
is refused with a 500, so empty files go as multipart; a file that exists is *not* written and
XNAT answers 200 with `{"duplicates": [...]}` as text/html, which the caller must read; the
file listing's `digest` is the MD5 only while the site's `checksums` preference is on, and a
prearchive listing has none.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import quote

from xnat_drop.adapters.xnat.answers import data_uri
from xnat_drop.adapters.xnat.connection import Body, Connection
from xnat_drop.core.errors import XnatRejectedError


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """A file of a resource as XNAT lists it: its path in the resource, size, MD5 or ""."""

    name: str
    size: int
    digest: str


class ResourceCalls(Connection):
    """The resource calls, on the XNAT client's connection."""

    def create_resource(self, session_uri: str, label: str) -> None:
        """Create the session resource `label` (bare PUT, as xnatpy does); one that exists
        already (409) is fine."""
        path = f"{data_uri(session_uri)}/resources/{quote(label, safe='')}"
        try:
            self.call("PUT", path)
        except XnatRejectedError as exc:
            if exc.status != 409:
                raise

    def put_resource_file(
        self,
        session_uri: str,
        label: str,
        name: str,
        body: Callable[[], Body],
        size: int,
        *,
        overwrite: bool,
    ) -> bool:
        """Send one file of a resource; True when XNAT wrote it, False when it answered that the
        file exists (its duplicates answer: nothing written).

        `body()` streams the file (called again if the login must be repeated). A zero-byte
        file goes as multipart/form-data (PUT too: the prearchive's route takes PUT only): XNAT
        refuses an empty in-body upload with a 500.
        """
        path = f"{data_uri(session_uri)}/resources/{quote(label, safe='')}/files/"
        path += quote(name, safe="/")
        params = {"overwrite": "true"} if overwrite else {}
        if size:
            params["inbody"] = "true"
            headers = {"Content-Type": "application/octet-stream"}
            response = self.call(
                "PUT", path, params=params, body=body, headers=headers, html_ok=True
            )
        else:
            boundary = secrets.token_hex(16)
            filename = name.rsplit("/", 1)[-1].replace('"', "_")
            form = (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                f"\r\n--{boundary}--\r\n"
            ).encode()
            headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
            response = self.call(
                "PUT",
                path,
                params=params,
                body=lambda: _Bytes(form),
                headers=headers,
                html_ok=True,
            )
        return not _duplicates(response.text)

    def resource_files(self, session_uri: str, label: str) -> list[RemoteFile]:
        """The files of resource `label` as XNAT lists them; [] when it has none (404)."""
        path = f"{data_uri(session_uri)}/resources/{quote(label, safe='')}/files"
        response = self.call("GET", path, params={"format": "json"}, missing_ok=True)
        if response.status_code == 404:
            return []
        found = []
        for row in self.answers.rows(response, f"GET {path}"):
            uri = row.get("URI", "")
            name = uri.split("/files/", 1)[1] if "/files/" in uri else row.get("Name", "")
            size = row.get("Size", "")
            found.append(
                RemoteFile(name, int(size) if size.isdigit() else -1, row.get("digest", ""))
            )
        return found

    def checksums_enabled(self) -> bool:
        """The site preference `checksums` (XNAT keeps an MD5 per resource file): true unless
        XNAT says false; its default is true."""
        response = self.call("GET", "/xapi/siteConfig/checksums", missing_ok=True)
        return response.status_code == 404 or response.text.strip().lower() != "false"


def _duplicates(text: str) -> bool:
    """True when an upload's answer is XNAT's "not written, it exists" report."""
    text = text.strip()
    if not text.startswith("{"):
        return False
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and bool(data.get("duplicates"))


class _Bytes:
    """A small body already in memory (a multipart form around an empty file)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[bytes]:
        yield self._data

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size is None or size < 0 else self._offset + size
        chunk = self._data[self._offset : end]
        self._offset += len(chunk)
        return chunk
