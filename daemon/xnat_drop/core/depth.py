"""Sessions dropped at the wrong folder level: caught, never guessed. Pure.

Two mistakes, both seen on real shares (issue 13):

- one level too high: `P1/SUBJ15_MR1/01_localizer`, `.../02_t1` under the layout
  project/subject/session. Each series folder looks like a session, and XNAT would get subject
  `SUBJ15_MR1` with sessions `01_localizer`, `02_t1`. `beside` sees it: folders side by side
  that hold *other series of the same study* (one StudyInstanceUID) are parts of one session.
  Every part, judged in any order, sees the others, so all are rejected together.
- one level too deep: a date folder inside the session (`20240131`) taken as the session label.
  `label_check` reports it when a label source read from the DICOM files (routing.order's
  "dicom" or a template) gives another session label; a date-like label alone only earns a note
  (some labs do name sessions by date).

Studies and series are compared by keyed hashes (`study_key`, `series_key`): the ledger keeps
those, never a UID, and no message here quotes a DICOM header value, only folder names.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from xnat_drop.core.config import ANY_LEVEL, RoutingConfig
from xnat_drop.core.model import Policy, Route, Session, Violation
from xnat_drop.core.routing import derived_labels, xnat_clean
from xnat_drop.core.shown import shown, shown_path
from xnat_drop.core.text import iso, plural

# Where a folder beside the session is now.
Place = Literal["incoming", "work", "done", "failed"]
NAMES_SHOWN = 6  # folder names listed in a sentence; the rest are counted

# Dates as folders: 20240131, 2024-01-31, 2024_01_31, 2024.01.31, 31.01.2024, 01-31-2024,
# each optionally followed by a time (20240131_093000, 2024-01-31T09-30).
_YEAR = r"(?:19|20)\d\d"
_MONTH = r"(?:0[1-9]|1[0-2])"
_DAY = r"(?:0[1-9]|[12]\d|3[01])"
_TIME = r"(?:[T_ -]?\d{2}[-_.:]?\d{2}(?:[-_.:]?\d{2})?)?"
_DATE = re.compile(
    rf"(?:{_YEAR}{_MONTH}{_DAY}|{_YEAR}([-_.]){_MONTH}\1{_DAY}"
    rf"|{_DAY}([-_.]){_MONTH}\2{_YEAR}|{_MONTH}([-_.]){_DAY}\3{_YEAR}){_TIME}"
)
# Series folders as scanners, PACS and viewers export them:
# - a series number, then the description: `01_localizer`, `0005_t1_mprage`, `3-T1w` (XNAT's
#   own scans/<id>-<description>), `5 - t1_mprage_sag` (Horos, OsiriX);
# - a "series" word and a number: `Series_005`, `SER00001`, `SE000001` (DICOMDIR exports from
#   GE and Philips consoles and from PACS), `S0001`, `s005` (not `S01`: a common label);
# - a description made of sequence names, e.g. `t1_mprage_sag`, `Ax_T2_FSE` (GE), `sT1W_3D_TFE`
#   (Philips), `AAHead_Scout_32ch` (Siemens), maybe with the series number after it as
#   Siemens syngo writes them: `T1_MPRAGE_SAG_0002`.
_SERIES_NAMES = (
    re.compile(r"\d{1,5}(?:[ _-]+| - )[A-Za-z].*"),
    re.compile(r"(?:series|ser|se)[ _-]?\d{1,6}|s\d{3,6}", re.IGNORECASE),
)
_SEQUENCE_NAMES = """
    localizer localiser scout survey aahead aascout mprage mp2rage spgr bravo tfe tse fse flair
    dwi dti ep2d epi bold fmri resting rest swi tof asl pcasl fieldmap gre t1 t2 t1w t2w t2star
    pd pdw sag cor tra ax axial sagittal coronal mip mpr adc 2d 3d
