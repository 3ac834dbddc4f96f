"""Session resources: the daemon's resources step against `curl -T`, one file at a time.

Run from the repository root: `.venv/bin/python bench/resources_bench.py [--files 20 --mb 10]`
(see bench/README.md).

A session of 3 small DICOM files carries `--files` resource files of `--mb` MB each (random
bytes: physio recordings compress, but XNAT stores them as sent). The real daemon
(`xnat-drop run --once`, destination "archive") delivers it to a stand-in process; the time is
taken from its log, from "sending N resource files" to "delivered". The baseline then sends the
same files into the same archived session with curl (`-T file`, `?inbody=true&overwrite=true`,
one request per file, as a script would). The daemon also reads each file once and verifies
every MD5 against XNAT's listing; curl does neither. Page cache warm for both.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from e2e_bench import PASSWORD, PROJECT, USER, StandIn, warm

from xnat_standin.demo.samples import SeriesSpec, write_session

LABEL = "S01_MR1"
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--mb", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="resources-bench-") as tmp:
        base = Path(tmp)
        session = base / "drop" / "incoming" / PROJECT / "S01" / LABEL
        write_session(session, [SeriesSpec(1, "T1", images=3)], patient_id="S01")
        size = int(args.mb * 1e6)
        for n in range(args.files):
            path = session / "resources" / "physio" / f"run{n:02d}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(size))
        warm(session)
        secret = base / "secret"
        secret.write_text(f"{USER}:{PASSWORD}\n")
        secret.chmod(0o600)
        with StandIn(base / "xnat", "faithful") as xnat:
            config = base / "xnat-drop.toml"
            config.write_text(
                f'[paths]\nroot = "{base / "drop"}"\nstate_dir = "{base / "state"}"\n'
                f"[watch]\nsettle_seconds = 0.2\nrescan_seconds = 0.2\n"
                f'[xnat]\nurl = "{xnat.url}"\nsecret_file = "{secret}"\n'
                'destination = "archive"\n'
            )
            run = subprocess.run(
                [sys.executable, "-m", "xnat_drop", "run", "--config", str(config), "--once"],
                capture_output=True,
                text=True,
                check=False,
            )
            if run.returncode != 0 or "delivered" not in run.stderr:
                print(run.stderr)
                return 1
            daemon = _between(run.stderr, "sending ", ": delivered (")
            files = sorted((base / "drop" / "done").rglob("run*.bin"))
            warm(files[0].parent)
            uri = f"/data/archive/projects/{PROJECT}/subjects/S01/experiments/{LABEL}"
            start = time.perf_counter()
            for path in files:
                subprocess.run(
                    [
                        "curl",
                        "-sS",
                        "-f",
                        "-u",
                        f"{USER}:{PASSWORD}",
                        "-T",
                        str(path),
                        f"{xnat.url}{uri}/resources/physio/files/{path.name}"
                        "?inbody=true&overwrite=true",
                    ],
                    check=True,
                    capture_output=True,
                )
            curl = time.perf_counter() - start
    total = args.files * size / 1e6
    print(f"{args.files} resource files of {args.mb:g} MB ({total:.0f} MB), archived session")
    print(f"{'case':40} {'seconds':>8} {'MB/s':>7}")
    print(f"{'daemon (send, then verify every MD5)':40} {daemon:8.2f} {total / daemon:7.0f}")
    print(f"{'curl -T, one request per file':40} {curl:8.2f} {total / curl:7.0f}")
    print(f"daemon / curl: {daemon / curl:.2f}")
    shutil.rmtree(base, ignore_errors=True)
    return 0


def _between(log: str, first: str, last: str) -> float:
    """Seconds between the log line holding `first` and the one holding `last`."""
    times = {}
    for line in log.splitlines():
        found = STAMP.match(line)
        if found is None:
            continue
        for key in (first, last):
            if key in line and key not in times:
                times[key] = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f")
    return (times[last] - times[first]).total_seconds()


if __name__ == "__main__":
    raise SystemExit(main())
