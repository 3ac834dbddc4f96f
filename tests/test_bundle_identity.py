"""The zip sends only the bytes that were judged (issue 11): files opened below the claimed
folder through no link, each still exactly as inspected (its stamp) when it is opened and once
it has been read.

Sessions are inspected for real (pydicom's MR series) and zipped the way the service does:
`BundleEntry(f.path, f.path, f.size, f.stamp)` below `root=Dir.open(claim_folder)`. The writer
that strikes meanwhile is real too: it rewrites a file through a handle of its own, keeping the
size and setting the mtime back, as a lab member's program holding an old handle could.
"""

from __future__ import annotations

import io
import os
import shutil
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from xnat_drop.adapters.dicom.inspection import inspect
from xnat_drop.adapters.fs import zipstream as bundle_module
from xnat_drop.adapters.fs.beneath import Dir
from xnat_drop.adapters.fs.zipstream import BundleEntry, ZipStream, write_zip
from xnat_drop.core.errors import SessionChangedError
from xnat_drop.core.model import Session

from conftest import atime_shows_reads
from data import copy_series
from zipcheck import java_read_stream, requires_java

KiB = 1024
SMALL_BUFFER = 4 * KiB  # the MR files are 2-3 KiB: buffered; with a 1 KiB limit: stored blocks


def session_at(tmp_path: Path) -> tuple[Path, Session]:
    """A claimed session folder with two series, and its inspection."""
    folder = tmp_path / "claim" / "E1"
    copy_series("MR1", folder / "1_t1")
    copy_series("MR2", folder / "2_t2")
    return folder, inspect(folder, ("P", "S", "E1"))


def entries_of(session: Session) -> list[BundleEntry]:
    """The entries the service builds from a verdict's files."""
    return [BundleEntry(f.path, f.path, f.size, f.stamp) for f in session.files]


def stream_of(
    folder: Path,
    entries: list[BundleEntry],
    buffer_limit: int = 2 << 20,
    chunk_size: int = 1 << 20,
    progress: Callable[[int], None] | None = None,
) -> ZipStream:
    """A stream as the service makes it: the claim folder opened, owned by the stream."""
    return ZipStream(
        entries,
        root=Dir.open(folder),
        buffer_limit=buffer_limit,
        chunk_size=chunk_size,
        progress=progress,
    )


def drain(stream: ZipStream) -> bytes:
    with stream:
        return b"".join(stream)


def rewrite(path: Path, change: Callable[[bytes], bytes]) -> None:
    """Rewrite `path` in place through a handle of its own: same size, mtime set back."""
    before = path.stat()
    data = path.read_bytes()
    new = change(data)
    assert len(new) == len(data) and new != data
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, new, 0)
    finally:
        os.close(fd)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def to_derived(data: bytes) -> bytes:
    """ImageType ORIGINAL\\PRIMARY becomes DERIVED\\PRIMARY (the same length)."""
    assert b"ORIGINAL" in data
    return data.replace(b"ORIGINAL", b"DERIVED\\", 1)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- the service's way works -----------------------------------------------------------------


@requires_java
def test_inspected_session_zipped_below_its_folder(tmp_path: Path) -> None:
    folder, session = session_at(tmp_path)
    entries = entries_of(session)
    assert all(e.stamp for e in entries)
    fds = open_fds()
    with stream_of(folder, entries, buffer_limit=SMALL_BUFFER, progress=lambda done: None) as s:
        read = java_read_stream(s)
    assert [name for name, _, _ in read] == [f.path for f in session.files]
    assert open_fds() == fds  # the claim folder and its series folders are closed again
    out = io.BytesIO()
    assert write_zip(entries, out, root=Dir.open(folder)) == len(out.getvalue())
    with zipfile.ZipFile(out) as zf:
        for facts in session.files:
            assert zf.read(facts.path) == (folder / facts.path).read_bytes()


def test_the_folders_are_closed_by_close_and_when_planning_fails(tmp_path: Path) -> None:
    folder, session = session_at(tmp_path)
    fds = open_fds()
    stream = stream_of(folder, entries_of(session))
    assert stream.read(100)
    stream.close()
    assert open_fds() == fds
    stream_of(folder, entries_of(session)).close()  # never read
    assert open_fds() == fds
    with pytest.raises(ValueError):
        stream_of(folder, [BundleEntry("x", "", 0)])
    assert open_fds() == fds


# -- only what was judged --------------------------------------------------------------------


