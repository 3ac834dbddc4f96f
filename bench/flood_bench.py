"""A flood of empty folders: what 100,000 of them in incoming/ cost the daemon.

1. Idle: the daemon's CPU time (main process and workers, from /proc) over an idle minute with
   100,000 empty session folders in incoming/, with inotify and with polling.
2. Delivery: a real 5-file session dropped among them (moved in whole, as a finished copy
   arrives): seconds from the drop to the folder in done/, against settle_seconds.
3. The size of status.json and the number of log lines the flood caused.

Starts the real daemon against the XNAT stand-in (plain mode).

    .venv/bin/python bench/flood_bench.py [--folders 100000] [--seconds 60]
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
from xnat_standin.demo.samples import SeriesSpec, write_session

TICK = os.sysconf("SC_CLK_TCK")
SETTLE = 5.0


def tree_cpu(pid: int) -> float:
    """CPU seconds of `pid` and every process below it (the inspection workers)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        if int(entry.name) == pid or _descends(int(entry.name), pid):
            total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def _descends(pid: int, ancestor: int) -> bool:
    while pid > 1:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return False
        pid = int(fields[1])
        if pid == ancestor:
            return True
    return False


def run(root: Path, url: str, secret: Path, observer: str, folders: int, seconds: float) -> None:
    state = root.parent / f"state-{observer}"
    config = root.parent / f"{observer}.toml"
    config.write_text(
        f'[paths]\nroot = "{root}"\nstate_dir = "{state}"\n'
        f'[watch]\nobserver = "{observer}"\nsettle_seconds = {SETTLE}\npoll_interval_seconds = 5\n'
        f'rescan_seconds = 60\n[xnat]\nurl = "{url}"\nsecret_file = "{secret}"\n'
    )
    log = root.parent / f"{observer}.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "xnat_drop", "run", "--config", str(config)], stderr=err
        )
    try:
        while "watching" not in log.read_text():
            time.sleep(0.2)
        time.sleep(SETTLE + 5)  # the first looks at every folder
        start_cpu, start = tree_cpu(proc.pid), time.monotonic()
        time.sleep(seconds)
        idle = (tree_cpu(proc.pid) - start_cpu) / (time.monotonic() - start)
        name = f"REAL_{observer}"
        staging = root.parent / f"staging-{observer}"
        write_session(staging, [SeriesSpec(1, "T1", images=5)], patient_id=name)
        dropped = time.monotonic()
        os.rename(staging, root / "incoming" / "P1" / "FLOOD" / name)
        target = root / "done" / "P1" / "FLOOD" / name
        while not target.is_dir():
            assert proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.05)
        delivered = time.monotonic() - dropped
        status = (state / "status.json").stat().st_size
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    lines = log.read_text().splitlines()
    print(
        f"| {observer} | {folders:,} | {idle * 100:.1f}% | {delivered:.1f} s "
        f"(settle {SETTLE:g} s) | {status / 1000:.1f} KB | {len(lines)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folders", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="xnat-drop-flood-"))
    try:
        secret = base / "secret"
        secret.write_text("bench:bench\n")
        secret.chmod(0o600)
        with Emulator(root=base / "xnat", users={"bench": "bench"}, projects=["P1"]) as emu:
            print(
                "| observer | empty folders | idle CPU | drop to done/ | status.json | log lines |"
            )
            print("| --- | --- | --- | --- | --- | --- |")
            for observer in ("inotify", "polling"):
                root = base / f"drop-{observer}"
                flood = root / "incoming" / "P1" / "FLOOD"
                flood.mkdir(parents=True)
                for n in range(args.folders):
                    os.mkdir(flood / f"E{n:06d}")
                run(root, emu.url, secret, observer, args.folders, args.seconds)
                shutil.rmtree(root)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
