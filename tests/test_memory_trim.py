"""memory.trim gives the C allocator's free pages back (glibc's malloc_trim)."""

from __future__ import annotations

import platform

import pytest

from xnat_drop.adapters import memory


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_freed_heap_pages_go_back_to_the_system() -> None:
    assert memory._malloc_trim() is not None
    # 100 MiB in blocks below glibc's mmap threshold, so they live in the heap; the last one
    # stays, so the heap cannot simply shrink from its top when the others are freed.
    blocks = [bytearray(64 * 1024) for _ in range(1600)]
    for block in blocks:
        block[::4096] = b"x" * len(block[::4096])  # touch every page
    keep = blocks[-1]
    del blocks
    before = rss_kib()
    memory.trim()
    after = rss_kib()
    assert keep[0] == ord("x")
    assert before - after > 50 * 1024, (before, after)
