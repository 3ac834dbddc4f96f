"""What XNAT must hold after an upload, and why what it holds does not match. Pure.

XNAT names each scan after its SeriesNumber and counts its DICOM files; `count_problem` compares
that with what was sent (xnat-api.md §8), `without_dropped` first takes out the series an
unpredictable series import filter may have dropped (core/importfilter.py), `verified` says per
series what XNAT holds. Scans are matched by SeriesNumber but never named by it (scan IDs are
SeriesNumbers: core/noheader.py): a series is named by its files.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from xnat_drop.core.model import FileFacts
from xnat_drop.core.noheader import FileGroup
from xnat_drop.core.text import plural


@dataclass(frozen=True, slots=True)
class SeriesCount:
    """One series as sent: XNAT names its scan after the SeriesNumber (matched, never shown);
    `name` is the series by its files (noheader.series_words)."""

    series_uid: str
    number: int | None
    name: str
    files: int


@dataclass(frozen=True, slots=True)
class Expected:
    """What XNAT must hold after the upload."""

    study_uid: str
    series: tuple[SeriesCount, ...]

    @property
    def files(self) -> int:
        return sum(s.files for s in self.series)


def expected(upload: Sequence[FileFacts]) -> Expected:
    """The study and the per-series instance counts of the files to upload."""
    groups: dict[str, FileGroup] = defaultdict(FileGroup)
    numbers: dict[str, int | None] = {}
    studies: set[str] = set()
    for facts in upload:
        assert facts.header is not None
        groups[facts.header.series_instance_uid].add(facts.path)
        numbers.setdefault(facts.header.series_instance_uid, facts.header.series_number)
        studies.add(facts.header.study_instance_uid)
    series = tuple(
        SeriesCount(uid, numbers[uid], group.files().series, group.count)
        for uid, group in groups.items()
    )
    return Expected(min(studies) if studies else "", series)


def without_dropped(
    sent: Expected, held: dict[str, int], maybe_dropped: frozenset[str]
) -> tuple[Expected, tuple[str, ...]]:
    """`sent` without the series XNAT may have dropped (its filter could not be predicted) and
    does not hold, and their names. Matched by SeriesNumber when the numbers are distinct, else
    by file count; a series XNAT holds in part is never tolerated."""
    if not maybe_dropped:
        return sent, ()
    numbers = [s.number for s in sent.series]
    distinct = None not in numbers and len(set(numbers)) == len(numbers)
    left = Counter(held.values())
    gone = []
    for s in sent.series:
        if s.series_uid not in maybe_dropped:
            continue
        if (distinct and str(s.number) not in held) or (not distinct and left[s.files] == 0):
            gone.append(s)
    if not distinct:
        wanted = Counter(s.files for s in sent.series if s not in gone)
        if wanted != left:  # counts do not add up: tolerate nothing, let the check say why
            return sent, ()
    kept = tuple(s for s in sent.series if s not in gone)
    return Expected(sent.study_uid, kept), tuple(s.name for s in gone)


def count_problem(sent: Expected, held: dict[str, int], *, merged: bool) -> str:
    """Why XNAT's scan counts do not match what was sent, or "" when they do.

    Scans are matched to series by SeriesNumber when every number is distinct; otherwise (XNAT
    then invents IDs) by the sorted list of counts. When the upload was merged into a session
    that already existed, XNAT may hold more, never less.
    """
    numbers = [s.number for s in sent.series]
    total = sum(held.values())
    summary = f"sent {sent.files} files in {len(sent.series)} series"
    summary += f"; XNAT holds {total} in {plural(len(held), 'scan')}"
    if None not in numbers and len(set(numbers)) == len(numbers):
        for s in sent.series:
            got = held.get(str(s.number))
            if got is None:
                return f"{summary}: {s.name} is missing"
            if got < s.files or (got != s.files and not merged):
                return f"{summary}: {s.name} has {got} of {s.files} files"
        if not merged and len(held) != len(sent.series):
            extra = len(set(held) - {str(n) for n in numbers})
            were = "was" if extra == 1 else "were"
            return f"{summary}: XNAT also holds {plural(extra, 'scan')} that {were} not sent"
        return ""
    if merged:
        return "" if total >= sent.files else summary
    if sorted(held.values()) != sorted(s.files for s in sent.series):
        return summary
    return ""


def verified(sent: Expected, held: dict[str, int]) -> tuple[tuple[tuple[str, int, int], ...], int]:
    """Per series sent: (its name, files sent, files XNAT holds of it), and how many of XNAT's
    scans no sent series accounts for (a session that already existed). Matched by
    SeriesNumber when every number is distinct, else by count (XNAT then invents scan IDs)."""
    numbers = [s.number for s in sent.series]
    rows = []
    if None not in numbers and len(set(numbers)) == len(numbers):
        for s in sent.series:
            rows.append((s.name, s.files, held.get(str(s.number), 0)))
        others = len(set(held) - {str(n) for n in numbers})
        return tuple(rows), others
    left = sorted(held.values())
    got: dict[int, int] = {}
    for index, s in sorted(enumerate(sent.series), key=lambda item: item[1].files):
        got[index] = next((n for n in left if n >= s.files), 0)
        if got[index]:
            left.remove(got[index])
    rows = [(s.name, s.files, got[index]) for index, s in enumerate(sent.series)]
    return tuple(rows), len(left)
