"""Whether to compress the next piece of an upload: the link against the CPU.

`zip.compression = "auto"` measures while it sends. Sending a raw byte takes 1/L seconds (L:
the link's rate, wire bytes per second the consumer took to send). Compressing it instead
takes 1/C seconds of the compressing threads (C: their combined rate) and sends `ratio` wire
bytes: since compression and sending overlap, a compressed byte costs max(ratio/L, 1/C). The
next piece is compressed when that is clearly less than 1/L: the link is the bottleneck, not
the CPU. A slow link (a VPN, 100 Mbit/s to a central XNAT) compresses; loopback or 10 Gbit/s
stays stored.

Pure: measurements in (sizes and seconds the caller measured), decisions out.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, cast

from xnat_drop.core.schema import Section

Compression = Literal["auto", "stored", "deflate"]
# Compress only when it saves at least this share of the time: a close call stays stored,
# which costs no CPU.
_MARGIN = 0.8
# Pieces compressed first, to learn the ratio and the compression rate; then, until all three
# figures are known, one piece in PROBE_EVERY; once storing is clearly right, one in
# REPROBE_EVERY, to notice when the data or the machine changes at a cost of well under 1%.
PROBE_FIRST = 2
PROBE_EVERY = 16
REPROBE_EVERY = 256
REMEMBERED = 64 << 20  # bytes an upload must send for its link rate to guide the next one
_MIN_SENT = 8 << 20  # bytes (decayed) sent before the link's rate counts
_DECAY = 0.8  # weight of the past in the compression figures, per piece
# Weight of the past in the link's rate, per MiB sent: about the last 20 MiB count, so that a
# pause of the server between two files is not taken for a slow link.
_LINK_DECAY = 0.95


@dataclass(frozen=True, slots=True)
class ZipConfig:
    """[zip]: how uploads are packed."""

    compression: Compression = "auto"
    threads: int = 0  # 0: one per CPU core, at most MAX_THREADS


MAX_THREADS = 4
# XNAT reads a chunked application/zip body from this version on (xnat-api.md §2).
CHUNKED_SINCE = (1, 7, 6)


def parse_zip(t: Section) -> ZipConfig:
    return ZipConfig(cast(Compression, t.text("compression")), t.count("threads"))


def threads(config: ZipConfig, cpus: int | None) -> int:
    """How many threads compress: the configured number, or one per core up to MAX_THREADS."""
    return config.threads or max(1, min(cpus or 1, MAX_THREADS))


def chunked_ok(server_version: str) -> bool:
    """Does XNAT `server_version` ("1.8.10", "1.9.0-SNAPSHOT", "" unknown) read a chunked
    upload? Unknown says no."""
    numbers: list[int] = []
    for part in server_version.strip().split("."):
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        numbers.append(int(digits))
        if digits != part:
            break
    return len(numbers) >= 2 and tuple(numbers) >= CHUNKED_SINCE


def mode_for(config: ZipConfig, server_version: str) -> Compression:
    """The compression an upload to XNAT `server_version` uses: "stored" where it cannot read
    a chunked body (older, or would not say), whatever was asked."""
    if config.compression == "stored" or not chunked_ok(server_version):
        return "stored"
    return config.compression


@dataclass(frozen=True, slots=True)
class Pace:
    """What one upload measured so far. Running figures weigh recent pieces more."""

    mode: str = "auto"  # one of COMPRESSIONS
    workers: int = 1  # threads compressing at once
    pieces: int = 0  # pieces decided
    link_bytes: float = 0.0  # wire bytes sent (decayed) ...
    link_seconds: float = 0.0  # ... in this many seconds of sending
    packed_in: float = 0.0  # raw bytes of compressed pieces (decayed) ...
    packed_out: float = 0.0  # ... what they became ...
    pack_seconds: float = 0.0  # ... and the CPU seconds it took one thread
    raw_total: int = 0  # session bytes taken
    compressed_total: int = 0  # of which compressed
    wire_total: int = 0  # bytes sent

    @property
    def link_rate(self) -> float | None:
        """Wire bytes per second of sending, once measured."""
        if self.link_bytes < _MIN_SENT or self.link_seconds <= 0:
            return None
        return self.link_bytes / self.link_seconds

    @property
    def ratio(self) -> float | None:
        """Compressed size / raw size, once measured."""
        return self.packed_out / self.packed_in if self.packed_in else None

    @property
    def compress_rate(self) -> float | None:
        """Raw bytes per second all the workers compress together, once measured."""
        if not self.packed_in or self.pack_seconds <= 0:
            return None
        return self.workers * self.packed_in / self.pack_seconds


def sent(pace: Pace, wire_bytes: int, seconds: float) -> Pace:
    """`pace` after the consumer took `seconds` to send `wire_bytes`."""
    return dataclasses.replace(
        pace,
        link_bytes=pace.link_bytes * _decay(wire_bytes) + wire_bytes,
        link_seconds=pace.link_seconds * _decay(wire_bytes) + max(seconds, 0.0),
        wire_total=pace.wire_total + wire_bytes,
    )


def packed(pace: Pace, raw: int, out: int, cpu_seconds: float) -> Pace:
    """`pace` after a piece of `raw` bytes was compressed to `out` in `cpu_seconds`."""
    return dataclasses.replace(
        pace,
        packed_in=pace.packed_in * _DECAY + raw,
        packed_out=pace.packed_out * _DECAY + out,
        pack_seconds=pace.pack_seconds * _DECAY + max(cpu_seconds, 1e-9),
        compressed_total=pace.compressed_total + raw,
    )


def taken(pace: Pace, raw: int) -> Pace:
    """`pace` after the next piece of `raw` session bytes was decided."""
    return dataclasses.replace(pace, pieces=pace.pieces + 1, raw_total=pace.raw_total + raw)


def compress_next(pace: Pace) -> bool:
    """Compress the next piece?"""
    if pace.mode != "auto":
        return pace.mode == "deflate"
    if pace.pieces < PROBE_FIRST * pace.workers:
        return True  # learn the ratio and the compression rate
    link, ratio, cpu = pace.link_rate, pace.ratio, pace.compress_rate
    if link is None or ratio is None or cpu is None:
        return pace.pieces % PROBE_EVERY == 0
    if worth_it(link, ratio, cpu):
        return True
    return pace.pieces % REPROBE_EVERY == 0  # keep the ratio and the rate current


def stored_will_do(last: Pace | None) -> bool:
    """Did the last upload show a link so fast that compressing would not pay even at half
    its rate? Then "auto" sends the next upload stored, with an exact length: the cheapest
    for both ends. The stored upload measures the link again for the one after it."""
    if last is None:
        return False
    link, ratio, cpu = last.link_rate, last.ratio, last.compress_rate
    if link is None or ratio is None or cpu is None:
        return False
    return not worth_it(link / 2, ratio, cpu)


def worth_remembering(pace: Pace) -> bool:
    """Did this upload send enough to say something about the link? Less than REMEMBERED
    bytes may all have gone into the sockets' buffers at once, whatever the link."""
    return pace.wire_total >= REMEMBERED and pace.link_rate is not None


