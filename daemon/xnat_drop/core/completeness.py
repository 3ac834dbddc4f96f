"""Does each series of a session look complete? Judged from what its headers say. Pure.

A copy that paused (Windows Explorer waiting on a "replace or skip?" question) or broke off
looks settled while part of a series is missing. Each series (by SeriesInstanceUID) is held to
the counts its own headers give, and to none where they give none:

- ImagesInAcquisition (0020,1002): the images of one acquisition (of the series when it has
  one AcquisitionNumber; per acquisition only where one acquisition holds exactly that many);
- NumberOfTemporalPositions (0020,0105) × the images at one TemporalPositionIdentifier
  (0020,0100);
- NumberOfFrames (0028,0008) of an enhanced multi-frame object against the items of its
  PerFrameFunctionalGroupsSequence;
- InstanceNumber (0020,0013) holes, only where numbering starts at 0 or 1 and runs in steps of
  one apart from them (numbering that restarts per acquisition or time point is judged per
  AcquisitionNumber and TemporalPositionIdentifier, or not at all).

Mosaics (ImageType MOSAIC: many slices in one file) are judged by InstanceNumber only.
Non-image objects (sopclasses.py: reports, documents, spectra, raw data, Siemens CSA
Non-Image) are not counted at all: they are none of the images these counts announce, often
carry no InstanceNumber, and a series of them follows no image numbering. A shortfall names
the series by its files (core/noheader.py: folder, count, first file), never by a header value.
"""

from __future__ import annotations

import itertools
import math
from array import array
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from xnat_drop.core.model import DicomHeader, FileFacts, Policy, Rule, Violation
from xnat_drop.core.noheader import FileGroup, Files, capital
from xnat_drop.core.sopclasses import is_non_image
from xnat_drop.core.text import duration, iso

RULE: Rule = "incomplete-series"
# InstanceNumber holes count only in numbering that otherwise runs in steps of one: at most
# HOLES of them, or a quarter of the steps in a long series.
DENSE = 0.75
HOLES = 2


@dataclass(frozen=True, slots=True)
class Shortfall:
    """A series with fewer images than its headers announce.

    `found` and `expected` count images (files) or, for `unit` "frames", frames; `at_least`
    says `expected` is a lower bound (an InstanceNumber range: more may be missing at its end);
    `signal` names the attribute that said so, in words.
    """

    files: Files  # the series' files: its folder in the session, how many, the first
    found: int
    expected: int
    signal: str
    unit: str = "images"
    at_least: bool = False

    @property
    def name(self) -> str:
        """`the series of 4 files under 05_bold/ (first: 05_bold/IM0001.dcm)`: how status,
        logs and reports name the series."""
        return self.files.series

    @property
    def summary(self) -> str:
        """`88 of 176 images`."""
        bound = "at least " if self.at_least else ""
        return f"{self.found} of {bound}{self.expected} {self.unit}"


def shortfalls(files: Iterable[FileFacts]) -> tuple[Shortfall, ...]:
    """The series of `files` (DICOM with a header) that look incomplete, by folder; non-image
    objects are left out (see the module doc). `files` is read once; each series keeps a few
    numbers per file, never the files."""
    series: dict[str, _Series] = {}
    for facts in files:
        header = facts.header
        if facts.is_dicom and header is not None and not is_non_image(header.sop_class_uid):
            uid = header.series_instance_uid
            members = series.get(uid)
            if members is None:
                members = series[uid] = _Series()
            members.add(facts.path, header)
    found = [s for members in series.values() if (s := members.judged()) is not None]
    return tuple(sorted(found, key=lambda s: (s.files.folder, s.files.first)))


def violations(found: Sequence[Shortfall]) -> tuple[Violation, ...]:
    """One incomplete-series violation per shortfall, with a sentence a lab member can act on."""
    return tuple(
        Violation(
            RULE,
            Policy.REJECT,
            s.name,
            f"{capital(s.name)} holds {s.summary}: {s.signal}. The copy was "
            "probably interrupted or paused (for example by a “replace or skip?” question) "
            "and the rest never arrived. Copy the missing files of this series into its "
            "folder, then move the session folder back to incoming/ to try again.",
            detail=s.summary,
        )
        for s in found
    )


