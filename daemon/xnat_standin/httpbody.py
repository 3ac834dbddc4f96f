"""Request bodies, read as streams: Content-Length or chunked, and multipart/form-data.

Bodies are never held whole in memory: readers hand out at most the requested chunk, and a
multipart file part is spooled to disk as it arrives.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

CHUNK = 1 << 20
MIB = float(1 << 20)
_MAX_LINE = 64 * 1024
_MAX_FIELD = 1 << 20


class _Socket(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...

    def readline(self, size: int | None = -1, /) -> bytes: ...


class ConnectionDropped(BaseException):
    """A fault asks for the connection to be reset without an answer.

    A BaseException so that no handler on the way up mistakes it for a data problem.
    """


class ClientGone(BaseException):
    """The client closed, reset or stalled the connection before the body ended."""


class BadBodyError(Exception):
    """The body's framing is broken (chunk sizes, multipart syntax)."""


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class ReceiveRate:
    """A token bucket on body reads: at most ``rate`` bytes/s, a little burst allowed.

    One bucket is shared by every request body of a server, like one network link; a reader
    takes its tokens before it reads from the socket, so what the client has not yet been able
    to send stays in its socket buffer and TCP backpressure makes the link look slow
    (``Emulator(receive_rate=12)``: 12 MB/s, about a 100 Mbit/s link). Virtual scheduling
    (GCRA): each read moves the time the link is next free; it sleeps until that moment, less
    the burst it may run ahead.
    """

    def __init__(self, bytes_per_second: float, *, burst_seconds: float = 0.02) -> None:
        if not bytes_per_second > 0:
            raise ValueError("the receive rate must be > 0")
        self.rate = float(bytes_per_second)
        # The largest read at once, and how far reads may run ahead of the rate.
        self.burst = max(16 * 1024, int(self.rate * burst_seconds))
        self._free_at = 0.0
        self._lock = threading.Lock()

    def take(self, size: int) -> int:
        """Wait until ``size`` bytes (at most the burst) may be read; returns how many."""
        size = min(size, self.burst)
        with self._lock:
            now = time.monotonic()
            self._free_at = max(self._free_at, now) + size / self.rate
            wait = self._free_at - now - self.burst / self.rate
        if wait > 0:
            time.sleep(wait)
        return size


class TeeBody:
    """A body reader that also writes every byte it hands out to `copy` (upload capture)."""

    def __init__(self, body: _Readable, copy: Path) -> None:
        self._body = body
        self._copy = copy.open("wb")

    def read(self, size: int = CHUNK, /) -> bytes:
        data = self._body.read(size)
        self._copy.write(data)
        return data

    def close(self) -> None:
        self._copy.close()


class RequestBody:
    """The body of one request; ``read(n)`` returns at most n bytes and ``b""`` at the end."""

    def __init__(
        self,
        rfile: _Socket,
        *,
        length: int | None,
        chunked: bool,
        drop_after: int | None = None,
        read_delay: float = 0.0,
        receive_rate: ReceiveRate | None = None,
    ) -> None:
        self._rfile = rfile
        self._receive_rate = receive_rate
        self._length = length
        self._chunked = chunked
        self._chunk_left = 0
        self._done = not chunked and not length
        self._drop_after = drop_after
        self._read_delay = read_delay
        self.consumed = 0

    @property
    def finished(self) -> bool:
        return self._done

    def read(self, size: int = CHUNK, /) -> bytes:
        if self._done or size <= 0:
            return b""
        if self._chunked and self._chunk_left == 0:
            self._next_chunk()
            if self._done:
                return b""
        if self._drop_after is not None:
            if self.consumed >= self._drop_after:
                raise ConnectionDropped
            size = min(size, self._drop_after - self.consumed)
        if self._receive_rate is not None:
            left = self._chunk_left if self._chunked else (self._length or 0) - self.consumed
            size = self._receive_rate.take(min(size, left))
        if self._chunked:
            data = self._raw(min(size, self._chunk_left))
            self._chunk_left -= len(data)
            if self._chunk_left == 0:
                self._expect_crlf()
        else:
            assert self._length is not None
            data = self._raw(min(size, self._length - self.consumed))
            if self.consumed + len(data) >= self._length:
                self._done = True
        self.consumed += len(data)
        if self._read_delay:
            time.sleep(self._read_delay * len(data) / MIB)
        return data

    def drain(self) -> None:
        """Read and discard the rest, so the connection can carry the next request."""
        while self.read(CHUNK):
            pass

    def _raw(self, size: int) -> bytes:
        try:
            data = self._rfile.read(size)
        except OSError as error:  # timeout, reset
            raise ClientGone from error
        if len(data) < size:
            raise ClientGone
        return data

    def _line(self) -> bytes:
        try:
            line = self._rfile.readline(_MAX_LINE)
        except OSError as error:
            raise ClientGone from error
        if not line:
            raise ClientGone
        return line

    def _next_chunk(self) -> None:
        text = self._line().split(b";", 1)[0].strip()
        try:
            size = int(text, 16)
        except ValueError:
            raise BadBodyError(f"bad chunk size {text[:20]!r}") from None
        if size < 0:
            raise BadBodyError("negative chunk size")
        if size == 0:
            while self._line() not in (b"\r\n", b"\n"):
                pass  # trailers
            self._done = True
        self._chunk_left = size

    def _expect_crlf(self) -> None:
        if self._line() not in (b"\r\n", b"\n"):
            raise BadBodyError("chunk data not followed by CRLF")


