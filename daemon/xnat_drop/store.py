"""State kept in folders: claims in the work folder, finished sessions in done/ and failed/.

Every move is one `rename` within one filesystem, so a session is always wholly in exactly
one place. The daemon never copies, edits or deletes anything inside a session folder; reports
are written beside it, atomically, before the folder's final move.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from .config import PathsConfig

CLAIM_FILE = "claim.json"


@dataclass(frozen=True, slots=True)
class Claim:
    """A session taken out of incoming/: `.work/<id>/<name>` beside `.work/<id>/claim.json`."""

    id: str
    dir: Path
    relpath: tuple[str, ...]
    claimed_at: float

    @property
    def folder(self) -> Path:
        return self.dir / self.relpath[-1]

    @property
    def display(self) -> str:
        return "/".join(self.relpath)


def prepare(paths: PathsConfig) -> None:
    """Create the drop tree's folders if missing (not their parent: it may be an absent mount)."""
    for folder in (paths.incoming, paths.done, paths.failed, paths.work):
        if not folder.parent.is_dir():
            raise FileNotFoundError(f"{folder.parent} does not exist (is the share mounted?)")
        folder.mkdir(exist_ok=True)


def claim(paths: PathsConfig, relpath: tuple[str, ...], now: float) -> Claim | None:
    """Take the session at incoming/`relpath` by one atomic rename into the work folder.

    Returns None when the folder is gone (another daemon took it, or the user moved it).
    The claim record is written first, so a crash at any point leaves either the session in
    incoming/ or a complete claim.
    """
    claim_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + "-" + secrets.token_hex(4)
    claim_dir = paths.work / claim_id
    claim_dir.mkdir()
    record = {"relpath": list(relpath), "claimed_at": now}
    write_atomic(claim_dir / CLAIM_FILE, json.dumps(record).encode())
    source = paths.incoming.joinpath(*relpath)
    try:
        os.rename(source, claim_dir / relpath[-1])
    except FileNotFoundError:
        _discard(claim_dir)
        return None
    item = Claim(claim_id, claim_dir, relpath, now)
    if item.folder.is_symlink():  # swapped for a link after it was found: put it back untouched
        os.rename(item.folder, source)
        _discard(claim_dir)
        return None
    return item


def recover(paths: PathsConfig) -> list[Claim]:
    """Claims left in the work folder by an earlier run, oldest first.

    A claim whose session folder is missing (a crash before the claim rename, or after the
    final move) holds no user data and is removed.
    """
    found: list[Claim] = []
    if not paths.work.is_dir():
        return found
    for claim_dir in sorted(p for p in paths.work.iterdir() if p.is_dir() and not p.is_symlink()):
        try:
            record = json.loads((claim_dir / CLAIM_FILE).read_text())
            relpath = tuple(str(part) for part in record["relpath"])
            claimed_at = float(record["claimed_at"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not ours, or damaged: leave it for a human
        item = Claim(claim_dir.name, claim_dir, relpath, claimed_at)
        if item.folder.is_dir() and not item.folder.is_symlink():
            found.append(item)
        else:
            _discard(claim_dir)
    return found


REPORT_SUFFIXES = (".report.txt", ".report.json")


def destination(root: Path, item: Claim) -> Path:
    """Where `item` will go below `root` (done/ or failed/): its relative path, made unique.

    A name already taken (the same session dropped twice) gets a `__2`, `__3` suffix, so
    nothing is ever overwritten.
    """
    return unique_destination(root.joinpath(*item.relpath), REPORT_SUFFIXES)


def finish(item: Claim, dest: Path, reports: dict[str, str]) -> Path:
    """Write the reports beside `dest`, then move the claimed folder there; returns `dest`.

    `reports` maps a suffix such as ".report.txt" to its text. The reports come first so a
    crash can never leave a finished folder without its explanation.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    for suffix, text in reports.items():
        write_atomic(dest.parent / f"{dest.name}{suffix}", text.encode("utf-8"))
    os.rename(item.folder, dest)
    _discard(item.dir)
    return dest


def unique_destination(dest: Path, suffixes: tuple[str, ...]) -> Path:
    """`dest`, or `dest__N` for the smallest N where neither the folder nor a report exists."""
    candidate, n = dest, 1
    while candidate.exists() or any(
        (candidate.parent / f"{candidate.name}{s}").exists() for s in suffixes
    ):
        n += 1
        candidate = dest.with_name(f"{dest.name}__{n}")
    return candidate


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the new one, never half of it."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "wb") as fp:
            fp.write(data)
            fp.flush()
            os.fsync(fp.fileno())
        os.rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _discard(claim_dir: Path) -> None:
    """Remove a claim folder that holds no user data (only our claim record)."""
    (claim_dir / CLAIM_FILE).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # something else is in there: never delete it
        claim_dir.rmdir()
