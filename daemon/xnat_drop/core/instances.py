"""DICOM files that share a SOP Instance UID, found without a table of every UID. Pure.

A set of 50,000 UIDs costs about 7 MB while it lives, and a Python process rarely gives that
memory back. An array of UID hashes (8 bytes a file) and a bitmap of them (at most 1 MiB) find
the few hashes seen twice; only the files with those hashes are read again and grouped by
their actual UID: a hash collision costs a look, never a wrong group.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

from xnat_drop.core.model import FileFacts

_MAX_BITS = 1 << 23


def shared_uids(files: Sequence[FileFacts]) -> list[list[tuple[int, FileFacts]]]:
    """(position, file) of each DICOM file with a header whose SOP Instance UID another such
    file has too, grouped by UID: the groups in the order of their first file, each in order.

    `files` is read once; then only the files whose UID hash came twice are read again (by
    position), to compare their UIDs themselves.
    """
    hashes = array("q")  # the UID's hash per file, 8 bytes each (0 for the others)
    bits = min(_MAX_BITS, 1 << max(10, (64 * len(files)).bit_length()))  # a power of two
    mask = bits - 1
    seen = bytearray(bits // 8)
    again: set[int] = set()
    for facts in files:
        if not (facts.is_dicom and facts.header is not None):
            hashes.append(0)
            continue
        full = hash(facts.header.sop_instance_uid) or 1
        hashes.append(full)
        key = full & mask
        byte, bit = key >> 3, 1 << (key & 7)
        if seen[byte] & bit:
            again.add(key)
        else:
            seen[byte] |= bit
    if not again:
        return []
    by_hash: dict[int, list[int]] = {}
    for index, full in enumerate(hashes):
        if full and full & mask in again:
            by_hash.setdefault(full, []).append(index)
    by_uid: dict[str, list[tuple[int, FileFacts]]] = {}
    for index in sorted(i for group in by_hash.values() if len(group) > 1 for i in group):
        facts = files[index]
        assert facts.header is not None
        by_uid.setdefault(facts.header.sop_instance_uid, []).append((index, facts))
    return [members for members in by_uid.values() if len(members) > 1]