def carried(last: Pace | None, mode: Compression, workers: int) -> Pace:
    """A new upload's Pace, keeping what the last one learned of the data and the CPU."""
    if last is None:
        return Pace(mode=mode, workers=workers)
    return Pace(
        mode=mode,
        workers=workers,
        packed_in=last.packed_in,
        packed_out=last.packed_out,
        pack_seconds=last.pack_seconds,  # per thread: the rate scales with `workers`
    )


def worth_it(link: float, ratio: float, cpu: float) -> bool:
    """Does compressing beat storing, for a link of `link` bytes/s, a compression `ratio`
    and a compression rate `cpu` (raw bytes/s)?"""
    return max(ratio / link, 1.0 / cpu) < _MARGIN / link


def _decay(wire_bytes: int) -> float:
    # Past sending weighs less with every MiB sent, whatever the size of the pieces.
    return float(_LINK_DECAY ** min(wire_bytes / (1 << 20), 64.0))


def summary(pace: Pace) -> str:
    """How the upload was packed, in words for the receipt: "stored", "deflate, 1.9:1" or
    "auto: 80% compressed, 1.7:1"."""
    if not pace.compressed_total:
        return "stored" if pace.mode != "deflate" else "deflate"
    overall = pace.raw_total / pace.wire_total if pace.wire_total else 1.0
    if pace.mode == "deflate":
        return f"deflate, {overall:.1f}:1"
    share = 100 * pace.compressed_total / pace.raw_total if pace.raw_total else 0
    return f"auto: {share:.0f}% compressed, {overall:.1f}:1"
