"""adapters/fs/zipdeflate.py: compressed pieces in parallel, read by Java's ZipInputStream."""

from __future__ import annotations

import io
import os
import threading
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from xnat_drop.adapters.fs import zipdeflate
from xnat_drop.adapters.fs.beneath import Dir
from xnat_drop.adapters.fs.zipdeflate import DeflatingZip
from xnat_drop.adapters.fs.zipstream import BundleEntry
from xnat_drop.core.errors import SessionChangedError

from zipcheck import LocalHeader, java_read_stream, java_read_zip, local_headers, requires_java

KiB, MiB = 1 << 10, 1 << 20


def image(rows: int, seed: int) -> bytes:
    """A 12-bit phantom plus noise, as scanners write MR images: it compresses, not much."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:rows, :rows]
    inside = ((x - rows / 2) ** 2 + (y - rows / 2) ** 2) < (rows / 2.5) ** 2
    pixels = np.where(inside, 1800, 40) + rng.normal(0, 20, (rows, rows))
    return np.clip(pixels, 0, 4095).astype("<u2").tobytes()


FILES = {
    "empty.dcm": b"",
    "one.dcm": b"x",
    "mr/IM0001.dcm": image(256, 1),
    "mr/IM0002.dcm": image(256, 2),
    "noise.dcm": os.urandom(200 * KiB),  # does not compress: stored blocks instead
    "large/multiframe.dcm": image(1024, 3) * 3,  # 6 MiB: several pieces
    "séance/é.dcm": b"accent" * 100,
}


def make(tmp_path: Path, files: dict[str, bytes] = FILES) -> list[BundleEntry]:
    entries = []
    for name, data in files.items():
        path = tmp_path / "s" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        entries.append(BundleEntry(name, name, len(data), 0))
    return entries


def zipped(tmp_path: Path, mode: str, **kwargs: object) -> tuple[bytes, DeflatingZip]:
    entries = make(tmp_path)
    stream = DeflatingZip(entries, root=Dir.open(tmp_path / "s"), mode=mode, **kwargs)  # type: ignore[arg-type]
    with stream:
        return b"".join(stream), stream


@requires_java
@pytest.mark.parametrize("mode", ["deflate", "auto"])
@pytest.mark.parametrize("workers", [1, 3])
def test_round_trip_through_java_and_zipfile(tmp_path: Path, mode: str, workers: int) -> None:
    data, stream = zipped(tmp_path, mode, workers=workers, piece=256 * KiB)
    want = [(name, len(body), zlib.crc32(body)) for name, body in FILES.items()]
    assert java_read_zip(data) == want
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        assert [(i.filename, i.file_size, i.CRC) for i in zf.infolist()] == want
        methods = {i.filename: i.compress_type for i in zf.infolist()}
    headers = local_headers(data)
    # A file of one piece that is not compressed goes STORED, its CRC in its header, as
    # ZipStream sends it; every other entry is DEFLATED with a descriptor.
    for h in headers:
        assert (h.method, h.descriptor) in ((0, False), (8, True))
        assert methods[h.name.decode()] == h.method
    assert methods["empty.dcm"] == zipfile.ZIP_STORED
    assert methods["large/multiframe.dcm"] == zipfile.ZIP_DEFLATED  # several pieces
    if mode == "deflate":
        assert all(m == zipfile.ZIP_DEFLATED for n, m in methods.items() if n != "empty.dcm")
    assert stream.bytes_done == len(data)
    assert stream.entries_done == len(FILES)
    assert stream.pace.raw_total == sum(len(b) for b in FILES.values())
    if mode == "deflate":
        assert stream.pace.compressed_total == stream.pace.raw_total
        assert len(data) < 0.8 * stream.pace.raw_total  # images compress
    noise = next(h for h in headers if h.name == b"noise.dcm")
    assert noise.compressed_size <= noise.size + 5 * 4 + 2  # stored blocks, never larger


def test_pieces_are_compressed_on_several_threads_in_parallel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: set[str] = set()
    real = zipdeflate._deflate

    def watched(piece: bytearray, level: int) -> tuple[bytes, float]:
        seen.add(threading.current_thread().name)
        time.sleep(0.01)  # long enough for the other thread to take the next piece
        return real(piece, level)

    monkeypatch.setattr(zipdeflate, "_deflate", watched)
    zipped(tmp_path, "deflate", workers=3, piece=64 * KiB)
    assert len(seen) >= 2
    assert all(name.startswith("xnat-drop-deflate") for name in seen)


def test_a_file_rewritten_while_it_is_read_never_goes_out_whole(tmp_path: Path) -> None:
    entries = make(tmp_path)
    target = tmp_path / "s" / "large" / "multiframe.dcm"
    struck: list[int] = []

    def meddle(done: int) -> None:
        # Reading runs at most 2 x workers pieces ahead of what went out: the end of the
        # file is not read yet.
        if not struck and done > MiB:
            struck.append(done)
            with target.open("r+b") as f:
                f.write(b"\xff\xff")

    stream = DeflatingZip(
        entries,
        root=Dir.open(tmp_path / "s"),
        mode="deflate",
        workers=1,
        piece=MiB,
        progress=meddle,
    )
    got = bytearray()
    with pytest.raises(SessionChangedError, match="multiframe"), stream:
        for chunk in stream:
            got += chunk
    assert struck
    # Java reads no complete entry of it: its final block and descriptor never went out.
    assert b"large/multiframe.dcm" in got
    assert not any(h.name == b"large/multiframe.dcm" for h in _complete(bytes(got)))


def _complete(data: bytes) -> list[LocalHeader]:
    try:
        return list(local_headers(data))
    except (AssertionError, zlib.error):
        # The walk stops at the cut entry: the ones before it were whole.
        cut = data.rfind(b"PK\x03\x04")
        return list(local_headers(data[:cut])) if cut > 0 else []


def test_a_vanished_file_raises(tmp_path: Path) -> None:
    entries = make(tmp_path)
    (tmp_path / "s" / "one.dcm").unlink()
    with (
        DeflatingZip(entries, root=Dir.open(tmp_path / "s"), mode="auto") as stream,
        pytest.raises(SessionChangedError, match="vanished"),
    ):
        b"".join(stream)


def test_memory_stays_bounded_by_the_pieces_in_flight(tmp_path: Path) -> None:
    """However large the session, at most 2 x workers pieces wait for the threads."""
    files = {f"f{i:03}.dcm": image(512, i) for i in range(40)}  # 20 MiB
    entries = make(tmp_path, files)
    high = 0
    stream = DeflatingZip(entries, root=Dir.open(tmp_path / "s"), mode="deflate", workers=2)
    tracemalloc.start()
    try:
        with stream:
            for _chunk in stream:
                high = max(high, tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert high < 10 * MiB  # 20 MiB went through


@requires_java
@pytest.mark.slow
def test_more_than_4_gib_through_java(tmp_path: Path) -> None:
    """An entry past 4 GiB: Java then reads 8-byte sizes in its descriptor."""
    folder = tmp_path / "s"
    folder.mkdir()
    with (folder / "huge.dcm").open("wb") as f:
        f.write(os.urandom(MiB))
        f.truncate(0xFFFFFFFF + 2 * MiB)
    (folder / "after.dcm").write_bytes(b"after")
    entries = [
        BundleEntry("huge.dcm", "huge.dcm", 0xFFFFFFFF + 2 * MiB),
        BundleEntry("after.dcm", "after.dcm", 5),
    ]
    with DeflatingZip(entries, root=Dir.open(folder), mode="deflate", workers=2) as stream:
        got = java_read_stream(stream)
    assert [(name, size) for name, size, _ in got] == [
        ("huge.dcm", 0xFFFFFFFF + 2 * MiB),
        ("after.dcm", 5),
    ]


def test_the_central_directory_goes_out_in_pieces(tmp_path: Path) -> None:
    """3,000 small files sent as they are (stored): the central directory (about 200 KB) is
    handed out a piece at a time, never built whole."""
    files = {f"s{i % 3}/IM{i:05d}.dcm": bytes([i % 251]) * 40 for i in range(3000)}
    entries = make(tmp_path, files)
    piece = 16 * KiB
    stream = DeflatingZip(
        entries, root=Dir.open(tmp_path / "s"), mode="stored", workers=1, piece=piece
    )
    with stream:
        chunks = list(stream)
    assert max(len(c) for c in chunks) < 2 * piece
    with zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as archive:
        assert len(archive.namelist()) == 3000
        assert archive.read("s1/IM00004.dcm") == bytes([4]) * 40
