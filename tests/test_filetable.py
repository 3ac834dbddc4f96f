"""A large session's files kept on disk (adapters/dicom/spill.py) behave as the tuple a small
session keeps (core/filetable.py): same files, same order, same subsets and changes, from
several threads, with nothing left on disk by name."""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from xnat_drop.adapters.dicom.spill import BLOCK, FileSink
from xnat_drop.core.filetable import Shelved, changed, parted, picked
from xnat_drop.core.instances import shared_uids
from xnat_drop.core.model import DicomHeader, FileFacts, FileKind

COUNT = 2 * BLOCK + 37  # three blocks, the last one short


def facts(count: int = COUNT) -> list[FileFacts]:
    """A mix: DICOM in three series (one UID used twice), junk and other files."""
    made = []
    for i in range(count):
        if i % 50 == 7:
            made.append(FileFacts(f"misc/.DS_Store{i}", 10, FileKind.JUNK))
        elif i % 50 == 9:
            made.append(FileFacts(f"misc/notes{i}.txt", i, FileKind.OTHER, note="text"))
        else:
            uid = "9.9.9" if i in (5, 2000) else f"1.2.3.{i}"
            header = DicomHeader(
                sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
                sop_instance_uid=uid,
                study_instance_uid="1.2.3",
                series_instance_uid=f"1.2.3.{i % 3}",
                series_number=i % 3 + 1,
                series_description="t1",
                image_type=("ORIGINAL", "PRIMARY"),
                modality="MR",
                instance_number=i // 3 + 1,
            )
            made.append(
                FileFacts(f"s{i % 3}/IM{i:05d}.dcm", 1000 + i, FileKind.DICOM, header, stamp=i)
            )
    return made


def shelved(tmp_path: Path, files: list[FileFacts]) -> Shelved:
    sink = FileSink(tmp_path, bound=100)
    for f in files:
        sink.add(f)
    spilled = sink.files()
    assert isinstance(spilled, Shelved)
    return spilled


def test_a_spilled_session_reads_back_as_the_files_given(tmp_path: Path) -> None:
    files = facts()
    view = shelved(tmp_path, files)
    assert len(view) == len(files)
    assert list(view) == files
    assert [view[i] for i in (0, BLOCK - 1, BLOCK, len(files) - 1, -1, -len(files))] == [
        files[i] for i in (0, BLOCK - 1, BLOCK, len(files) - 1, -1, -len(files))
    ]
    assert list(view[BLOCK - 3 : BLOCK + 3]) == files[BLOCK - 3 : BLOCK + 3]
    assert list(view[::-7]) == files[::-7]
    with pytest.raises(IndexError):
        view[len(files)]
    # The file has no name: nothing is left in the folder, whatever happens to the process.
    assert os.listdir(tmp_path) == []
    # Header values shared by a series are one object however often a block is read again.
    first, again = view[BLOCK + 1].header, view[BLOCK + 1 - 3 * 300].header
    assert first is not None and again is not None
    assert first.series_instance_uid is again.series_instance_uid


def test_small_sessions_stay_a_tuple(tmp_path: Path) -> None:
    sink = FileSink(tmp_path, bound=100)
    for f in facts(100):
        sink.add(f)
    assert isinstance(sink.files(), tuple)


def test_subsets_and_changes_agree_with_the_tuple_ones(tmp_path: Path) -> None:
    files = facts()
    view, plain = shelved(tmp_path, files), tuple(files)

    def is_dicom(f: FileFacts) -> bool:
        return f.is_dicom

    assert list(picked(view, is_dicom)) == list(picked(plain, is_dicom))
    assert [list(p) for p in parted(view, is_dicom)] == [list(p) for p in parted(plain, is_dicom)]
    dicoms = picked(view, is_dicom)
    assert isinstance(dicoms, Shelved)
    # Positions are the subset's own, as for a tuple.
    last = len(dicoms) - 1
    edits = {0: replace(dicoms[0], kind=FileKind.JUNK), last: replace(dicoms[-1], size=1)}
    assert list(changed(dicoms, edits)) == list(changed(picked(plain, is_dicom), edits))
    # A subset of a changed view keeps the change; the view it came from is untouched.
    later = changed(dicoms, edits)
    assert isinstance(later, Shelved)
    kept = later.picked(lambda f: f.kind is FileKind.JUNK)
    assert list(kept) == [edits[0]]
    assert dicoms[0].kind is FileKind.DICOM
    assert list(later[:2]) == [edits[0], dicoms[1]]


def test_copies_are_found_in_a_spilled_session(tmp_path: Path) -> None:
    files = facts()
    groups = shared_uids(shelved(tmp_path, files))
    assert [[i for i, _ in g] for g in groups] == [[5, 2000]]
    assert shared_uids(files) == groups


def test_reading_from_several_threads_gives_the_same_files(tmp_path: Path) -> None:
    files = facts()
    view = shelved(tmp_path, files)
    wrong: list[int] = []

    def read(start: int) -> None:
        for i in range(start, len(files), 5):  # jumps between blocks across threads
            if view[i] != files[i]:
                wrong.append(i)

    threads = [threading.Thread(target=read, args=(s,)) for s in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


@pytest.mark.parametrize("count", [0, 1, 99, 100, 1000])
def test_texts_sorted_in_runs_on_disk_are_sorted(tmp_path: Path, count: int) -> None:
    import random

    from xnat_drop.adapters.dicom.spill import sorted_texts

    rng = random.Random(count)
    odd = ["", "1.2\n3", "1.2.\udcff", "ü.1", "1.2.3" * 40]
    texts = [f"1.2.{rng.randrange(10**9)}" for _ in range(count)] + odd[: count % 6]
    assert list(sorted_texts(iter(texts), tmp_path, run=100)) == sorted(texts)
    assert os.listdir(tmp_path) == []


def test_a_state_directory_that_cannot_be_written_is_a_storage_error(tmp_path: Path) -> None:
    """Full or read-only: all work pauses (StorageError), the session is never failed."""
    from xnat_drop.core.errors import StorageError

    sink = FileSink(tmp_path / "missing", bound=10)
    with pytest.raises(StorageError, match="cannot keep a large session's list of files"):
        for f in facts(20):
            sink.add(f)
