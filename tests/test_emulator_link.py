"""The stand-in as the far end of a link: a receive-rate limit, chunked streamed zips, DEFLATED
entries of every shape (xnat-api.md §3.2 on chunked bodies, §4 on ZipInputStream).

A client that streams a zip as it writes it (Python's zipfile on an unseekable stream, the
daemon with compression) sends it chunked, without a Content-Length, as DEFLATED entries with a
data descriptor; XNAT >= 1.7.6 accepts that for ``application/zip`` and nothing older does.
"""

from __future__ import annotations

import functools
import time
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from xnat_standin import Emulator
from xnat_standin.cli import build_parser
from xnat_standin.httpbody import ReceiveRate
from xnat_standin.zipreader import ZipStreamReader

from emulator_helpers import (
    PASSWORD,
    USER,
    client,
    deflated_entry,
    dicom_bytes,
    h3,
    mixed_deflate,
    new_study,
    series_files,
    streamed_zip,
    upload,
    zip_bytes,
)

MODES = {
    "faithful": {},
    "fast": {"fast": True},
    "headers-only": {"fast": True, "headers_only": True},
}
NO_LENGTH = (
    "In-body File posts must include the file directly as the body of the message. In this "
    "case, the request entity size is -1 but the media type is not application/zip (i.e. "
    "streaming compressed upload)."
)


def chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """A generator body: requests sends it chunked, without Content-Length."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def stand_in(tmp_path: Path, name: str, **kwargs: object) -> Emulator:
    return Emulator(tmp_path / name, users={USER: PASSWORD}, projects=["P1"], **kwargs)  # type: ignore[arg-type]


def stored(emulator: Emulator) -> dict[str, tuple[bytes, int]]:
    """Each stored object by name: the bytes on disk and the size the stand-in recorded."""
    found = {}
    for row in emulator.store.rows():
        folder = emulator.store.row_dir(row) / "SCANS"
        for series in row.scans.values():
            for name, entry in series.files.items():
                path = folder / series.id / "DICOM" / name
                found[name] = (path.read_bytes(), entry.size)
    return found


def assert_stored_as_sent(mode: str, emulator: Emulator, entries: list[tuple[str, bytes]]) -> None:
    held = stored(emulator)
    assert sorted(held) == sorted(name.rsplit("/", 1)[-1] for name, _ in entries)
    for name, data in entries:
        on_disk, size = held[name.rsplit("/", 1)[-1]]
        assert size == len(data)
        if mode == "headers-only":
            assert len(on_disk) < len(data) and data.startswith(on_disk)
        else:
            assert on_disk == data


def mixed_entries(count: int, pixels: int = 128) -> list[tuple[str, bytes, bytes]]:
    """(name, object, raw deflate stream): the header deflated, the pixel data stored in
    pieces, with compressed zeros in between."""
    study = new_study()
    found = []
    for n in range(1, count + 1):
        data = dicom_bytes(study, 1, n, pixels=pixels)
        head, body = data[:-30000], data[-30000:]
        raw = mixed_deflate(
            [
                ("deflate", head),
                ("stored", body[:10000]),
                ("deflate", body[10000:20000]),
                ("stored", body[20000:]),
                ("deflate", b""),
            ]
        )
        found.append((f"series/IM{n:04d}.dcm", data, raw))
    return found


# -- the receive-rate limit ------------------------------------------------------------------


def test_receive_rate_is_an_option_in_mb_per_second(tmp_path: Path):
    parser = build_parser()
    assert parser.parse_args([]).receive_rate is None
    assert parser.parse_args(["--receive-rate", "12"]).receive_rate == 12.0
    for bad in ("0", "-1", "fast", "nan", "inf"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--receive-rate", bad])
    assert stand_in(tmp_path, "a").link is None
    link = stand_in(tmp_path, "b", receive_rate=12).link
    assert link is not None and link.rate == 12e6
    with pytest.raises(ValueError, match="> 0"):
        ReceiveRate(0)


def test_the_token_bucket_keeps_to_its_rate():
    bucket = ReceiveRate(4e6)  # 4 MB/s, reads of at most 80 kB
    started = time.monotonic()
    taken = 0
    while taken < 2_000_000:
        taken += bucket.take(1 << 20)
    elapsed = time.monotonic() - started
    assert bucket.take(1 << 20) == bucket.burst == 80_000
    assert 0.45 <= elapsed <= 0.9  # 2 MB at 4 MB/s, less the burst it may run ahead


def test_a_20_mb_upload_is_slowed_to_about_the_set_rate(tmp_path: Path):
    study = new_study()
    entries = [(f"IM{n:03d}.dcm", dicom_bytes(study, 1, n, pixels=1024)) for n in range(1, 11)]
    body = zip_bytes(entries, zipfile.ZIP_STORED)
    assert len(body) > 20_000_000
    seconds = {}
    for name, rate in (("unlimited", None), ("limited", 20.0)):
        with stand_in(tmp_path, name, fast=True, headers_only=True, receive_rate=rate) as emu:
            with client() as http:
                started = time.monotonic()
                response = upload(http, emu, body)
                seconds[name] = time.monotonic() - started
            assert response.status_code == 200
            assert emu.prearchive()[0].file_count == 10
    expected = len(body) / 20e6  # 1.05 s
    assert expected * 0.9 <= seconds["limited"] <= expected * 1.6, seconds
    assert seconds["unlimited"] < expected * 0.6, seconds


def test_the_limit_applies_to_chunked_bodies_too(tmp_path: Path):
    study = new_study()
    entries = [(f"IM{n}.dcm", dicom_bytes(study, 1, n, pixels=512)) for n in range(1, 5)]
    body = streamed_zip(entries, zipfile.ZIP_DEFLATED)  # 2 MB of noise: hardly smaller
    rate = len(body) / 0.5 / 1e6  # half a second's worth
    with stand_in(tmp_path, "x", receive_rate=rate) as emu, client() as http:
        started = time.monotonic()
        response = upload(http, emu, chunks(body, 4096))
        elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert 0.4 <= elapsed <= 1.5


# -- chunked streamed zips --------------------------------------------------------------------


@pytest.mark.parametrize("mode", sorted(MODES))
def test_a_chunked_zip_streamed_by_python_zipfile_is_imported(tmp_path: Path, mode: str):
    study = new_study()
    entries = [(f"s/IM{n:03d}.dcm", dicom_bytes(study, 1, n, pixels=256)) for n in range(1, 6)]
    body = streamed_zip(entries, zipfile.ZIP_DEFLATED)  # unseekable: flag bit 3, descriptors
    assert body[6] & 0x08 and body[8] == 8
    with stand_in(tmp_path, mode, **MODES[mode]) as emu, client() as http:
        response = upload(http, emu, chunks(body, 1000))
        assert response.status_code == 200, response.text
        assert response.request.headers.get("Transfer-Encoding") == "chunked"
        assert "Content-Length" not in response.request.headers
        assert emu.requests()[-1].body_bytes == len(body)
        assert_stored_as_sent(mode, emu, entries)


@pytest.mark.parametrize(("version", "accepted"), [("1.7.5", False), ("1.7.6", True)])
def test_chunked_zips_are_refused_before_1_7_6(tmp_path: Path, version: str, accepted: bool):
    body = streamed_zip(series_files(new_study(), 1, 2), zipfile.ZIP_DEFLATED)
    with stand_in(tmp_path, version, version=version) as emu, client() as http:
        response = upload(http, emu, chunks(body))
        sized = upload(http, emu, body, EXPT_LABEL="S01_MR2")  # with a Content-Length: always
        assert sized.status_code == 200
        if accepted:
            assert response.status_code == 200
        else:
            assert (response.status_code, h3(response)) == (400, NO_LENGTH)
        assert len(emu.prearchive()) == (2 if accepted else 1)


# -- DEFLATED entries of every shape, in every mode -------------------------------------------


def test_mixed_stored_and_compressed_blocks_inflate_to_the_object():
    for name, data, raw in mixed_entries(2):
        assert zlib.decompressobj(-zlib.MAX_WBITS).decompress(raw) == data
        for descriptor in (False, True):
            reader = ZipStreamReader(
                _Chunks(deflated_entry(name, data, raw, descriptor=descriptor), 777)
            )
            entry = reader.next_entry()
            assert entry is not None and entry.name == name
            read = b"".join(iter(functools.partial(reader.read, 5000), b""))
            assert read == data
            assert reader.next_entry() is None


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("shape", ["mixed", "mixed+descriptor", "deflated", "streamed"])
def test_every_mode_reads_deflated_entries(tmp_path: Path, mode: str, shape: str):
    found = mixed_entries(3)
    entries = [(name, data) for name, data, _ in found]
    if shape.startswith("mixed"):
        body = b"".join(
            deflated_entry(name, data, raw, descriptor=shape.endswith("descriptor"))
            for name, data, raw in found
        )
    elif shape == "deflated":
        body = zip_bytes(entries, zipfile.ZIP_DEFLATED)
    else:
        body = streamed_zip(entries, zipfile.ZIP_DEFLATED)
    with stand_in(tmp_path, mode, **MODES[mode]) as emu, client() as http:
        assert upload(http, emu, chunks(body, 3000)).status_code == 200
        assert_stored_as_sent(mode, emu, entries)


def test_a_broken_mixed_stream_is_refused_alike_in_every_mode(tmp_path: Path):
    (name, data, raw), *_ = mixed_entries(1)
    body = deflated_entry(name, data, raw[:-5], descriptor=True)  # no final block
    answers = set()
    for mode, kwargs in MODES.items():
        with stand_in(tmp_path, mode, **kwargs) as emu, client() as http:
            response: requests.Response = upload(http, emu, body)
            answers.add((response.status_code, h3(response)))
            assert emu.prearchive() == []
    assert len(answers) == 1
    assert next(iter(answers))[0] == 400


class _Chunks:
    """A readable that hands out at most `size` bytes per read."""

    def __init__(self, data: bytes, size: int) -> None:
        self._data = data
        self._size = size

    def read(self, size: int, /) -> bytes:
        piece = self._data[: min(size, self._size)]
        self._data = self._data[len(piece) :]
        return piece
