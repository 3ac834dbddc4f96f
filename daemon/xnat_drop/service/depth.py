"""The folders beside a claimed session, for the wrong-depth check (core/depth.py decides).

A session dropped one level too high arrives as several "sessions" side by side, each a
series of one study; they settle, are claimed and judged one at a time, in any order, and
some may be filed before others are judged. So each one, when judged, looks in three places:

- incoming/: the folders (and loose files) beside it not yet claimed, by the header of their
  first DICOM file;
- the loop's other claims in the same parent folder, the same way;
- the ledger: the study and series keys of every session judged recently in that parent
  folder (recorded here for each judged session, filed or not).

The looks are bounded (SIBLING_LIMIT folders, a few files each), and a folder that cannot be
read is passed over: the check never fails a session by itself.
"""

from __future__ import annotations

import contextlib
import logging
import stat
from dataclasses import replace

from xnat_drop.adapters.dicom.peek import file_header, first_header
from xnat_drop.adapters.fs.beneath import Dir
from xnat_drop.adapters.fs.claims import Claim
from xnat_drop.adapters.ledger import Ledger
from xnat_drop.core import depth
from xnat_drop.core.config import Config
from xnat_drop.core.model import DicomHeader, Session, Verdict
from xnat_drop.core.names import is_hidden_dir, is_junk_name
from xnat_drop.core.resources import split
from xnat_drop.core.shown import shown, shown_path

log = logging.getLogger("xnat_drop.service")

SIBLING_LIMIT = 32  # folders and files beside a session looked at, in each place
RECENT = 7 * 86_400.0  # seconds the ledger's sessions count as siblings (the rest of a copy
# often follows within days: a series copied later must still meet its siblings)


def check_siblings(
    config: Config,
    ledger: Ledger,
    claim: Claim,
    others: tuple[Claim, ...],
    session: Session,
    verdict: Verdict,
    now: float,
) -> Verdict:
    """Record what `session` holds in the ledger and return `verdict` with a wrong-depth
    violation added when folders beside it hold other series of its study. `others` are the
    loop's other claims; `now` is the wall clock. Raises StorageError when the ledger fails."""
    # Its image files only: DICOM misplaced in resources/ is not what the session holds.
    session = replace(session, files=split(session.files, config.resources.folder)[0])
    shape = depth.shape_of(session)
    parent = claim.relpath[:-1]
    ledger.record_shape(
        claim.id,
        now,
        parent=shown_path(parent),
        name=claim.relpath[-1],
        studies=shape.studies,
        series=shape.series,
    )
    if not config.rules.wrong_depth or not shape.studies:
        return verdict
    siblings = [
        *_in_ledger(ledger, parent, claim, now),
        *_claimed(others, parent),
        *_in_incoming(config, parent, claim.relpath[-1]),
    ]
    violation = depth.beside(session, shape, siblings, config.routing.layout)
    if violation is None:
        return verdict
    log.info(
        "%s: other folders beside it hold the same study: dropped one level too high?",
        claim.display,
    )
    return replace(verdict, violations=(*verdict.violations, violation))


def _in_ledger(
    ledger: Ledger, parent: tuple[str, ...], claim: Claim, now: float
) -> list[depth.Sibling]:
    found = []
    for entry in ledger.shapes_beside(shown_path(parent), now - RECENT, SIBLING_LIMIT):
        if entry.claim_id == claim.id:
            continue
        place: depth.Place = "work"  # judged, not yet filed
        if entry.outcome == "done":
            place = "done"
        elif entry.outcome == "failed":
            place = "failed"
        found.append(
            depth.Sibling(
                entry.name,
                place,
                entry.studies,
                entry.series,
                entry.updated_at if entry.outcome else 0.0,
            )
        )
    return found


def _claimed(others: tuple[Claim, ...], parent: tuple[str, ...]) -> list[depth.Sibling]:
    found = []
    for other in [o for o in others if o.relpath[:-1] == parent][:SIBLING_LIMIT]:
        header = None
        with contextlib.suppress(OSError), Dir.open(other.folder) as folder:
            header = first_header(folder)
        if header is not None:
            found.append(_sibling(other.relpath[-1], "work", header))
    return found


def _in_incoming(config: Config, parent: tuple[str, ...], name: str) -> list[depth.Sibling]:
    """The folders and files beside `name` in incoming/`parent`, by their first DICOM header."""
    found: list[depth.Sibling] = []
    try:
        with Dir.open(config.paths.incoming) as incoming, incoming.descend(parent) as folder:
            names = sorted(n for n in folder.names() if n != name and not is_junk_name(n))
            for other in names[:SIBLING_LIMIT]:
                header = _header_of(folder, other)
                if header is not None:
                    found.append(_sibling(other, "incoming", header))
    except OSError:  # the parent is gone or unreadable: nothing to compare with
        return found
    return found


def _header_of(folder: Dir, name: str) -> DicomHeader | None:
    """The first DICOM header of the folder or file `name`; None for anything else (a link,
    a hidden folder, one that cannot be read)."""
    st = folder.lstat(name)
    if st is None:
        return None
    try:
        if stat.S_ISDIR(st.st_mode) and not is_hidden_dir(name):
            with folder.child(name) as child:
                return first_header(child)
        if stat.S_ISREG(st.st_mode):
            return file_header(folder, name)
    except OSError:
        return None
    return None


def _sibling(name: str, place: depth.Place, header: DicomHeader) -> depth.Sibling:
    study, series = header.study_instance_uid, header.series_instance_uid
    return depth.Sibling(
        shown(name),
        place,
        frozenset({depth.study_key(study)} if study else ()),
        frozenset({depth.series_key(series)} if series else ()),
    )