def held_text(found: Sequence[Violation]) -> str:
    """What `status` says of a session held back as incomplete: `the series of 88 files under
    05_bold/ (...): 88 of 176 images` for each series, from its violations."""
    return "; ".join(f"{v.subject}: {v.detail}" for v in found if v.rule == RULE)


_NONE = -(1 << 63)  # None in the arrays of _Series (no header number is that low)
_MANY = -1  # more than one value where one was needed


class _Series:
    """What the signals below need of one series' files, gathered one file at a time: the
    first file (by path), the folder they share, a few counters, and three numbers per file
    (InstanceNumber, AcquisitionNumber, TemporalPositionIdentifier) in arrays."""

    def __init__(self) -> None:
        self.group = FileGroup()
        self.first_header: DicomHeader | None = None
        self.count = 0
        self.frames_have = self.frames_want = 0
        self.images: int | None = 0  # ImagesInAcquisition: 0 before the first, _MANY if several
        self.points: int | None = 0  # NumberOfTemporalPositions, the same way
        self.acquisitions: Counter[int | None] = Counter()
        self.positions: Counter[int | None] = Counter()
        self.numbers = array("q")
        self.acquisition_numbers = array("q")
        self.temporal_positions = array("q")

    def add(self, path: str, header: DicomHeader) -> None:
        self.count += 1
        if self.first_header is None or path < self.group.first:
            self.first_header = header
        self.group.add(path)
        frames, items = header.frames, header.frame_items
        if frames is not None and items is not None and items < frames:
            self.frames_have += items
            self.frames_want += frames
        self.images = _same(self.images, header.images_in_acquisition, self.count)
        self.points = _same(self.points, header.temporal_positions, self.count)
        self.acquisitions[header.acquisition_number] += 1
        self.positions[header.temporal_position] += 1
        for numbers, value in (
            (self.numbers, header.instance_number),
            (self.acquisition_numbers, header.acquisition_number),
            (self.temporal_positions, header.temporal_position),
        ):
            numbers.append(_NONE if value is None else value)

    def judged(self) -> Shortfall | None:
        """The shortfall of the series (the largest any signal gives), or None."""
        assert self.first_header is not None
        mosaic = "MOSAIC" in (t.upper() for t in self.first_header.image_type)
        signals = [_frames(self), _numbering(self)]
        if not mosaic:  # many slices in one file
            signals += [_per_acquisition(self), _temporal(self)]
        found = [s for s in signals if s is not None]
        if not found:
            return None
        found_n, expected, signal, unit, at_least = max(
            found, key=lambda s: (s[1] - s[0], not s[4])
        )
        return Shortfall(self.group.files(), found_n, expected, signal, unit, at_least)


_Signal = tuple[int, int, str, str, bool]  # found, expected, signal, unit, at least


def _same(kept: int | None, value: int | None, count: int) -> int | None:
    """The one value every file gave so far: `kept` after the `count`th file gave `value`."""
    if count == 1:
        return value
    return kept if value == kept else _MANY


def _one(value: int | None) -> int | None:
    """The one value every file gives (positive), or None."""
    return value if value is not None and value > 0 else None


def _frames(series: _Series) -> _Signal | None:
    """Enhanced multi-frame objects whose per-frame descriptions are fewer than their frames."""
    if not series.frames_want:
        return None
    have, want = series.frames_have, series.frames_want
    signal = (
        f"NumberOfFrames (0028,0008) says {want}, but the per-frame descriptions "
        f"(PerFrameFunctionalGroupsSequence) cover {have}"
    )
    return have, want, signal, "frames", False


