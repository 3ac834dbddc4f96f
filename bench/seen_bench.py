"""What being seen costs: the status files, the page, the metrics and the notifications.

The real daemon against the XNAT stand-in, with 100 pending sessions in incoming/ (each holds
a `*.part` file, so none ever settles: every report lists them all), run twice for the same
time, alternating: every output off (`status.share = "off"`, no page, no textfile, no
notifications), then every output on (STATUS.txt and STATUS.html, the page on loopback, the
metrics textfile, e-mail to a local aiosmtpd server). Reported for each: the daemon's CPU over
the window, its PSS summed over all its processes (the inspection workers too); with outputs on
also the page's answer times (/, /status.json, /metrics; 200 requests each, sequential) and
the size of what it serves.

    .venv/bin/python bench/seen_bench.py [--seconds 30] [--pending 100]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Sink

from xnat_standin import Emulator

from idle_bench import build_tree, cpu_seconds  # the same pending tree, the same CPU count


def family(pid: int) -> list[int]:
    """The daemon and every process below it."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        todo += [int(c) for c in children]
    return found


def pss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(
    root: Path, url: str, secret: Path, extra: str, seconds: float, port: int | None
) -> dict[str, object]:
    name = "on" if port else "off"
    config = root / f"{name}.toml"
    config.write_text(
        f'[paths]\nroot = "{root}"\nstate_dir = "{root / ("state-" + name)}"\n'
        "[watch]\nsettle_seconds = 60\n"
        f'[xnat]\nurl = "{url}"\nsecret_file = "{secret}"\nallow_plain_http = true\n'
        '[log]\nlevel = "warning"\n' + extra
    )
    proc = subprocess.Popen([sys.executable, "-m", "xnat_drop", "run", "--config", str(config)])
    found: dict[str, object] = {}
    try:
        time.sleep(8)  # start, first scan of every pending session
        start_cpu, start = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        used = cpu_seconds(proc.pid) - start_cpu
        found["cpu_per_min"] = used / (time.monotonic() - start) * 60
        found["pss"] = pss_mib(family(proc.pid))
        if port:
            for path in ("/", "/status.json", "/metrics"):
                times, size = [], 0
                with requests.Session() as http:
                    for _ in range(200):
                        began = time.perf_counter()
                        answer = http.get(f"http://127.0.0.1:{port}{path}", timeout=5)
                        times.append(time.perf_counter() - began)
                        size = len(answer.content)
                times.sort()
                found[path] = (statistics.median(times) * 1000, times[189] * 1000, size)
            status = root / "STATUS.txt"
            found["STATUS.txt"] = status.stat().st_size if status.exists() else 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--pending", type=int, default=100)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="xnat-drop-seen-"))
    smtp = Controller(Sink(), hostname="127.0.0.1", port=free_port())
    smtp.start()
    try:
        secret = base / "secret"
        secret.write_text("bench:bench\n")
        secret.chmod(0o600)
        off, on = base / "off", base / "on"
        build_tree(off, args.pending, 0)
        build_tree(on, args.pending, 0)
        port = free_port()
        every = (
            '[status]\nshare = "one"\nhtml = true\n'
            f'[page]\nlisten = "127.0.0.1:{port}"\n'
            f'[metrics]\ntextfile = "{on / "xnat-drop.prom"}"\n'
            f'[notify]\nemail_to = ["lab@example.org"]\nsmtp_host = "127.0.0.1"\n'
            f'smtp_port = {smtp.port}\nsmtp_security = "none"\n'
        )
        with Emulator(root=base / "xnat", users={"bench": "bench"}, projects=["P1"]) as emu:
            quiet = measure(off, emu.url, secret, '[status]\nshare = "off"\n', args.seconds, None)
            seen = measure(on, emu.url, secret, every, args.seconds, port)
        print(f"{args.pending} pending sessions, {args.seconds:.0f} s at rest each:")
        for label, found in (("every output off", quiet), ("every output on", seen)):
            print(
                f"  {label:17} CPU {found['cpu_per_min']:.2f} s/min, "
                f"PSS {found['pss']:.1f} MiB (all processes)"
            )
        for path in ("/", "/status.json", "/metrics"):
            median, p95, size = seen[path]  # type: ignore[misc]
            print(f"  page {path:13} median {median:.2f} ms, p95 {p95:.2f} ms, {size:,} bytes")
        print(f"  STATUS.txt {seen['STATUS.txt']:,} bytes")
    finally:
        smtp.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
