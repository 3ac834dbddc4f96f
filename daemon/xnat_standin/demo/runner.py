"""`python -m xnat_standin.demo` (`scripts/demo`): the whole path on a laptop, against the
XNAT stand-in.

Builds a temporary drop tree with three sample sessions (one clean, one with a NIfTI file, one
with a scanner-derived MoCo series), runs the real daemon once over it, then prints the tree,
the failed/ reports and what the stand-in's prearchive holds. Exit 0 when every session ended
where it should.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
from pathlib import Path

from xnat_drop.adapters import configfile
from xnat_drop.adapters.xnat.client import XnatClient, connect
from xnat_drop.commands.logs import setup_logging
from xnat_drop.service.loop import Service
from xnat_standin import Emulator

from .samples import ORIGINAL, SeriesSpec, write_nifti, write_session

PROJECT = "DEMO"
CLEAN = ("DEMO", "SUBJ01", "SUBJ01_MR1")
WITH_NIFTI = ("DEMO", "SUBJ02", "SUBJ02_MR1")
WITH_DERIVED = ("DEMO", "SUBJ03", "SUBJ03_MR1")
DEMO_RESOURCES = {
    "physio/rest_BOLD_ecg.tsv": b"time\tecg\n"
    + b"".join(f"{t / 400:.4f}\t{512 + (t * 37) % 90}\n".encode() for t in range(2000)),
    "physio/rest_BOLD_resp.tsv": b"time\tresp\n"
    + b"".join(f"{t / 50:.2f}\t{60 + (t * 7) % 30}\n".encode() for t in range(250)),
    "behav/rest_BOLD_events.csv": b"onset,duration,trial_type\n0.0,300.0,rest\n",
}


def run_demo(keep: Path | None = None) -> int:
    """Run the demo in `keep` (kept afterwards) or a temporary folder (removed afterwards)."""
    base = keep if keep is not None else Path(tempfile.mkdtemp(prefix="xnat-drop-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        return _demo(base)
    finally:
        if keep is None:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"\nThe demo tree is kept in {base}")


def _demo(base: Path) -> int:
    setup_logging("info")
    logging.getLogger("xnat_standin").setLevel(logging.WARNING)  # the daemon's story only
    drop = base / "drop"
    incoming = drop / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(16)
    secret = base / "xnat-secret"
    secret.touch(mode=0o600)
    secret.write_text(f"demo:{password}\n")

    with Emulator(root=base / "xnat", users={"demo": password}, projects=[PROJECT]) as emu:
        config_path = base / "xnat-drop.toml"
        config_path.write_text(_config_text(drop, base / "state", emu.url, secret))
        _stage_sessions(base / "staging", incoming)
        print(f"\nDrop tree {drop}; XNAT stand-in at {emu.url}\n")

        env = dict(os.environ)
        cfg = configfile.load(config_path, env)

        def connect_xnat() -> XnatClient:
            return connect(cfg.xnat, env)

        code = Service(cfg, connect=connect_xnat, env=env).run(once=True, timeout=120)
        prearchive = emu.prearchive()
        resources = emu.session_resources(CLEAN[-1]) if prearchive else {}

    print("\n=== The drop tree afterwards ===")
    print(_tree(drop))
    status = drop / "STATUS.txt"  # what lab members read on the share (CRLF, for Notepad)
    if status.exists():
        print("=== STATUS.txt, beside incoming/ ===")
        print(status.read_text(encoding="utf-8-sig").replace("\r\n", "\n"))
    for report in sorted((drop / "done").rglob("*.report.txt")):
        print(f"=== {report.relative_to(drop)} ===")
        print(report.read_text())
    for report in sorted((drop / "failed").rglob("*.report.txt")):
        print(f"=== {report.relative_to(drop)} ===")
        print(report.read_text())
    print("=== The XNAT stand-in's prearchive ===")
    for s in prearchive:
        print(
            f"  {s.project}/{s.subject}/{s.name}: {s.file_count} files, status {s.status}, {s.uri}"
        )

    held = {
        f"{label}/{name}": data
        for label, files in resources.items()
        for name, data in files.items()
    }
    print("=== The session resources XNAT holds for the clean session ===")
    for name, data in sorted(held.items()):
        print(f"  {name}: {len(data)} bytes")
    clean_ok = (
        (drop / "done").joinpath(*CLEAN).is_dir()
        and any((s.project, s.subject, s.name) == CLEAN and s.file_count == 14 for s in prearchive)
        and held == DEMO_RESOURCES
    )
    failed_ok = all((drop / "failed").joinpath(*r).is_dir() for r in (WITH_NIFTI, WITH_DERIVED))
    if code == 0 and clean_ok and failed_ok:
        print(
            "\nDemo finished as expected: the clean session and its physio and behavioural "
            "files are in XNAT, the other two sessions in failed/."
        )
        return 0
    print("\nDemo did NOT end as expected (see the log above).")
    return 1


def _stage_sessions(staging: Path, incoming: Path) -> None:
    """Write each session elsewhere, then move it in whole, as a finished copy would arrive."""
    scans = [
        SeriesSpec(1, "localizer", ("ORIGINAL", "PRIMARY", "LOCALIZER"), images=3),
        SeriesSpec(2, "T1_MPRAGE", images=6),
        SeriesSpec(3, "rest_BOLD", ("ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"), images=5),
    ]
    write_session(staging.joinpath(*CLEAN), scans, patient_id="SUBJ01")
    # Physiological recordings and behavioural files go with the session as XNAT resources.
    for name, data in DEMO_RESOURCES.items():
        path = staging.joinpath(*CLEAN, "resources", name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    write_session(staging.joinpath(*WITH_NIFTI), scans[:2], patient_id="SUBJ02")
    write_nifti(staging.joinpath(*WITH_NIFTI) / "T1_MPRAGE.nii.gz")

    moco = SeriesSpec(4, "MoCoSeries", (*ORIGINAL[:3], "ND", "NORM", "MOCO", "MOSAIC"), images=5)
    write_session(staging.joinpath(*WITH_DERIVED), [*scans, moco], patient_id="SUBJ03")

    for relpath in (CLEAN, WITH_NIFTI, WITH_DERIVED):
        target = incoming.joinpath(*relpath)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging.joinpath(*relpath), target)


def _config_text(drop: Path, state: Path, url: str, secret: Path) -> str:
    return f"""\
[paths]
root = "{drop}"
state_dir = "{state}"

[watch]
settle_seconds = 1
rescan_seconds = 5

[xnat]
url = "{url}"
secret_file = "{secret}"

[retry]
first_delay_seconds = 1
max_delay_seconds = 5
"""


def _tree(root: Path) -> str:
    lines = [f"{root.name}/"]

    def walk(folder: Path, indent: str) -> None:
        children = sorted(p for p in folder.iterdir() if p.name != ".work" or any(p.iterdir()))
        for child in children:
            if child.is_dir():
                files = [p for p in child.iterdir() if p.is_file()]
                subdirs = [p for p in child.iterdir() if p.is_dir()]
                if files and not subdirs:
                    lines.append(f"{indent}{child.name}/  ({len(files)} files)")
                    continue
                lines.append(f"{indent}{child.name}/")
                walk(child, indent + "    ")
            else:
                lines.append(f"{indent}{child.name}")

    walk(root, "    ")
    return "\n".join(lines) + "\n"
