"""The streaming zip writer, checked with the reader XNAT uses (Java's ZipInputStream), with
Python's zipfile (central directory) and by walking the local headers. Real files, no mocks."""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import time
import tracemalloc
import zipfile
import zlib
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest

from xnat_drop.adapters.fs.zipformat import stored_blocks_len
from xnat_drop.adapters.fs.zipstream import BundleEntry, ZipStream, write_zip, zip_name
from xnat_drop.core.errors import SessionChangedError

from zipcheck import java_read_stream, java_read_zip, local_headers, requires_java

KiB, MiB = 1024, 1024 * 1024
SMALL_BUFFER = 64 * KiB  # files above this go in stored deflate blocks, read as they are sent


# -- helpers ------------------------------------------------------------------------------


def make_files(root: Path, files: dict[str, bytes]) -> list[BundleEntry]:
    """Write `files` (arcname -> content) under `root`; return their entries in that order."""
    entries = []
    for n, (name, content) in enumerate(files.items()):
        too_long = any(len(part.encode()) > 255 for part in name.split("/"))
        path = root / (f"long-name-{n}" if too_long else name)  # zip names may be longer
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        entries.append(BundleEntry(path, name, len(content)))
    return entries


def expected(entries: list[BundleEntry]) -> list[tuple[str, int, int]]:
    """(name, size, crc) of each source file, read independently of the writer."""
    out = []
    for e in entries:
        crc = 0
        with e.source.open("rb") as f:
            while block := f.read(MiB):
                crc = zlib.crc32(block, crc)
        out.append((zip_name(e.arcname), e.size, crc))
    return out


def zip_bytes(entries: list[BundleEntry], **options: int) -> bytes:
    """The whole stream as bytes, checking that len() announced exactly that many."""
    with ZipStream(entries, **options) as stream:
        data = b"".join(stream)
        assert len(data) == len(stream)
        assert stream.bytes_done == len(stream)
        assert stream.entries_done == len(entries)
    return data


def check_zip(data: bytes, entries: list[BundleEntry]) -> None:
    """Java, zipfile and our own header walk all agree with the source files."""
    want = expected(entries)
    assert java_read_zip(data) == want
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None  # reads every member and checks its CRC
        infos = zf.infolist()
        assert [(i.filename, i.file_size, i.CRC) for i in infos] == want
        for info in infos:
            assert info.compress_type in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
            assert info.create_system == 3  # Unix
            assert info.external_attr >> 16 == 0o100644
    headers = local_headers(data)
    assert [(h.name.decode("utf-8"), h.size, h.crc) for h in headers] == want
    for h in headers:
        assert bool(h.flags & 0x800) == (not h.name.isascii())
        assert h.version == (45 if h.zip64 else 20)
        if h.method == 0:
            assert not h.flags & 0x08, "STORED entry with a data descriptor: XNAT refuses it"
            assert h.compressed_size == h.size
        else:  # a large file, read once: stored deflate blocks, CRC and sizes after the data
            assert (h.method, h.descriptor) == (8, True)
            assert h.compressed_size == stored_blocks_len(h.size)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- round trips --------------------------------------------------------------------------

ROUND_TRIP = {
    "empty.dcm": b"",
    "one.dcm": b"x",
    "small/IM0001.dcm": b"DICM" * 1000,
    "a/b/c/d/e/nested.dcm": os.urandom(3 * KiB),
    "séance/ÉCHO-é.dcm": b"accent" * 100,
    "日本語/画像.dcm": os.urandom(10 * KiB),
    "emoji-🧠.dcm": b"brain",
    "exactly-limit.dcm": os.urandom(SMALL_BUFFER),
    "over-limit.dcm": os.urandom(SMALL_BUFFER + 1),
    "large/blocks.dcm": os.urandom(5 * SMALL_BUFFER + 12345),
    "last-empty.dcm": b"",
}


