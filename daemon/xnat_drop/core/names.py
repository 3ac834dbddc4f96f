"""Judgements made from file and folder names alone. Pure.

Content decides what a file *is* (see inspect.py); names only decide what is clutter left by an
operating system and what is a copy still in progress.
"""

from __future__ import annotations

import fnmatch
import re

from xnat_drop.core.shown import shown

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


# Session resources (core/resources.py). What XNAT can hold as a resource label and find again
# by it (xnat-api-round2.md §3): routing's label characters, starting with a letter, since an
# all-digit label is also matched as a resource ID; NULL, DICOM and SNAPSHOTS are special to it.
RESOURCE_LABEL = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
RESERVED_LABELS = ("NULL", "DICOM", "SNAPSHOTS")
# The characters a resource file's name may hold. XNAT URL-decodes the file path of an upload
# only when it holds %20 or %2B, so any other escape (%C3%A9, %28) would be stored literally:
# only characters no client needs to escape, plus the space and "+" (sent as %20 and %2B, which
# XNAT decodes). "(", ")" and "," are left out: whether they arrive escaped depends on the
# client's encoding, and escaped alone they would be stored as "%28".
RESOURCE_NAME_CHARACTERS = re.compile(r"[A-Za-z0-9._+ -]+")
RESOURCE_NAME_BYTES = 255  # one path segment, as file systems allow


def resource_label_problem(label: str) -> str:
    """Why XNAT cannot use `label` as a resource label, in words; "" when it can."""
    if label.upper() in RESERVED_LABELS:
        return "is a name XNAT reserves for itself (NULL, DICOM and SNAPSHOTS, in any case)"
    if not RESOURCE_LABEL.fullmatch(label):
        return (
            "is not a name XNAT can use as a resource label: it must start with a letter and "
            "hold at most 64 letters, digits, “_” and “-”"
        )
    return ""


def resource_name_problem(segment: str) -> str:
    """Why one folder or file name of a resource file's path cannot go to XNAT; "" if it can."""
    if segment in ("", ".", ".."):
        return "is not a file name"
    if len(segment.encode("utf-8", "surrogateescape")) > RESOURCE_NAME_BYTES:
        return f"is longer than {RESOURCE_NAME_BYTES} bytes"
    if segment.lower().endswith("_catalog.xml"):
        return "ends in “_catalog.xml”, which XNAT keeps for its own catalog files"
    if segment.startswith(".~lock-"):
        return "starts with “.~lock-”, which XNAT takes for one of its lock files"
    if not RESOURCE_NAME_CHARACTERS.fullmatch(segment):
        bad = sorted({c for c in segment if not RESOURCE_NAME_CHARACTERS.fullmatch(c)})
        listed = " ".join(f"“{shown(c)}”" for c in bad[:8])
        return f"holds characters XNAT would not store as they are ({listed})"
    if segment != segment.strip():
        return "starts or ends with a space"
    return ""


def assignment(key: str) -> re.Pattern[str]:
    """XNAT's `Key: value` in a text (ContainedAssignmentExtractor: at the start or after
    whitespace , ; then "Key : value"), the value as group 1."""
    return re.compile(rf"(?:^|[\s,;]){key}\s*:\s*([A-Za-z0-9_-]*)(?=$|[\s,;])", re.IGNORECASE)
