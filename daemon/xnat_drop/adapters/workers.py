"""Worker processes for inspect(): started once, reused for every large session. Effect.

pydicom is pure Python, so threads cannot read headers in parallel; processes can. The pool
starts its workers with the "forkserver" method ("spawn" where there is none), never a plain
fork: the daemon runs a watchdog thread, and a forked copy of a threaded process can deadlock
on a lock some other thread held (Python 3.12+ warns about exactly that).

Whoever owns the pool closes it: the daemon when it stops, `xnat-drop check` when it is done
(`with InspectionPool() as pool:`). A pool nobody closed is closed at interpreter exit.
Nothing starts until a session is large enough to be worth it (`wants`), so a pool that only
ever sees small sessions costs nothing.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import multiprocessing
import os
import select
import signal
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.context import BaseContext
from types import TracebackType
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")

# Below this many files a session is read in-process: starting workers and shipping results
# back would cost more than it saves.
MIN_FILES = 200
# Files per task: enough that IPC is a small share of the work, few enough that the workers
# finish close together (at most one task apart). Measured on 5,000-file sessions (bench/):
# 128 beat 32, 64 and 256 by a few percent when pydicom read every header (30-60 ms a task).
# With dicomscan a task is 5-15 ms; 256 then gained 0-10% on 5,000-16,000 files: kept at 128.
CHUNK_FILES = 128
# Tasks in flight per worker: enough that no worker waits for its next task, few enough that
# results waiting to be taken stay a few hundred KB (a 2 GB session's would be about 8 MB).
WINDOW_PER_WORKER = 4
# Imported once by the fork server, so each worker starts with pydicom already loaded.
PRELOAD = (f"{__package__}.dicom.inspection",)

_live: weakref.WeakSet[InspectionPool] = weakref.WeakSet()


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def start_context() -> BaseContext:
    """A multiprocessing context that is safe in a process with threads: never plain fork."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        # Effective only before the fork server first starts; harmless afterwards.
        context.set_forkserver_preload(list(PRELOAD))
        return context
    return multiprocessing.get_context("spawn")


class InspectionPool:
    """A process pool for inspecting large sessions, created on first use and reused.

    `workers` defaults to the CPUs this process may use. Sessions with fewer than `min_files`
    files to read are inspected in-process (see `wants`); larger ones are sent to the workers
    in tasks of `chunk_files` files. Use it as a context manager or call `close()`; a closed
    pool is never restarted and `wants` answers False from then on. Thread-safe.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        min_files: int = MIN_FILES,
        chunk_files: int = CHUNK_FILES,
    ) -> None:
        self.workers = max(1, workers if workers is not None else usable_cpus())
        self.min_files = min_files
        self.chunk_files = chunk_files  # files per task
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False
        _live.add(self)

    def __enter__(self) -> InspectionPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def wants(self, files: int) -> bool:
        """True when `files` files are worth sending to the workers."""
        return not self._closed and self.workers > 1 and files >= self.min_files

    def start(self) -> None:
        """Start every worker now instead of on first use, and wait until they are ready.

        The daemon may call this once at start so that its first large session does not pay
        for starting processes (about a third of a second). Raises RuntimeError when closed.
        """
        executor = self._ensure()
        ready = [executor.submit(os.getpid) for _ in range(self.workers)]
        for future in ready:
            future.result()

    def map(self, fn: Callable[[T], R], tasks: Iterable[T], then: Callable[[T, R], S]) -> list[S]:
        """`[then(task, fn(task)) for task in tasks]`, with `fn` run by the workers.

        Each task is sent as soon as `tasks` yields it, so a generator can keep producing
        tasks (walking a folder) while the workers already read. `then` runs here, in task
        order, as soon as each result is in, and at most `window` tasks are in flight: the
        raw results never pile up, so memory stays flat however many tasks there are. `fn`
        must be a module-level function. If a task raises, the exception of the first failing
        task (in task order) is raised, as the serial loop would, and tasks not yet started
        are cancelled. If a worker dies (killed, out of memory), the pool is replaced on next
        use and this call computes the remaining tasks in-process instead, so the answer is
        the same either way. Raises RuntimeError when the pool is closed.
        """
        done: list[S] = []
        pending: deque[tuple[T, Future[R]]] = deque()  # in task order
        unsent: list[T] = []  # the task taken from `tasks` while it is being submitted
        window = WINDOW_PER_WORKER * self.workers

        def take_first() -> None:
            task, future = pending[0]
            result = future.result()  # the task stays pending if this raises
            pending.popleft()
            done.append(then(task, result))

        try:
            executor = self._ensure()
            for task in tasks:
                unsent.append(task)  # submit raises when the pool broke meanwhile
                future = executor.submit(fn, task)
                pending.append((unsent.pop(), future))
                while pending and (len(pending) > window or pending[0][1].done()):
                    take_first()
            while pending:
                take_first()
            return done
        except BrokenProcessPool as exc:
            log.warning("inspection worker died (%s); reading in-process instead", exc)
            self._discard()
            rest = [*(task for task, _ in pending), *unsent]
            pending.clear()
            done.extend(then(task, fn(task)) for task in itertools.chain(rest, tasks))
            return done
        finally:
            for _, future in pending:
                future.cancel()  # frees the queue after an error

    def pids(self) -> tuple[int, ...]:
        """Process ids of the running workers (empty before first use and after close)."""
        with self._lock:
            # The executor's own table of its processes (in typeshed, not in the docs).
            processes = getattr(self._executor, "_processes", None) or {}
            return tuple(processes)

    def close(self) -> None:
        """Stop the workers and wait for them to exit. Idempotent."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def _ensure(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise RuntimeError("the inspection pool is closed")
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    self.workers,
                    mp_context=start_context(),
                    initializer=_start_worker,
                    initargs=(os.getpid(),),
                )
            return self._executor

    def _discard(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


def _start_worker(parent: int) -> None:
    """Set up one worker process: leave Ctrl-C to `parent`, and end when `parent` ends.

    A terminal's Ctrl-C reaches every process of the group; workers that died of it would
    each print a traceback, and the parent closes the pool anyway. SIGTERM keeps its default:
    the executor uses it to end the workers of a broken pool. A worker never notices on its
    own that its parent was killed (it waits on a queue it holds both ends of), so a thread
    watches the parent: without it, `kill -9` of the daemon would leave the workers and the
    fork server behind for good.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(parent,), name="parent-watch", daemon=True).start()


def _exit_with(parent: int) -> None:
    try:
        watch = os.pidfd_open(parent)  # Linux 5.3+: readable once `parent` has exited
    except (AttributeError, OSError):  # no pidfd here, or the parent is already gone
        while _exists(parent):
            time.sleep(1.0)
    else:
        select.select([watch], [], [])
    os._exit(0)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:  # gone (or the number now belongs to another user's process)
        return False
    return True


@atexit.register
def _close_all() -> None:
    for pool in list(_live):
        pool.close()