@requires_java
@pytest.mark.parametrize("buffer_limit", [SMALL_BUFFER, 8 * MiB], ids=["blocks", "buffered"])
@pytest.mark.parametrize("chunk_size", [4 * KiB, MiB])
def test_round_trip(tmp_path: Path, buffer_limit: int, chunk_size: int) -> None:
    entries = make_files(tmp_path, ROUND_TRIP)
    data = zip_bytes(entries, buffer_limit=buffer_limit, chunk_size=chunk_size)
    check_zip(data, entries)


@requires_java
def test_stream_through_java_stdin(tmp_path: Path) -> None:
    entries = make_files(tmp_path, ROUND_TRIP)
    with ZipStream(entries, buffer_limit=SMALL_BUFFER, chunk_size=16 * KiB) as stream:
        assert java_read_stream(stream) == expected(entries)
        assert stream.bytes_done == len(stream)


def test_unzip_reads_it_too(tmp_path: Path) -> None:
    unzip = shutil.which("unzip")
    if unzip is None:
        pytest.skip("no unzip on this machine")
    entries = make_files(tmp_path / "src", ROUND_TRIP)
    archive = tmp_path / "out.zip"
    with archive.open("wb") as f:
        written = write_zip(entries, f)
    assert written == archive.stat().st_size
    proc = subprocess.run([unzip, "-tq", str(archive)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_empty_archive(tmp_path: Path) -> None:
    data = zip_bytes([])
    assert data == b"PK\x05\x06" + bytes(18)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.infolist() == []
    if shutil.which("java"):
        assert java_read_zip(data) == []


@requires_java
def test_file_over_64_mb_read_completely_by_java(tmp_path: Path) -> None:
    path = tmp_path / "big.dcm"
    block = bytearray(os.urandom(MiB))
    crc = 0
    with path.open("wb") as f:
        for i in range(65):  # random-ish: one random MiB, a counter makes every MiB differ
            block[:8] = struct.pack("<Q", i)
            f.write(block)
            crc = zlib.crc32(block, crc)
        f.write(block[:12345])
        crc = zlib.crc32(block[:12345], crc)
    size = 65 * MiB + 12345
    entries = [BundleEntry(path, "series/big.dcm", size)]
    with ZipStream(entries) as stream:  # default 8 MiB buffer: stored blocks
        assert java_read_stream(stream) == [("series/big.dcm", size, crc)]
        assert stream.bytes_done == len(stream)


@requires_java
def test_more_than_65535_entries_get_zip64_end_records(tmp_path: Path) -> None:
    # 3,300 real files under 66,000 names: creating 66,000 files costs 10-20 s on this disk,
    # and the entry count is what matters; every entry is still opened and read on its own.
    count, distinct = 66_000, 3_300
    sources = []
    for k in range(distinct):
        path = tmp_path / f"{k:04d}.dcm"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, b"%d" % k)
        os.close(fd)
        sources.append(path)
    entries = [
        BundleEntry(
            sources[n % distinct],
            f"s{n // 1000:02d}/{n % 1000:04d}.dcm",
            len(b"%d" % (n % distinct)),
        )
        for n in range(count)
    ]
    data = zip_bytes(entries)

    # Classic end record says "see zip64" for the count; zip64 record and locator precede it.
    end = data[-22:]
    assert end[:4] == b"PK\x05\x06"
    assert struct.unpack_from("<HH", end, 8) == (0xFFFF, 0xFFFF)
    locator = data[-42:-22]
    assert locator[:4] == b"PK\x06\x07"
    (zip64_end_offset,) = struct.unpack_from("<Q", locator, 8)
    assert zip64_end_offset == len(data) - 42 - 56
    assert data[zip64_end_offset : zip64_end_offset + 4] == b"PK\x06\x06"
    assert struct.unpack_from("<QQ", data, zip64_end_offset + 24) == (count, count)

    java = java_read_zip(data)
    assert len(java) == count
    assert java == [
        (e.arcname, e.size, zlib.crc32(b"%d" % (n % distinct))) for n, e in enumerate(entries)
    ]
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
        assert len(infos) == count
        assert [(i.filename, i.CRC) for i in infos] == [(n, c) for n, _, c in java]
        assert zf.read("s65/0999.dcm") == b"%d" % (65_999 % distinct)
    # Nothing else needed zip64: small entries keep 4-byte sizes (Java chokes on 8 there).
    assert not any(h.zip64 or h.version != 20 for h in local_headers(data))


@pytest.mark.parametrize(("count", "zip64_end"), [(65_534, False), (65_535, True)])
def test_entry_count_boundary(tmp_path: Path, count: int, zip64_end: bool) -> None:
    path = tmp_path / "empty.dcm"
    path.touch()
    entries = [BundleEntry(path, f"{i}.dcm", 0) for i in range(count)]  # one file, many names
    data = zip_bytes(entries)
    assert (data[-42:-38] == b"PK\x06\x07") is zip64_end
    assert struct.unpack_from("<H", data, len(data) - 12)[0] == min(count, 0xFFFF)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert len(zf.infolist()) == count


class _Tail(io.RawIOBase):
    """A seekable file of `size` bytes of which only the tail is known: enough for zipfile
    to read the central directory of a zip that was never stored."""

    def __init__(self, size: int, tail: bytes) -> None:
        self._size, self._tail, self._pos = size, tail, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = [offset, self._pos + offset, self._size + offset][whence]
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        start = self._pos - (self._size - len(self._tail))
        assert start >= 0, "zipfile read before the central directory"
        data = self._tail[start : start + len(buffer)]
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


@requires_java
@pytest.mark.slow
def test_stream_over_4_gib_through_java(tmp_path: Path) -> None:
    """Offsets and one size past 0xFFFFFFFF; the zip itself never touches the disk."""
    huge = tmp_path / "huge.dcm"
    with huge.open("wb") as f:  # sparse, with real data at both ends
        f.write(os.urandom(MiB))
        f.truncate(0xFFFFFFFF + 2 * MiB)
        f.seek(-MiB, os.SEEK_END)
        f.write(os.urandom(MiB))
    sparse = tmp_path / "sparse.dcm"
    with sparse.open("wb") as f:
        f.truncate(100 * MiB)
    files = make_files(tmp_path, {"before.dcm": b"b" * 1000})
    files += [BundleEntry(huge, "huge.dcm", huge.stat().st_size)]
    files += [BundleEntry(sparse, "sparse.dcm", 100 * MiB)]
    files += make_files(tmp_path, {"after/é.dcm": b"a" * 1000, "after/empty.dcm": b""})

    with ZipStream(files) as stream:
        total = len(stream)
        assert total > 0xFFFFFFFF + 100 * MiB
        seen = 0
        first: list[bytes] = []
        last: deque[bytes] = deque(maxlen=4)

        def counted() -> Iterator[bytes]:
            nonlocal seen
            for chunk in stream:
                seen += len(chunk)
                if len(first) < 2:
                    first.append(chunk)  # before.dcm, then huge.dcm's local header
                last.append(chunk)
                yield chunk

        started = time.monotonic()
        java = java_read_stream(counted())
        elapsed = time.monotonic() - started
    assert seen == total
    want = expected(files)
    assert java == want
    print(f"{total / 1e9:.2f} GB through ZipInputStream in {elapsed:.1f} s")

    (before,) = local_headers(first[0])
    assert (before.zip64, before.version) == (False, 20)
    # huge.dcm: DEFLATED (stored blocks) with a descriptor, whose sizes Java reads as 8 bytes
    sig, version, flags, method = struct.unpack_from("<IHHH", first[1])
    assert (sig, version, flags & 0x08, method) == (0x04034B50, 45, 0x08, 8)

    # The central directory and end records, read by zipfile from the kept tail.
    tail = b"".join(last)
    assert tail[-42:-38] == b"PK\x06\x07"  # zip64 locator before the classic end record
    assert struct.unpack_from("<I", tail, len(tail) - 6)[0] == 0xFFFFFFFF  # cd offset: see zip64
    with zipfile.ZipFile(_Tail(total, tail)) as zf:
        infos = zf.infolist()
        assert [(i.filename, i.file_size, i.CRC) for i in infos] == want
        assert infos[1].file_size > 0xFFFFFFFF
        assert infos[2].header_offset > 0xFFFFFFFF
        assert infos[-1].header_offset > 0xFFFFFFFF


# -- names, dates, attributes -------------------------------------------------------------


def test_zip_name_replaces_what_is_not_utf8_and_keeps_the_extension() -> None:
    assert zip_name("séance/画像.dcm") == "séance/画像.dcm"
    bad = os.fsdecode(b"caf\xe9.dcm")  # Latin-1 on disk: surrogate escape in Python
    name = zip_name(bad)
    assert name.isascii()
    assert name.startswith("unnamed-")
    assert name.endswith(".dcm")
    assert zip_name(bad) == name  # stable
    assert zip_name(os.fsdecode(b"caf\xe8.dcm")) != name  # and distinct
    folder = zip_name(os.fsdecode(b"s\xff/IM1.dcm"))
    assert folder.startswith("unnamed-")
    assert folder.endswith("/IM1.dcm")
    assert "." not in folder.split("/")[0]
    assert zip_name(os.fsdecode(b"x.\xff")).isascii()  # a bad extension is dropped


@requires_java
def test_name_that_is_not_utf8_does_not_crash(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/caf\xe9.dcm"
    with open(raw, "wb") as f:
        f.write(b"latin")
    source = Path(os.fsdecode(raw))
    entry = BundleEntry(source, source.name, 5)
    data = zip_bytes([entry])
    (name, size, _crc), *_ = java_read_zip(data)
    assert name == zip_name(source.name)
    assert name.isascii()
    assert name.endswith(".dcm")
    assert size == 5
    check_zip(data, [entry])


def _date_of(tmp_path: Path, when: float) -> tuple[int, ...]:
    entries = make_files(tmp_path, {"t.dcm": b"t"})
    os.utime(entries[0].source, (when, when))
    data = zip_bytes(entries)
    local = local_headers(data)[0]
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.infolist()[0]
    central = struct.unpack_from("<HH", data, info.header_offset + 10)
    assert central == (local.dos_time, local.dos_date)  # local header and central agree
    return info.date_time


@pytest.mark.parametrize(
    ("when", "date_time"),
    [
        ((2001, 2, 3, 4, 5, 6), (2001, 2, 3, 4, 5, 6)),
        ((2024, 12, 31, 23, 59, 59), (2024, 12, 31, 23, 59, 58)),  # 2-second resolution
        ((1970, 1, 2, 0, 0, 0), (1980, 1, 1, 0, 0, 0)),  # before DOS time: clamped
        ((2200, 6, 1, 12, 0, 0), (2107, 12, 31, 23, 59, 58)),  # after it: clamped
    ],
)
def test_dos_date_from_mtime(
    tmp_path: Path, when: tuple[int, ...], date_time: tuple[int, ...]
) -> None:
    seconds = time.mktime((*when, 0, 0, -1))
    assert _date_of(tmp_path, seconds) == date_time


def test_bad_entries_are_refused_up_front(tmp_path: Path) -> None:
    for bad in [
        BundleEntry(tmp_path / "a", "", 0),
        BundleEntry(tmp_path / "a", "folder/", 0),
        BundleEntry(tmp_path / "a", "a.dcm", -1),
        BundleEntry(tmp_path / "a", "x" * 70_000, 0),
    ]:
        with pytest.raises(ValueError):
            ZipStream([bad])


# -- exact length, read(n), iteration, progress -------------------------------------------

SHAPES = {
    "nothing": {},
    "one-empty": {"e.dcm": b""},
    "many-empty": {f"e{i}.dcm": b"" for i in range(50)},
    "one-byte": {"b.dcm": b"b"},
    "buffer-boundaries": {
        f"f{i}.dcm": os.urandom(i * 7919 % (SMALL_BUFFER + 3)) for i in range(40)
    },
    "blocks-only": {"big.dcm": os.urandom(3 * SMALL_BUFFER + 1)},
    "mixed": {"a.dcm": b"a", "big.dcm": os.urandom(2 * SMALL_BUFFER + 5), "z/é.dcm": b"z" * 99},
    "long-names": {"d" * 200 + "/" + "n" * 1000 + ".dcm": b"long", "ü" * 300: b"x"},
}


@pytest.mark.parametrize("shape", SHAPES)
def test_len_is_exact_and_read_honours_n(tmp_path: Path, shape: str) -> None:
    entries = make_files(tmp_path, SHAPES[shape])
    options = {"buffer_limit": SMALL_BUFFER, "chunk_size": 16 * KiB}
    iterated = zip_bytes(entries, **options)

    with ZipStream(entries, **options) as stream:
        assert stream.read(0) == b""
        sizes = [1, 7, 30, 4096, 16384, 100_000, MiB + 3]
        parts = []
        i = 0
        while True:
            n = sizes[i % len(sizes)]
            left = len(stream) - stream.bytes_done
            part = stream.read(n)
            assert len(part) == min(n, left)
            if not part:
                break
            parts.append(part)
            i += 1
        assert stream.read() == b""
    assert b"".join(parts) == iterated

    with ZipStream(entries, **options) as stream:
        assert stream.read() == iterated  # read() / read(-1): everything
    with ZipStream(entries, **options) as stream:
        assert stream.read(None) == iterated
    with ZipStream(entries, **options) as stream:
        head = stream.read(5)
        assert head + b"".join(stream) == iterated  # mixing both ways
    with zipfile.ZipFile(io.BytesIO(iterated)) as zf:
        assert zf.testzip() is None


def test_iteration_chunks_respect_chunk_size(tmp_path: Path) -> None:
    entries = make_files(tmp_path, SHAPES["mixed"] | SHAPES["buffer-boundaries"])
    with ZipStream(entries, buffer_limit=SMALL_BUFFER, chunk_size=10_000) as stream:
        chunks = list(stream)
    assert max(len(c) for c in chunks) == 10_000
    assert all(chunks)


def test_progress_and_counters(tmp_path: Path) -> None:
    entries = make_files(tmp_path, SHAPES["mixed"] | SHAPES["buffer-boundaries"])
    reported: list[int] = []
    with ZipStream(
        entries, buffer_limit=SMALL_BUFFER, chunk_size=8 * KiB, progress=reported.append
    ) as stream:
        assert (stream.bytes_done, stream.entries_done) == (0, 0)
        done_seen = []
        for chunk in stream:
            assert chunk
            done_seen.append(stream.entries_done)
        assert reported[-1] == stream.bytes_done == len(stream)
        assert stream.entries_done == len(entries)
    assert reported == sorted(reported)
    assert len(reported) > len(stream) // (8 * KiB) // 2
    assert done_seen == sorted(done_seen)
    assert 0 < done_seen[len(done_seen) // 2] < len(entries)


def test_write_zip_returns_bytes_written(tmp_path: Path) -> None:
    entries = make_files(tmp_path, SHAPES["mixed"])
    out = io.BytesIO()
    assert write_zip(entries, out) == len(out.getvalue()) == len(ZipStream(entries))


def test_memory_stays_bounded(tmp_path: Path) -> None:
    """A 200 MB session never needs more than one buffer and one chunk at a time."""
    buffer_limit, chunk_size = 4 * MiB, 1 * MiB
    files = {f"series{i // 50}/{i:03d}.dcm": os.urandom(1000) for i in range(150)}
    entries = make_files(tmp_path, files)
    for i, size in enumerate([MiB, 3 * MiB, 4 * MiB, 4 * MiB + 1, 20 * MiB, 40 * MiB]):
        for j in range(i + 1):
            path = tmp_path / f"sparse{i}-{j}.dcm"  # holes read as zeros: 200 MB cheaply
            with path.open("wb") as f:
                f.write(os.urandom(4096))
                f.truncate(size)
            entries.append(BundleEntry(path, path.name, size))
    total = sum(e.size for e in entries)
    assert total > 200 * MiB

    tracemalloc.start()
    try:
        for how in ("iterate", "read 16 KiB", "read 1 MiB"):
            tracemalloc.reset_peak()
            before, _ = tracemalloc.get_traced_memory()
            with ZipStream(entries, buffer_limit=buffer_limit, chunk_size=chunk_size) as stream:
                got = 0
                # Each chunk is dropped before the next is asked for, as a sender done with
                # it would: what remains is the stream's own memory. (A caller that keeps
                # the previous chunk while asking for the next holds one chunk more.)
                if how == "iterate":
                    for chunk in stream:
                        got += len(chunk)
                        del chunk
                else:
                    n = 16 * KiB if how == "read 16 KiB" else MiB
                    while chunk := stream.read(n):
                        got += len(chunk)
                        del chunk
                assert got == len(stream) > total
            _, peak = tracemalloc.get_traced_memory()
            used = peak - before
            assert used < buffer_limit + chunk_size + 256 * KiB, f"{how}: {used / MiB:.1f} MiB"
    finally:
        tracemalloc.stop()


# -- the session changes under our feet ---------------------------------------------------


def _replace(path: Path, how: str) -> None:
    if how == "grown":
        with path.open("ab") as f:
            f.write(b"more")
    elif how == "shrunk":
        os.truncate(path, path.stat().st_size - 1)
    elif how == "deleted":
        path.unlink()
    elif how == "symlink":
        other = path.with_name("elsewhere.dcm")
        shutil.copyfile(path, other)  # same size and content: only the link is wrong
        path.unlink()
        path.symlink_to(other)
    elif how == "fifo":
        path.unlink()
        os.mkfifo(path)  # opening this without O_NONBLOCK would hang (no writer)
    elif how == "directory":
        path.unlink()
        path.mkdir()
    else:
        raise AssertionError(how)


CHANGES = ["grown", "shrunk", "deleted", "symlink", "fifo", "directory"]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("size", [5000, 3 * SMALL_BUFFER], ids=["buffered", "blocks"])
@pytest.mark.parametrize("how", CHANGES)
@pytest.mark.parametrize("when", ["before", "during"])
def test_changed_file_raises(tmp_path: Path, how: str, size: int, when: str) -> None:
    entries = make_files(
        tmp_path,
        {
            "first.dcm": os.urandom(SMALL_BUFFER),
            "second.dcm": os.urandom(SMALL_BUFFER),
            "target.dcm": os.urandom(size),
            "last.dcm": b"last",
        },
    )
    fds = open_fds()
    if when == "before":
        _replace(entries[2].source, how)
    with ZipStream(entries, buffer_limit=SMALL_BUFFER, chunk_size=4 * KiB) as stream:
        got = stream.read(100)
        if when == "during":  # after the first file went out, before the target was opened
            _replace(entries[2].source, how)
        with pytest.raises(SessionChangedError, match=r"target\.dcm"):
            while chunk := stream.read(4 * KiB):
                got += chunk
        target_end = sum(30 + len(e.arcname) + e.size for e in entries[:3])
        assert len(got) < target_end  # the target never went out whole
        with pytest.raises(ValueError, match="broke off"):
            stream.read(1)
    assert open_fds() == fds  # nothing left open


@pytest.mark.timeout(20)
@pytest.mark.parametrize("change", ["content", "grown", "shrunk"])
def test_change_while_a_large_file_is_sent(tmp_path: Path, change: str) -> None:
    size = 5 * SMALL_BUFFER
    entries = make_files(tmp_path, {"big.dcm": os.urandom(size), "after.dcm": b"after"})
    path = entries[0].source
    changed = False

    def meddle(done: int) -> None:
        # Called once the first piece went out: change the part already summed and sent.
        nonlocal changed
        if changed:
            return
        changed = True
        fd = os.open(path, os.O_RDWR)
        try:
            if change == "content":
                old = os.pread(fd, 1, 0)
                os.pwrite(fd, bytes([old[0] ^ 0xFF]), 0)  # same size, different byte
            elif change == "grown":
                os.pwrite(fd, b"x", size)
            else:
                os.ftruncate(fd, size - 1)
        finally:
            os.close(fd)

    with ZipStream(
        entries, buffer_limit=SMALL_BUFFER, chunk_size=4 * KiB, progress=meddle
    ) as stream:
        got = 0
        with pytest.raises(SessionChangedError, match=r"big\.dcm"):
            for chunk in stream:
                got += len(chunk)
        assert changed
        header = 30 + len("big.dcm")
        # The last piece was held back: Java never gets a complete entry of mixed content.
        assert got < header + stored_blocks_len(size)


@requires_java
def test_content_change_never_reaches_java_as_a_complete_entry(tmp_path: Path) -> None:
    size = 5 * SMALL_BUFFER
    entries = make_files(tmp_path, {"big.dcm": os.urandom(size)})
    path = entries[0].source

    flipped: list[int] = []

    def flip_first_byte(done: int) -> None:
        if not flipped:  # the first piece, holding the first byte, went out
            flipped.append(done)
            with path.open("r+b") as f:
                first = f.read(1)
                f.seek(0)
                f.write(bytes([first[0] ^ 1]))

    with (
        ZipStream(
            entries, buffer_limit=SMALL_BUFFER, chunk_size=4 * KiB, progress=flip_first_byte
        ) as stream,
        pytest.raises(SessionChangedError),
    ):
        java_read_stream(stream)
    assert flipped


def test_close_releases_the_open_file(tmp_path: Path) -> None:
    entries = make_files(tmp_path, {"big.dcm": os.urandom(4 * SMALL_BUFFER)})
    fds = open_fds()
    stream = ZipStream(entries, buffer_limit=SMALL_BUFFER, chunk_size=4 * KiB)
    assert stream.read(10_000)  # the large file is open now
    assert open_fds() == fds + 1
    stream.close()
    assert open_fds() == fds
    with pytest.raises(ValueError, match="closed"):
        stream.read(1)


# -- the checker itself -------------------------------------------------------------------


@requires_java
def test_checker_refuses_what_xnat_refuses() -> None:
    """Python's zipfile streaming STORED entries writes data descriptors: Java refuses."""

    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b: bytes) -> int:  # type: ignore[override]
            self.data += b
            return len(b)

    out = Unseekable()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf, zf.open("a.dcm", "w") as member:
        member.write(b"data")
    with zipfile.ZipFile(io.BytesIO(bytes(out.data))) as zf:
        assert zf.infolist()[0].flag_bits & 0x08
    with pytest.raises(AssertionError, match="only DEFLATED entries can have EXT descriptor"):
        java_read_zip(bytes(out.data))


@requires_java
def test_checker_catches_a_bad_crc(tmp_path: Path) -> None:
    entries = make_files(tmp_path, {"a.dcm": b"abcdef"})
    data = bytearray(zip_bytes(entries))
    data[30 + len("a.dcm")] ^= 1  # first data byte
    with pytest.raises(AssertionError, match="invalid entry CRC"):
        java_read_zip(bytes(data))
