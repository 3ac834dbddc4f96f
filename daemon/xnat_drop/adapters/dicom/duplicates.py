"""Tell copies from conflicts among DICOM files that share a SOP Instance UID. Read-only.

Files sharing a SOP Instance UID (rare) are compared: by size first (files of different sizes
differ), and files of equal size by SHA-256, each read again through the session folder and
checked to be still exactly as it was classified (its `stamp`). The rules then see a `digest`
per such file: equal digests are copies.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace

from xnat_drop.adapters.fs.beneath import Beneath, Dir, stamp
from xnat_drop.core.errors import SessionChangedError
from xnat_drop.core.instances import shared_uids
from xnat_drop.core.model import FileFacts

# A file larger than this is not hashed (a copy that large is not worth reading twice to
# prove); nor is anything past the session's budget.
MAX_HASHED_BYTES = 1024 * 1024 * 1024
MAX_SESSION_HASHED_BYTES = 8 * 1024 * 1024 * 1024
HASH_BLOCK = 1024 * 1024  # bytes hashed between two calls of `progress`


def digests(
    root: Dir, files: Sequence[FileFacts], progress: Callable[[], None] | None
) -> dict[int, FileFacts]:
    """The files of `files` (by position) that get a `digest`: each DICOM file that shares its
    SOP Instance UID (rare).

    Within such a group, files of different sizes differ without being read: each gets
    "size-<bytes>". Files of equal size get their SHA-256, unless they are larger than
    MAX_HASHED_BYTES or the session already hashed MAX_SESSION_HASHED_BYTES: then each gets
    "unhashed-<its path>", different from every other file's. `progress` is called per
    HASH_BLOCK hashed. Raises SessionChangedError when a file changed since it was
    classified.
    """
    changes: dict[int, FileFacts] = {}
    groups = shared_uids(files)
    if not groups:
        return changes
    budget = MAX_SESSION_HASHED_BYTES
    buffer = bytearray(HASH_BLOCK)
    with Beneath(root) as opener:
        for members in groups:
            by_size: dict[int, list[tuple[int, FileFacts]]] = defaultdict(list)
            for index, facts in members:
                by_size[facts.size].append((index, facts))
            for size, same in by_size.items():
                hashed = len(same) > 1 and size <= MAX_HASHED_BYTES and size * len(same) <= budget
                if hashed:
                    budget -= size * len(same)
                for index, facts in same:
                    if len(same) == 1:
                        digest = f"size-{size}"
                    elif hashed:
                        digest = _digest(opener, facts, buffer, progress)
                    else:
                        digest = f"unhashed-{facts.path}"
                    changes[index] = replace(facts, digest=digest)
    return changes


def _digest(
    opener: Beneath, facts: FileFacts, buffer: bytearray, progress: Callable[[], None] | None
) -> str:
    """The SHA-256 of the file as it was classified (its `size` bytes, its `stamp`)."""
    changed = SessionChangedError(f"{facts.path} changed during inspection")
    try:
        fd = opener.open(facts.path)
    except OSError as exc:  # vanished, or a folder on its path is now a link
        raise changed from exc
    try:
        if facts.stamp and stamp(os.fstat(fd)) != facts.stamp:
            raise changed
        digest = hashlib.sha256()
        view = memoryview(buffer)
        left = facts.size
        while left:
            got = os.readv(fd, [view[: min(left, len(view))]])
            if got == 0:
                raise changed
            digest.update(view[:got])
            left -= got
            if progress is not None:
                progress()
        if facts.stamp and stamp(os.fstat(fd)) != facts.stamp:
            raise changed
    finally:
        os.close(fd)
    return digest.hexdigest()
