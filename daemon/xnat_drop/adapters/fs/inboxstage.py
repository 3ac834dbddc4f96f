"""XNAT's inbox on this machine: staging folders of hard links, the path-check file, and the
start-up checks of the inbox root. Effect.

XNAT follows links when it walks a staging folder, so nothing but what this module makes may
ever be in it: hard links (or copies) of the accepted files, each checked to be the very file
inspection judged, in a folder built under a hidden name and renamed into place once complete.
Everything is done through open directories (beneath.py): no link on the way is followed, and
the user's files are only ever read. The inbox root belongs to the service: anyone who could
write there could plant a link that XNAT follows.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from xnat_drop.adapters.fs.beneath import Beneath, Dir, stamp
from xnat_drop.core.errors import SessionChangedError
from xnat_drop.core.inbox import CANARY_PREFIX, LinkMode, building_name, staging_name
from xnat_drop.core.model import FileFacts
from xnat_drop.core.shown import shown

CANARY_TEXT = b"xnat-drop checks XNAT's view of its inbox here; this file is removed at once.\n"
_COPY_BLOCK = 1 << 20
_EXDEV_WORDS = (
    "it is on another filesystem than the drop tree, and hard links cannot cross "
    'filesystems. Fix: put the inbox on the drop tree\'s filesystem, or set inbox.link = "copy"'
)


def stage(
    source: Path,
    files: Iterable[FileFacts],
    root: Path,
    project: str,
    claim_id: str,
    link: LinkMode,
    progress: Callable[[], None] = lambda: None,
) -> None:
    """Make `<root>/<project>/<staging_name(claim_id)>/` hold exactly `files` (paths below the
    claimed folder `source`), laid out as there. A leftover of an earlier try of the claim is
    removed first (XNAT was never asked to import it: the caller knows).

    Raises SessionChangedError when a file is not the one inspection judged, OSError (EXDEV
    for a link across filesystems, EPERM for a link to a file the kernel protects) when the
    inbox refuses; either way nothing of it is left in the inbox.
    """
    with Dir.open(root) as inbox, inbox.child(project, create=True) as folder:
        trusted(folder)
        discard(folder, claim_id)
        building = building_name(claim_id)
        try:
            with (
                folder.child(building, create=True) as top,
                Dir.open(source) as claimed,
                Beneath(claimed) as reader,
                _Writer(top) as writer,
            ):
                for facts in files:
                    _place(reader, writer, facts, link)
                    progress()
        except BaseException:
            discard(folder, claim_id)  # nothing half-staged stays in XNAT's inbox
            raise
        folder.move(building, folder, staging_name(claim_id))


def state(root: Path, project: str, claim_id: str, files: Iterable[FileFacts]) -> str:
    """The staged files as they are now, as one digest (each one's inode, size, mtime and
    ctime): equal digests mean nobody wrote to them in between. "" if one is missing."""
    digest = hashlib.sha256()
    try:
        with (
            Dir.open(root) as inbox,
            inbox.child(project) as folder,
            folder.child(staging_name(claim_id)) as top,
            Beneath(top) as staged,
        ):
            for facts in files:
                name = facts.path.rpartition("/")[2]
                st = staged.folder(facts.path).lstat(name)
                if st is None:
                    return ""
                key = (facts.path, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                digest.update(repr(key).encode("utf-8", "surrogateescape"))
    except FileNotFoundError:
        return ""
    return digest.hexdigest()


def remove(root: Path, project: str, claim_id: str) -> None:
    """Remove the claim's staging folder (finished or half built), if there is one."""
    try:
        with Dir.open(root) as inbox, inbox.child(project) as folder:
            discard(folder, claim_id)
    except FileNotFoundError:
        pass


def discard(folder: Dir, claim_id: str) -> None:
    for name in (building_name(claim_id), staging_name(claim_id)):
        st = folder.lstat(name)
        if st is not None and stat.S_ISDIR(st.st_mode):
            _remove_tree(folder, name)