def _per_acquisition(series: _Series) -> _Signal | None:
    """Fewer images than ImagesInAcquisition: in the series when it is one acquisition, else
    per acquisition, but only where one acquisition holds exactly that many (GE gives the
    series' total, Siemens often the images of one acquisition)."""
    count = _one(series.images)
    if count is None:
        return None
    total = series.count
    groups = series.acquisitions
    said = f"ImagesInAcquisition (0020,1002) says {count}"
    if total < count:  # short in either reading
        return total, count, said, "images", False
    if len(groups) < 2 or count not in groups.values() or max(groups.values()) > count:
        return None
    expected = count * len(groups)
    if total >= expected:
        return None
    signal = f"{said} for each of its {len(groups)} acquisitions (AcquisitionNumber)"
    return total, expected, signal, "images", False


def _temporal(series: _Series) -> _Signal | None:
    """Fewer images than NumberOfTemporalPositions × the images of the fullest time point."""
    points = _one(series.points)
    if points is None or points < 2:
        return None
    if any(p is None or not 1 <= p <= points for p in series.positions):
        return None  # time points numbered otherwise: nothing to count by
    per_point = max(series.positions.values())
    expected = points * per_point
    if series.count >= expected:
        return None
    signal = (
        f"NumberOfTemporalPositions (0020,0105) says {points} time points of {per_point} "
        "images (TemporalPositionIdentifier)"
    )
    return series.count, expected, signal, "images", False


def _numbering(series: _Series) -> _Signal | None:
    """Holes in InstanceNumber, where numbering is otherwise dense (see the module doc)."""
    numbers = series.numbers
    if _NONE in numbers:
        return None
    ordered = sorted(numbers)
    if all(a != b for a, b in itertools.pairwise(ordered)):
        groups = [ordered]
    else:  # restarted per acquisition or time point: each must then number on its own
        by_key: dict[tuple[int, int], array[int]] = defaultdict(lambda: array("q"))
        keys = zip(series.acquisition_numbers, series.temporal_positions, strict=True)
        for number, key in zip(numbers, keys, strict=True):
            by_key[key].append(number)
        groups = [sorted(g) for g in by_key.values()]
        if len(groups) < 2 or any(a == b for g in groups for a, b in itertools.pairwise(g)):
            return None
    missing = spans = 0
    for group in groups:
        span = _dense_span(group)
        if span is None:
            return None
        spans += span
        missing += span - len(group)
    if not missing:
        return None
    signal = f"InstanceNumber (0020,0013) skips {missing} numbers"
    return series.count, spans, signal, "images", True


def _dense_span(numbers: list[int]) -> int | None:
    """How many numbers `numbers` (sorted, distinct) should have from its first to its last,
    or None when they start elsewhere than 0 or 1 or run in steps other than one."""
    if numbers[0] not in (0, 1):
        return None
    steps = [b - a for a, b in itertools.pairwise(numbers)]
    holes = sum(1 for s in steps if s != 1)
    if steps and (math.gcd(*steps) != 1 or holes > max(HOLES, (1 - DENSE) * len(steps))):
        return None
    return numbers[-1] - numbers[0] + 1


def late_files(count: int, after: float, delivered_at: float, where: str) -> Violation:
    """The late-files violation: `count` files of a study this daemon delivered `after`
    seconds earlier (negative: while it was being delivered), at `delivered_at` (wall clock),
    to `where` (XNAT's URL of it)."""
    files = "this file" if count == 1 else f"these {count} files"
    if after >= 0:
        when = f"arrived {duration(after)} after the session was delivered"
    else:
        when = "arrived while the session was being delivered"
    sentence = (
        f"{files[:1].upper()}{files[1:]} {when} ({iso(delivered_at)}, {where}); the copy was "
        "probably still running when xnat-drop took the first part. They are new images of "
        "the same study, so nothing was sent, and the session needs no other label. To add "
        "them to the "
        'session XNAT already holds, ask the administrator to set xnat.on_existing = "append" '
        "and then move this folder back to incoming/; XNAT adds them to the same session."
    )
    return Violation(
        "late-files", Policy.REJECT, "the whole session", sentence, detail=f"{count} files"
    )
