"""What XNAT must hold after an upload, and why what it holds does not match. Pure.

XNAT names each scan after its SeriesNumber and counts its DICOM files; `count_problem` compares
that with what was sent (xnat-api.md §8), `without_dropped` first takes out the series an
unpredictable series import filter may have dropped (core/importfilter.py).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from xnat_drop.core.model import FileFacts
from xnat_drop.core.rules import series_name


@dataclass(frozen=True, slots=True)
class SeriesCount:
    """One series as sent: XNAT names its scan after the SeriesNumber."""

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


def expected(upload: tuple[FileFacts, ...]) -> Expected:
    """The study and the per-series instance counts of the files to upload."""
    counts: Counter[str] = Counter()
    first: dict[str, FileFacts] = {}
    for facts in upload:
        assert facts.header is not None
        counts[facts.header.series_instance_uid] += 1
        first.setdefault(facts.header.series_instance_uid, facts)
    series = tuple(
        SeriesCount(uid, first[uid].header.series_number, series_name(first[uid].header), n)  # type: ignore[union-attr]
        for uid, n in counts.items()
    )
    studies = {f.header.study_instance_uid for f in upload if f.header is not None}
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
    summary += f"; XNAT holds {total} in {len(held)} scans"
    if None not in numbers and len(set(numbers)) == len(numbers):
        for s in sent.series:
            got = held.get(str(s.number))
            if got is None:
                return f"{summary}: {s.name} is missing"
            if got < s.files or (got != s.files and not merged):
                return f"{summary}: {s.name} has {got} of {s.files} files"
        if not merged and len(held) != len(sent.series):
            extra = sorted(set(held) - {str(n) for n in numbers})
            return f"{summary}: unexpected scans {', '.join(extra)}"
        return ""
    if merged:
        return "" if total >= sent.files else summary
    if sorted(held.values()) != sorted(s.files for s in sent.series):
        return summary
    return ""