@dataclass(frozen=True, slots=True)
class FormPart:
    """One multipart part: a field (``value``) or a file spooled to ``path``."""

    name: str
    filename: str | None  # None: a form field; "" is a file part without a name
    value: str = ""
    path: Path | None = None


_PARAM = re.compile(r';\s*([\w*-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))')


def parse_multipart(
    body: RequestBody, boundary: str, new_file: Callable[[], Path]
) -> list[FormPart]:
    """Read a multipart/form-data body to its end; file parts go to files from ``new_file``.

    Raises BadBodyError for broken framing (the caller removes files of parts already parsed).
    """
    scanner = _Scanner(body)
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    if not scanner.skip_until(delimiter):
        raise BadBodyError("no multipart boundary")
    parts: list[FormPart] = []
    while True:
        rest = scanner.line()
        if rest.startswith(b"--"):
            break  # the closing delimiter
        headers = {}
        while True:
            line = scanner.line()
            if line in (b"\r\n", b"\n", b""):
                break
            key, _, value = line.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        name, filename = _disposition(headers.get("content-disposition", ""))
        if filename is None:
            field_value = _FieldValue()
            if not scanner.copy_until(delimiter, field_value.add):
                raise BadBodyError("unterminated multipart part")
            parts.append(FormPart(name, None, field_value.text()))
            continue
        path = new_file()
        parts.append(FormPart(name, filename, path=path))
        with path.open("wb") as out:
            if not scanner.copy_until(delimiter, out.write):
                raise BadBodyError("unterminated multipart part")
    body.drain()  # the epilogue
    return parts


def _disposition(value: str) -> tuple[str, str | None]:
    params = {
        match.group(1).lower(): (match.group(2) if match.group(2) is not None else match.group(3))
        for match in _PARAM.finditer(";" + value.partition(";")[2])
    }
    name = params.get("name") or ""
    filename = params.get("filename")
    if filename is not None:
        filename = re.split(r"[\\/]", filename.replace('\\"', '"'))[-1]
    return name, filename


class _FieldValue:
    """Collects a (small) form field's bytes."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0

    def add(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > _MAX_FIELD:
            raise BadBodyError("form field too large")
        self._chunks.append(data)

    def text(self) -> str:
        return b"".join(self._chunks).decode("utf-8", "replace")


class _Scanner:
    """Buffered search for multipart delimiters over a RequestBody."""

    def __init__(self, body: RequestBody) -> None:
        self._body = body
        self._buffer = bytearray(b"\r\n")  # so the first delimiter needs no preceding CRLF
        self._eof = False

    def _fill(self) -> bool:
        if self._eof:
            return False
        data = self._body.read(CHUNK)
        if not data:
            self._eof = True
            return False
        self._buffer += data
        return True

    def line(self) -> bytes:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                return line
            if len(self._buffer) > _MAX_LINE:
                raise BadBodyError("multipart header line too long")
            if not self._fill():
                line = bytes(self._buffer)
                self._buffer.clear()
                return line

    def skip_until(self, marker: bytes) -> bool:
        return self.copy_until(marker, lambda data: None)

    def copy_until(self, marker: bytes, sink: Callable[[bytes], object]) -> bool:
        """Hand everything before ``marker`` to ``sink`` and consume the marker."""
        keep = len(marker) - 1
        while True:
            found = self._buffer.find(marker)
            if found >= 0:
                if found:
                    sink(bytes(self._buffer[:found]))
                del self._buffer[: found + len(marker)]
                return True
            if len(self._buffer) > keep:
                sink(bytes(self._buffer[: len(self._buffer) - keep]))
                del self._buffer[: len(self._buffer) - keep]
            if not self._fill():
                return False
