"""A cheap look at a folder or file beside a session: the header of its first DICOM file.
Read-only effect.

Used to tell whether the folders beside a session hold parts of the same study (service/
depth.py), so it reads little: at most `tries` files of a folder, in walk order, each only up
to its pixel data (fileclassifier.py), never through a link.
"""

from __future__ import annotations

from xnat_drop.adapters.dicom.fileclassifier import FileClassifier
from xnat_drop.adapters.fs.beneath import Beneath, Dir
from xnat_drop.adapters.fs.tree import REGULAR, walk
from xnat_drop.core.errors import SessionChangedError
from xnat_drop.core.model import DicomHeader
from xnat_drop.core.names import is_junk_path

TRIES = 4  # files of a folder read before it is taken for one without DICOM


def first_header(folder: Dir, tries: int = TRIES) -> DicomHeader | None:
    """The header of the first DICOM file below `folder` (walk order: a folder's files before
    its subfolders), reading at most `tries` files; None when none of them is DICOM or they
    change while read (a copy still running). Raises OSError when `folder` cannot be read."""
    classifier = FileClassifier()
    entries = walk(folder)
    try:
        with Beneath(folder) as files:
            for entry in entries:
                if entry.kind != REGULAR or is_junk_path(entry.relpath):
                    continue
                header = _header(classifier, files, entry.relpath)
                if header is not None:
                    return header
                tries -= 1
                if tries <= 0:
                    break
    finally:
        # The walk holds a folder open per level: closed now, not when collected.
        close = getattr(entries, "close", None)
        if close is not None:
            close()
    return None


def file_header(parent: Dir, name: str) -> DicomHeader | None:
    """The header of the file `name` in `parent` if it is DICOM, else None (see first_header)."""
    with Beneath(parent) as files:
        return _header(FileClassifier(), files, name)


def _header(classifier: FileClassifier, files: Beneath, relpath: str) -> DicomHeader | None:
    try:
        facts = classifier.classify(files, relpath, relpath, frozenset(), ())
    except SessionChangedError:
        return None
    return facts.header if facts.is_dicom else None
