"""A flood is cheap: tens of thousands of empty folders cost a few log lines and a bounded
status, and a real session dropped among them is still delivered. On the real daemon.

This failed on the code before issue 11 (93eee20): one log line per folder at every start
and a status file listing them all (30 MB for 200,000). The CPU cost and the delivery delay
with 100,000 folders are measured by bench/flood_bench.py, not asserted here.
"""

from __future__ import annotations

import json
import os
import re

from xnat_standin import Emulator

from conftest import PROJECT
from hostile_lab import Daemon, LabTree, cli, needs_root, no_traceback

pytestmark = needs_root

FOLDERS = 20_000


def test_twenty_thousand_empty_folders_cost_little_and_block_nothing(
    lab: LabTree, emulator: Emulator
) -> None:
    flood = lab.incoming / PROJECT / "S99"
    lab.as_lab("mkdir", "-p", str(flood))
    for n in range(FOLDERS):  # (as root, for speed: whose they are does not matter here)
        os.mkdir(flood / f"E{n:06d}")
    with Daemon(lab) as daemon:
        daemon.wait_log("watching", timeout=60)
        daemon.wait_log(r"and \d+ more new folders", timeout=60)
        session = (PROJECT, "S01", "S01_MR1")
        lab.lab_drop(session)
        daemon.until(lambda: lab.done.joinpath(*session).is_dir(), "the real session delivered", 60)
        status_file = lab.state / "status.json"
        daemon.until(lambda: "settling_more" in status_file.read_text(), "a status snapshot")
        snapshot = json.loads(status_file.read_text())
        status = cli(lab, "status")
        code = daemon.stop()
    assert code == 0
    new_lines = [line for line in daemon.lines if ": new, waiting" in line]
    assert len(new_lines) <= 21, len(new_lines)
    assert status_file.stat().st_size < 100_000
    assert len(snapshot["settling"]) <= 100
    assert snapshot["settling_more"] >= FOLDERS - 100
    listed = re.search(r"\.\.\. and ([\d,]+) more", status.stdout)
    assert status.returncode == 0 and listed is not None, status.stdout
    assert int(listed.group(1).replace(",", "")) >= FOLDERS - 100
    no_traceback(daemon.log)
