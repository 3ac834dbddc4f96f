"""service/zipbody.py: which body an upload gets, what it remembers of the link."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from xnat_drop.adapters.fs.zipdeflate import DeflatingZip
from xnat_drop.adapters.fs.zipstream import ZipStream
from xnat_drop.core import linkpace
from xnat_drop.core.linkpace import Pace, ZipConfig
from xnat_drop.core.model import FileFacts, FileKind
from xnat_drop.service.zipbody import TimedStream, UploadEntries, ZipBodies

MiB = 1 << 20


def fast_link() -> Pace:
    """What a large upload over a fast link leaves behind."""
    pace = Pace(workers=2)
    for _ in range(100):
        pace = linkpace.taken(pace, MiB)
        pace = linkpace.packed(pace, MiB, MiB // 2, MiB / 45e6)
        pace = linkpace.sent(pace, MiB // 2, MiB / 2 / 1e9)
    return pace


@pytest.fixture
def files(tmp_path: Path) -> list[FileFacts]:
    folder = tmp_path / "E1"
    folder.mkdir()
    facts = []
    for i in range(3):
        data = bytes(range(256)) * (40 * (i + 1))
        (folder / f"IM{i}.dcm").write_bytes(data)
        facts.append(FileFacts(f"IM{i}.dcm", len(data), FileKind.DICOM))
    return facts


def bodies(tmp_path: Path, files: list[FileFacts], **kwargs: object) -> ZipBodies:
    config = kwargs.pop("config", ZipConfig())
    version = kwargs.pop("version", "1.8.10")
    seen: list[tuple[int, float, str]] = []
    return ZipBodies(
        UploadEntries(tuple(files)),
        tmp_path / "E1",
        config,  # type: ignore[arg-type]
        version,  # type: ignore[arg-type]
        progress=lambda done, rate, packing: seen.append((done, rate, packing)),
        monotonic=lambda: 0.0,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("config", "version", "last", "kind"),
    [
        (ZipConfig("stored"), "1.8.10", None, ZipStream),
        (ZipConfig("auto"), "1.8.10", None, DeflatingZip),  # the link is not known yet
        (ZipConfig("auto"), "1.8.10", "fast", TimedStream),  # a fast link: exact length
        (ZipConfig("deflate"), "1.8.10", "fast", DeflatingZip),  # asked for: always
        (ZipConfig("auto"), "1.7.5", None, ZipStream),  # no chunked upload before 1.7.6
        (ZipConfig("deflate"), "", None, ZipStream),  # nor to an XNAT that will not say
    ],
)
def test_the_body_fits_the_config_the_server_and_the_link(
    tmp_path: Path,
    files: list[FileFacts],
    config: ZipConfig,
    version: str,
    last: str | None,
    kind: type,
) -> None:
    made = bodies(
        tmp_path, files, config=config, version=version, last=fast_link() if last else None
    )
    body = made()
    try:
        assert type(body) is kind
        data = b"".join(body)
    finally:
        made.close()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert [i.filename for i in zf.infolist()] == [f.path for f in files]
        assert zf.testzip() is None
    assert made.bytes_sent == len(data)
    assert made.packing().startswith("stored" if kind is not DeflatingZip else config.compression)


def test_a_small_upload_is_not_taken_as_a_measure_of_the_link(
    tmp_path: Path, files: list[FileFacts]
) -> None:
    remembered: list[Pace] = []
    made = bodies(tmp_path, files, remember=remembered.append)
    b"".join(made())
    made.close()
    assert remembered == []  # a few KiB all went into the socket buffers at once


def test_upload_entries_are_made_on_demand(files: list[FileFacts]) -> None:
    entries = UploadEntries(tuple(files))
    assert len(entries) == 3
    assert entries[1].source == entries[1].arcname == "IM1.dcm"
    assert entries[1].size == files[1].size
    assert [e.arcname for e in entries[1:]] == ["IM1.dcm", "IM2.dcm"]
