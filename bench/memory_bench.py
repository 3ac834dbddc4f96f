"""Memory against session size: the real daemon on sessions of 2,000 to 50,000 files.

Run from the repository root: `.venv/bin/python bench/memory_bench.py` (about 6 minutes on two
cores; the first run also writes the sessions, about 1 minute).

For each size (2,000, 10,000 and 50,000 small MR images, 64x64 16-bit, nine series, written once
under bench/out/memory/sessions/) a fresh XNAT stand-in (`--fast-headers-only`, data in
/dev/shm when it has room) and a fresh `xnat-drop run` (the configuration of bench/e2e_bench.py)
are started; a 256-file warm-up session goes through first, so the inspection workers are
running as in a long-lived service. Then the session is dropped and, from the drop until its
folder is in done/, a thread samples every 50 ms the PSS and RSS (/proc/<pid>/smaps_rollup) of
the daemon's main process and of every process below it (fork server, resource tracker,
inspection workers), summed. The session must end in done/ with its receipt
(done/.../<name>.report.json saying "delivered") and every file held by the stand-in.

Printed: peak PSS and RSS over all processes, the main process's peaks, the wall time from the
drop to done/, the peak PSS per phase (from the daemon's log lines: claimed, inspected,
uploading, done), and the flatness: peak at N files / peak at the smallest size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# The daemon under test is this checkout's, whatever the venv's editable install points at.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(HERE.parent / "daemon"), *filter(None, [os.environ.get("PYTHONPATH")])]
)
sys.path.insert(0, str(HERE.parent / "daemon"))

import e2e_bench  # noqa: E402
from e2e_bench import (  # noqa: E402
    PROJECT,
    SUBJECT,
    UID_ROOT,
    Daemon,
    StandIn,
    folder_back,
    stand_in_base,
    write_series,
)
from mr_series import series_sizes  # noqa: E402

OUT = HERE / "out" / "memory"
SESSIONS = OUT / "sessions"
FORMAT = 1  # bump when generated sessions change
MATRIX = 64
SIZES = (2000, 10000, 50000)
WARMUP_FILES = 256
SAMPLE_SECONDS = 0.05


# -- the sessions ---------------------------------------------------------------------------


def generate(files: int, name: str | None = None) -> Path:
    """A session of `files` 64x64 MR images under bench/out/memory/sessions/ (kept)."""
    name = name or f"MEM_{files}"
    folder = SESSIONS / name
    stamp = SESSIONS / f"{name}.done"
    text = f"format {FORMAT} files {files} matrix {MATRIX}\n"
    recover(name)
    if stamp.is_file() and stamp.read_text() == text and folder.is_dir():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    print(f"writing {name} ({files:,} files) ...", flush=True)
    started = time.perf_counter()
    study = f"{UID_ROOT}{files}.7.{FORMAT}"
    rng = np.random.default_rng(files)
    for number, description, count in series_sizes(files):
        write_series(folder, MATRIX, number, description, count, study, rng)
    stamp.write_text(text)
    print(f"  done in {time.perf_counter() - started:.1f} s", flush=True)
    return folder


def recover(name: str) -> None:
    """Put a session an interrupted run left in the drop tree back under sessions/."""
    target = SESSIONS / name
    if target.exists():
        return
    for top in (OUT / "drop", OUT / "stage"):
        for path in sorted(top.rglob(name)) if top.is_dir() else []:
            if path.is_dir() and path.name == name:
                print(f"moving {path} back to {target}", flush=True)
                target.parent.mkdir(parents=True, exist_ok=True)
                path.rename(target)
                return


# -- sampling ---------------------------------------------------------------------------------


def rollup(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of `pid` in KiB from smaps_rollup; (0, 0) when it is gone."""
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fp:
            for line in fp:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss = int(line.split()[1])
    except OSError:
        pass
    return pss, rss


@dataclass
class Sample:
    at: float  # wall clock
    pss: float  # MiB, all processes
    rss: float
    main_pss: float
    main_rss: float
    processes: int


