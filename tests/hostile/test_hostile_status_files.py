"""The status files as the lab meets them: the daemon runs as its own unprivileged user, lab
members copy with `cp -r` under their own uid and read the files as themselves. (Lab members
cannot plant a link at the name: a drop root they may write, or one the service may not, is
refused at start; the link case itself is tests/test_sharestatus.py's.)
"""

from __future__ import annotations

import os
import stat
import subprocess

from xnat_standin import Emulator

from conftest import PROJECT
from hostile_lab import (
    LAB_GID,
    LAB_UID,
    SERVICE_UID,
    LabTree,
    as_user,
    needs_root,
    no_traceback,
    run_once,
)

pytestmark = needs_root

CLEAN = (PROJECT, "S01", "S01_MR1")


def lab_reads(path: str) -> bytes:
    """`path` as a lab member (not the service, not root) reads it."""
    return subprocess.run(
        [*as_user(LAB_UID, LAB_GID, (LAB_GID,)), "cat", path],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout


def test_the_service_writes_status_files_the_lab_can_read(lab: LabTree, emulator: Emulator) -> None:
    lab.write_config("[status]\nhtml = true\n")
    lab.lab_drop(CLEAN)
    code, log = run_once(lab)
    assert code == 0, log
    for name in ("STATUS.txt", "STATUS.html"):
        found = os.lstat(lab.root / name)
        assert stat.S_ISREG(found.st_mode)
        assert (found.st_uid, found.st_gid) == (SERVICE_UID, LAB_GID)  # the share's group
        assert stat.S_IMODE(found.st_mode) == 0o644  # whatever the service's umask
    text = lab_reads(str(lab.root / "STATUS.txt"))
    assert b"S01_MR1" in text and b"\r\n" in text
    assert not (lab.incoming / "STATUS.txt").exists()
    no_traceback(log)