@pytest.mark.parametrize("buffer_limit", [SMALL_BUFFER, KiB], ids=["buffered", "blocks"])
def test_a_file_rewritten_after_inspection_is_refused(tmp_path: Path, buffer_limit: int) -> None:
    folder, session = session_at(tmp_path)
    victim = session.files[-1]
    rewrite(folder / victim.path, to_derived)
    stream = stream_of(folder, entries_of(session), buffer_limit=buffer_limit)
    with pytest.raises(SessionChangedError, match="changed after it was inspected") as raised:
        drain(stream)
    assert victim.path in str(raised.value)
    # Without the stamps (as tests and benchmarks make entries) the same zip goes out.
    unchecked = [BundleEntry(e.source, e.arcname, e.size) for e in entries_of(session)]
    assert drain(stream_of(folder, unchecked, buffer_limit=buffer_limit))


def test_a_large_file_rewritten_while_it_is_sent_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large file (stored blocks, read once as it is sent) whose end is rewritten right
    after it was read: what was read looks whole, and only the stamp tells."""
    folder, session = session_at(tmp_path)
    victim = folder / session.files[0].path
    real = os.readv
    struck: list[bool] = []

    def read_then_write(fd: int, buffers: list[memoryview]) -> int:
        n = real(fd, buffers)
        if not struck and os.fstat(fd).st_ino == victim.stat().st_ino:
            struck.append(True)
            rewrite(victim, lambda data: data[:-4] + bytes(b ^ 0xFF for b in data[-4:]))
        return n

    monkeypatch.setattr(bundle_module.os, "readv", read_then_write)
    stream = stream_of(folder, entries_of(session), 64, 256)
    got = bytearray()
    with pytest.raises(SessionChangedError, match="changed while being read"), stream:
        for chunk in stream:
            got += chunk
    assert struck
    assert len(got) < 30 + len(session.files[0].path) + 5  # not even its first block went out


def test_a_small_file_written_while_it_is_read_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the read of a buffered file and its buffer going out (the hook only picks the
    moment: the write is real, through another handle)."""
    folder, session = session_at(tmp_path)
    victim = folder / session.files[2].path
    real = os.readv
    struck: list[bool] = []

    def read_then_write(fd: int, buffers: list[memoryview]) -> int:
        n = real(fd, buffers)
        if not struck and os.fstat(fd).st_ino == victim.stat().st_ino:
            struck.append(True)
            rewrite(victim, to_derived)
        return n

    monkeypatch.setattr(bundle_module.os, "readv", read_then_write)
    with pytest.raises(SessionChangedError, match="changed while being read"):
        drain(stream_of(folder, entries_of(session), buffer_limit=SMALL_BUFFER))
    assert struck


# -- links ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stamped", [True, False], ids=["stamped", "unstamped"])
def test_series_swapped_for_a_link_after_inspection(tmp_path: Path, stamped: bool) -> None:
    """Another patient's series with the same file names and sizes, linked in place of a
    series after inspection: refused, never read, never sent."""
    atime_shows_reads(tmp_path)
    folder, session = session_at(tmp_path)
    other = tmp_path / "other-patient"
    shutil.copytree(folder / "2_t2", other)
    for path in other.iterdir():
        path.write_bytes(path.read_bytes().replace(b"ORIGINAL", b"ORIGINAX"))
        os.utime(path, (time.time() - 86_400, path.stat().st_mtime))
    shutil.rmtree(folder / "2_t2")
    (folder / "2_t2").symlink_to(other, target_is_directory=True)
    entries = entries_of(session)
    if not stamped:
        entries = [BundleEntry(e.source, e.arcname, e.size) for e in entries]
    fds = open_fds()
    got = bytearray()
    stream = stream_of(folder, entries, buffer_limit=SMALL_BUFFER, chunk_size=KiB)
    with pytest.raises(SessionChangedError, match="symbolic link") as raised, stream:
        for chunk in stream:
            got += chunk
    assert "2_t2/" in str(raised.value)
    assert b"ORIGINAX" not in got
    assert [p.name for p in other.iterdir() if p.stat().st_atime > time.time() - 3600] == []
    assert open_fds() == fds


def test_a_file_swapped_for_a_link_after_inspection(tmp_path: Path) -> None:
    folder, session = session_at(tmp_path)
    victim = folder / session.files[0].path
    outside = tmp_path / "outside.dcm"
    victim.rename(outside)
    victim.symlink_to(outside)
    unchecked = [BundleEntry(e.source, e.arcname, e.size) for e in entries_of(session)]
    with pytest.raises(SessionChangedError, match="symbolic link"):
        drain(stream_of(folder, unchecked))


def test_a_series_folder_replaced_by_a_file(tmp_path: Path) -> None:
    folder, session = session_at(tmp_path)
    shutil.rmtree(folder / "1_t1")
    (folder / "1_t1").write_bytes(b"not a folder")
    with pytest.raises(SessionChangedError, match="1_t1"):
        drain(stream_of(folder, entries_of(session)))
