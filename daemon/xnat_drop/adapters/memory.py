"""Giving freed memory back to the system (glibc's malloc_trim). Effect: process memory only.

A large session is judged and sent in passes that each make and drop many small objects; the
C allocator keeps the freed pages of its heaps for reuse, so the service would stay as large
as its busiest moment. `trim` returns them once a session has been judged and once it has
been sent. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


def trim() -> None:
    """Return the allocator's free pages to the system (a few milliseconds)."""
    call = _malloc_trim()
    if call is not None:
        call(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    # A plain call into libc through ctypes: no callback, so no writable+executable memory.
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        function = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function
