"""status.json in the state directory: the running daemon rewrites it (atomically, when
something changed); `xnat-drop status` reads it, and never talks to the daemon."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from xnat_drop.adapters.fs.beneath import Dir

FILE_NAME = "status.json"
SCHEMA = 1


def write(state_dir: Path, snapshot: dict[str, Any]) -> None:
    """Replace status.json atomically. Names in it are escaped already (shown.py); anything
    that is still not UTF-8 becomes a backslash escape rather than an error."""
    data = (json.dumps(snapshot, indent=2, ensure_ascii=False) + "\n").encode(
        "utf-8", "backslashreplace"
    )
    with Dir.open(state_dir) as folder:
        folder.write_atomic(FILE_NAME, data, 0o644)


def read(state_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((state_dir / FILE_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_running(pid: int) -> bool:
    """True when a process with this pid exists (the daemon that wrote the snapshot)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by another user (the service account)
    return True
