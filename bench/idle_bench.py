"""What xnat-drop costs at rest.

1. Idle: 1,000 delivered sessions (100,000 files) in done/, nothing in incoming/: the daemon's
   CPU time over an idle minute with inotify (done/ is never watched or walked).
2. Polling: 100 pending sessions in incoming/ (each holds a `*.part` file, so none ever
   settles): the daemon in polling mode for a minute, and the CPU cost of one polling pass.

Starts the real daemon against the XNAT stand-in, lets it take its first look, then measures.

    .venv/bin/python bench/idle_bench.py [--seconds 60]
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

from xnat_standin import Emulator

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def build_tree(root: Path, pending: int, done_files: int) -> None:
    marker = root / f".built-{pending}-{done_files}"
    if marker.exists():
        return
    payload = os.urandom(1024)
    for n in range(pending):
        folder = root / "incoming" / "P1" / f"S{n:04d}" / f"S{n:04d}_MR1"
        folder.mkdir(parents=True)
        for i in range(20):
            (folder / f"IM{i:04d}.dcm").write_bytes(payload)
        (folder / "IM0020.dcm.part").write_bytes(payload[:100])  # a copy that never finishes
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
    proc = subprocess.Popen([sys.executable, "-m", "xnat_drop", "run", "--config", str(config)])
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
    parser.add_argument(
        "--done-files", type=int, default=100_000, help="files in done/ (idle case)"
    )
    parser.add_argument("--pending", type=int, default=100, help="pending sessions (polling case)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="xnat-drop-idle-"))
    try:
        secret = base / "secret"
        secret.write_text("bench:bench\n")
        secret.chmod(0o600)
        idle, polling = base / "idle", base / "polling"
        build_tree(idle, 0, args.done_files)
        build_tree(polling, args.pending, 0)
        with Emulator(root=base / "xnat", users={"bench": "bench"}, projects=["P1"]) as emu:
            used, per_minute, rss = measure(idle, emu.url, secret, "inotify", args.seconds)
            print(f"idle, inotify, {args.done_files} files in done/, incoming/ empty:")
            cost = f"{used:.2f} CPU s in {args.seconds:.0f} s ({per_minute:.2f} CPU s/min)"
            print(f"  {cost}, RSS {rss:.0f} MB")
            used, per_minute, rss = measure(polling, emu.url, secret, "polling", args.seconds)
            passes = args.seconds / 5  # poll_interval_seconds = 5
            print(
                f"polling every 5 s, {args.pending} pending sessions ({args.pending * 21} files):"
            )
            print(
                f"  {used:.2f} CPU s in {args.seconds:.0f} s ({per_minute:.2f} CPU s/min), "
                f"{1000 * used / passes:.0f} ms CPU per pass, RSS {rss:.0f} MB"
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
