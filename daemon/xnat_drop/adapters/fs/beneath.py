"""Directories held open, and everything done beneath them without following a link. Effect.

The drop tree is written by other people, so no path below a configured folder is ever handed
to the kernel whole: a lab member could swap any folder on it for a symbolic link between our
look and our use. Instead every step goes through an open directory: each folder is opened
from its parent's file descriptor with `O_NOFOLLOW | O_DIRECTORY`, and files are opened,
created, renamed and removed with the *at() system calls relative to the folder that holds
them. A link, a FIFO or a file where a folder is expected raises `UnsafePathError`; a link
where a file is expected is never opened (`O_NOFOLLOW`).

Only the configured folders themselves (the administrator's paths) are opened by path.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType

from xnat_drop.core.shown import shown

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO that appeared after a look would otherwise wait for a writer
# forever. It has no effect on reads from regular files.
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
NAME_MAX = 255  # bytes in one file name on every filesystem the daemon supports
_RENAME_NOREPLACE = 1
_WRITE_BUFFER = 256 * 1024  # bytes gathered from pieces before one write


class UnsafePathError(OSError):
    """A name that is not a plain folder where one is expected (a link, a file, a FIFO), or a
    name that could leave its folder ("..", "", a "/" inside). `where` names it for people."""

    def __init__(self, where: str, what: str) -> None:
        self.where = where
        super().__init__(errno.ELOOP, f"{where} {what}")


def check_name(name: str) -> str:
    """`name` if it is one plain path component, else UnsafePathError."""
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise UnsafePathError(repr(shown(name)), "is not a plain file or folder name")
    return name


def stamp(st: os.stat_result) -> int:
    """A file's identity and state as one number: device, inode, size, mtime and ctime.

    Equal stamps mean the same file, unchanged (ctime moves on every write and every metadata
    change, and cannot be set back by the writer). 0 never occurs, so it can mean "unknown".
    """
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return hash(key) & 0x7FFFFFFFFFFFFFFF or 1


def name_fits(name: str) -> bool:
    """True when `name` is short enough for the filesystem (NAME_MAX bytes)."""
    return len(os.fsencode(name)) <= NAME_MAX


class Dir:
    """An open directory. Close it (or use `with`); every method works relative to it."""

    __slots__ = ("fd", "path")

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path  # for messages only: never opened again by this path

    @classmethod
    def open(cls, path: Path | str) -> Dir:
        """Open a configured folder by its path; its last component must not be a link."""
        path = Path(path)
        try:
            fd = os.open(path, DIR_FLAGS)
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP) and os.path.lexists(path):
                raise UnsafePathError(str(path), _not_a_folder(os.lstat(path))) from exc
            raise
        return cls(fd, path)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Dir:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def shown(self, name: str = "") -> str:
        """A path below this folder as people read it (for messages)."""
        return shown(str(self.path / name if name else self.path))

    # -- folders ------------------------------------------------------------------------------

    def child(self, name: str, *, create: bool = False) -> Dir:
        """Open the folder `name` in this one, never through a link; with `create`, make it
        first when missing, like this one: the same mode (setgid bit included) and group, and
        the same owner too when running as root. Whoever runs it (the service, or a data
        manager's `sudo`), the folders it leaves in the drop tree are the lab's, like those
        around them. Raises UnsafePathError when `name` is anything but a folder,
        FileNotFoundError when it is missing (and not created)."""
        check_name(name)
        made = False
        if create:
            try:
                os.mkdir(name, 0o700, dir_fd=self.fd)  # nobody else's until it is like this one
                made = True
            except FileExistsError:
                pass
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                st = self.lstat(name)
                if st is not None:
                    raise UnsafePathError(self.shown(name), _not_a_folder(st)) from exc
            raise
        if made:
            try:
                _like(fd, os.fstat(self.fd))
            except BaseException:
                os.close(fd)
                raise
        return Dir(fd, self.path / name)

    def descend(self, parts: tuple[str, ...], *, create: bool = False) -> Dir:
        """Open the folder `parts` below this one, one component at a time (see `child`: with
        `create`, each folder made is like the one it is made in). The returned Dir is new (the
        caller closes it), even for no parts."""
        current = Dir(os.dup(self.fd), self.path)
        try:
            for name in parts:
                nxt = current.child(name, create=create)
                current.close()
                current = nxt
        except BaseException:
            current.close()
            raise
        return current

    def mkdir(self, name: str, mode: int = 0o777) -> None:
        os.mkdir(check_name(name), mode, dir_fd=self.fd)

    def rmdir(self, name: str) -> None:
        os.rmdir(check_name(name), dir_fd=self.fd)

    def names(self) -> list[str]:
        """The names in this folder (any kind), unsorted."""
        return os.listdir(self.fd)

    def scandir(self) -> Iterator[os.DirEntry[str]]:
        """os.scandir of this folder (entries carry names only; their paths mean nothing)."""
        with os.scandir(self.fd) as entries:
            yield from entries

    # -- entries ------------------------------------------------------------------------------

    def lstat(self, name: str) -> os.stat_result | None:
        """The entry's own status (a link is a link), or None when there is none."""
        try:
            return os.stat(check_name(name), dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def exists(self, name: str) -> bool:
        """True when anything at all has this name, a dangling link included."""
        return self.lstat(name) is not None

    def open_file(self, name: str, flags: int = READ_FLAGS, mode: int = 0o644) -> int:
        """An fd for the file `name` here, never through a link (O_NOFOLLOW is always added)."""
        return os.open(check_name(name), flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=self.fd)

    def read_small(self, name: str, limit: int) -> bytes:
        """The content of the regular file `name`, at most `limit` bytes (more is an error)."""
        fd = self.open_file(name)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UnsafePathError(self.shown(name), "is not a regular file")
            data = os.read(fd, limit + 1)
        finally:
            os.close(fd)
        if len(data) > limit:
            raise OSError(errno.EFBIG, f"{self.shown(name)} is larger than {limit} bytes")
        return data

    def unlink(self, name: str) -> None:
        os.unlink(check_name(name), dir_fd=self.fd)

    def write_atomic(
        self,
        name: str,
        data: bytes | Iterable[bytes],
        mode: int = 0o666,
        *,
        exact: bool = False,
        sync: bool = True,
        prepare: Callable[[int], None] | None = None,
    ) -> os.stat_result:
        """Write `name` so that readers see the old file or the new one, never half of it;
        returns what the name now is.

        `data` is the content, or its pieces (written through a buffer as they come).
        Whatever had the name before (a file, a link) is replaced, never written through.
        `exact`: the file gets `mode` whatever the umask (files others must read); `sync`:
        on disk before the rename (off for files rewritten every few seconds); `prepare` is
        given the new file's fd before it is written (to set its group).
        """
        check_name(name)
        tmp = f".{name}.{secrets.token_hex(4)}.tmp"
        if not name_fits(tmp):
            tmp = f".xnat-drop.{secrets.token_hex(8)}.tmp"
        fd = self.open_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            try:
                if exact:
                    os.fchmod(fd, mode)
                if prepare is not None:
                    prepare(fd)
                if isinstance(data, bytes):
                    _write_all(fd, data)
                else:
                    buffered = bytearray()
                    for piece in data:
                        buffered += piece
                        if len(buffered) >= _WRITE_BUFFER:
                            _write_all(fd, buffered)
                            buffered.clear()
                    _write_all(fd, buffered)
                if sync:
                    os.fsync(fd)
                os.rename(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=self.fd)
                raise
            return os.fstat(fd)  # after the rename, which may change its ctime
        finally:
            os.close(fd)

    def move(self, name: str, dest: Dir, dest_name: str) -> None:
        """Rename `name` here to `dest_name` in `dest` (same filesystem), never replacing
        anything: FileExistsError when the new name is taken."""
        check_name(name)
        check_name(dest_name)
        if _renameat2 is not None:
            result = _renameat2(
                self.fd, os.fsencode(name), dest.fd, os.fsencode(dest_name), _RENAME_NOREPLACE
            )
            if result == 0:
                return
            code = ctypes.get_errno()
            if code not in (errno.ENOSYS, errno.EINVAL, errno.EPERM):  # EINVAL: fs lacks it
                raise OSError(code, os.strerror(code), dest.shown(dest_name))
        # Without renameat2: look, then rename (a folder made in between could be replaced
        # only if it is empty, and would then hold nothing).
        if dest.exists(dest_name):
            raise FileExistsError(errno.EEXIST, "already exists", dest.shown(dest_name))
        os.rename(name, dest_name, src_dir_fd=self.fd, dst_dir_fd=dest.fd)


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _like(fd: int, parent: os.stat_result) -> None:
    """Make the folder just made (open as `fd`) like the `parent` it was made in: its group (its
    owner too, as root), then its mode. A folder found not to be ours (someone replaced it
    between our mkdir and our open) is left as it is."""
    if os.fstat(fd).st_uid != os.geteuid():
        return
    take_group(fd, parent, owner=True)
    os.fchmod(fd, stat.S_IMODE(parent.st_mode))


def take_group(fd: int, parent: os.stat_result, *, owner: bool = False) -> None:
    """Give the file or folder `fd` the group of its `parent` folder (with `owner`, as root,
    the parent's owner too). What the kernel refuses is left as it is: a group the service is
    not in (a setgid parent has given its group already), or root on a share that maps it to
    nobody."""
    with contextlib.suppress(PermissionError):
        if owner and os.geteuid() == 0:
            os.fchown(fd, parent.st_uid, parent.st_gid)
        elif os.fstat(fd).st_gid != parent.st_gid:
            os.fchown(fd, -1, parent.st_gid)


def _not_a_folder(st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link, which xnat-drop never follows"
    if stat.S_ISREG(st.st_mode):
        return "is a file where a folder was expected"
    return "is not a folder (a FIFO, socket or device)"


def _load_renameat2() -> Callable[[int, bytes, int, bytes, int], int] | None:
    """glibc's renameat2 (2.28+), for RENAME_NOREPLACE; None where libc lacks it.

    A plain call into libc through ctypes: no callback, so no writable+executable memory
    (the unit's MemoryDenyWriteExecute= holds).
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        return None
    c_int, c_path = ctypes.c_int, ctypes.c_char_p
    function.argtypes = [c_int, c_path, c_int, c_path, ctypes.c_uint]
    function.restype = c_int
    renameat2: Callable[[int, bytes, int, bytes, int], int] = function
    return renameat2


_renameat2 = _load_renameat2()


class Beneath:
    """Opens files by their "/"-separated path below a root folder, through no link at all.

    Keeps the folder of the last file open, so a session read folder by folder costs one
    openat() per file. Raises UnsafePathError when a folder on the way is not a folder.
    """

    def __init__(self, root: Dir) -> None:
        self.root = root
        self._parent: tuple[str, Dir] | None = None

    def close(self) -> None:
        if self._parent is not None:
            self._parent[1].close()
            self._parent = None

    def __enter__(self) -> Beneath:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def folder(self, relpath: str) -> Dir:
        """The open folder holding `relpath` (owned by this object: do not close it)."""
        parent, _, _ = relpath.rpartition("/")
        if not parent:
            return self.root
        if self._parent is not None and self._parent[0] == parent:
            return self._parent[1]
        opened = self.root.descend(tuple(parent.split("/")))
        self.close()
        self._parent = (parent, opened)
        return opened

    def open(self, relpath: str, flags: int = READ_FLAGS) -> int:
        """An fd for the file at `relpath`; never follows a link on the way or at the end."""
        return self.folder(relpath).open_file(relpath.rpartition("/")[2], flags)
