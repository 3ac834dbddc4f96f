"""State kept in folders: claims in the work folder, finished sessions in done/ and failed/.

Every move is one `rename` within one filesystem, so a session is always wholly in exactly
one place. The daemon never copies, edits or deletes anything inside a session folder; reports
are written beside it, atomically, before the folder's final move.

A claim is `.work/<id>/` holding `claim.json`, a `lock` file and the session folder. The daemon
that owns a claim keeps an exclusive `flock` on its lock file: a second daemon on the same tree
never adopts it, and a killed daemon's claims are free again at once (the kernel drops its
locks), to be recovered by whichever daemon looks next.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from .config import PathsConfig

CLAIM_FILE = "claim.json"
LOCK_FILE = "lock"
REPORT_SUFFIXES = (".report.txt", ".report.json")


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
    """Create the drop tree's folders if missing and check they share one filesystem.

    Raises FileNotFoundError when the tree's parent is missing (never created: it may be an
    unmounted share) and OSError when the folders are on different filesystems, where a move
    would be a copy and could be seen half done.
    """
    folders = {
        "incoming": paths.incoming,
        "done": paths.done,
        "failed": paths.failed,
        "work": paths.work,
    }
    for folder in folders.values():
        if not folder.parent.is_dir():
            raise FileNotFoundError(f"{folder.parent} does not exist (is the share mounted?)")
        folder.mkdir(exist_ok=True)
    read_only = [
        f"{name} {folder}" for name, folder in folders.items() if not os.access(folder, os.W_OK)
    ]
    if read_only:
        raise OSError(
            f"cannot write to {', '.join(read_only)}: a read-only mount, missing permissions, "
            "or (under systemd) the drop tree missing from ReadWritePaths= in the unit's drop-in"
        )
    devices = {name: folder.stat().st_dev for name, folder in folders.items()}
    if len(set(devices.values())) > 1:
        where = ", ".join(f"{name} {folders[name]} (device {dev})" for name, dev in devices.items())
        raise OSError(
            "incoming, done, failed and work must be on one filesystem so that every move is an "
            f"atomic rename; they are not: {where}"
        )
    _probe_renames(paths.work, [f for name, f in folders.items() if name != "work"])


class WorkArea:
    """The work folder: claims taken, held (locked) and given up by this process."""

    def __init__(self, paths: PathsConfig) -> None:
        self.paths = paths
        self._locks: dict[str, int] = {}  # claim id -> fd holding its flock

    def close(self) -> None:
        """Release every claim lock (the claims stay, for the next start to recover)."""
        for fd in self._locks.values():
            os.close(fd)
        self._locks.clear()

    def held(self) -> set[str]:
        return set(self._locks)

    def claim(self, relpath: tuple[str, ...], now: float) -> Claim | None:
        """Take the session at incoming/`relpath` by one atomic rename into the work folder.

        Returns None when the folder is gone (another daemon took it, or the user moved it).
        The claim record and its lock come first, so a crash at any point leaves either the
        session in incoming/ or a complete claim.
        """
        claim_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + "-" + secrets.token_hex(4)
        claim_dir = self.paths.work / claim_id
        claim_dir.mkdir()
        try:
            fd = _lock(claim_dir)
            assert fd is not None, "nobody else knows this new folder"
            self._locks[claim_id] = fd
            record = {"relpath": list(relpath), "claimed_at": now}
            write_atomic(claim_dir / CLAIM_FILE, json.dumps(record).encode())
        except OSError:  # e.g. no space left: undo, the session stays in incoming/
            self._discard(claim_id, claim_dir)
            raise
        source = self.paths.incoming.joinpath(*relpath)
        try:
            os.rename(source, claim_dir / relpath[-1])
        except FileNotFoundError:
            self._discard(claim_id, claim_dir)
            return None
        item = Claim(claim_id, claim_dir, relpath, now)
        if item.folder.is_symlink():  # swapped for a link after it was found: put it back
            os.rename(item.folder, source)
            self._discard(claim_id, claim_dir)
            return None
        return item

    def recover(self) -> list[Claim]:
        """Claims in the work folder that no living process holds, oldest first, now ours.

        A claim whose session folder is missing (a crash before the claim rename, or after the
        final move) holds no user data and is removed.
        """
        found: list[Claim] = []
        if not self.paths.work.is_dir():
            return found
        for claim_dir in sorted(
            p for p in self.paths.work.iterdir() if p.is_dir() and not p.is_symlink()
        ):
            if claim_dir.name in self._locks:
                continue
            try:
                record = json.loads((claim_dir / CLAIM_FILE).read_text())
                relpath = tuple(str(part) for part in record["relpath"])
                claimed_at = float(record["claimed_at"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not ours, damaged, or a claim being written right now
            fd = _lock(claim_dir)
            if fd is None:
                continue  # another daemon is working on it
            self._locks[claim_dir.name] = fd
            item = Claim(claim_dir.name, claim_dir, relpath, claimed_at)
            if item.folder.is_dir() and not item.folder.is_symlink():
                found.append(item)
            else:
                self._discard(item.id, claim_dir)
        return found

    def finish(self, item: Claim, dest: Path, reports: dict[str, str]) -> Path:
        """Write the reports beside `dest`, then move the claimed folder there; returns `dest`.

        `reports` maps a suffix such as ".report.txt" to its text. The reports come first so a
        crash can never leave a finished folder without its explanation.
        """
        write_reports(dest, reports)
        return self.complete(item, dest)

    def complete(self, item: Claim, dest: Path) -> Path:
        """The final move of a claimed folder to `dest` (its reports are already there)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(item.folder, dest)
        self._discard(item.id, item.dir)
        return dest

    def release(self, item: Claim) -> None:
        """Give a claim back without finishing it (it stays for the next recovery)."""
        fd = self._locks.pop(item.id, None)
        if fd is not None:
            os.close(fd)

    def _discard(self, claim_id: str, claim_dir: Path) -> None:
        """Remove a claim folder that holds no user data (only our record and lock)."""
        (claim_dir / CLAIM_FILE).unlink(missing_ok=True)
        (claim_dir / LOCK_FILE).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # something else is in there: never delete it
            claim_dir.rmdir()
        fd = self._locks.pop(claim_id, None)
        if fd is not None:
            os.close(fd)


