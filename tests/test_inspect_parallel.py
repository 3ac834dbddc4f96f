"""inspect() with a pool of worker processes: the same Session as in-process, the same errors."""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from xnat_drop.adapters.dicom import inspection as inspect_module
from xnat_drop.adapters.dicom.inspection import inspect
from xnat_drop.adapters.fs.tree import walk
from xnat_drop.adapters.workers import WINDOW_PER_WORKER, InspectionPool, start_context
from xnat_drop.core.errors import SessionChangedError
from xnat_drop.core.model import FileKind
from xnat_standin.demo.samples import SeriesSpec, write_nifti, write_session

from conftest import wait_until
from data import NIBABEL_DATA, copy_series, pydicom_file

KEYWORDS = ("PatientID", "StudyDate", "InstanceNumber")


@pytest.fixture(scope="module")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 350 files: four generated series plus everything that is not a plain image."""
    folder = tmp_path_factory.mktemp("parallel") / "S1"
    series = [
        SeriesSpec(1, "localizer", images=3),
        SeriesSpec(2, "t1_mprage", images=120),
        SeriesSpec(3, "bold", images=200),
        SeriesSpec(4, "MoCoSeries", ("DERIVED", "PRIMARY", "MOCO"), images=10),
    ]
    images = write_session(folder, series, rng=random.Random(7))
    extra = folder / "99_extra"
    extra.mkdir()
    cut = images[5].read_bytes()
    (extra / "cut.dcm").write_bytes(cut[: len(cut) // 2])  # truncated pixel data
    shutil.copyfile(images[6], extra / "copy.dcm")  # same SOP Instance UID: hashed
    shutil.copyfile(pydicom_file("ExplVR_LitEndNoMeta.dcm"), extra / "bare.dcm")
    shutil.copyfile(pydicom_file("DICOMDIR"), extra / "index")
    write_nifti(extra / "t1.nii")
    write_nifti(extra / "t1.nii.gz")
    (extra / "pair.hdr").write_bytes((NIBABEL_DATA / "analyze.hdr").read_bytes())
    (extra / "pair.img").write_bytes(os.urandom(100))  # an Analyze pair: decided after the walk
    (extra / "lonely.img").write_bytes(os.urandom(100))
    (extra / "t1.json").write_text(json.dumps({"ConversionSoftware": "dcm2niix"}))
    (extra / "notes.txt").write_text("subject moved in run 2\n")
    (extra / "series.dcm.gz").write_bytes(gzip.compress(images[7].read_bytes()))
    (extra / "empty.dcm").write_bytes(b"")
    (extra / "empty_pair.hdr").write_bytes((NIBABEL_DATA / "analyze.hdr").read_bytes())
    (extra / "empty_pair.img").write_bytes(b"")  # empty, but half of a pair: after the walk
    (extra / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (extra / "link.dcm").symlink_to(images[8])
    os.mkfifo(extra / "pipe.dcm")  # opening it would block: it must never be opened
    return folder


@pytest.fixture(scope="module")
def pool() -> Iterator[InspectionPool]:
    with InspectionPool(workers=2) as pool:
        yield pool


def test_parallel_session_is_the_serial_session(session_dir: Path, pool: InspectionPool) -> None:
    serial = inspect(session_dir, ("P", "S", "S1"), KEYWORDS)
    parallel = inspect(session_dir, ("P", "S", "S1"), KEYWORDS, pool=pool)
    assert pool.pids(), "the workers were not used"
    assert parallel == serial
    kinds = {f.path.split("/")[-1]: f.kind for f in serial.files}
    assert len(serial.files) > 340
    assert kinds["cut.dcm"] is FileKind.UNREADABLE_DICOM
    assert kinds["bare.dcm"] is FileKind.DICOM_NO_PREAMBLE
    assert kinds["index"] is FileKind.JUNK
    assert kinds["t1.nii"] is kinds["t1.nii.gz"] is FileKind.NIFTI
    assert kinds["pair.hdr"] is kinds["pair.img"] is FileKind.ANALYZE
    assert kinds["lonely.img"] is FileKind.OTHER
    assert kinds["t1.json"] is FileKind.CONVERTED
    assert kinds["series.dcm.gz"] is FileKind.COMPRESSED_DICOM
    assert kinds["empty.dcm"] is FileKind.EMPTY
    assert kinds["empty_pair.hdr"] is kinds["empty_pair.img"] is FileKind.ANALYZE
    assert kinds["link.dcm"] is kinds["pipe.dcm"] is FileKind.UNSAFE
    assert sum(1 for f in serial.files if f.digest) == 2
    assert serial.files[-1].header is None or serial.files[-1].header.value("PatientID")


def test_small_sessions_never_start_the_pool(tmp_path: Path) -> None:
    copy_series("MR2", tmp_path / "s")
    with InspectionPool(workers=2) as fresh:
        session = inspect(tmp_path / "s", ("s",), pool=fresh)
        assert fresh.pids() == ()
    assert session == inspect(tmp_path / "s", ("s",))


@pytest.mark.parametrize("change", ["vanished", "became a FIFO"])
def test_a_change_after_the_walk_raises_as_in_process(
    session_dir: Path,
    tmp_path: Path,
    pool: InspectionPool,
    monkeypatch: pytest.MonkeyPatch,
    change: str,
) -> None:
    folder = tmp_path / "S1"
    # A FIFO is copied by opening it, which would block: make a new one instead.
    shutil.copytree(session_dir, folder, symlinks=True, ignore=shutil.ignore_patterns("pipe*"))
    os.mkfifo(folder / "99_extra" / "pipe.dcm")
    listing = list(walk(folder))  # the folder as the walk saw it, before the change
    regular = [e.relpath for e in listing if e.kind == "file"]
    victims = [regular[10], regular[-10]]  # in the first task and in the last one
    for victim in victims:
        (folder / victim).unlink()
        if change == "became a FIFO":
            os.mkfifo(folder / victim)
    monkeypatch.setattr(inspect_module, "walk", lambda root: iter(listing))
    with pytest.raises(SessionChangedError) as in_process:
        inspect(folder, ("S1",))
    with pytest.raises(SessionChangedError) as in_workers:
        inspect(folder, ("S1",), pool=pool)
    assert str(in_workers.value) == str(in_process.value)
    assert str(in_workers.value).startswith(victims[0])  # the first one, in walk order
    # The pool is still fine afterwards.
    monkeypatch.undo()
    assert inspect(session_dir, ("S1",), pool=pool) == inspect(session_dir, ("S1",))


def test_map_takes_each_result_in_order_while_few_tasks_are_in_flight(
    pool: InspectionPool,
) -> None:
    # Raw results must not pile up: a 50,000-file session would hold them all at once.
    count, yielded, seen = 300, 0, []

    def tasks() -> Iterator[int]:
        nonlocal yielded
        for i in range(count):
            yielded += 1
            yield -i

    def then(task: int, result: int) -> int:
        seen.append((task, yielded))
        return result * 10

    assert pool.map(abs, tasks(), then) == [i * 10 for i in range(count)]
    assert [task for task, _ in seen] == [-i for i in range(count)]
    window = WINDOW_PER_WORKER * pool.workers
    assert all(sent <= k + 1 + window for k, (_, sent) in enumerate(seen))
    assert seen[0][1] < count  # the first result was taken long before the last task was sent


def test_close_leaves_no_worker_processes(session_dir: Path) -> None:
    fresh = InspectionPool(workers=2)
    fresh.start()
    pids = fresh.pids()
    assert len(pids) == 2 and all(_alive(pid) for pid in pids)
    inspect(session_dir, ("S1",), pool=fresh)
    fresh.close()
    assert fresh.pids() == ()
    assert all(_gone(pid) for pid in pids)
    assert not fresh.wants(10_000)  # closed for good: inspect() reads in-process from now on
    assert inspect(session_dir, ("S1",), pool=fresh) == inspect(session_dir, ("S1",))
    fresh.close()  # idempotent


def test_workers_start_safely_beside_other_threads(session_dir: Path) -> None:
    # The daemon has a watchdog thread; forking a threaded process is what Python 3.12+
    # warns about (an error here). The pool never forks this process.
    assert start_context().get_start_method() in ("forkserver", "spawn")
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    try:
        with InspectionPool(workers=2) as fresh:
            assert inspect(session_dir, ("S1",), pool=fresh) == inspect(session_dir, ("S1",))
            assert fresh.pids()
    finally:
        stop.set()
        other.join()


def test_a_killed_worker_costs_speed_not_the_answer(
    session_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with InspectionPool(workers=2) as fresh:
        fresh.start()
        os.kill(fresh.pids()[0], signal.SIGKILL)
        assert inspect(session_dir, ("S1",), pool=fresh) == inspect(session_dir, ("S1",))
        assert "inspection worker died" in caplog.text
        # The broken pool was replaced: the next session uses new workers.
        assert inspect(session_dir, ("S1",), pool=fresh) == inspect(session_dir, ("S1",))
        assert fresh.pids()


def test_a_pool_found_broken_while_sending_tasks_still_answers(
    session_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Here the pool already knows a worker died, so sending the first task fails: that task,
    # taken from the walk but never sent, must still be read.
    with InspectionPool(workers=2) as fresh:
        fresh.start()
        os.kill(fresh.pids()[0], signal.SIGKILL)
        executor = fresh._executor
        assert executor is not None

        def knows_it_broke() -> bool:
            try:
                executor.submit(os.getpid).result()
            except BrokenProcessPool:
                return True
            return False

        wait_until(knows_it_broke, "the pool noticing its dead worker")
        assert inspect(session_dir, ("S1",), pool=fresh) == inspect(session_dir, ("S1",))
        assert "inspection worker died" in caplog.text


def test_workers_end_when_their_parent_is_killed() -> None:
    # kill -9 skips every close(): the workers must notice by themselves.
    code = (
        "import sys\n"
        "from xnat_drop.adapters.workers import InspectionPool\n"
        "pool = InspectionPool(workers=2)\n"
        "pool.start()\n"
        "print(*pool.pids(), flush=True)\n"
        "sys.stdin.read()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None and parent.stdin is not None
    try:
        workers = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(workers) == 2 and all(_alive(pid) for pid in workers)
        fork_server = {_parent_of(pid) for pid in workers} - {parent.pid}
    finally:
        parent.kill()
        parent.wait()
        parent.stdin.close()
        parent.stdout.close()
    assert all(_gone(pid) for pid in [*workers, *fork_server])


def _parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie has ended: its parent, the fork server, reaps it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _gone(pid: int) -> bool:
    """True once `pid` has ended and been reaped (waiting up to 5 s for its parent to reap it)."""
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
