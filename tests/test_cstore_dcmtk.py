"""The C-STORE adapter (adapters/dicom/cstore.py) against DCMTK's `storescp`, a receiver
written by others: what it stored is compared with the source, element by element.

Independent of the stand-in: the routing line arrives in PatientComments (read back with
pydicom and with DCMTK's own `dcmdump`), the pixel data and every other element are the
source's, a Deflated file arrives inflated, and the user's files stay byte-identical.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

pytest.importorskip("pynetdicom", reason="the cstore extra (pynetdicom) is missing")
if shutil.which("storescp") is None or shutil.which("dcmdump") is None:
    pytest.skip("DCMTK (storescp, dcmdump) is not installed", allow_module_level=True)

from xnat_drop.adapters.dicom import cstore
from xnat_drop.core.model import FileFacts, FileKind

from data import STUDY_133, copy_study

ROUTE = "Project: P1 Subject: S01 Session: S01_MR1 AA: false"
AE = "DCMTK_SCP"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """DCMTK's storescp on a free loopback port, storing into a folder of its own."""
    received = tmp_path / "received"
    received.mkdir()
    port = free_port()
    log = tmp_path / "storescp.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["storescp", "-aet", AE, "-od", str(received), "+B", "-fe", ".dcm", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, (
                f"storescp exited: {proc.stderr.read() if proc.stderr else ''}"
            )
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "storescp did not listen within 10 s"
            time.sleep(0.05)
        yield port, received
    finally:
        proc.terminate()
        proc.wait(10)


def facts(folder: Path, files: list[Path]) -> tuple[FileFacts, ...]:
    return tuple(
        FileFacts(p.relative_to(folder).as_posix(), p.stat().st_size, FileKind.DICOM) for p in files
    )


def send(
    port: int, folder: Path, files: tuple[FileFacts, ...], comment: str | None
) -> tuple[cstore.Sent, list[int]]:
    counts: list[int] = []
    receiver = cstore.Receiver("127.0.0.1", port, called_ae=AE, timeout=10)
    sent = cstore.store(
        receiver, folder, files, cstore.contexts(folder, files), comment, counts.append
    )
    return sent, counts


def by_uid(paths: list[Path]) -> dict[str, pydicom.Dataset]:
    found = {}
    for path in paths:
        dataset = pydicom.dcmread(path)
        found[str(dataset.SOPInstanceUID)] = dataset
    return found


def digests(paths: list[Path]) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def test_storescp_gets_the_routing_line_and_otherwise_the_source_element_for_element(
    storescp: tuple[int, Path], tmp_path: Path
) -> None:
    port, received = storescp
    folder = tmp_path / "session"
    sources = copy_study(folder, STUDY_133)
    before = digests(sources)
    sent, counts = send(port, folder, facts(folder, sources), ROUTE)
    assert (sent.stored, counts) == (4, [1, 2, 3, 4])
    stored = sorted(received.glob("*.dcm"))
    assert len(stored) == 4
    got, source = by_uid(stored), by_uid(sources)
    assert got.keys() == source.keys()
    for uid, dataset in got.items():
        original = source[uid]
        assert dataset.PatientComments == ROUTE
        assert dataset.PixelData == original.PixelData
        ours = {e.tag: e.value for e in dataset if e.keyword != "PatientComments"}
        theirs = {e.tag: e.value for e in original if e.keyword != "PatientComments"}
        assert ours == theirs  # every other top-level element as in the source
    dump = subprocess.run(
        ["dcmdump", "+P", "PatientComments", str(stored[0])],
        capture_output=True,
        text=True,
        check=True,
    )
    assert ROUTE in dump.stdout  # DCMTK's own reader agrees
    assert digests(sources) == before  # the user's files are never written


def test_without_a_comment_the_objects_arrive_as_they_are(
    storescp: tuple[int, Path], tmp_path: Path
) -> None:
    port, received = storescp
    folder = tmp_path / "session"
    sources = copy_study(folder, STUDY_133)
    send(port, folder, facts(folder, sources), None)
    got, source = by_uid(sorted(received.glob("*.dcm"))), by_uid(sources)
    for uid, dataset in got.items():
        assert dataset.get("PatientComments") == source[uid].get("PatientComments")
        assert {e.tag: e.value for e in dataset} == {e.tag: e.value for e in source[uid]}


def test_a_deflated_file_arrives_inflated_with_the_same_pixels(
    storescp: tuple[int, Path], tmp_path: Path
) -> None:
    deflated = get_testdata_file("image_dfl.dcm")
    if deflated is None:
        pytest.skip("pydicom's test file image_dfl.dcm is not available")
    folder = tmp_path / "session"
    folder.mkdir()
    source = folder / "image_dfl.dcm"
    shutil.copyfile(str(deflated), source)
    original = pydicom.dcmread(source)
    assert original.file_meta.TransferSyntaxUID == cstore.DEFLATED
    port, received = storescp
    send(port, folder, facts(folder, [source]), ROUTE)
    [stored] = sorted(received.glob("*.dcm"))
    arrived = pydicom.dcmread(stored)
    assert arrived.file_meta.TransferSyntaxUID == cstore.EXPLICIT_LE
    assert arrived.PixelData == original.PixelData
    assert arrived.PatientComments == ROUTE
