"""FileFacts as plain tuples for the trip back from a worker process, and back. Pure.

pickle sends tuples of plain values faster than dataclasses; `pack` makes them in a worker,
and an `Unpacker`, one per session, makes FileFacts of them again in the daemon.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from xnat_drop.core.model import DicomHeader, FileFacts

# FileFacts and DicomHeader as tuples of their fields, in the order their __init__ takes them.
_FACTS_FIELDS = tuple(f.name for f in fields(FileFacts) if f.init)
_HEADER_FIELDS = tuple(f.name for f in fields(DicomHeader) if f.init)
_HEADER_AT = _FACTS_FIELDS.index("header")
_PATH_AT = _FACTS_FIELDS.index("path")
# Unique per file, not worth sharing: the SOP Instance UID and the InstanceNumber.
_OWN = _HEADER_FIELDS.index("sop_instance_uid")
_NUMBER = _HEADER_FIELDS.index("instance_number")
assert _OWN < _NUMBER
_facts_values = operator.attrgetter(*_FACTS_FIELDS)
_header_values = operator.attrgetter(*_HEADER_FIELDS)


def pack(facts: FileFacts) -> tuple[Any, ...]:
    """`facts` as a tuple of its fields, its header (if any) as a tuple of its own."""
    values: tuple[Any, ...] = _facts_values(facts)
    if facts.header is None:
        return values
    return (*values[:_HEADER_AT], _header_values(facts.header), *values[_HEADER_AT + 1 :])


class Unpacker:
    """Makes the workers' rows of one session FileFacts again.

    Header values repeated across a series (UIDs, ImageType, description, ...) arrive as new
    objects per file; sharing one copy keeps a session small. The tables live as long as the
    session's inspection, so nothing piles up in the daemon from one session to the next.
    Sizes are not shared: a table of every size would cost more than it saves.
    """

    def __init__(self) -> None:
        self._values: dict[Any, Any] = {}
        # All header fields but the SOP Instance UID, as one tuple, are the same for every
        # file of a series: one lookup per file instead of one per field.
        self._common: dict[tuple[Any, ...], tuple[Any, ...]] = {}

    def rows(self, rows: list[tuple[Any, ...]], paths: Sequence[str]) -> list[FileFacts]:
        """The FileFacts `pack` made `rows` of, for the files at `paths` (in order)."""
        # The worker's copy of each path is dropped for the one the task already holds here.
        return [self._one(row, path) for row, path in zip(rows, paths, strict=True)]

    def _one(self, values: tuple[Any, ...], path: str) -> FileFacts:
        """The FileFacts `pack` made `values` of, holding `path` (equal to the one packed)."""
        parts = list(values)
        parts[_PATH_AT] = path
        header = parts[_HEADER_AT]
        if header is None:
            return FileFacts(*parts)
        key = header[:_OWN] + header[_OWN + 1 : _NUMBER] + header[_NUMBER + 1 :]
        common = self._common.get(key)
        if common is None:
            common = self._common[key] = tuple(self._values.setdefault(v, v) for v in key)
        number = _NUMBER - 1  # where the InstanceNumber goes back in `common`
        parts[_HEADER_AT] = DicomHeader(
            *[*common[:_OWN], header[_OWN], *common[_OWN:number], header[_NUMBER], *common[number:]]
        )
        return FileFacts(*parts)
