"""What a claim is made of besides the session: its record (`claim.json`: the path below
incoming/, when, and which daemon made it), its lock file, and the daemon's own id.

See claims.py for how they are used, and docs/several-hosts.md for why the owner matters.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import secrets
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from xnat_drop.adapters.fs.beneath import Dir, UnsafePathError, check_name

LOCK_FILE = "lock"
MAX_LEVELS = 16
OWNER_FILE = "owner-id"  # in the state directory: this daemon's id in its claim records
_OWNER_ID = re.compile(r"[0-9a-f]{32}")
_MAX_HOST = 255


@dataclass(frozen=True, slots=True)
class Owner:
    """The daemon that makes claims: `id` from its state directory, `host` for people."""

    id: str
    host: str


def owner(state: Path) -> Owner:
    """This daemon's `Owner`: the id in `state`/owner-id (made on the first start), and the
    host name. Two daemons with one state directory are one owner (and one ledger).

    Raises OSError when the file cannot be read or made, ValueError when it is damaged.
    """
    with Dir.open(state) as folder:
        try:
            data = folder.read_small(OWNER_FILE, 256)
        except FileNotFoundError:
            fresh = secrets.token_hex(16).encode()
            with contextlib.suppress(FileExistsError):  # another start made it first
                fd = folder.open_file(OWNER_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    os.write(fd, fresh + b"\n")
                    os.fsync(fd)
                finally:
                    os.close(fd)
            data = folder.read_small(OWNER_FILE, 256)
    text = data.decode("ascii", "replace").strip()
    if not _OWNER_ID.fullmatch(text):
        raise ValueError(
            f"{state / OWNER_FILE} is damaged: write back the 32 hex digits its claims name as "
            '"owner" in the work folder\'s claim.json files, or remove it (a new id is made, and '
            "its old claims are then left to nobody: docs/several-hosts.md)"
        )
    return Owner(text, socket.gethostname()[:_MAX_HOST] or "localhost")


def parse_record(data: bytes) -> tuple[tuple[str, ...], float, str, str]:
    """The relative path, time, owner id and host in a claim record ("" for a record made
    before owners were recorded); ValueError unless all are sane."""
    record = json.loads(data)
    relpath = record["relpath"] if isinstance(record, dict) else None
    claimed_at = record.get("claimed_at") if isinstance(record, dict) else None
    owner = record.get("owner", "") if isinstance(record, dict) else None
    host = record.get("host", "") if isinstance(record, dict) else None
    if (
        not isinstance(relpath, list)
        or not 1 <= len(relpath) <= MAX_LEVELS
        or not all(isinstance(part, str) for part in relpath)
        or not isinstance(claimed_at, (int, float))
        or not math.isfinite(claimed_at)
        or not isinstance(owner, str)
        or not isinstance(host, str)
        or len(owner) > 64
        or len(host) > _MAX_HOST
    ):
        raise ValueError("a damaged claim record")
    for part in relpath:
        check_name(part)  # never "..", "/" or "": the path stays below incoming/ and done/
    return tuple(relpath), float(claimed_at), owner, host


def lock_claim(claim_dir: Dir, *, create: bool) -> int | None:
    """An fd holding an exclusive lock on the claim's lock file, or None if someone holds it.

    Raises OSError when the lock file cannot be opened (e.g. not ours to write).
    """
    flags = os.O_RDWR | (os.O_CREAT if create else 0)
    fd = claim_dir.open_file(LOCK_FILE, flags, 0o600)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafePathError(claim_dir.shown(LOCK_FILE), "is not a regular file")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd
