"""The attribute values XNAT's series import filter tests, read from the claimed files.

The filter is known only at delivery (it is XNAT's, per project), and may test any attribute,
so its values are read then, from the header only (`stop_before_pixels`, just the filter's
tags), through the claimed folder without following a link (fs/beneath.py). Each value is
rendered as dcm4che2 renders it for XNAT (core/seriesfilter.py `rendered`): string values
whole, with their backslash separators; integers of binary VRs as decimals joined by
backslashes. What cannot be rendered the same way here (sequences, floats, bytes) is
UNRENDERABLE: the filter's decision on it is then unsure, never guessed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.filereader import read_partial
from pydicom.multival import MultiValue

from xnat_drop.adapters.dicom.pydicomsettings import lenient_reading
from xnat_drop.adapters.fs.beneath import Beneath, Dir
from xnat_drop.core.seriesfilter import UNRENDERABLE, rendered

# Value representations whose value is text in the file: rendered as decoded.
_TEXT_VRS = frozenset(
    "AE AS CS DA DS DT IS LO LT PN SH ST TM UC UI UR UT".split()  # noqa: SIM905 - a VR table
)
_INTEGER_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV"})
PIXEL_DATA = 0x7FE00010

Values = dict[int, object]  # tag -> rendered text, None (absent) or UNRENDERABLE


def tag_of(name: str) -> int | None:
    """The tag of a DICOM keyword as dcm4che2 names it (`ImageType`); None if unknown."""
    tag = tag_for_keyword(name)
    return None if tag is None else int(tag)


def read_values(
    folder: Path,
    relpaths: Iterable[str],
    tags: frozenset[int],
    progress: Callable[[], None] | None = None,
) -> dict[str, Values]:
    """Each file's values of `tags`, by path below `folder` (the claimed session).

    Raises OSError when a file cannot be opened or read (the session changed: the caller
    judges it again); a file pydicom cannot parse gives UNRENDERABLE values.
    """
    wanted = sorted(tags)
    found: dict[str, Values] = {}
    with Dir.open(folder) as root, Beneath(root) as below:
        for relpath in relpaths:
            fd = below.open(relpath)
            with os.fdopen(fd, "rb") as handle:
                found[relpath] = _values(handle, wanted)
            if progress is not None:
                progress()
    return found


def _values(handle: Any, tags: list[int]) -> Values:
    last = min(max(tags), PIXEL_DATA - 1)

    def past_them(tag: int, _vr: str | None, _length: int) -> bool:
        # Elements come in tag order: the rest of the header (a Siemens CSA header is most of
        # its 95 KB) need not even be parsed.
        return tag > last

    try:
        with lenient_reading:
            ds = read_partial(handle, past_them, force=True, specific_tags=list(tags))
            return {tag: _rendered(ds, tag) for tag in tags}
    except Exception:
        return dict.fromkeys(tags, UNRENDERABLE)


def _rendered(ds: Any, tag: int) -> object:
    if tag not in ds:
        return None
    element = ds[tag]
    value = element.value
    if element.VR in _TEXT_VRS:
        if value is None:
            return ""
        values = value if isinstance(value, MultiValue) else [value]
        return rendered("\\".join(str(v) for v in values))
    if element.VR in _INTEGER_VRS:
        if value is None:
            return ""
        values = value if isinstance(value, MultiValue) else [value]
        return rendered("\\".join(str(int(v)) for v in values))
    return UNRENDERABLE