def write_reports(dest: Path, reports: dict[str, str]) -> None:
    """Write each report beside `dest` (`<dest>.report.txt`, ...), atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    for suffix, text in reports.items():
        # A file name that is not UTF-8 (Latin-1 from an old Windows export) reaches us as
        # surrogate escapes: written as \udcXX, the report stays valid UTF-8 (and JSON).
        write_atomic(dest.parent / f"{dest.name}{suffix}", text.encode("utf-8", "backslashreplace"))


def destination(root: Path, item: Claim) -> Path:
    """Where `item` will go below `root` (done/ or failed/): its relative path, made unique.

    A name already taken (the same session dropped twice) gets a `__2`, `__3` suffix, so
    nothing is ever overwritten. Reports this very claim wrote before a crash (no folder yet)
    mark the name it had chosen: it is used again.
    """
    own = _own_reports(root, item)
    if own:
        return own[0]
    return unique_destination(root.joinpath(*item.relpath), REPORT_SUFFIXES)


def discard_own_reports(root: Path, item: Claim) -> None:
    """Remove reports this claim wrote in `root` before a crash, for a decision that changed
    (e.g. failed/ first, done/ after the restart): they describe no folder."""
    for dest in _own_reports(root, item):
        for suffix in REPORT_SUFFIXES:
            dest.with_name(dest.name + suffix).unlink(missing_ok=True)


def _own_reports(root: Path, item: Claim) -> list[Path]:
    """Destinations below `root` whose JSON report names this claim and whose folder is absent."""
    base = root.joinpath(*item.relpath)
    if not base.parent.is_dir():
        return []
    found = []
    for report in base.parent.glob(f"{base.name}*.report.json"):
        dest = report.with_name(report.name.removesuffix(".report.json"))
        if dest.exists() or not (dest.name == base.name or dest.name.startswith(f"{base.name}__")):
            continue
        try:
            claim = json.loads(report.read_text()).get("claim")
        except (OSError, ValueError, AttributeError):
            continue
        if claim == item.id:
            found.append(dest)
    return sorted(found)


def unique_destination(dest: Path, suffixes: tuple[str, ...]) -> Path:
    """`dest`, or `dest__N` for the smallest N where neither the folder nor a report exists."""
    candidate, n = dest, 1
    while candidate.exists() or any(
        (candidate.parent / f"{candidate.name}{s}").exists() for s in suffixes
    ):
        n += 1
        candidate = dest.with_name(f"{dest.name}__{n}")
    return candidate


def remove_empty_parents(incoming: Path, folders: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """Remove these folders below incoming/ (and their parents) if they are empty.

    incoming/ itself is never removed. `rmdir` only removes an empty folder, so a file a lab
    member adds at the same moment wins. Returns the folders removed.
    """
    removed = []
    for relpath in sorted(folders, key=len, reverse=True):
        parts = relpath
        while parts:
            try:
                incoming.joinpath(*parts).rmdir()
            except OSError:
                break
            removed.append(parts)
            parts = parts[:-1]
    return removed


FORCE_SUFFIX = ".xnat-drop-force"


def force_marker(incoming: Path, relpath: tuple[str, ...]) -> Path:
    """The file `xnat-drop retry --force` leaves beside a session: upload it even if the
    ledger says it was delivered before. A dot-file beside the folder, never inside it."""
    parent = incoming.joinpath(*relpath[:-1])
    return parent / f".{relpath[-1]}{FORCE_SUFFIX}"


def take_force_marker(incoming: Path, relpath: tuple[str, ...]) -> bool:
    """True (and the marker removed) when the session was sent back with --force."""
    marker = force_marker(incoming, relpath)
    try:
        marker.unlink()
    except FileNotFoundError:
        return False
    return True


def _probe_renames(work: Path, others: list[Path]) -> None:
    """Move an empty folder from work/ into each other folder and back.

    The same device is not enough: a bind mount (or a share mounted twice) splits one
    filesystem into mounts between which rename fails (EXDEV). Better to know at start.
    """
    probe = work / f".xnat-drop-probe-{secrets.token_hex(4)}"
    probe.mkdir()
    try:
        for folder in others:
            there = folder / probe.name
            try:
                os.rename(probe, there)
            except OSError as exc:
                raise OSError(
                    f"cannot move a folder from {work} to {folder} by rename ({exc.strerror}): "
                    "they must be one filesystem, under one mount (no bind mounts between them)"
                ) from exc
            os.rename(there, probe)
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()


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


def _lock(claim_dir: Path) -> int | None:
    """An fd holding an exclusive lock on the claim's lock file, or None if someone holds it."""
    fd = os.open(claim_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
