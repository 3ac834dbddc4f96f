"""Label rules: DICOM-derived labels, archive-time cleaning and validation (xnat-api.md §5, §7)."""

from __future__ import annotations

import re

# OmUtils.cleanValue: each of these becomes "_" when a session is archived.
_ARCHIVE_CLEANED = frozenset("`~@#$%^&*()+=[]{}|\\/?:;',.<> ")
_VALID_LABEL = re.compile(r"[A-Za-z0-9_-]+")
_NOT_LABEL_CHAR = re.compile(r"[^A-Za-z0-9_-]")

EXPERIMENT_LABEL_INVALID = "Identifiers cannot use special characters."
SUBJECT_LABEL_INVALID = "Labels cannot use special characters."


def to_label_chars(value: str) -> str:
    """``Labels.toLabelChars``: every char outside ``[A-Za-z0-9_-]`` becomes ``_`` (DOE^JOHN)."""
    return _NOT_LABEL_CHAR.sub("_", value)


def clean_for_archive(value: str) -> str:
    """``OmUtils.cleanValue``: punctuation and spaces become ``_``; other chars survive."""
    return "".join("_" if char in _ARCHIVE_CLEANED else char for char in value)


def is_valid_label(value: str) -> bool:
    """Whether XNAT can save this as a subject or session label (``^[A-Za-z0-9_-]+$``)."""
    return _VALID_LABEL.fullmatch(value) is not None


def contained_value(text: str, key: str) -> str | None:
    """The ``Key: value`` convention of ``ContainedAssignmentExtractor`` (§5.2), or None.

    The key must start the text or follow whitespace, ``,`` or ``;``; the value is
    ``[A-Za-z0-9_-]*`` and must end the text or be followed by whitespace, ``,`` or ``;``.
    """
    pattern = rf"(?:^|.*?[\s,;]){re.escape(key)}\s*:\s*([\w-]*)(?:$|[\s,;].*)"
    match = re.fullmatch(pattern, text, flags=re.IGNORECASE | re.DOTALL | re.ASCII)
    if match is None or not match.group(1):
        return None
    return match.group(1)