"""
_SEQUENCE_WORDS = frozenset(_SEQUENCE_NAMES.split())
_WORD = re.compile(r"[A-Za-z0-9]+")
_NUMBERED = re.compile(r"[A-Za-z][A-Za-z0-9_ -]*_\d{4}")  # syngo: LOCALIZER_0001


@dataclass(frozen=True, slots=True)
class Shape:
    """What a session holds, as keys: its studies and series (see `study_key`)."""

    studies: frozenset[str]
    series: frozenset[str]


@dataclass(frozen=True, slots=True)
class Sibling:
    """A folder (or file) beside a session in the same parent folder, as far as it is known:
    from the first DICOM header found in it (still in incoming/ or claimed), or from the
    ledger (judged before, with every study and series). `decided_at` is when it was filed."""

    name: str
    place: Place
    studies: frozenset[str]
    series: frozenset[str]
    decided_at: float = 0.0


def study_key(uid: str) -> str:
    """A StudyInstanceUID as a key that can be stored and compared but not read back."""
    return _key(b"study", uid)


def series_key(uid: str) -> str:
    """A SeriesInstanceUID as a key (see study_key)."""
    return _key(b"series", uid)


def _key(kind: bytes, uid: str) -> str:
    return hashlib.sha256(b"xnat-drop " + kind + b"\0" + uid.encode()).hexdigest()[:32]


def shape_of(session: Session) -> Shape:
    """The keys of the studies and series of a session's DICOM files."""
    studies: set[str] = set()
    series: set[str] = set()
    for facts in session.files:
        if facts.is_dicom and facts.header is not None:
            studies.add(facts.header.study_instance_uid)
            series.add(facts.header.series_instance_uid)
    return Shape(
        frozenset(study_key(uid) for uid in studies if uid),
        frozenset(series_key(uid) for uid in series if uid),
    )


def beside(
    session: Session, shape: Shape, siblings: Iterable[Sibling], layout: tuple[str, ...]
) -> Violation | None:
    """The wrong-depth violation when folders beside `session` hold other series of its study.

    A sibling counts when it shares a study with the session and none of its series: a copy
    of the same series (a re-drop under another name) is not a part of the session. Siblings
    are merged by name (the ledger and incoming/ may both know one). None when nothing counts.
    """
    kin: dict[str, Sibling] = {}
    for sibling in siblings:
        if sibling.name == shown(session.name) or not sibling.studies & shape.studies:
            continue
        if sibling.series & shape.series:
            continue
        known = kin.get(sibling.name)
        kin[sibling.name] = sibling if known is None else _merged(known, sibling)
    if not kin:
        return None
    parent = session.relpath[:-1]
    names = sorted({shown(session.name), *kin})
    where = f"incoming/{shown_path(parent)}/" if parent else "incoming/"
    sentence = (
        f"The folders {_listed(names)} in {where} hold different series of one scanning "
        "session (one StudyInstanceUID (0020,000D)), so each would become a session of its "
        "own in XNAT: the session was probably dropped one level too high. Put them together "
        f"in one session folder, e.g. {_example(session.relpath, layout)}, and drop that "
        "folder again."
    )
    delivered = sorted((s for s in kin.values() if s.place == "done"), key=lambda s: s.name)
    if delivered:
        one = len(delivered) == 1
        when = ", ".join(iso(s.decided_at) for s in delivered)
        sentence += (
            f" {_listed([s.name for s in delivered])} {'was' if one else 'were'} already "
            f"delivered to XNAT ({when}) as {'a session' if one else 'sessions'} of "
            f"{'its' if one else 'their'} own: ask the data manager to delete "
            f"{'it' if one else 'them'} there before the whole session is dropped again."
        )
    sentence += (
        " None of the folders still waiting is uploaded: each goes to failed/ with this advice."
    )
    holds = "holds" if len(kin) == 1 else "hold"
    detail = f"{plural(len(kin), 'other folder')} beside it {holds} the same study"
    return Violation(
        "wrong-depth", Policy.REJECT, f"incoming/{session.display}", sentence, detail=detail
    )


def _merged(a: Sibling, b: Sibling) -> Sibling:
    """One sibling known twice: the union of what is known, its latest place."""
    latest = b if b.decided_at >= a.decided_at else a
    return Sibling(
        a.name,
        latest.place,
        a.studies | b.studies,
        a.series | b.series,
        max(a.decided_at, b.decided_at),
    )


