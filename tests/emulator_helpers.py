"""Helpers for the emulator's tests: small DICOM objects, zips (good and hand-broken), HTTP."""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import requests
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from xnat_standin import Emulator

USER, PASSWORD = "alice", "s3cret"
IMPORT = "/data/services/import"
ZIP_PARAMS = {
    "import-handler": "DICOM-zip",
    "PROJECT_ID": "P1",
    "SUBJECT_ID": "S01",
    "EXPT_LABEL": "S01_MR1",
}


@dataclass(frozen=True)
class Study:
    """Identifiers for generated objects of one study."""

    uid: str
    patient_name: str = "DOE^JOHN"
    patient_id: str = "PID001"
    comments: str = ""
    description: str = ""


def new_study(**fields: str) -> Study:
    return Study(generate_uid(), **fields)


def dicom_bytes(
    study: Study,
    series: int = 1,
    instance: int = 1,
    *,
    sop_uid: str | None = None,
    with_sop_class: bool = True,
    with_sop_instance: bool = True,
    pixels: int = 16,
    noise: bool = True,
) -> bytes:
    """A small valid MR object (Part 10, explicit VR LE) with random (or zero) pixel bytes."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    if with_sop_class:
        ds.SOPClassUID = MRImageStorage
    if with_sop_instance:
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study.uid
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[study.uid, str(series)])
    ds.SeriesNumber = series
    ds.InstanceNumber = instance
    ds.Modality = "MR"
    ds.SeriesDescription = f"series {series}"
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.StudyDate = "20240105"
    ds.StudyTime = "101112"
    if study.comments:
        ds.PatientComments = study.comments
    if study.description:
        ds.StudyDescription = study.description
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.Rows = ds.Columns = pixels
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelRepresentation = 0
    size = pixels * pixels * 2
    ds.PixelData = os.urandom(size) if noise else bytes(size)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def series_files(
    study: Study, series: int, count: int, prefix: str = ""
) -> list[tuple[str, bytes]]:
    return [
        (f"{prefix}{series:03d}_{n:04d}.dcm", dicom_bytes(study, series, n))
        for n in range(1, count + 1)
    ]


def zip_bytes(entries: Iterable[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip written to a seekable buffer: sizes and CRC in every local header."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return out.getvalue()


class _Unseekable(io.RawIOBase):
    def __init__(self) -> None:
        self.buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.buffer += data
        return len(data)


def streamed_zip(
    entries: Iterable[tuple[str, bytes]], method: int, *, force_zip64: bool = False
) -> bytes:
    """A zip written to an unseekable stream: flag bit 3 and a data descriptor per entry.

    ``force_zip64`` makes Python write 8-byte descriptor sizes even for small entries.
    """
    sink = _Unseekable()
    with zipfile.ZipFile(sink, "w", method) as archive:
        for name, data in entries:
            with archive.open(name, "w", force_zip64=force_zip64) as member:
                member.write(data)
    return bytes(sink.buffer)


def local_entry(
    name: bytes,
    data: bytes,
    *,
    method: int = 0,
    flags: int = 0,
    crc: int | None = None,
    descriptor: bytes | None = None,
    extra: bytes = b"",
    sizes: tuple[int, int] | None = None,
) -> bytes:
    """One hand-made local file header plus data (and optional descriptor)."""
    payload = data
    if method == 8:
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        payload = compressor.compress(data) + compressor.flush()
    real_crc = zlib.crc32(data) if crc is None else crc
    csize, size = sizes if sizes is not None else (len(payload), len(data))
    if flags & 8:
        real_crc = csize = size = 0
    header = struct.pack(
        "<IHHHHHIIIHH",
        0x04034B50,
        20,
        flags,
        method,
        0,
        0x21,
        real_crc,
        csize,
        size,
        len(name),
        len(extra),
    )
    return header + name + extra + payload + (descriptor or b"")


def deflate_descriptor(data: bytes, *, wide: bool = False, signature: bool = True) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    compressed_size = len(compressor.compress(data) + compressor.flush())
    sizes = struct.pack("<QQ" if wide else "<II", compressed_size, len(data))
    head = struct.pack("<I", 0x08074B50) if signature else b""
    return head + struct.pack("<I", zlib.crc32(data)) + sizes


def mixed_deflate(pieces: list[tuple[str, bytes]]) -> bytes:
    """A raw deflate stream of stored blocks and compressed pieces, in the order given.

    Each "deflate" piece is compressed by a fresh compressor and ends in a sync flush (an empty
    stored block, byte-aligned); each "stored" piece is written as stored blocks of at most
    65,535 bytes; an empty final stored block ends the stream. This is how a writer that chooses
    per piece (compress the header, store the noisy pixel data) can emit one entry.
    """
    out = bytearray()
    for kind, data in pieces:
        if kind == "deflate":
            compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
            out += compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
            assert out.endswith(b"\x00\x00\xff\xff")
        else:
            for start in range(0, len(data), 0xFFFF):
                block = data[start : start + 0xFFFF]
                out += struct.pack("<BHH", 0, len(block), len(block) ^ 0xFFFF) + block
    out += struct.pack("<BHH", 1, 0, 0xFFFF)  # BFINAL, stored, empty
    return bytes(out)


def deflated_entry(name: str, data: bytes, raw: bytes, *, descriptor: bool) -> bytes:
    """A DEFLATED local entry holding the raw deflate stream `raw` of `data`."""
    crc = zlib.crc32(data)
    flags = 0x08 if descriptor else 0
    sizes = (0, 0, 0) if descriptor else (crc, len(raw), len(data))
    header = struct.pack(
        "<IHHHHHIIIHH", 0x04034B50, 20, flags, 8, 0, 0x21, *sizes, len(name.encode()), 0
    )
    trailer = struct.pack("<IIII", 0x08074B50, crc, len(raw), len(data)) if descriptor else b""
    return header + name.encode() + raw + trailer


CENTRAL_DIRECTORY_END = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0, 0, 0, 0, 0)


def client(user: str = USER, password: str = PASSWORD) -> requests.Session:
    """A requests session with Basic credentials and a non-browser User-Agent."""
    session = requests.Session()
    session.auth = (user, password)
    session.headers["User-Agent"] = "xnat-drop-tests/1"
    return session


def upload(
    http: requests.Session,
    emu: Emulator,
    body: bytes | Iterator[bytes],
    *,
    content_type: str = "application/zip",
    path: str = IMPORT,
    **params: str,
) -> requests.Response:
    query = {**ZIP_PARAMS, **params}
    return http.post(
        emu.url + path,
        params={k: v for k, v in query.items() if v is not None},
        data=body,
        headers={"Content-Type": content_type},
        timeout=60,
    )


def h3(response: requests.Response) -> str:
    """The message of an XNAT status page."""
    text = response.text
    start = text.index("<h3>") + 4
    return text[start : text.index("</h3>")]


def uris(response: requests.Response) -> list[str]:
    assert response.headers["Content-Type"].startswith("text/uri-list")
    return [line for line in response.text.split("\r\n") if line]
