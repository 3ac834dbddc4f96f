"""The C-STORE adapter (adapters/dicom/cstore.py) against DCMTK's `storescp`, a receiver
written by others: what it stored is compared with the source, element by element.

Independent of the stand-in: storescp runs on a free loopback port and writes each object
exactly as it came over the wire (`+B`), one file per C-STORE (`+uf`: a repeat is not
overwritten). The routing line arrives in PatientComments (read back with pydicom and with
DCMTK's own `dcmdump`), the pixel data and every other element are the source's, a Deflated
file arrives inflated, and the user's files stay byte-identical.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileDataset
from pydicom.tag import BaseTag

pytest.importorskip("pynetdicom", reason="the cstore extra (pynetdicom) is missing")
if not all(shutil.which(tool) for tool in ("storescp", "dcmdump", "dcmconv")):
    pytest.skip("DCMTK (storescp, dcmdump, dcmconv) is not installed", allow_module_level=True)

from xnat_drop.adapters.dicom import cstore
from xnat_drop.core.model import FileFacts, FileKind

from data import STUDY_133, copy_study

ROUTE = "Project: P1 Subject: S01 Session: S01_MR1 AA: false"
AE = "XNAT_TEST"
COMMENTS = BaseTag(0x00104000)  # PatientComments


@dataclass(frozen=True)
class Scp:
    """A running storescp: its port, the folder it stores into and its log."""

    port: int
    received: Path
    log: Path

    def objects(self) -> list[Path]:
        return sorted(self.received.iterdir())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(proc: subprocess.Popen[bytes], port: int, seconds: float = 10.0) -> bool:
    """Whether `proc` accepts connections on `port` within `seconds` (False: it exited)."""
    deadline = time.monotonic() + seconds
    while proc.poll() is None and time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def scp(tmp_path: Path) -> Iterator[Scp]:
    """DCMTK's storescp on a free loopback port, storing into a folder of its own."""
    received = tmp_path / "received"
    received.mkdir()
    log = tmp_path / "storescp.log"
    for _ in range(3):  # another process may take the free port before storescp binds it
        port = free_port()
        command = ["storescp", "-v", "-dhl", "-aet", AE, "-od", str(received)]
        command += ["+B", "+uf", "-fe", ".dcm", str(port)]
        with log.open("wb") as out:
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            if listening(proc, port):
                yield Scp(port, received, log)
                return
        finally:
            stop(proc)
    pytest.fail(f"storescp did not listen: {log.read_text(errors='replace')}")


def send(scp: Scp, folder: Path, paths: list[Path], comment: str | None) -> tuple[Any, ...]:
    """C-STORE `paths` (below `folder`) to `scp`: what store() returned and the callback's
    counts."""
    files = tuple(
        FileFacts(p.relative_to(folder).as_posix(), p.stat().st_size, FileKind.DICOM) for p in paths
    )
    counts: list[int] = []
    receiver = cstore.Receiver("127.0.0.1", scp.port, called_ae=AE, timeout=10)
    sent = cstore.store(
        receiver, folder, files, cstore.contexts(folder, files), comment, counts.append
    )
    return sent, counts


def by_uid(paths: list[Path]) -> dict[str, FileDataset]:
    found = {str(d.SOPInstanceUID): d for d in map(pydicom.dcmread, paths)}
    assert len(found) == len(paths), "two files hold the same SOP Instance UID"
    return found


def elements(dataset: Dataset, *, but: BaseTag | None = None) -> dict[BaseTag, tuple[str, Any]]:
    """The top-level elements (file meta aside: storescp writes its own) as (VR, value)."""
    return {e.tag: (e.VR, e.value) for e in dataset if e.tag.group != 0x0002 and e.tag != but}


def digests(paths: list[Path]) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def test_storescp_gets_the_routing_line_and_otherwise_the_source_element_for_element(
    scp: Scp, tmp_path: Path
) -> None:
    folder = tmp_path / "session"
    sources = copy_study(folder, STUDY_133)
    before = digests(sources)
    assert send(scp, folder, sources, ROUTE) == (cstore.Sent(4, 0), [1, 2, 3, 4])
    stored = scp.objects()
    assert len(stored) == 4  # one file per C-STORE storescp took
    got, source = by_uid(stored), by_uid(sources)
    assert got.keys() == source.keys()
    for uid, arrived in got.items():
        original = source[uid]
        assert arrived.PatientComments == ROUTE
        assert arrived.PixelData == original.PixelData and len(original.PixelData) > 0
        assert arrived.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert elements(arrived, but=COMMENTS) == elements(original, but=COMMENTS)
    # DCMTK's own reader finds the line in every object
    dump = subprocess.run(
        ["dcmdump", "+P", "PatientComments", *map(str, stored)],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [line for line in dump.stdout.splitlines() if line]
    assert len(lines) == 4 and all(f"LT [{ROUTE}]" in line for line in lines), dump.stdout
    assert digests(sources) == before  # the user's files are never written


def test_a_deflated_file_arrives_inflated_with_the_same_pixels(scp: Scp, tmp_path: Path) -> None:
    found = get_testdata_file("image_dfl.dcm", download=False)
    if not isinstance(found, str):
        pytest.skip("pydicom's Deflated test file image_dfl.dcm is not available offline")
    folder = tmp_path / "session"
    folder.mkdir()
    source = folder / "image_dfl.dcm"
    shutil.copyfile(found, source)
    assert pydicom.dcmread(source).file_meta.TransferSyntaxUID == cstore.DEFLATED
    # The reference: the source inflated by DCMTK (dcmconv), not by pydicom as the sender does.
    inflated = tmp_path / "inflated.dcm"
    subprocess.run(["dcmconv", "+te", str(source), str(inflated)], check=True)
    reference = pydicom.dcmread(inflated)
    assert reference.file_meta.TransferSyntaxUID == cstore.EXPLICIT_LE
    before = digests([source])
    assert send(scp, folder, [source], ROUTE) == (cstore.Sent(1, 0), [1])
    [stored] = scp.objects()
    arrived = pydicom.dcmread(stored)
    assert arrived.file_meta.TransferSyntaxUID == cstore.EXPLICIT_LE
    size = reference.Rows * reference.Columns * reference.SamplesPerPixel
    assert len(reference.PixelData) == size * reference.BitsAllocated // 8
    assert arrived.PixelData == reference.PixelData
    assert arrived.PatientComments == ROUTE
    assert elements(arrived, but=COMMENTS) == elements(reference, but=COMMENTS)
    assert digests([source]) == before


def test_without_a_comment_patient_comments_arrive_as_in_the_source(
    scp: Scp, tmp_path: Path
) -> None:
    """comment=None leaves PatientComments alone: absent stays absent, a value stays as is."""
    folder = tmp_path / "session"
    sources = copy_study(folder, STUDY_133)
    noted = pydicom.dcmread(sources[0])  # the study has no comments: give one file some
    noted.PatientComments = "Contrast allergy"
    noted.save_as(sources[0])
    assert send(scp, folder, sources, None) == (cstore.Sent(4, 0), [1, 2, 3, 4])
    got, source = by_uid(scp.objects()), by_uid(sources)
    assert got.keys() == source.keys()
    comments = {uid: d.get("PatientComments") for uid, d in got.items()}
    assert sorted(comments.values(), key=str) == ["Contrast allergy", None, None, None]
    assert comments == {uid: d.get("PatientComments") for uid, d in source.items()}
    for uid, arrived in got.items():
        assert elements(arrived) == elements(source[uid])
