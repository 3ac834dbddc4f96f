"""What xnat-drop costs at rest: 1,000 pending sessions in incoming/, 100,000 files in done/.

Starts the real daemon against the XNAT stand-in, lets it take its first look, then measures
its CPU time over an idle minute, once with inotify and once in polling mode. The pending
sessions each hold a `*.part` file, so they never settle and stay pending for the whole run.

    .venv/bin/python bench/idle_bench.py [--seconds 60] [--sessions 1000] [--done-files 100000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from xnat_drop.emulator import Emulator

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def build_tree(root: Path, sessions: int, done_files: int) -> None:
    marker = root / ".built"
    if marker.exists():
        return
    payload = os.urandom(1024)
    for n in range(sessions):
        folder = root / "incoming" / "P1" / f"S{n:04d}" / f"S{n:04d}_MR1"
        folder.mkdir(parents=True)
        for i in range(5):
            (folder / f"IM{i:04d}.dcm").write_bytes(payload)
        (folder / "IM0005.dcm.part").write_bytes(payload[:100])  # a copy that never finishes
    per_session = 100
    for n in range(done_files // per_session):
        folder = root / "done" / "P1" / f"D{n:04d}" / f"D{n:04d}_MR1"
        folder.mkdir(parents=True)
        for i in range(per_session):
            (folder / f"IM{i:04d}.dcm").write_bytes(payload[:200])
    marker.touch()


def measure(
    root: Path, url: str, secret: Path, observer: str, seconds: float
) -> tuple[float, float, float]:
    config = root / f"{observer}.toml"
    config.write_text(
        f'[paths]\nroot = "{root}"\nstate_dir = "{root / ("state-" + observer)}"\n'
        f'[watch]\nobserver = "{observer}"\nsettle_seconds = 60\npoll_interval_seconds = 5\n'
        f'[xnat]\nurl = "{url}"\nsecret_file = "{secret}"\n[log]\nlevel = "warning"\n'
    )
    proc = subprocess.Popen([sys.executable, "-m", "xnat_drop.cli", "run", "--config", str(config)])
    try:
        time.sleep(10)  # start, first scan of every pending session
        start_cpu, start = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        used = cpu_seconds(proc.pid) - start_cpu
        elapsed = time.monotonic() - start
        rss = rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    return used, used / elapsed * 60, rss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--done-files", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="build (and keep) the tree here")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="xnat-drop-idle-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        started = time.monotonic()
        build_tree(root, args.sessions, args.done_files)
        print(
            f"tree: {args.sessions} pending sessions, {args.done_files} files in done/ "
            f"(built in {time.monotonic() - started:.0f} s)"
        )
        secret = root / "secret"
        secret.write_text("bench:bench\n")
        secret.chmod(0o600)
        with Emulator(root=root / "xnat", users={"bench": "bench"}, projects=["P1"]) as emu:
            print(f"{'observer':<10} {'CPU s':>7} {'CPU s/min':>10} {'RSS MB':>7}")
            for observer in ("inotify", "polling"):
                used, per_minute, rss = measure(root, emu.url, secret, observer, args.seconds)
                print(f"{observer:<10} {used:>7.2f} {per_minute:>10.2f} {rss:>7.1f}")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
