"""When is a dropped folder finished? Pure: every function gets `now` from the caller.

A folder is stable when consecutive observations give the same fingerprint for `settle`
seconds. Only observations are compared, never file mtimes against the local clock: on a
network share the writer's clock is not ours.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from xnat_drop.core.model import Fingerprint, Seen
from xnat_drop.core.names import is_junk_path, is_partial_name

_MODULUS = 1 << 128


def fingerprint(entries: Iterable[tuple[str, int, int]], marker: str = "") -> Fingerprint:
    """Summarise a folder from its `(relative path, size, mtime_ns)` entries.

    Junk (e.g. `.DS_Store`, which Finder rewrites at will) is left out so it cannot keep a
    folder unsettled forever; partial-copy names are counted and flagged; a `marker` file at
    the top of the folder is noted.
    """
    # Each entry's hash is added up (modulo 2**128): the sum does not depend on the order the
    # entries come in, so nothing is kept per file (a sorted list of 50,000 lines would cost
    # about 6 MB, every rescan).
    total_hash = count = total = newest = 0
    partial = has_marker = False
    for relpath, size, mtime_ns in entries:
        if marker and relpath == marker:
            has_marker = True
        if is_junk_path(relpath):
            continue
        line = f"{relpath}\0{size}\0{mtime_ns}\n".encode("utf-8", "surrogateescape")
        total_hash += int.from_bytes(hashlib.blake2b(line, digest_size=16).digest(), "big")
        count += 1
        total += size
        newest = max(newest, mtime_ns)
        partial = partial or is_partial_name(relpath.rsplit("/", 1)[-1])
    names_hash = f"{total_hash % _MODULUS:032x}"
    return Fingerprint(names_hash, count, total, newest, partial, has_marker)


def observe(previous: Seen | None, current: Fingerprint, now: float) -> Seen:
    """Record an observation: the clock restarts whenever the fingerprint differs."""
    if previous is not None and previous.fingerprint == current:
        return previous
    return Seen(current, now)


def is_stable(seen: Seen, now: float, settle: float, *, needs_marker: bool = False) -> bool:
    """True when the folder has files, none partial, unchanged for at least `settle` seconds
    (and, in marker mode, holds the ready marker).

    An empty folder never settles: copy tools create the folder first and fill it later.
    """
    at = settles_at(seen, settle, needs_marker=needs_marker)
    return at is not None and now >= at


def settles_at(seen: Seen, settle: float, *, needs_marker: bool = False) -> float | None:
    """When the folder will be stable if nothing changes, or None if it cannot settle as is."""
    fp = seen.fingerprint
    if fp.count == 0 or fp.has_partial or (needs_marker and not fp.has_marker):
        return None
    return seen.since + settle


def waiting_phase(seen: Seen, *, needs_marker: bool = False) -> str:
    """What a folder not taken yet waits for, as a key: "empty", "partial" (copy-in-progress
    names), "marker" (its ready marker) or "copying" (for it to stop changing)."""
    fp = seen.fingerprint
    if fp.count == 0:
        return "empty"
    if fp.has_partial:
        return "partial"
    if needs_marker and not fp.has_marker:
        return "marker"
    return "copying"


def waiting_for(seen: Seen, *, needs_marker: bool = False) -> str:
    """Why a folder is not taken yet, in words for `status`."""
    return _WAITING_WORDS[waiting_phase(seen, needs_marker=needs_marker)]


_WAITING_WORDS = {
    "empty": "empty folder",
    "partial": "copy in progress (*.part, *.tmp or similar names)",
    "marker": "waiting for its ready marker",
    "copying": "waiting for it to stop changing",
}
