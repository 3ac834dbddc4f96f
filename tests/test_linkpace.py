"""core/linkpace.py: compress a piece only when the link, not the CPU, is the bottleneck."""

from __future__ import annotations

import pytest

from xnat_drop.core import linkpace
from xnat_drop.core.linkpace import Pace, ZipConfig

MiB = 1 << 20


def run(pace: Pace, pieces: int, *, link: float, ratio: float, cpu_per_thread: float) -> Pace:
    """Feed `pieces` pieces of 1 MiB through `pace` as a stream would on a link of `link`
    bytes/s, with data that compresses to `ratio` at `cpu_per_thread` bytes/s."""
    for _ in range(pieces):
        compress = linkpace.compress_next(pace)
        pace = linkpace.taken(pace, MiB)
        wire = MiB
        if compress:
            wire = int(MiB * ratio)
            pace = linkpace.packed(pace, MiB, wire, MiB / cpu_per_thread)
        pace = linkpace.sent(pace, wire, wire / link)
    return pace


@pytest.mark.parametrize(
    ("link", "ratio", "cpu", "compressed"),
    [
        (12e6, 0.5, 150e6, True),  # 100 Mbit/s, MR images: the link is the bottleneck
        (12e6, 0.98, 150e6, False),  # data that does not compress: no gain
        (1.2e9, 0.5, 150e6, False),  # 10 Gbit/s or loopback: the CPU would be
        (100e6, 0.6, 30e6, False),  # a slow CPU on a fast link: storing is quicker
        (40e6, 0.6, 150e6, True),  # a VPN
    ],
)
def test_auto_compresses_exactly_when_the_link_is_the_bottleneck(
    link: float, ratio: float, cpu: float, compressed: bool
) -> None:
    pace = run(Pace(workers=2), 200, link=link, ratio=ratio, cpu_per_thread=cpu)
    share = pace.compressed_total / pace.raw_total
    if compressed:
        assert share > 0.95
    else:
        assert share < 0.1  # the first pieces and one in PROBE_EVERY keep the figures current


def test_auto_follows_a_link_that_slows_down() -> None:
    pace = run(Pace(workers=2), 100, link=1e9, ratio=0.5, cpu_per_thread=150e6)
    assert linkpace.compress_next(pace) is False or pace.pieces % linkpace.PROBE_EVERY == 0
    pace = run(pace, 40, link=10e6, ratio=0.5, cpu_per_thread=150e6)
    assert linkpace.compress_next(pace)


def test_fixed_modes_never_ask_the_link() -> None:
    assert linkpace.compress_next(Pace(mode="deflate"))
    assert not linkpace.compress_next(Pace(mode="stored"))
    pace = run(Pace(mode="deflate"), 10, link=1e9, ratio=0.99, cpu_per_thread=1e6)
    assert pace.compressed_total == pace.raw_total


def test_worth_it_is_the_time_per_byte() -> None:
    assert linkpace.worth_it(link=10e6, ratio=0.5, cpu=100e6)
    assert not linkpace.worth_it(link=10e6, ratio=0.9, cpu=100e6)  # saves 10%: below margin
    assert not linkpace.worth_it(link=10e6, ratio=0.5, cpu=11e6)  # the CPU would be slower


@pytest.mark.parametrize(
    ("version", "ok"),
    [
        ("1.8.10", True),
        ("1.7.6", True),
        ("1.7.5", False),
        ("1.7.6.1", True),
        ("1.9.0-SNAPSHOT", True),
        ("1.10", True),
        ("1.6.5", False),
        ("", False),
        ("unknown", False),
    ],
)
def test_chunked_uploads_need_xnat_1_7_6(version: str, ok: bool) -> None:
    assert linkpace.chunked_ok(version) is ok
    asked = ZipConfig(compression="auto")
    assert linkpace.mode_for(asked, version) == ("auto" if ok else "stored")
    assert linkpace.mode_for(ZipConfig(compression="stored"), version) == "stored"


def test_threads() -> None:
    assert linkpace.threads(ZipConfig(threads=3), 64) == 3
    assert linkpace.threads(ZipConfig(), 2) == 2
    assert linkpace.threads(ZipConfig(), 64) == linkpace.MAX_THREADS
    assert linkpace.threads(ZipConfig(), None) == 1


def test_summary_words() -> None:
    assert linkpace.summary(Pace()) == "stored"
    pace = Pace(mode="deflate", raw_total=200, compressed_total=200, wire_total=100)
    assert linkpace.summary(pace) == "deflate, 2.0:1"
    pace = Pace(mode="auto", raw_total=200, compressed_total=150, wire_total=125)
    assert linkpace.summary(pace) == "auto: 75% compressed, 1.6:1"


def test_a_fast_link_seen_once_sends_the_next_upload_stored() -> None:
    assert not linkpace.stored_will_do(None)
    fast = run(Pace(workers=2), 50, link=1.2e9, ratio=0.55, cpu_per_thread=45e6)
    assert linkpace.stored_will_do(fast)
    slow = run(Pace(workers=2), 50, link=12e6, ratio=0.55, cpu_per_thread=45e6)
    assert not linkpace.stored_will_do(slow)
    # Close to the line (compressing would pay at half the rate): measure piece by piece.
    close = run(Pace(workers=2), 50, link=90e6, ratio=0.55, cpu_per_thread=45e6)
    assert not linkpace.stored_will_do(close)


def test_a_new_upload_keeps_what_was_learned_of_the_data_not_of_the_link() -> None:
    last = run(Pace(workers=2), 50, link=12e6, ratio=0.5, cpu_per_thread=45e6)
    new = linkpace.carried(last, "auto", 4)
    assert new.ratio == last.ratio
    assert last.compress_rate is not None
    assert new.compress_rate == pytest.approx(last.compress_rate * 2)  # 4 threads, not 2
    assert new.link_rate is None and new.pieces == 0 and new.raw_total == 0
    assert linkpace.compress_next(new)  # its first pieces probe again


def test_storing_reprobes_rarely_once_the_figures_are_known() -> None:
    pace = run(Pace(workers=2), 2000, link=1.2e9, ratio=0.5, cpu_per_thread=45e6)
    share = pace.compressed_total / pace.raw_total
    assert share < 0.01


def test_only_a_large_upload_says_what_the_link_is() -> None:
    small = run(Pace(workers=2), 8, link=1.2e9, ratio=0.55, cpu_per_thread=45e6)
    assert not linkpace.worth_remembering(small)  # 8 MiB: the socket buffers take that at once
    large = run(Pace(workers=2), 100, link=1.2e9, ratio=0.55, cpu_per_thread=45e6)
    assert linkpace.worth_remembering(large)
