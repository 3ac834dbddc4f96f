"""An open regular file and its first bytes, read once: what every check of a file reads.

Every byte inspection reads of a file is read here (`read_fully`), by offset, from the file
descriptor the classifier opened (never by path).
"""

from __future__ import annotations

import os

# The first read of every file. Small, because the zip reads every byte again: a header that
# does not fit teaches the reader how much the next files of the session need (pydicomheader).
HEAD_READ = 4 * 1024
MAX_HEAD_READ = 1024 * 1024  # largest first read learned from headers that did not fit


class OpenFile:
    """An open regular file (`fd`, owned by the caller) and its first bytes."""

    __slots__ = ("fd", "head", "size", "whole")

    def __init__(self, fd: int, head: bytes, size: int, whole: bool) -> None:
        self.fd = fd
        self.head = head  # the first bytes; all of the file when `whole`
        self.size = size  # from fstat, as the rules see it
        self.whole = whole

    @classmethod
    def read(cls, fd: int, size: int, first: int) -> OpenFile:
        """The file open at `fd`, `size` bytes long, with its first `first` bytes read."""
        head = read_fully(fd, first, 0)
        return cls(fd, head, size, len(head) < first)

    def read_at(self, offset: int, length: int) -> bytes:
        """Up to `length` bytes from `offset` (fewer only at the end of the file)."""
        end = offset + length
        if self.whole or end <= len(self.head):
            return self.head[offset:end]
        return read_fully(self.fd, length, offset)


def read_fully(fd: int, length: int, offset: int) -> bytes:
    """`length` bytes from `offset`, or fewer only where the file ends."""
    data = os.pread(fd, length, offset)
    if len(data) == length or not data:
        return data
    parts = [data]
    got = len(data)
    while got < length:
        more = os.pread(fd, length - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)
