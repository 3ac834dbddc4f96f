"""One claimed file as an HTTP request body: streamed from disk with its exact length, hashed
(MD5, what XNAT keeps per resource file) while it is sent, so the file is read once.

The file is opened below the claimed session folder through no link (beneath.py) and must
still be the file inspection judged (its stamp): only judged bytes leave.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from xnat_drop.adapters.fs.beneath import Beneath, Dir, stamp
from xnat_drop.core.errors import SessionChangedError

BLOCK = 1 << 20


class FileBody:
    """The bytes of `relpath` below `folder`, read once, in blocks; `md5` once all are read."""

    def __init__(self, folder: Path, relpath: str, size: int, judged_stamp: int) -> None:
        with Dir.open(folder) as root, Beneath(root) as below:
            self._fd = below.open(relpath)
        st = os.fstat(self._fd)
        if st.st_size != size or (judged_stamp and stamp(st) != judged_stamp):
            os.close(self._fd)
            raise SessionChangedError(f"{relpath} was written after it was judged")
        self._size = size
        self._offset = 0
        self._hash = hashlib.md5(usedforsecurity=False)

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[bytes]:
        while True:
            block = self.read(BLOCK)
            if not block:
                return
            yield block

    def read(self, size: int = -1) -> bytes:
        """The next bytes (at most the judged size: a file grown since is cut, never sent)."""
        left = self._size - self._offset
        want = left if size is None or size < 0 else min(size, left)
        if want <= 0 or self._fd < 0:
            return b""
        data = os.pread(self._fd, want, self._offset)
        if not data:  # shorter than judged: a writer truncated it
            raise SessionChangedError("a resource file became shorter while it was sent")
        self._offset += len(data)
        self._hash.update(data)
        return data

    @property
    def md5(self) -> str:
        """The MD5 of everything sent; "" until the whole file was read."""
        return self._hash.hexdigest() if self._offset == self._size else ""

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
