"""Claims in the work folder: taking a session out of incoming/, holding it, giving it up.

Every move is one `rename` within one filesystem, so a session is always wholly in exactly
one place. The daemon never copies, edits or deletes anything inside a session folder.

A claim is `.work/<id>/` holding `claim.json`, a `lock` file and the session folder. The daemon
that owns a claim keeps an exclusive `flock` on its lock file: a second daemon on the same tree
never adopts it, and a killed daemon's claims are free again at once (the kernel drops its
locks).

Several daemons may share one drop tree, each on its own host with its own state directory
(docs/several-hosts.md). The claim record names the daemon that made it (`Owner`: an id kept in
its state directory, and its host name for people), and only that daemon adopts it again: its
ledger alone knows what of the session already reached XNAT. Another daemon would start from
nothing and XNAT's existing-session check would decide, so a killed daemon's claims wait for
it to start again, even when its lock is free. A record without an owner (made before owners
were recorded) is adopted by whichever daemon gets its lock, as before, and is its own from then
on.

Filing (reports beside a free name in done/ or failed/, then the move) is done under one
share-wide lock, `.work/.filing`, so that two daemons never choose the same free name.

Nothing here follows a link: incoming/ and the work folder are held open and every step below
them is taken with the *at() calls of beneath.py. The work folder belongs to the service
(trust.py checks that at start); what is found in it is still checked before it is believed,
because a claim record names a path that is about to be used.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from xnat_drop.adapters.fs.beneath import Dir, UnsafePathError, check_name
from xnat_drop.adapters.fs.claimrecord import LOCK_FILE, Owner, lock_claim, parse_record
from xnat_drop.adapters.fs.tree import walk
from xnat_drop.core.config import PathsConfig
from xnat_drop.core.errors import SessionChangedError
from xnat_drop.core.model import Fingerprint
from xnat_drop.core.shown import shown, shown_path
from xnat_drop.core.stability import fingerprint

log = logging.getLogger(__name__)

CLAIM_FILE = "claim.json"
MAX_RECORD = 64 * 1024  # bytes of a claim record: a path of at most MAX_LEVELS names
WORK_MODE = 0o700  # the work folder and each claim: the service's alone
FILING_LOCK = ".filing"  # in the work folder: held while a session is filed
FILING_WAIT = 30.0  # seconds to wait for another daemon's filing before trying again later
LOOK_AGAIN = 10.0  # seconds before another daemon's claim is looked at (its lock tried) again


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
        """The path below incoming/ as people read it (escaped: names are data)."""
        return shown_path(self.relpath)


def prepare(paths: PathsConfig) -> None:
    """Create the drop tree's folders if missing and check they share one filesystem.

    Raises FileNotFoundError when the tree's parent is missing (never created: it may be an
    unmounted share), UnsafePathError when one of them is a link or a file, and OSError when
    they are read-only or on different filesystems, where a move would be a copy and could be
    seen half done.
    """
    folders = {
        "incoming": paths.incoming,
        "done": paths.done,
        "failed": paths.failed,
        "work": paths.work,
    }
    opened: dict[str, Dir] = {}
    try:
        for name, folder in folders.items():
            if not folder.parent.is_dir():
                raise FileNotFoundError(f"{folder.parent} does not exist (is the share mounted?)")
            with contextlib.suppress(FileExistsError):
                folder.mkdir(mode=WORK_MODE if name == "work" else 0o777)
            opened[name] = Dir.open(folder)
        read_only = [
            f"{name} {folders[name]}"
            for name, d in opened.items()
            if not os.access(".", os.W_OK, dir_fd=d.fd)
        ]
        if read_only:
            raise OSError(
                f"cannot write to {', '.join(read_only)}: a read-only mount, missing permissions, "
                "or (under systemd) the drop tree missing from ReadWritePaths= in the unit's "
                "drop-in"
            )
        devices = {name: os.fstat(d.fd).st_dev for name, d in opened.items()}
        if len(set(devices.values())) > 1:
            where = ", ".join(f"{n} {folders[n]} (device {dev})" for n, dev in devices.items())
            raise OSError(
                "incoming, done, failed and work must be on one filesystem so that every move "
                f"is an atomic rename; they are not: {where}"
            )
        _probe_renames(opened["work"], [d for n, d in opened.items() if n != "work"])
    finally:
        for d in opened.values():
            d.close()


class WorkArea:
    """The work folder: claims taken, held (locked) and given up by this process."""

    def __init__(self, paths: PathsConfig, owner: Owner, look_again: float = LOOK_AGAIN) -> None:
        self.paths = paths
        self.owner = owner
        self._look_again = look_again
        self._locks: dict[str, int] = {}  # claim id -> fd holding its flock
        self._work = Dir.open(paths.work)
        self._uid = os.geteuid()
        self._warned: set[str] = set()  # claim folders found that are not ours, said once
        # Another daemon's claims: was its lock free, and when (monotonic) to look again.
        self._foreign: dict[str, tuple[bool, float]] = {}

    def close(self) -> None:
        """Release every claim lock (the claims stay, for the next start to recover)."""
        for fd in self._locks.values():
            os.close(fd)
        self._locks.clear()
        self._work.close()

    def held(self) -> set[str]:
        return set(self._locks)

    def claim(
        self,
        relpath: tuple[str, ...],
        now: float,
        settled: Fingerprint | None = None,
        marker: str = "",
    ) -> Claim | None:
        """Take the session at incoming/`relpath` by one atomic rename into the work folder.

        Returns None when the folder is gone (another daemon took it, or the user moved it).
        With `settled`, the folder is looked at again once it is ours: if it is no longer what
        settled (the look that found it may be a poll interval old), it is put back and
        SessionChangedError raised. Raises UnsafePathError when a folder on the way is a link,
        and OSError when the rename is refused (the claim folder is removed again then).
        The claim record and its lock come first, so a crash at any point leaves either the
        session in incoming/ or a complete claim.
        """
        for part in relpath:
            check_name(part)
        name = relpath[-1]
        with Dir.open(self.paths.incoming) as incoming:
            try:
                parent = incoming.descend(relpath[:-1])
            except FileNotFoundError:
                return None
        with parent:
            st = parent.lstat(name)
            if st is None:
                return None
            if not stat.S_ISDIR(st.st_mode):
                raise UnsafePathError(parent.shown(name), "is not a folder (a link?)")
            claim_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + "-" + secrets.token_hex(4)
            self._work.mkdir(claim_id, WORK_MODE)
            try:
                with self._work.child(claim_id) as claim_dir:
                    fd = lock_claim(claim_dir, create=True)
                    assert fd is not None, "nobody else knows this new folder"
                    self._locks[claim_id] = fd
                    claim_dir.write_atomic(CLAIM_FILE, self._record(relpath, now), 0o600)
                    try:
                        parent.move(name, claim_dir, name)
                    except FileNotFoundError:
                        self._discard(claim_id)
                        return None
                    self._check_taken(parent, claim_dir, name, settled, marker)
            except BaseException:
                self._discard(claim_id)
                raise
        return Claim(claim_id, self.paths.work / claim_id, relpath, now)

    def _record(self, relpath: tuple[str, ...], claimed_at: float) -> bytes:
        """A claim record of this owner."""
        record = {
            "relpath": list(relpath),
            "claimed_at": claimed_at,
            "owner": self.owner.id,
            "host": self.owner.host,
        }
        # ensure_ascii: names that are not UTF-8 travel as \udcXX escapes.
        return json.dumps(record).encode()

    def _check_taken(
        self, parent: Dir, claim_dir: Dir, name: str, settled: Fingerprint | None, marker: str
    ) -> None:
        """The folder just taken must be a folder and, given `settled`, unchanged since it
        settled; otherwise it goes back to incoming/ and SessionChangedError is raised."""
        problem = ""
        try:
            with claim_dir.child(name) as folder:
                if settled is not None:
                    now = fingerprint(
                        ((e.relpath, e.size, e.mtime_ns) for e in walk(folder)), marker
                    )
                    if now != settled:
                        problem = "it changed after it was last seen settled"
        except UnsafePathError:  # swapped for a link after it was found
            problem = "it was replaced by a link"
        except OSError:  # e.g. not readable: ours now, and inspection reports it
            return
        if not problem:
            return
        try:
            claim_dir.move(name, parent, name)
        except OSError as exc:  # the name was taken again in incoming/ meanwhile: keep it
            log.warning("%s: could not put it back (%s); judging it as it is", shown(name), exc)
            return
        raise SessionChangedError(f"{problem}; it stays in incoming/")

    def recover(self) -> list[Claim]:
        """Claims of this owner in the work folder that no living process holds, oldest first,
        now ours.

        A claim whose session folder is missing (a crash before the claim rename, or after the
        final move) holds no user data and is removed. Another daemon's claims are left to it,
        whether it runs or not (logged once, and again when its lock is found free). Anything
        that is not a claim this service made (not ours, a link, a damaged or strange record)
        is left alone and logged.
        """
        found: list[Claim] = []
        names = sorted(self._work.names())
        present = set(names)
        self._foreign = {k: v for k, v in self._foreign.items() if k in present}
        now = time.monotonic()
        for claim_id in names:
            if claim_id in self._locks or claim_id.startswith("."):
                continue
            if claim_id in self._foreign and now < self._foreign[claim_id][1]:
                continue  # another daemon's, looked at lately (a lock tried costs a round trip)
            st = self._work.lstat(claim_id)
            if st is None or not stat.S_ISDIR(st.st_mode):
                continue
            if st.st_uid != self._uid:
                self._warn_once(claim_id, "it belongs to another user")
                continue
            item = self._adopt(claim_id)
            if item is not None:
                found.append(item)
        return found

    def _adopt(self, claim_id: str) -> Claim | None:
        try:
            with self._work.child(claim_id) as claim_dir:
                try:
                    record = parse_record(claim_dir.read_small(CLAIM_FILE, MAX_RECORD))
                except FileNotFoundError:
                    return None  # a claim being written right now, or not a claim
                relpath, claimed_at, owner, host = record
                if owner and owner != self.owner.id:
                    self._leave(claim_id, claim_dir, relpath, owner, host)
                    return None
                fd = lock_claim(claim_dir, create=True)
                if fd is None:
                    return None  # another daemon is working on it
                self._locks[claim_id] = fd
                if not owner:  # made before owners were recorded: ours from now on
                    claim_dir.write_atomic(CLAIM_FILE, self._record(relpath, claimed_at), 0o600)
                st = claim_dir.lstat(relpath[-1])
        except (OSError, ValueError) as exc:
            fd = self._locks.pop(claim_id, None)
            if fd is not None:  # taken before the trouble: let go, tried again next time
                os.close(fd)
            self._warn_once(claim_id, f"it is not a usable claim ({exc})")
            return None
        if st is None or not stat.S_ISDIR(st.st_mode):
            self._discard(claim_id)
            return None
        return Claim(claim_id, self.paths.work / claim_id, relpath, claimed_at)

    def _leave(
        self, claim_id: str, claim_dir: Dir, relpath: tuple[str, ...], owner: str, host: str
    ) -> None:
        """Another daemon's claim: never adopted. Said once, and again when its lock is found
        free (its daemon stopped or was killed: the claim waits for it to start again); looked
        at again only every `look_again` seconds.

        The lock is only tried (never created) and let go at once.
        """
        try:
            fd = lock_claim(claim_dir, create=False)
        except OSError:  # gone meanwhile (filed), or not ours to open
            return
        free = fd is not None
        if fd is not None:
            os.close(fd)
        before = self._foreign.get(claim_id)
        self._foreign[claim_id] = (free, time.monotonic() + self._look_again)
        if before is not None and before[0] == free:
            return
        where = shown_path(relpath)
        daemon = f"the xnat-drop daemon on {shown(host)} (id {shown(owner[:8])})"
        if free:
            log.warning(
                "%s (claim %s) belongs to %s, which is not running (or this share's locks do "
                "not reach across hosts); it is left for that daemon to resume when it starts "
                "again (see docs/several-hosts.md if it never will)",
                where,
                shown(claim_id),
                daemon,
            )
        else:
            log.info("%s (claim %s) is being handled by %s", where, shown(claim_id), daemon)

    @contextlib.contextmanager
    def filing(self, wait: float = FILING_WAIT) -> Iterator[None]:
        """Hold the share-wide filing lock (`.work/.filing`) while a session is filed, so that
        two daemons on one tree never choose the same free name in done/ or failed/.

        Raises OSError (EAGAIN) when another daemon keeps it for `wait` seconds: the session
        stays claimed and filing is tried again later.
        """
        fd = self._work.open_file(FILING_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UnsafePathError(self._work.shown(FILING_LOCK), "is not a regular file")
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise OSError(
                            errno.EAGAIN,
                            f"another daemon kept {self._work.shown(FILING_LOCK)} for {wait:.0f} s",
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # the lock goes with it

    def _warn_once(self, claim_id: str, why: str) -> None:
        if claim_id not in self._warned:
            self._warned.add(claim_id)
            log.warning("ignoring %s in the work folder: %s", shown(claim_id), why)

    def complete(self, item: Claim, root: Path, relpath: tuple[str, ...]) -> Path:
        """The final move of a claimed folder to `root`/`relpath` (its reports are already
        there); creates the folders on the way, never through a link. Returns the new path."""
        with (
            Dir.open(root) as top,
            top.descend(relpath[:-1], create=True) as parent,
            self._work.child(item.id) as claim_dir,
        ):
            claim_dir.move(item.relpath[-1], parent, relpath[-1])
        self._discard(item.id)
        return root.joinpath(*relpath)

    def give_back(self, item: Claim) -> bool:
        """Put a claimed session back where it was dropped in incoming/ (a session held while
        its copy may still be running) and drop the claim. Returns False, keeping the claim,
        when that place is gone or taken again, or the move is refused."""
        try:
            with (
                Dir.open(self.paths.incoming) as incoming,
                incoming.descend(item.relpath[:-1]) as parent,
                self._work.child(item.id) as claim_dir,
            ):
                claim_dir.move(item.relpath[-1], parent, item.relpath[-1])
        except OSError as exc:
            log.warning("%s: could not put it back into incoming/ (%s)", item.display, exc)
            return False
        self._discard(item.id)
        return True

    def release(self, item: Claim) -> None:
        """Give a claim back without finishing it (it stays for the next recovery)."""
        fd = self._locks.pop(item.id, None)
        if fd is not None:
            os.close(fd)

    def _discard(self, claim_id: str) -> None:
        """Remove a claim folder that holds no user data (only our record and lock).

        A claim folder holding anything else (the session, after a failed step) keeps its
        record, so the next recovery finds the session again.

        The record goes first (nothing adopts a claim without one), then the lock is let go,
        and only then is its file removed: a network share keeps a file removed while it is
        open under a hidden name until it is closed (NFS `.nfsXXXX`, FUSE `.fuse_hidden...`),
        and the claim folder could not be removed.
        """
        fd = self._locks.pop(claim_id, None)
        try:
            with contextlib.suppress(OSError), self._work.child(claim_id) as claim_dir:
                if set(claim_dir.names()) <= {CLAIM_FILE, LOCK_FILE}:
                    with contextlib.suppress(FileNotFoundError):
                        claim_dir.unlink(CLAIM_FILE)
                    if fd is not None:
                        os.close(fd)
                        fd = None
                    with contextlib.suppress(FileNotFoundError):
                        claim_dir.unlink(LOCK_FILE)
                    self._work.rmdir(claim_id)
        finally:
            if fd is not None:
                os.close(fd)


def _probe_renames(work: Dir, others: list[Dir]) -> None:
    """Move an empty folder from work/ into each other folder and back.

    The same device is not enough: a bind mount (or a share mounted twice) splits one
    filesystem into mounts between which rename fails (EXDEV). Better to know at start.
    """
    probe = f".xnat-drop-probe-{secrets.token_hex(4)}"
    work.mkdir(probe, WORK_MODE)
    try:
        for folder in others:
            try:
                work.move(probe, folder, probe)
            except OSError as exc:
                raise OSError(
                    f"cannot move a folder from {work.path} to {folder.path} by rename "
                    f"({exc.strerror}): they must be one filesystem, under one mount (no bind "
                    "mounts between them)"
                ) from exc
            folder.move(probe, work, probe)
    finally:
        with contextlib.suppress(OSError):
            work.rmdir(probe)
        for folder in others:
            with contextlib.suppress(OSError):
                folder.rmdir(probe)