class Sampler(threading.Thread):
    """Samples the daemon's processes every SAMPLE_SECONDS until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[Sample] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            at = time.time()
            pids = e2e_bench.family(self.pid)
            values = [rollup(p) for p in pids]
            main = values[0]
            self.samples.append(
                Sample(
                    at,
                    sum(v[0] for v in values) / 1024,
                    sum(v[1] for v in values) / 1024,
                    main[0] / 1024,
                    main[1] / 1024,
                    len(pids),
                )
            )
            self.stopping.wait(max(0.0, SAMPLE_SECONDS - (time.time() - at)))

    def stop(self) -> list[Sample]:
        self.stopping.set()
        self.join(5)
        return self.samples


# -- one run ----------------------------------------------------------------------------------


@dataclass
class Run:
    files: int
    seconds: float  # drop to done/
    pss: float
    rss: float
    main_pss: float
    main_rss: float
    idle_pss: float  # all processes after the warm-up, before the drop
    processes: int
    # Per phase: the peak PSS of all the processes, and of the main process.
    phases: dict[str, tuple[float, float]] = field(default_factory=dict)


PHASES = (
    ("settle", None),
    ("inspect", r": settled \("),
    ("checks", r": inspected "),
    ("upload+verify", r": uploading "),
    ("finish", r": delivered "),
)


def measure(files: int) -> Run:
    folder = generate(files)
    warmup = generate(WARMUP_FILES, "MEM_WARMUP")
    with StandIn(e2e_bench.STAND_IN_BASE[0] / "xnat-memory", "headers-only") as stand_in:
        daemon = Daemon(stand_in.url, "prearchive", stand_in.proc.pid)
        try:
            _, _, done = daemon.deliver(warmup)
            folder_back(done, warmup)
            time.sleep(1.0)
            idle = Sampler(daemon.proc.pid)
            idle.start()
            time.sleep(0.3)
            idle_pss = max(s.pss for s in idle.stop())
            sampler = Sampler(daemon.proc.pid)
            sampler.start()
            t0, finished, done = daemon.deliver(folder)
            time.sleep(0.2)  # the last moments after the move (the finish step's end)
            samples = sampler.stop()
            receipt = done.parent / f"{folder.name}.report.json"
            deadline = time.monotonic() + 10
            while not receipt.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            verified = _delivered(receipt, files)
            held = stand_in.files_held(folder.name)
            marks = [
                (name, daemon.line(rf"/{folder.name}{p}") if p else None) for name, p in PHASES
            ]
        finally:
            daemon.stop()
    folder_back(done, folder)
    for path in (receipt, receipt.with_suffix(".txt")):
        path.unlink(missing_ok=True)
    if not verified or held != files:
        raise SystemExit(
            f"{folder.name}: receipt says delivered: {verified}; stand-in holds {held} of {files}"
        )
    starts = [
        (name, t0 if name == "settle" else (line.at if line else None)) for name, line in marks
    ]
    known = [(n, s) for n, s in starts if s is not None]
    phases = {}
    for (name, start), (_, stop) in zip(known, [*known[1:], ("end", finished + 0.2)], strict=True):
        during = [s for s in samples if start <= s.at < stop]
        if during:
            phases[name] = (max(s.pss for s in during), max(s.main_pss for s in during))
    return Run(
        files,
        finished - t0,
        max(s.pss for s in samples),
        max(s.rss for s in samples),
        max(s.main_pss for s in samples),
        max(s.main_rss for s in samples),
        idle_pss,
        max(s.processes for s in samples),
        phases,
    )


def _delivered(receipt: Path, files: int) -> bool:
    """The receipt beside the folder in done/ says: delivered, and XNAT holds `files` files."""
    try:
        report = json.loads(receipt.read_text())
    except (OSError, ValueError):
        return False
    xnat = report.get("xnat") or {}
    return bool(report.get("outcome") == "done" and xnat.get("files") == files)


# -- the table --------------------------------------------------------------------------------


def print_table(runs: list[Run]) -> None:
    first = runs[0]
    head = [
        "files", "time s", "PSS peak", "RSS peak", "main PSS", "main RSS", "idle PSS", "procs",
        "PSS/PSS@first", "RSS/RSS@first",
    ]  # fmt: skip
    rows = [head]
    for r in runs:
        rows.append(
            [
                f"{r.files:,}", f"{r.seconds:.1f}", f"{r.pss:.1f}", f"{r.rss:.1f}",
                f"{r.main_pss:.1f}", f"{r.main_rss:.1f}", f"{r.idle_pss:.1f}", str(r.processes),
                f"{r.pss / first.pss:.3f}", f"{r.rss / first.rss:.3f}",
            ]
        )  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    print("\nMemory in MiB, summed over the daemon's processes (PSS from smaps_rollup)\n")
    for n, row in enumerate(rows):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print(
        "\npeak PSS per phase (MiB, all processes / the main process), from the daemon's log lines:"
    )
    for r in runs:
        shown = ", ".join(f"{k} {a:.1f}/{m:.1f}" for k, (a, m) in r.phases.items())
        print(f"  {r.files:>6,} files: {shown}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default=",".join(map(str, SIZES)), help="comma-separated file counts"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    started = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)
    e2e_bench.OUT = OUT  # the drop tree, state, config and logs of e2e_bench's helpers
    for files in sizes:
        generate(files)
    base = stand_in_base(None, max(sizes) * 2 * (MATRIX * MATRIX * 2 + 2048))
    e2e_bench.STAND_IN_BASE[0] = base
    print(f"{os.cpu_count()} CPUs; stand-in --fast-headers-only storing in {base}", flush=True)
    runs = []
    try:
        for files in sizes:
            run = measure(files)
            print(
                f"{files:,} files: {run.seconds:.1f} s, PSS peak {run.pss:.1f} MiB, "
                f"RSS peak {run.rss:.1f} MiB, main PSS {run.main_pss:.1f} MiB",
                flush=True,
            )
            runs.append(run)
    finally:
        if base != OUT:
            shutil.rmtree(base, ignore_errors=True)
    print_table(runs)
    print(f"\nbenchmark took {time.perf_counter() - started:.0f} s ({PROJECT}/{SUBJECT})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
