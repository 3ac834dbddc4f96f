"""inspect.py on a hostile share: bounded work per file, nothing read through a link, nothing
read while it was being written, duplicates compared without reading more than needed, and a
watchdog fed all along (issue 11).

Real files wherever possible (pydicom's test data and the demo's writer); the bombs are real
files with one part blown up: a deflated file whose stream holds a huge run of zeros, sparse
files declaring huge lengths. A few tests pick the moment a writer strikes through a hook on
a read: the write itself is real, through a handle of its own.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from xnat_drop.adapters.dicom import duplicates, headerlimits, openfile
from xnat_drop.adapters.dicom import inspection as inspect_module
from xnat_drop.adapters.dicom.fileclassifier import FileClassifier
from xnat_drop.adapters.dicom.inspection import classify, inspect
from xnat_drop.adapters.fs.beneath import Beneath, Dir, stamp
from xnat_drop.adapters.fs.tree import walk
from xnat_drop.adapters.workers import InspectionPool
from xnat_drop.core.errors import SessionChangedError
from xnat_drop.core.model import FileFacts, FileKind
from xnat_standin.demo.samples import SeriesSpec, write_session

from conftest import atime_shows_reads
from data import MR_SERIES, copy_series, pydicom_file

KiB, MiB, GiB = 1024, 1024 * 1024, 1024 * 1024 * 1024


# -- helpers -------------------------------------------------------------------------------


def both_readers(path: Path) -> list[FileFacts]:
    """The facts of `path` from the fast reader (dicomscan first) and from pydicom alone."""
    found = []
    for fast in (True, False):
        with Dir.open(path.parent) as folder, Beneath(folder) as files:
            reader = FileClassifier(fast=fast)
            found.append(reader.classify(files, path.name, path.name, frozenset(), ()))
    return found


def pixel_offset(path: Path) -> int:
    """Where the pixel data element of `path` starts (where pydicom stops)."""
    with path.open("rb") as fp:
        pydicom.dcmread(fp, stop_before_pixels=True)
        return fp.tell()


def meta_end(data: bytes) -> int:
    """Where the data set of a Part 10 file starts: after its (0002,0000) group length."""
    assert data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00"
    (length,) = struct.unpack_from("<I", data, 140)
    return 144 + length


def deflate_parts(*parts: bytes | tuple[int, int]) -> bytes:
    """A raw deflate stream of `parts`: bytes, or (count, MiB) for `count` MiB of zeros made of
    one compressed MiB repeated (how a 1 MB file unpacks to 1 GiB)."""
    out = []
    for part in parts:
        if isinstance(part, bytes):
            c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
            out.append(c.compress(part) + c.flush(zlib.Z_FULL_FLUSH))
        else:
            c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
            # A full flush resets the compressor: each copy decodes on its own.
            block = c.compress(b"\0" * part[1]) + c.flush(zlib.Z_FULL_FLUSH)
            out.append(block * part[0])
    out.append(zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS).flush())  # the final block
    return b"".join(out)


def deflated_file() -> tuple[bytes, bytes, bytes]:
    """pydicom's real deflated file, taken apart: (its preamble and file meta, its data set
    inflated up to the pixel data element, the pixel data element)."""
    data = pydicom_file("image_dfl.dcm").read_bytes()
    start = meta_end(data)
    dataset = zlib.decompress(data[start:], -zlib.MAX_WBITS)
    pixels = dataset.index(b"\xe0\x7f\x10\x00OB")
    return data[:start], dataset[:pixels], dataset[pixels:]


def measured(action: Callable[[], FileFacts]) -> tuple[FileFacts, int]:
    """`action()` and the peak of Python memory allocated while it ran."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        facts = action()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return facts, peak


