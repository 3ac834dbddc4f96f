"""Decide what one regular file is, by content first and by name second. Read-only effect.

Only the head of each file is read: one read of HEAD_READ bytes serves the magic numbers
(core/formats.py judges them) and the DICOM header, which is read up to the pixel data, by
dicomscan when it is in the common encoding (plainheader.py), else by pydicom
(pydicomheader.py). A file is opened through the open session folder, never through a link
(fs/beneath.py); its identity and state (its `stamp`) are taken as it is read and checked
again afterwards, so a file written meanwhile is read again later.
"""

from __future__ import annotations

import errno
import os
import stat

from xnat_drop.adapters.dicom.openfile import OpenFile
from xnat_drop.adapters.dicom.pairing import ANALYZE_SUFFIXES, PAIR_NOTE, has_pair
from xnat_drop.adapters.dicom.plainheader import PlainHeaderReader
from xnat_drop.adapters.dicom.pydicomheader import PydicomHeaderReader
from xnat_drop.adapters.dicom.pydicomsettings import is_as_shipped
from xnat_drop.adapters.fs.beneath import Beneath, stamp
from xnat_drop.core import formats
from xnat_drop.core.errors import SessionChangedError
from xnat_drop.core.model import FileFacts, FileKind

HEAD_BYTES = 1024  # what the magic-number checks look at
GZIP_PEEK = 64 * 1024  # compressed bytes read to find a DICOM/NIfTI/MGH header inside gzip
SIDECAR_LIMIT = 1024 * 1024  # JSON/bval/bvec files read whole up to this size


class FileClassifier:
    """Classifies files one after another: the reader of one session, or of one task of it.

    Everything it keeps (how much of a file a header needs, the header values shared by the
    files of a series) lives as long as it does, so nothing of one session is kept for the
    next. With `fast` (and pydicom at its shipped settings), dicomscan reads the headers it
    is sure of.
    """

    def __init__(self, fast: bool = True) -> None:
        # dicomscan reads headers as pydicom does with its default settings only.
        self._plain = PlainHeaderReader() if fast and is_as_shipped() else None
        self._pydicom = PydicomHeaderReader()
        self.fast_files = 0  # DICOM files whose header dicomscan read (tests count them)
        self._sizes: dict[int, int] = {}  # one int object per file size (a series shares one)

    @property
    def fast(self) -> bool:
        """True when dicomscan reads the headers it is sure of."""
        return self._plain is not None

    def classify(
        self,
        files: Beneath,
        path: str,
        relpath: str,
        siblings: frozenset[str],
        keywords: tuple[str, ...],
    ) -> FileFacts:
        """Classify the file at `path` below `files.root`, reported as `relpath`, with its
        stamp. `siblings` (lower-cased session-relative paths) lets an Analyze `.img` be
        recognised by its `.hdr`; `keywords` names extra DICOM attributes to read. Raises
        SessionChangedError when it vanished, is no longer a regular file, lies behind a
        folder that is no longer a folder, or was written while it was read."""
        try:
            fd = files.open(path)
        except FileNotFoundError as exc:
            raise SessionChangedError(f"{relpath} vanished during inspection") from exc
        except OSError as exc:
            # ELOOP: it (or a folder on its path: UnsafePathError) became a link after the
            # walk; ENOTDIR: a folder on its path became a file; ENXIO: it became a socket.
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
                raise SessionChangedError(f"{relpath} changed during inspection") from exc
            note = f"cannot open it: {exc.strerror}"
            return FileFacts(relpath, 0, FileKind.UNREADABLE_DICOM, note=note)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise SessionChangedError(f"{relpath} changed type during inspection")
            mark = stamp(st)
            size = self._sizes.setdefault(st.st_size, st.st_size)
            source = OpenFile.read(fd, size, self._pydicom.head_read)
            facts = self._classify_open(source, relpath, siblings, keywords)
            # Written while it was read (a copy still running, or a writer with an old
            # handle): what was read may be a mix. Read again once the session settles.
            if stamp(os.fstat(fd)) != mark:
                raise SessionChangedError(f"{relpath} changed while it was being read")
        finally:
            os.close(fd)
        # Built whole rather than with replace(): this runs for every file of a session.
        return FileFacts(facts.path, facts.size, facts.kind, facts.header, facts.note, stamp=mark)

    def _classify_open(
        self, source: OpenFile, relpath: str, siblings: frozenset[str], keywords: tuple[str, ...]
    ) -> FileFacts:
        head, size = source.head[:HEAD_BYTES], source.size
        lowered = relpath.lower()
        # DICOM's magic first: its preamble may hold anything, even Analyze's 348 (formats.py).
        if formats.is_part10(head):
            return self._read_dicom(source, relpath, FileKind.DICOM, keywords)
        if head.startswith(formats.GZIP_MAGIC):
            kind, note = formats.gzip_format(formats.gunzip_head(source.read_at(0, GZIP_PEEK)))
            return FileFacts(relpath, size, kind, note=note)
        found = formats.content_format(head)
        if found is not None:
            return FileFacts(relpath, size, found[0], note=found[1])
        if formats.looks_like_bare_dicom(head):
            return self._read_dicom(source, relpath, FileKind.DICOM_NO_PREAMBLE, keywords)
        archive = formats.archive_format(head)
        if archive is not None:
            return FileFacts(relpath, size, FileKind.ARCHIVE, note=archive)
        if size <= SIDECAR_LIMIT:
            text = source.read_at(0, len(head) + SIDECAR_LIMIT) if size > len(head) else head
            sidecar = formats.sidecar_format(lowered, text)
            if sidecar is not None:
                return FileFacts(relpath, size, FileKind.CONVERTED, note=sidecar)
        named = formats.named_format(lowered)
        if named is not None:
            return FileFacts(relpath, size, named[0], note=named[1])
        if lowered.endswith(ANALYZE_SUFFIXES) and has_pair(lowered, siblings):
            return FileFacts(relpath, size, FileKind.ANALYZE, note=PAIR_NOTE)
        if size == 0:  # after the names: an empty `x.nii` is still converted data to remove
            return FileFacts(relpath, size, FileKind.EMPTY, note=formats.EMPTY_NOTE)
        return FileFacts(relpath, size, FileKind.OTHER, note=formats.describe(head, size))

    def _read_dicom(
        self, source: OpenFile, relpath: str, kind: FileKind, keywords: tuple[str, ...]
    ) -> FileFacts:
        if self._plain is not None and kind is FileKind.DICOM:
            facts = self._plain.read(source, relpath, keywords)
            if facts is not None:
                self.fast_files += 1
                return facts
        return self._pydicom.read(source, relpath, kind, keywords)
