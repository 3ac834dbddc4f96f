"""DICOM files that share a SOP Instance UID, found without a table of every UID. Pure.

A set of 50,000 UIDs costs about 7 MB while it lives, and a Python process rarely gives that
memory back. A bitmap of UID hashes (at most 1 MiB) finds the few hashes seen twice, and a
second pass groups only the files with those hashes by their actual UID: a hash collision
costs a look, never a wrong group.
"""

from __future__ import annotations

from collections.abc import Sequence

from xnat_drop.core.model import FileFacts

_MAX_BITS = 1 << 23


def shared_uids(files: Sequence[FileFacts]) -> list[list[tuple[int, FileFacts]]]:
    """(position, file) of each DICOM file with a header whose SOP Instance UID another such
    file has too, grouped by UID: the groups in the order of their first file, each in order.
    `files` is read twice."""
    bits = min(_MAX_BITS, 1 << max(10, (64 * len(files)).bit_length()))  # a power of two
    mask = bits - 1
    seen = bytearray(bits // 8)
    again: set[int] = set()
    for facts in files:
        if facts.is_dicom and facts.header is not None:
            key = hash(facts.header.sop_instance_uid) & mask
            byte, bit = key >> 3, 1 << (key & 7)
            if seen[byte] & bit:
                again.add(key)
            else:
                seen[byte] |= bit
    if not again:
        return []
    by_uid: dict[str, list[tuple[int, FileFacts]]] = {}
    for index, facts in enumerate(files):
        if facts.is_dicom and facts.header is not None:
            uid = facts.header.sop_instance_uid
            if hash(uid) & mask in again:
                by_uid.setdefault(uid, []).append((index, facts))
    return [members for members in by_uid.values() if len(members) > 1]
