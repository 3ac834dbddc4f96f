"""The command lines as a user runs them: `xnat-drop`, the demo and `xnat-standin`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

XNAT_DROP = [sys.executable, "-m", "xnat_drop"]
DEMO = [sys.executable, "-m", "xnat_standin.demo"]
STANDIN = [sys.executable, "-m", "xnat_standin"]


def test_demo_ends_with_the_clean_session_in_xnat_and_the_others_in_failed(tmp_path: Path) -> None:
    result = subprocess.run(
        [*DEMO, "--keep", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Demo finished as expected" in out
    assert "DEMO/SUBJ01/SUBJ01_MR1: 14 files, status READY" in out
    assert "=== failed/DEMO/SUBJ02/SUBJ02_MR1.report.txt ===" in out and "[nifti]" in out
    assert "=== failed/DEMO/SUBJ03/SUBJ03_MR1.report.txt ===" in out and "[derived-series]" in out
    drop = tmp_path / "demo" / "drop"
    assert (drop / "done" / "DEMO" / "SUBJ01" / "SUBJ01_MR1").is_dir()
    data = json.loads((drop / "failed" / "DEMO" / "SUBJ03" / "SUBJ03_MR1.report.json").read_text())
    assert data["violations"][0]["subject"] == (
        "the series of 5 files under 04_MoCoSeries/ (first: 04_MoCoSeries/IM0001.dcm)"
    )


def test_emulator_runs_standalone_and_stops_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            *STANDIN,
            "--port",
            "0",
            "--project",
            "P1",
            "--user",
            "alice:pw",
            "--root",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line and "P1" in line
        url = line.split("listening on ")[1].split()[0]
        with urllib.request.urlopen(f"{url}/xapi/siteConfig/buildInfo", timeout=5) as answer:
            assert json.load(answer)["version"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    assert proc.returncode == 0


def test_no_command_prints_help_and_fails() -> None:
    result = subprocess.run(XNAT_DROP, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    for command in ("run", "check", "retry", "status", "check-config"):
        assert command in result.stdout
