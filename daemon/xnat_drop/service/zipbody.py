"""The upload's zip bodies: stored with an exact length, or compressed where the link is slow.

One `ZipBodies` per delivery makes a new body each time the import is sent (a re-login sends
it again), the kind that `[zip] compression` and XNAT's version allow (core/linkpace.py). It
reports progress in session bytes, with the rate on the wire and how the data is packed, and
says for the receipt what the last body did.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from xnat_drop.adapters.fs.beneath import Dir
from xnat_drop.adapters.fs.zipdeflate import DeflatingZip
from xnat_drop.adapters.fs.zipstream import BundleEntry, ZipStream
from xnat_drop.core import linkpace
from xnat_drop.core.linkpace import ZipConfig

log = logging.getLogger(__name__)

# DICOM files up to this size are read once into a shared buffer and STORED; larger ones go
# in stored deflate blocks (zipstream.py). Memory stays small either way.
BUFFER_LIMIT = 2 << 20

Progress = Callable[[int, float, str], None]  # session bytes done, wire bytes/s, packing words


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
        self._bodies: list[ZipStream | DeflatingZip] = []
        self._started = 0.0

    def __call__(self) -> ZipStream | DeflatingZip:
        """A new body, from the first file (its folder opened again, through no link)."""
        self._started = self._monotonic()
        self._progress(0, 0.0, "")
        # A body owns (and closes) its folder.
        root = Dir.open(self._folder)
        body: ZipStream | DeflatingZip
        if self.mode == "stored":
            body = ZipStream(
                self._entries, root=root, buffer_limit=BUFFER_LIMIT, progress=self._stored
            )
        else:
            body = DeflatingZip(
                self._entries,
                root=root,
                mode=self.mode,
                workers=self._workers,
                progress=self._packed,
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
        for body in self._bodies:
            body.close()

    def _rate(self, sent: int) -> float:
        elapsed = self._monotonic() - self._started
        return sent / elapsed if elapsed > 0 else 0.0

    def _stored(self, done: int) -> None:
        self._progress(done, self._rate(done), "stored")

    def _packed(self, done: int) -> None:
        body = self._bodies[-1]
        assert isinstance(body, DeflatingZip)
        self._progress(done, self._rate(body.bytes_done), linkpace.summary(body.pace))