def _listed(names: list[str]) -> str:
    """“a”, “b” and “c” (at most NAMES_SHOWN, then how many more)."""
    quoted = [f"“{n}”" for n in names[:NAMES_SHOWN]]
    if len(names) > NAMES_SHOWN:
        return f"{', '.join(quoted)} and {len(names) - NAMES_SHOWN} more"
    if len(quoted) == 1:
        return quoted[0]
    return f"{', '.join(quoted[:-1])} and {quoted[-1]}"


def _example(relpath: tuple[str, ...], layout: tuple[str, ...]) -> str:
    """Where the parts of a session dropped one level too high belong: its parent folder,
    one level down, below a placeholder for the level it skipped (never a guessed label)."""
    parent = relpath[:-1]
    if not parent:  # dropped straight into incoming/: the session folder is missing
        return "incoming/<session>/"
    skipped = layout[-2] if len(layout) >= 2 else ""
    placeholder = f"<{skipped}>" if skipped and skipped != ANY_LEVEL else "<folder>"
    return "incoming/" + shown_path((*parent[:-1], placeholder, parent[-1])) + "/"


# -- one level too deep: labels that look like a date or a series folder -------------------


def looks_like_date(name: str) -> bool:
    """True for a folder name that is a date (and maybe a time), as export tools write them."""
    return _DATE.fullmatch(name) is not None


def looks_like_series(name: str) -> bool:
    """True for a folder name as exports name a series folder (see _SERIES_NAMES)."""
    if any(pattern.fullmatch(name) for pattern in _SERIES_NAMES):
        return True
    words = [w.lower() for w in _WORD.findall(name)]
    # Two sequence words at least (or one and a series number), so that a session label that
    # happens to hold one ("S01_rest") is not taken for a series.
    found = sum(w in _SEQUENCE_WORDS for w in words)
    return found >= 2 or (found == 1 and _NUMBERED.fullmatch(name) is not None)


def label_check(
    session: Session, route: Route, routing: RoutingConfig
) -> tuple[Violation | None, str]:
    """A session label taken from a folder that looks like a date or a series folder:
    (a wrong-depth violation, "") when a label source read from the DICOM files gives another
    session label, else (None, a note for the report); (None, "") when nothing looks wrong."""
    target = route.target
    folder = _session_folder(session.relpath, routing.layout)
    if target is None or folder is None or target.session not in (folder, xnat_clean(folder)):
        return None, ""
    if looks_like_date(folder):
        what, kind = "a date folder", "a date"
    elif looks_like_series(folder):
        what, kind = "a series folder", "a series folder name"
    else:
        return None, ""
    layout = "/".join(routing.layout)
    derived = derived_labels("session", session, routing)
    disagree = [where for value, where in derived if value != target.session]
    if derived and not disagree:  # the DICOM files confirm the label: the lab names by date
        return None, ""
    if not disagree:
        note = (
            f"session label “{shown(folder)}” looks like {kind}: check that it is the session "
            f"folder, not a folder inside it (layout {layout})"
        )
        return None, note
    example = "incoming/" + "/".join(f"<{level}>" for level in routing.layout)
    sources = " and ".join(disagree)
    sentence = (
        f"The folder “{shown(folder)}” looks like {what} inside the session folder, not like a "
        f"session, yet it would be the XNAT session label; another session label comes from "
        f"{sources}. The session was probably dropped one level too deep. Check the folder "
        f"levels against the lab's layout ({layout}): “{shown(folder)}” belongs inside the "
        f"session folder, e.g. {example}/{shown(folder)}/; then drop the session folder again."
    )
    violation = Violation(
        "wrong-depth",
        Policy.REJECT,
        f"session “{shown(folder)}”",
        sentence,
        detail=f"looks like {kind}; another session label comes from {sources}",
    )
    return violation, ""


def _session_folder(relpath: tuple[str, ...], layout: tuple[str, ...]) -> str | None:
    """The folder name at the layout's session level, or None when no level is the session."""
    for level, name in zip(reversed(layout), reversed(relpath), strict=False):
        if level == "session":
            return name
    return None