def bytes_read() -> int:
    """Bytes this process has read from files so far (Linux: /proc/self/io)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def sparse_file(path: Path, pieces: list[tuple[int, bytes]], size: int) -> Path:
    """A file of `size` bytes holding each (offset, bytes) of `pieces`, zeros (holes) else."""
    with path.open("wb") as f:
        for offset, data in pieces:
            f.seek(offset)
            f.write(data)
        f.truncate(size)
    return path


def explicit_element(tag: int, vr: bytes, length: int) -> bytes:
    """The header of an explicit VR little endian element with a 4-byte length."""
    return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr, 0, length)


# -- (a) deflated files ----------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_deflate_bomb_in_the_header_is_unreadable_without_inflating_it(tmp_path: Path) -> None:
    head, dataset, pixels = deflated_file()
    # A private OB value of 1 GiB of zeros before the pixel data: about 1 MB compressed.
    bomb = explicit_element(0x00091001, b"OB", 1024 * MiB)
    path = tmp_path / "bomb.dcm"
    path.write_bytes(head + deflate_parts(dataset + bomb, (1024, MiB), pixels))
    assert path.stat().st_size < 2 * MiB
    facts, peak = measured(lambda: classify(path, "bomb.dcm"))
    assert facts.kind is FileKind.UNREADABLE_DICOM, facts
    assert "deflated" in facts.note and "64 MiB" in facts.note
    assert peak < 128 * MiB, f"{peak / MiB:.0f} MiB held for a 1 GiB bomb"


def test_a_deflated_file_reads_as_before(tmp_path: Path) -> None:
    facts = classify(pydicom_file("image_dfl.dcm"), "dfl.dcm")
    assert facts.kind is FileKind.DICOM and facts.note == ""
    assert facts.header is not None and facts.header.sop_instance_uid
    # Recompressed in pieces (a stream of several blocks): the same facts.
    head, dataset, pixels = deflated_file()
    path = tmp_path / "dfl.dcm"
    path.write_bytes(head + deflate_parts(dataset, pixels))
    again = classify(path, "dfl.dcm")
    assert (again.kind, again.header, again.note) == (facts.kind, facts.header, facts.note)


def test_deflated_syntax_found_by_pydicom_beyond_the_first_read(tmp_path: Path) -> None:
    # A file meta group longer than the first read (HEAD_READ): the transfer syntax UID is
    # only seen by pydicom reading the file itself, and it is still inflated here.
    data = pydicom_file("image_dfl.dcm").read_bytes()
    start = meta_end(data)
    version = struct.pack("<HH2sHI", 2, 1, b"OB", 0, 100 * KiB) + b"\0" * (100 * KiB)
    meta = data[144:start]
    assert meta.startswith(b"\x02\x00\x01\x00OB")  # (0002,0001) FileMetaInformationVersion
    (old_length,) = struct.unpack_from("<I", meta, 8)
    rest = meta[12 + old_length :]
    new_meta = version + rest
    path = tmp_path / "long_meta.dcm"
    group = struct.pack("<HH2sHI", 2, 0, b"UL", 4, len(new_meta))
    path.write_bytes(data[:132] + group[:8] + group[8:] + new_meta + data[start:])
    assert headerlimits.DEFLATED_UID not in path.read_bytes()[: openfile.HEAD_READ]
    facts = classify(path, "long_meta.dcm")
    expected = classify(pydicom_file("image_dfl.dcm"), "long_meta.dcm")
    assert facts.kind is FileKind.DICOM
    assert (facts.header, facts.note) == (expected.header, expected.note)


@pytest.mark.timeout(60)
def test_deflated_file_unpacking_past_the_whole_file_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A small header and 96 MiB of zero pixels: more than the (lowered) limit for a whole
    # deflated file, which is counted, never held.
    monkeypatch.setattr(headerlimits, "MAX_INFLATED_FILE", 64 * MiB)
    head, dataset, _ = deflated_file()
    pixels = explicit_element(0x7FE00010, b"OW", 96 * MiB)
    path = tmp_path / "large.dcm"
    path.write_bytes(head + deflate_parts(dataset + pixels, (96, MiB)))
    facts, peak = measured(lambda: classify(path, "large.dcm"))
    assert facts.kind is FileKind.UNREADABLE_DICOM and "unpacks to more than" in facts.note
    assert peak < 48 * MiB


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ("cut", "cut short"),
        ("appended", "after the end of its DICOM data"),
        ("damaged", "deflated (compressed) data is damaged"),
        ("long pixels", "image data is cut short"),
    ],
)
def test_a_deflated_file_must_end_where_its_data_ends(
    tmp_path: Path, change: str, words: str
) -> None:
    head, dataset, pixels = deflated_file()
    stream = deflate_parts(dataset, pixels)
    if change == "cut":
        data = head + stream[: len(stream) // 2 + 100]
    elif change == "appended":
        data = head + stream + b"\0" * (headerlimits.TRAILING_ALLOWANCE + 1)
    elif change == "damaged":
        data = head + b"\xff" * len(stream)
    else:  # the pixel data element claims more than the stream holds
        (length,) = struct.unpack_from("<I", pixels, 8)
        longer = pixels[:8] + struct.pack("<I", length + 1000) + pixels[12:]
        data = head + deflate_parts(dataset, longer)
    path = tmp_path / "d.dcm"
    path.write_bytes(data)
    for facts in both_readers(path):
        assert facts.kind is FileKind.UNREADABLE_DICOM, facts
        assert words in facts.note, facts.note
    if change == "appended":
        within = head + stream + b"\0" * headerlimits.TRAILING_ALLOWANCE
        path.write_bytes(within)
        assert classify(path, "d.dcm").kind is FileKind.DICOM


def test_compressed_pixel_items_in_a_deflated_file_are_followed_forward(tmp_path: Path) -> None:
    # Odd (a deflated file has native pixel data) but possible: items of undefined-length
    # pixel data are followed through the inflated stream, which is never held whole.
    head, dataset, _ = deflated_file()
    items = b"".join(
        struct.pack("<HHI", 0xFFFE, 0xE000, 300 * KiB) + os.urandom(300 * KiB) for _ in range(4)
    )
    pixels = explicit_element(0x7FE00010, b"OB", 0xFFFFFFFF) + items
    end = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    path = tmp_path / "items.dcm"
    path.write_bytes(head + deflate_parts(dataset + pixels + end))
    assert classify(path, "items.dcm").kind is FileKind.DICOM
    path.write_bytes(head + deflate_parts(dataset + pixels + end + b"\1" * (100 * KiB)))
    facts = classify(path, "items.dcm")
    assert facts.kind is FileKind.UNREADABLE_DICOM
    assert facts.note.startswith(f"it holds {100 * KiB:,} bytes after the end of its image data")
    path.write_bytes(head + deflate_parts(dataset + pixels))  # no delimiter
    assert "closing delimiter" in classify(path, "items.dcm").note


# -- (b) and (c): lengths and header size, on sparse files ---------------------------------


@pytest.mark.timeout(60)
def test_sparse_file_declaring_a_1_gib_series_description(tmp_path: Path) -> None:
    # A real image written in implicit VR (4-byte lengths), its SeriesDescription's length
    # then set to 1 GiB: the file is that long, all holes.
    ds = pydicom.dcmread(copy_series("MR1", tmp_path / "src")[0])
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    original = tmp_path / "implicit.dcm"
    ds.save_as(original, enforce_file_format=True)
    data = original.read_bytes()
    at = data.index(b"\x08\x00\x3e\x10")  # (0008,103E) SeriesDescription
    header = data[:at] + struct.pack("<HHI", 0x0008, 0x103E, GiB)
    path = sparse_file(tmp_path / "sparse.dcm", [(0, header)], len(header) + GiB + 1000)
    assert classify(original, "implicit.dcm").kind is FileKind.DICOM  # the file as written
    facts, peak = measured(lambda: classify(path, "sparse.dcm"))
    assert facts.kind is FileKind.UNREADABLE_DICOM
    assert "larger than 16 MiB" in facts.note
    assert peak < 32 * MiB, f"{peak / MiB:.0f} MiB held"


@pytest.mark.timeout(60)
def test_header_going_on_past_256_mib_is_unreadable(tmp_path: Path) -> None:
    # A private value of 300 MiB (holes) before the pixel data: pydicom would skip it.
    source = copy_series("MR1", tmp_path / "src")[0]
    data = source.read_bytes()
    pixels = pixel_offset(source)
    huge = explicit_element(0x00091001, b"OB", 300 * MiB)
    after = pixels + len(huge) + 300 * MiB
    path = sparse_file(
        tmp_path / "long.dcm",
        [(0, data[:pixels] + huge), (after, data[pixels:])],
        after + len(data) - pixels,
    )
    for facts in both_readers(path):
        assert facts.kind is FileKind.UNREADABLE_DICOM, facts
        assert "past the first 256 MiB" in facts.note


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("values", "words"),
    [((8, 10 * MiB), "more than 64 MiB of values"), ((1, 20 * MiB), "larger than 16 MiB")],
)
def test_nested_values_pydicom_reads_whole_are_bounded(
    tmp_path: Path, values: tuple[int, int], words: str
) -> None:
    # A private sequence of undefined length: pydicom reads everything in its items, asked for
    # or not (here 80 MiB in 10 MiB values, or one value of 20 MiB), all holes.
    source = copy_series("MR1", tmp_path / "src")[0]
    data = source.read_bytes()
    pixels = pixel_offset(source)
    count, size = values
    pieces = [(0, data[:pixels] + explicit_element(0x00091002, b"SQ", 0xFFFFFFFF))]
    at = pixels + 12
    for _ in range(count):
        item = struct.pack("<HHI", 0xFFFE, 0xE000, 12 + size) + explicit_element(
            0x00091003, b"OB", size
        )
        pieces.append((at, item))
        at += len(item) + size
    tail = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0) + data[pixels:]
    pieces.append((at, tail))
    path = sparse_file(tmp_path / "nested.dcm", pieces, at + len(tail))
    facts, peak = measured(lambda: classify(path, "nested.dcm"))
    assert facts.kind is FileKind.UNREADABLE_DICOM, facts
    assert words in facts.note
    assert peak < 96 * MiB
    # The same structure with small values is a readable image: the limits made the change.
    small = [(0, pieces[0][1])]
    small_at = pixels + 12
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 12 + 4) + explicit_element(0x00091003, b"OB", 4)
    small.append((small_at, item + b"abcd"))
    small.append((small_at + len(item) + 4, tail))
    fine = sparse_file(tmp_path / "fine.dcm", small, small_at + len(item) + 4 + len(tail))
    assert classify(fine, "fine.dcm").kind is FileKind.DICOM


# -- (d) trailing data ---------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_50_gib_sparse_dicom_followed_by_zeros_is_unreadable(tmp_path: Path) -> None:
    path = copy_series("MR1", tmp_path)[0]
    size = path.stat().st_size
    os.truncate(path, 50 * GiB)
    before = bytes_read()
    for facts in both_readers(path):
        assert facts.kind is FileKind.UNREADABLE_DICOM
        assert facts.note == (
            f"it holds {50 * GiB - size:,} bytes after the end of its image data; "
            "a DICOM file ends with its image data, so export it again"
        )
    assert bytes_read() - before < 4 * MiB  # the headers, never the 50 GiB


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("JPEG2000.dcm", "image data"),  # encapsulated: ends at the sequence delimiter
        ("reportsi.dcm", "DICOM data"),  # an SR: no pixel data, ends with its data set
        ("MR_small_bigendian.dcm", "image data"),  # big endian pixel data tag
        ("CT_small.dcm", "image data"),  # already 138 bytes of trailing padding
    ],
)
def test_more_than_the_allowance_after_the_data_is_unreadable(
    tmp_path: Path, name: str, words: str
) -> None:
    source = pydicom_file(name)
    path = tmp_path / name
    shutil.copyfile(source, path)
    assert classify(path, name).kind is FileKind.DICOM
    allowance = headerlimits.TRAILING_ALLOWANCE
    already = {"CT_small.dcm": 138}.get(name, 0)  # its (FFFC,FFFC) padding element
    with path.open("ab") as f:
        f.write(b"\0" * (allowance - already))
    assert classify(path, name).kind is FileKind.DICOM  # exactly the allowance: fine
    with path.open("ab") as f:
        f.write(b"\0")
    for facts in both_readers(path):
        assert facts.kind is FileKind.UNREADABLE_DICOM, facts
        assert facts.note.startswith(f"it holds {allowance + 1:,} bytes after the end of its")
        assert words in facts.note


def test_real_files_with_trailing_padding_are_still_dicom() -> None:
    # Found in the test corpus: (FFFC,FFFC) trailing padding after the pixel data.
    for name in ("CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "examples_rgb_color.dcm"):
        data = pydicom_file(name).read_bytes()
        assert b"\xfc\xff\xfc\xff" in data[-300:], name
        assert classify(pydicom_file(name), name).kind is FileKind.DICOM


def test_too_many_compressed_fragments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(headerlimits, "MAX_FRAGMENTS", 3)
    source = pydicom_file("JPEG2000.dcm")
    path = tmp_path / "j2k.dcm"
    data = source.read_bytes()
    pixels = pixel_offset(source)
    items = struct.pack("<HHI", 0xFFFE, 0xE000, 0) * 4  # more empty items than allowed
    path.write_bytes(data[: pixels + 12] + items + data[pixels + 12 :])
    facts = classify(path, "j2k.dcm")
    assert facts.kind is FileKind.UNREADABLE_DICOM and "more than 3 parts" in facts.note


# -- links: nothing is read through one ----------------------------------------------------


def two_patients(tmp_path: Path) -> tuple[Path, Path]:
    """A session with series A and B, and another patient's study whose series has B's names
    (atime set back, so a read of it shows)."""
    session = tmp_path / "session"
    for series in ("A", "B"):
        copy_series("MR1" if series == "A" else "MR2", session / series)
    other = tmp_path / "other"
    shutil.copytree(session / "B", other)
    old = time.time() - 86_400
    for path in other.iterdir():
        os.utime(path, (old, path.stat().st_mtime))
    return session, other


def read_since(folder: Path) -> list[str]:
    """Files of `folder` read since their atime was set back a day."""
    limit = time.time() - 3600
    return [p.name for p in folder.iterdir() if p.stat().st_atime > limit]


@pytest.mark.parametrize("workers", [False, True], ids=["in-process", "workers"])
def test_series_swapped_for_a_link_during_inspection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: bool
) -> None:
    atime_shows_reads(tmp_path)
    session, other = two_patients(tmp_path)
    listing = list(walk(session))  # the folder as the walk saw it, before the swap
    shutil.rmtree(session / "B")
    (session / "B").symlink_to(other, target_is_directory=True)
    monkeypatch.setattr(inspect_module, "walk", lambda root: iter(listing))
    with InspectionPool(workers=2, min_files=2, chunk_files=2) as pool:
        with pytest.raises(SessionChangedError, match=r"^B/"):
            inspect(session, ("session",), pool=pool if workers else None)
        assert bool(pool.pids()) is workers
    assert read_since(other) == []


def test_a_file_replaced_by_a_link_is_never_followed(tmp_path: Path) -> None:
    session, other = two_patients(tmp_path)
    target = other / sorted(os.listdir(other))[0]
    victim = session / "B" / target.name
    victim.unlink()
    victim.symlink_to(target)
    listing = list(walk(session))
    assert any(e.relpath == f"B/{target.name}" and e.kind == "symlink" for e in listing)
    found = {f.path: f.kind for f in inspect(session, ("session",)).files}
    assert found[f"B/{target.name}"] is FileKind.UNSAFE


# -- stamps: written while read --------------------------------------------------------------


def test_each_file_read_carries_its_stamp(tmp_path: Path) -> None:
    copy_series("MR1", tmp_path / "s" / "A")
    (tmp_path / "s" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (tmp_path / "s" / "link").symlink_to(tmp_path)
    session = inspect(tmp_path / "s", ("s",))
    for facts in session.files:
        if facts.kind in (FileKind.JUNK, FileKind.UNSAFE):
            assert facts.stamp == 0  # never opened
        else:
            path = tmp_path / "s" / facts.path
            assert facts.stamp == stamp(os.stat(path, follow_symlinks=False)) != 0


@pytest.mark.parametrize("path_taken", ["fast", "pydicom"])
def test_a_file_written_while_it_is_read_is_a_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path_taken: str
) -> None:
    """A writer holding a handle opened before the claim rewrites the file (same size, mtime
    set back) while its header is being read: never filed as damaged, never as read."""
    copies = copy_series("MR1", tmp_path / "s")
    victim = copies[1]
    if path_taken == "pydicom":  # a header dicomscan leaves to pydicom (big endian)
        shutil.copyfile(pydicom_file("MR_small_bigendian.dcm"), victim)
    content = victim.read_bytes()
    writer = os.open(victim, os.O_WRONLY)
    mtime = victim.stat().st_mtime_ns
    real = openfile.read_fully
    struck = []

    def read_then_write(fd: int, length: int, offset: int) -> bytes:
        data = real(fd, length, offset)
        if not struck and os.fstat(fd).st_ino == os.fstat(writer).st_ino:
            os.pwrite(writer, bytes([content[-1] ^ 0xFF]), len(content) - 1)
            os.utime(victim, ns=(mtime, mtime))
            struck.append(True)
        return data

    monkeypatch.setattr(openfile, "read_fully", read_then_write)
    try:
        with pytest.raises(SessionChangedError, match="changed while it was being read"):
            inspect(tmp_path / "s", ("s",))
    finally:
        os.close(writer)
    assert struck and victim.stat().st_size == len(content)
    monkeypatch.undo()
    assert inspect(tmp_path / "s", ("s",)).files  # settled: read normally


# -- duplicate SOP Instance UIDs -------------------------------------------------------------


def twins(folder: Path, rows: int = 64) -> tuple[Path, Path, Path]:
    """Three real images of one SOP Instance UID: the original, a copy, and the same object
    with different pixels (same size); `rows` x 64 16-bit pixels each."""
    spec = SeriesSpec(1, "t1", images=1, rows=rows, columns=64)
    original = write_session(folder, [spec], rng=random.Random(1))[0]
    copy = original.with_name("copy.dcm")
    shutil.copyfile(original, copy)
    edited = original.with_name("edited.dcm")
    data = bytearray(original.read_bytes())
    data[-1] ^= 0xFF
    edited.write_bytes(data)
    return original, copy, edited


def test_twins_of_different_sizes_are_not_hashed(tmp_path: Path) -> None:
    # 3 MiB images: hashing one would call progress once per MiB.
    original, copy, edited = twins(tmp_path / "s", rows=24 * 1024)
    ds = pydicom.dcmread(original)
    ds.Rows = ds.Rows // 2
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    ds.save_as(original.with_name("smaller.dcm"), enforce_file_format=True)
    copy.unlink()
    edited.unlink()
    calls: list[int] = []
    session = inspect(tmp_path / "s", ("s",), progress=lambda: calls.append(1))
    digests = {f.path.rsplit("/", 1)[-1]: f.digest for f in session.files}
    sizes = {f.path.rsplit("/", 1)[-1]: f.size for f in session.files}
    assert sizes["IM0001.dcm"] != sizes["smaller.dcm"]
    assert digests == {name: f"size-{size}" for name, size in sizes.items()}
    assert len(calls) <= 1 + 2  # the walk, then one per file read: nothing hashed


def test_equal_twins_hashed_in_blocks_calling_progress(tmp_path: Path) -> None:
    original, _, _ = twins(tmp_path / "s", rows=24 * 1024)  # 3 MiB of pixels
    calls: list[int] = []
    session = inspect(tmp_path / "s", ("s",), progress=lambda: calls.append(1))
    digests = {f.path.rsplit("/", 1)[-1]: f.digest for f in session.files}
    assert digests["IM0001.dcm"] == digests["copy.dcm"] != digests["edited.dcm"]
    assert len(digests["copy.dcm"]) == 64
    blocks = -(-original.stat().st_size // duplicates.HASH_BLOCK)  # 4
    assert len(calls) >= 3 + 3 * blocks


def test_twins_too_large_or_past_the_budget_are_not_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = twins(tmp_path / "s" / "a")
    second = twins(tmp_path / "s" / "b")
    size = first[0].stat().st_size
    # Room for one group of three equal files, not for two.
    monkeypatch.setattr(duplicates, "MAX_SESSION_HASHED_BYTES", 4 * size)
    session = inspect(tmp_path / "s", ("s",))
    digests = {f.path: f.digest for f in session.files}
    hashed = [d for d in digests.values() if len(d) == 64]
    unhashed = [p for p, d in digests.items() if d == f"unhashed-{p}"]
    assert len(hashed) == 3 and len(unhashed) == 3
    assert len({digests[p] for p in unhashed}) == 3  # each differs from every other
    smallest = min(path.stat().st_size for path in (*first, *second))  # UIDs vary in length
    monkeypatch.setattr(duplicates, "MAX_HASHED_BYTES", smallest - 1)
    monkeypatch.setattr(duplicates, "MAX_SESSION_HASHED_BYTES", 100 * size)
    session = inspect(tmp_path / "s", ("s",))
    assert all(f.digest == f"unhashed-{f.path}" for f in session.files)
    assert {p.name for p in (*first, *second)} == {"IM0001.dcm", "copy.dcm", "edited.dcm"}


def test_a_twin_rewritten_after_it_was_read_is_a_change(tmp_path: Path) -> None:
    _, copy, _ = twins(tmp_path / "s")
    content = copy.read_bytes()
    mtime = copy.stat().st_mtime_ns

    def rewrite_copy() -> None:  # after each file read: the hashing comes after the last
        with copy.open("r+b") as f:
            f.write(content)
        os.utime(copy, ns=(mtime, mtime))

    with pytest.raises(SessionChangedError, match=r"copy\.dcm"):
        inspect(tmp_path / "s", ("s",), progress=rewrite_copy)


# -- progress --------------------------------------------------------------------------------


def test_progress_is_called_per_file_and_per_task(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    write_session(folder, [SeriesSpec(1, "a", images=12)], rng=random.Random(2))
    serial: list[int] = []
    inspect(folder, ("s",), progress=lambda: serial.append(1))
    assert len(serial) >= 12
    with InspectionPool(workers=2, min_files=2, chunk_files=3) as pool:
        parallel: list[int] = []
        inspect(folder, ("s",), pool=pool, progress=lambda: parallel.append(1))
        assert pool.pids()
    assert len(parallel) >= 12 // 3


def test_judge_passes_progress_on(tmp_path: Path) -> None:
    from xnat_drop.adapters.configfile import load
    from xnat_drop.service.judge import judge

    secret = tmp_path / "secret"
    secret.touch(mode=0o600)
    secret.write_text("user:password\n")
    config_file = tmp_path / "x.toml"
    config_file.write_text(
        f'[paths]\nroot = "{tmp_path / "drop"}"\nstate_dir = "{tmp_path / "state"}"\n'
        f'[xnat]\nurl = "http://127.0.0.1:9"\nsecret_file = "{secret}"\n'
    )
    config = load(config_file, {})
    copy_series("MR1", tmp_path / "P" / "S" / "E")
    calls: list[int] = []
    judge(tmp_path / "P" / "S" / "E", ("P", "S", "E"), config, progress=lambda: calls.append(1))
    assert len(calls) >= len(os.listdir(MR_SERIES / "MR1"))
