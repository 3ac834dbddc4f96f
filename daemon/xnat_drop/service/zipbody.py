"""The upload's zip bodies: stored with an exact length, or compressed where the link is slow.

One `ZipBodies` per delivery makes a new body each time the import is sent (a re-login sends
it again), the kind that `[zip] compression` and XNAT's version allow (core/linkpace.py):

- "stored": a ZipStream, with an exact Content-Length;
- "deflate": a DeflatingZip compressing every piece, sent chunked;
- "auto": a DeflatingZip deciding piece by piece, sent chunked; or, when the last upload
  showed a link so fast that compressing cannot pay, a ZipStream again, timed as it is sent
  so that the next upload knows the link as it is now.

It reports progress in session bytes, with the rate on the wire and how the data is packed,
says for the receipt what the last body did, and hands what it measured to `remember`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import overload

from xnat_drop.adapters.fs.beneath import Dir
from xnat_drop.adapters.fs.zipdeflate import DeflatingZip
from xnat_drop.adapters.fs.zipstream import BundleEntry, ZipStream
from xnat_drop.core import linkpace
from xnat_drop.core.linkpace import Pace, ZipConfig
from xnat_drop.core.model import FileFacts

log = logging.getLogger(__name__)

# DICOM files up to this size are read once into a shared buffer and STORED; larger ones go
# in stored deflate blocks (zipstream.py). Memory stays small either way.
BUFFER_LIMIT = 2 << 20

Progress = Callable[[int, float, str], None]  # session bytes done, wire bytes/s, packing words


class UploadEntries(Sequence[BundleEntry]):
    """The verdict's files as zip entries, each made when it is asked for: no second list of
    50,000 objects beside the verdict's own."""

    def __init__(self, files: Sequence[FileFacts]) -> None:
        self._files = files

    def __len__(self) -> int:
        return len(self._files)

    @overload
    def __getitem__(self, index: int) -> BundleEntry: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[BundleEntry]: ...
    def __getitem__(self, index: int | slice) -> BundleEntry | Sequence[BundleEntry]:
        if isinstance(index, slice):
            return UploadEntries(self._files[index])
        f = self._files[index]
        # Each file is opened below the claimed folder through no link, and must still be the
        # file inspection judged (its stamp): only judged bytes leave.
        return BundleEntry(f.path, f.path, f.size, f.stamp)


class TimedStream:
    """A ZipStream sent as it is (exact length), timing the consumer to measure the link."""

    def __init__(self, stream: ZipStream, pace: Pace, clock: Callable[[], float]) -> None:
        self.stream = stream
        self.pace = pace
        self._clock = clock

    def __len__(self) -> int:
        return len(self.stream)

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.stream:
            started = self._clock()
            yield chunk
            self.pace = linkpace.sent(self.pace, len(chunk), self._clock() - started)

    @property
    def bytes_done(self) -> int:
        return self.stream.bytes_done

    def close(self) -> None:
        self.stream.close()


Body = ZipStream | TimedStream | DeflatingZip


class ZipBodies:
    """Bodies for one upload of `entries` below `folder`."""

    def __init__(
        self,
        entries: Sequence[BundleEntry],
        folder: Path,
        config: ZipConfig,
        server_version: str,
        *,
        progress: Progress,
        monotonic: Callable[[], float],
        last: Pace | None = None,
        remember: Callable[[Pace], None] = lambda pace: None,
    ) -> None:
        self._entries = entries
        self._folder = folder
        self.mode = linkpace.mode_for(config, server_version)
        if self.mode != config.compression:
            log.info(
                "uploads are stored, not compressed: XNAT %s may not read a chunked upload "
                "(it does from 1.7.6 on)",
                server_version or "(version unknown)",
            )
        self._workers = linkpace.threads(config, os.cpu_count())
        self._progress = progress
        self._monotonic = monotonic
        self._last = last
        self._remember = remember
        self._bodies: list[Body] = []
        self._started = 0.0

    @property
    def kind(self) -> str:
        """What the next body will be, in words for the log."""
        if self.mode == "auto" and linkpace.stored_will_do(self._last):
            return "stored: the link is fast"
        return "stored" if self.mode == "stored" else f"compression {self.mode}"

    def __call__(self) -> Body:
        """A new body, from the first file (its folder opened again, through no link)."""
        self._started = self._monotonic()
        self._progress(0, 0.0, "")
        root = Dir.open(self._folder)  # a body owns (and closes) its folder
        pace = linkpace.carried(self._last, self.mode, self._workers)
        body: Body
        if self.mode == "stored" or (self.mode == "auto" and linkpace.stored_will_do(self._last)):
            stream = ZipStream(
                self._entries, root=root, buffer_limit=BUFFER_LIMIT, progress=self._stored
            )
            body = stream if self.mode == "stored" else TimedStream(stream, pace, self._monotonic)
        else:
            body = DeflatingZip(
                self._entries,
                root=root,
                mode=self.mode,
                workers=self._workers,
                progress=self._packed,
                pace=pace,
            )
        self._bodies.append(body)
        return body

    @property
    def bytes_sent(self) -> int:
        """Bytes the last body handed out."""
        return self._bodies[-1].bytes_done if self._bodies else 0

    def packing(self) -> str:
        """How the last body was packed, in words ("stored", "auto: 80% compressed, 1.7:1")."""
        if not self._bodies:
            return ""
        body = self._bodies[-1]
        return linkpace.summary(body.pace) if isinstance(body, DeflatingZip) else "stored"

    def close(self) -> None:
        """Close every body; remember what the last one measured for the next upload."""
        for body in self._bodies:
            body.close()
        last = self._bodies[-1] if self._bodies else None
        if (
            last is not None
            and not isinstance(last, ZipStream)
            and linkpace.worth_remembering(last.pace)
        ):
            self._remember(last.pace)

    def _rate(self, sent: int) -> float:
        elapsed = self._monotonic() - self._started
        return sent / elapsed if elapsed > 0 else 0.0

    def _stored(self, done: int) -> None:
        self._progress(done, self._rate(done), "stored")

    def _packed(self, done: int) -> None:
        body = self._bodies[-1]
        assert isinstance(body, DeflatingZip)
        self._progress(done, self._rate(body.bytes_done), linkpace.summary(body.pace))
