"""Judgements made from file and folder names alone. Pure.

Content decides what a file *is* (see inspect.py); names only decide what is clutter left by an
operating system and what is a copy still in progress.
"""

from __future__ import annotations

import fnmatch
import re

# Files operating systems and file browsers leave behind; never the user's data.
JUNK_FILES = frozenset({".ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini", ".directory"})
JUNK_DIRS = frozenset(
    {
        "__macosx",
        ".spotlight-v100",
        ".trashes",
        ".fseventsd",
        ".temporaryitems",
        "$recycle.bin",
        "system volume information",
        "@eadir",  # Synology thumbnails
        "#recycle",
    }
)
# DICOMDIR is a media index: valid DICOM without a SOP Instance UID, which XNAT refuses.
INDEX_FILES = frozenset({"dicomdir"})

# Names that mean a copy is still being written (browsers, rsync, Office, LibreOffice, curl).
PARTIAL_PATTERNS = ("*.part", "*.partial", "*.tmp", "*.crdownload", "~$*", ".~lock.*")
# rsync writes into ".<name>.XXXXXX" (six random characters) and renames at the end.
_RSYNC_TEMP = re.compile(r"^\..+\.[A-Za-z0-9]{6}$")


def is_junk_name(name: str) -> bool:
    """True for a file name that operating systems create on their own (`._x` AppleDouble too)."""
    lowered = name.lower()
    return lowered in JUNK_FILES or lowered in INDEX_FILES or name.startswith("._")


def is_junk_dir(name: str) -> bool:
    """True for a folder that holds only operating-system clutter (never descended into)."""
    return name.lower() in JUNK_DIRS


def is_junk_path(relpath: str) -> bool:
    """True when a session-relative path is junk itself or lies inside a junk folder."""
    *dirs, name = relpath.split("/")
    return is_junk_name(name) or any(is_junk_dir(d) for d in dirs)


def is_partial_name(name: str) -> bool:
    """True for a name that says a copy is still running (e.g. `IM1.dcm.part`, rsync temps)."""
    lowered = name.lower()
    if any(fnmatch.fnmatchcase(lowered, p) for p in PARTIAL_PATTERNS):
        return True
    return bool(_RSYNC_TEMP.match(name)) and not is_junk_name(name)


def is_hidden_dir(name: str) -> bool:
    """True for folders never treated as a project, subject or session (dot-folders, junk)."""
    return name.startswith(".") or is_junk_dir(name)