@contextlib.contextmanager
def canary(root: Path, project: str) -> Iterator[str]:
    """A plain file (no archive extension) in the project's inbox folder while the `with`
    lasts; yields its name. It is removed afterwards, whatever happened."""
    name = f"{CANARY_PREFIX}{secrets.token_hex(6)}"
    with Dir.open(root) as inbox, inbox.child(project, create=True) as folder:
        trusted(folder)
        fd = folder.open_file(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.fchmod(fd, 0o644)  # XNAT's account reads it whatever our umask
            os.write(fd, CANARY_TEXT)
        finally:
            os.close(fd)
        try:
            yield name
        finally:
            with contextlib.suppress(FileNotFoundError):
                folder.unlink(name)


def root_problems(root: Path, work: Path, link: LinkMode, *, try_link: bool = True) -> list[str]:
    """What makes the inbox root unusable, as sentences ending in the fix: missing, a link,
    writable by others than the service, or (hard links) on another filesystem than the work
    folder. Changes nothing but a link made and removed at once; without `try_link`
    (check-config, which changes nothing) the two folders' devices are compared instead."""
    key = "inbox.root"
    try:
        st = os.lstat(root)
    except OSError as exc:
        return [f"{key}: cannot look at {shown(str(root))}: {exc.strerror} (is it mounted?)"]
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        return [f"{key}: {shown(str(root))} is not a folder (a link or a file); configure the "
                "folder itself"]  # fmt: skip
    found = []
    if st.st_uid not in (os.geteuid(), 0):
        found.append(
            f"{key}: {shown(str(root))} belongs to user id {st.st_uid}, not to the service "
            f"(user id {os.geteuid()}) or root: its owner could plant links that XNAT follows. "
            f"Fix: chown {os.geteuid()} {shown(str(root))}"
        )
    group_ok = st.st_gid == os.getegid()  # the service's own group
    if st.st_mode & stat.S_IWOTH or (st.st_mode & stat.S_IWGRP and not group_ok):
        found.append(
            f"{key}: {shown(str(root))} is writable by lab members (mode "
            f"{stat.S_IMODE(st.st_mode):04o}): XNAT follows links, so anyone who can write "
            f"there can make XNAT import any file it can read. Fix: chmod g-w,o-w "
            f"{shown(str(root))}"
        )
    if link == "hardlink" and not found:
        problem = _link_problem(work, root) if try_link else _device_problem(work, st)
        if problem:
            found.append(f"{key}: {shown(str(root))}: {problem}")
    return found


def trusted(folder: Dir) -> None:
    """Raise PermissionError unless `folder` (a project folder of the inbox) is the service's
    and not writable by lab members: XNAT would follow a link planted there."""
    st = os.fstat(folder.fd)
    writable = st.st_mode & stat.S_IWOTH or (
        st.st_mode & stat.S_IWGRP and st.st_gid != os.getegid()
    )
    if st.st_uid not in (os.geteuid(), 0) or writable:
        raise PermissionError(
            errno.EPERM,
            f"{folder.shown()} must belong to the service and be writable by nobody else "
            f"(owner id {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}): XNAT follows links",
        )


def _device_problem(work: Path, root: os.stat_result) -> str:
    above = work
    while not os.path.lexists(above) and above != above.parent:
        above = above.parent
    try:
        same = os.stat(above).st_dev == root.st_dev
    except OSError:
        return ""
    return "" if same else _EXDEV_WORDS


def _link_problem(work: Path, root: Path) -> str:
    """Why a hard link from the work folder into the inbox fails, or ""."""
    name = f".xnat-drop-linktest-{secrets.token_hex(6)}"
    try:
        with Dir.open(work) as here, Dir.open(root) as there:
            os.close(here.open_file(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            try:
                os.link(name, name, src_dir_fd=here.fd, dst_dir_fd=there.fd, follow_symlinks=False)
                there.unlink(name)
            finally:
                here.unlink(name)
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            return _EXDEV_WORDS
        return f"cannot make a hard link there: {exc.strerror}"
    return ""


class _Writer:
    """The staging folder's subfolders, made on the way and kept open for the next file."""

    def __init__(self, top: Dir) -> None:
        self.top = top
        self._open: tuple[str, Dir] | None = None

    def folder(self, relpath: str) -> Dir:
        parent = relpath.rpartition("/")[0]
        if not parent:
            return self.top
        if self._open is None or self._open[0] != parent:
            made = self.top.descend(tuple(parent.split("/")), create=True)
            self.close()
            self._open = (parent, made)
        return self._open[1]

    def close(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _place(reader: Beneath, writer: _Writer, facts: FileFacts, link: LinkMode) -> None:
    """One accepted file into staging: the file inspection judged (its stamp), regular, never
    a link; a hard link is checked to be that very inode after it is made."""
    name = facts.path.rpartition("/")[2]
    source = reader.folder(facts.path)
    fd = source.open_file(name)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (facts.stamp and stamp(st) != facts.stamp):
            raise SessionChangedError(f"{facts.path}: changed after it was inspected")
        target = writer.folder(facts.path)
        if link == "hardlink":
            os.link(name, name, src_dir_fd=source.fd, dst_dir_fd=target.fd, follow_symlinks=False)
            made = target.lstat(name)
            if made is None or (made.st_dev, made.st_ino) != (st.st_dev, st.st_ino):
                target.unlink(name)  # swapped between our look and the link
                raise SessionChangedError(f"{facts.path}: replaced while it was staged")
        else:
            _copy(fd, target, name, st.st_size)
            if stamp(os.fstat(fd)) != stamp(st):
                raise SessionChangedError(f"{facts.path}: changed while it was copied")
    finally:
        os.close(fd)


def _copy(fd: int, target: Dir, name: str, size: int) -> None:
    out = target.open_file(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.fchmod(out, 0o644)  # readable by XNAT's account whatever our umask
        offset = 0
        while offset < size:
            sent = os.sendfile(out, fd, offset, min(_COPY_BLOCK, size - offset))
            if sent == 0:
                raise SessionChangedError(f"{shown(name)}: shrank while it was copied")
            offset += sent
    finally:
        os.close(out)


def _remove_tree(parent: Dir, name: str) -> None:
    """Remove the folder `name` and everything in it, never following a link."""
    with parent.child(name) as folder:
        for entry in folder.scandir():
            if entry.is_dir(follow_symlinks=False):
                _remove_tree(folder, entry.name)
            else:
                folder.unlink(entry.name)
    parent.rmdir(name)
