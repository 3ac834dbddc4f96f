"""Check zips the way XNAT reads them: Java's ZipInputStream, through tests/ZipCheck.java.

    from zipcheck import requires_java, java_read_zip, java_read_stream

    @requires_java
    def test_something(tmp_path):
        assert java_read_zip(zip_path) == [("a.dcm", 1234, 0x1C291CA3)]

`java_read_stream` feeds chunks (e.g. a `ZipStream`) to Java's standard input, so a zip of
many gigabytes never has to exist on disk. `local_headers` walks the local headers in Python
for the checks Java does not report (flags, versions, extra fields).
"""

from __future__ import annotations

import contextlib
import fcntl
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from javarun import JAVA, java_command

CHECKER = Path(__file__).with_name("ZipCheck.java")

requires_java = pytest.mark.skipif(
    JAVA is None, reason="no java on this machine: the ZipInputStream check cannot run here"
)

# Small heap, quick start; the reading loop is all I/O and intrinsified CRC-32.
_JVM_OPTIONS = ["-Xshare:auto", "-XX:+UseSerialGC", "-Xmx128m"]

Entry = tuple[str, int, int]  # (name, size, crc32) as Java read them


def _java_command() -> list[str]:
    return java_command(CHECKER, _JVM_OPTIONS, "the ZipInputStream check")


def _parse(returncode: int, stdout: bytes, stderr: bytes) -> list[Entry]:
    text = stdout.decode("utf-8")
    if returncode != 0:
        raise AssertionError(
            f"ZipInputStream refused the zip (exit {returncode}): "
            f"{stderr.decode('utf-8', 'replace').strip()}"
        )
    lines = text.splitlines()
    if not lines or not lines[-1].startswith("entries="):
        raise AssertionError(f"ZipCheck output has no entries= line: {text[-500:]!r}")
    entries: list[Entry] = []
    for line in lines[:-1]:
        size, crc, name = line.split("\t", 2)
        entries.append((name, int(size), int(crc, 16)))
    assert int(lines[-1].removeprefix("entries=")) == len(entries)
    return entries


def java_read_zip(zip_file: Path | str | bytes) -> list[Entry]:
    """Read a zip file (a path) or zip bytes with ZipInputStream.

    Returns (name, size, crc32) per entry in stream order. Raises AssertionError carrying
    Java's message when ZipInputStream refuses the zip.
    """
    if isinstance(zip_file, bytes):
        proc = subprocess.run(
            [*_java_command(), "-"], input=zip_file, capture_output=True, check=False
        )
    else:
        proc = subprocess.run([*_java_command(), str(zip_file)], capture_output=True, check=False)
    return _parse(proc.returncode, proc.stdout, proc.stderr)


def java_read_stream(chunks: Iterable[bytes | bytearray]) -> list[Entry]:
    """Feed `chunks` (a `ZipStream`, a generator, ...) to ZipInputStream through a pipe.

    Returns and raises like `java_read_zip`. An exception raised by `chunks` ends Java and
    propagates unchanged.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        # Output goes to files, not pipes: nobody reads them while we write standard input.
        proc = subprocess.Popen(
            [*_java_command(), "-"], stdin=subprocess.PIPE, stdout=out, stderr=err
        )
        assert proc.stdin is not None
        # A 1 MiB pipe instead of 64 KiB halves the time for multi-gigabyte streams.
        with contextlib.suppress(AttributeError, OSError):  # Linux only; may be capped lower
            fcntl.fcntl(proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
        try:
            for chunk in chunks:
                proc.stdin.write(chunk)
            proc.stdin.close()
        except BrokenPipeError:  # Java gave up early; its message says why
            pass
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
        returncode = proc.wait()
        out.seek(0)
        err.seek(0)
        return _parse(returncode, out.read(), err.read())


@dataclass(frozen=True, slots=True)
class LocalHeader:
    """One local file header, as a streaming reader sees it."""

    offset: int
    version: int
    flags: int
    method: int
    dos_time: int
    dos_date: int
    crc: int
    compressed_size: int  # from the zip64 extra field when the fixed field is 0xFFFFFFFF
    size: int
    name: bytes
    extra: bytes
    zip64: bool  # the sizes came from a zip64 extra field (or an 8-byte descriptor)
    descriptor: bool = False  # CRC and sizes came from a data descriptor after the data


_LOCAL = struct.Struct("<IHHHHHIIIHH")


def local_headers(data: bytes) -> list[LocalHeader]:
    """Walk the local headers of zip `data` front to back, as ZipInputStream does.

    Stops at the first record that is not a local header (normally the central directory).
    An entry with a data descriptor (flag bit 3) must be DEFLATED: its end is found by
    inflating it, and its CRC and sizes are the descriptor's (`descriptor` is then True).
    """
    headers: list[LocalHeader] = []
    pos = 0
    while pos + _LOCAL.size <= len(data):
        sig, version, flags, method, tm, dt, crc, csize, size, nlen, xlen = _LOCAL.unpack_from(
            data, pos
        )
        if sig != 0x04034B50:
            break
        name = data[pos + 30 : pos + 30 + nlen]
        extra = data[pos + 30 + nlen : pos + 30 + nlen + xlen]
        if flags & 0x08:
            assert method == 8, f"entry at {pos}: a data descriptor on a STORED entry"
            start = pos + 30 + nlen + xlen
            inflater = zlib.decompressobj(-15)
            inflated = len(inflater.decompress(data[start:]))
            assert inflater.eof, f"entry at {pos}: its deflate data does not end"
            used = len(data) - start - len(inflater.unused_data)
            at = start + used
            if struct.unpack_from("<I", data, at)[0] == 0x08074B50:
                at += 4
            wide = max(inflated, used) > 0xFFFFFFFF  # as Java's ZipInputStream.readEnd
            crc, csize, size = struct.unpack_from("<IQQ" if wide else "<III", data, at)
            assert (csize, size) == (used, inflated), f"entry at {pos}: descriptor sizes"
            headers.append(
                LocalHeader(pos, version, flags, method, tm, dt, crc, csize, size, name, extra,
                            wide, descriptor=True)
            )  # fmt: skip
            pos = at + (20 if wide else 12)
            continue
        zip64 = False
        if csize == 0xFFFFFFFF or size == 0xFFFFFFFF:
            x = 0
            while x + 4 <= len(extra):
                tag, length = struct.unpack_from("<HH", extra, x)
                if tag == 0x0001 and length >= 16:
                    size, csize = struct.unpack_from("<QQ", extra, x + 4)
                    zip64 = True
                x += 4 + length
        headers.append(
            LocalHeader(pos, version, flags, method, tm, dt, crc, csize, size, name, extra, zip64)
        )
        pos += 30 + nlen + xlen + csize
    return headers
