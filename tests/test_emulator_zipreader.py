"""The stand-in's zip reader agrees with Java's ZipInputStream, which XNAT uses (§4).

Each hand-made zip is read by the emulator's reader and, where a JDK is installed, by the real
``java.util.zip.ZipInputStream`` (tests/ZipCheck.java): both must accept the same entries or
both refuse, with the same message.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import pytest

from xnat_standin.zipreader import ZipReadError, ZipStreamReader

from emulator_helpers import (
    CENTRAL_DIRECTORY_END,
    deflate_descriptor,
    deflated_entry,
    local_entry,
    mixed_deflate,
    streamed_zip,
    zip_bytes,
)
from zipcheck import java_read_zip, requires_java

DATA = bytes(range(256)) * 40
SMALL = b"hello DICOM" * 3
MIXED = mixed_deflate([("deflate", DATA[:5000]), ("stored", DATA[5000:]), ("deflate", SMALL)])

CASES = {
    "seekable-deflated": zip_bytes([("a.dcm", DATA), ("dir/b.dcm", SMALL)]),
    "seekable-stored": zip_bytes([("a.dcm", DATA), ("b.dcm", SMALL)], zipfile.ZIP_STORED),
    "streamed-deflated": streamed_zip([("a.dcm", DATA), ("b.dcm", SMALL)], zipfile.ZIP_DEFLATED),
    "streamed-stored": streamed_zip([("a.dcm", DATA)], zipfile.ZIP_STORED),
    "stored-descriptor-after-good-entries": local_entry(b"a.dcm", DATA)
    + local_entry(
        b"b.dcm",
        SMALL,
        flags=8,
        descriptor=struct.pack("<III", zlib.crc32(SMALL), len(SMALL), len(SMALL)),
    ),
    "deflated-descriptor-without-signature": local_entry(
        b"a.dcm", DATA, method=8, flags=8, descriptor=deflate_descriptor(DATA, signature=False)
    )
    + local_entry(b"b.dcm", SMALL),
    "deflated-zip64-descriptor-small-entry": local_entry(
        b"a.dcm", DATA, method=8, flags=8, descriptor=deflate_descriptor(DATA, wide=True)
    ),
    # Stored blocks between compressed pieces that each end in a sync flush (one entry).
    "deflated-mixed-blocks": deflated_entry("a.dcm", DATA + SMALL, MIXED, descriptor=False)
    + deflated_entry("b.dcm", DATA + SMALL, MIXED, descriptor=True),
    "encrypted": local_entry(b"a.dcm", SMALL, flags=1),
    "malformed-name": local_entry(b"\xc3\x28.dcm", SMALL),
    "bzip2-method": local_entry(b"a.dcm", SMALL, method=12),
    "stored-crc-mismatch": local_entry(b"a.dcm", SMALL, crc=1234),
    "deflated-size-mismatch": local_entry(
        b"a.dcm", DATA, method=8, sizes=(len(zlib.compress(DATA)) - 6, len(DATA) + 1)
    ),
    "stops-at-first-non-local-header": local_entry(b"a.dcm", SMALL)
    + CENTRAL_DIRECTORY_END
    + local_entry(b"hidden.dcm", SMALL),
    "zip64-local-extra-sizes": local_entry(
        b"a.dcm",
        SMALL,
        sizes=(0xFFFFFFFF, 0xFFFFFFFF),
        extra=struct.pack("<HHQQ", 1, 16, len(SMALL), len(SMALL)),
    ),
    "truncated-entry": local_entry(b"a.dcm", DATA)[:2000],
    "directory-only": local_entry(b"dir/", b""),
    "short-garbage": b"PK\x03\x04 too short",
    "empty": b"",
}


def python_read(data: bytes) -> list[tuple[str, int, int]] | str:
    """(name, size, crc) per non-directory entry, or "refused: <message>"."""
    reader = ZipStreamReader(io.BytesIO(data))
    entries = []
    try:
        while (entry := reader.next_entry()) is not None:
            if entry.is_directory:
                continue
            crc = size = 0
            while chunk := reader.read(4096):
                crc = zlib.crc32(chunk, crc)
                size += len(chunk)
            entries.append((entry.name, size, crc))
    except ZipReadError as error:
        return f"refused: {error}"
    return entries


EXPECTED_PYTHON = {
    "streamed-stored": "refused: only DEFLATED entries can have EXT descriptor",
    "stored-descriptor-after-good-entries": "refused: only DEFLATED entries can have EXT "
    "descriptor",
    "encrypted": "refused: encrypted ZIP entry not supported",
    "malformed-name": "refused: MALFORMED",
    "bzip2-method": "refused: invalid compression method",
    "stored-crc-mismatch": f"refused: invalid entry CRC (expected 0x4d2 but got "
    f"0x{zlib.crc32(SMALL):x})",
    "stops-at-first-non-local-header": [("a.dcm", len(SMALL), zlib.crc32(SMALL))],
    "zip64-local-extra-sizes": [("a.dcm", len(SMALL), zlib.crc32(SMALL))],
    "truncated-entry": "refused: unexpected EOF",
    "directory-only": [],
    "deflated-mixed-blocks": [
        (name, len(DATA + SMALL), zlib.crc32(DATA + SMALL)) for name in ("a.dcm", "b.dcm")
    ],
    "short-garbage": [],
    "empty": [],
}


@pytest.mark.parametrize("case", sorted(EXPECTED_PYTHON))
def test_reader_outcomes(case: str):
    assert python_read(CASES[case]) == EXPECTED_PYTHON[case]


def test_deflate_descriptor_sizes_are_checked():
    assert str(python_read(CASES["deflated-zip64-descriptor-small-entry"])).startswith(
        "refused: invalid entry"
    )
    assert python_read(CASES["streamed-deflated"]) == [
        ("a.dcm", len(DATA), zlib.crc32(DATA)),
        ("b.dcm", len(SMALL), zlib.crc32(SMALL)),
    ]


@requires_java
@pytest.mark.parametrize("case", sorted(CASES))
def test_reader_agrees_with_java_zipinputstream(case: str):
    ours = python_read(CASES[case])
    try:
        java: list[tuple[str, int, int]] | str = java_read_zip(CASES[case])
    except AssertionError as refusal:
        java = str(refusal)
    if isinstance(ours, str):
        assert isinstance(java, str), f"Java accepted what we refuse: {java}"
        if ours == "refused: MALFORMED":  # Java 8 (XNAT's) says just that; later JDKs say more
            assert "IllegalArgumentException" in java
        else:
            assert ours.removeprefix("refused: ") in java
    else:
        assert ours == java
