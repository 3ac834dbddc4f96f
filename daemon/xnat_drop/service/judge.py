"""Inspect a folder and judge it: the one code path shared by the daemon and `xnat-drop check`.

Keeping this in one place means the two can never disagree about a session.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from xnat_drop.adapters.dicom.inspection import inspect, unknown_keywords
from xnat_drop.adapters.workers import InspectionPool
from xnat_drop.core.config import Config
from xnat_drop.core.depth import label_check
from xnat_drop.core.errors import ConfigError
from xnat_drop.core.filetable import changed
from xnat_drop.core.model import FileKind, Session, Verdict
from xnat_drop.core.resources import split
from xnat_drop.core.routing import route
from xnat_drop.core.rules import evaluate


@dataclass(frozen=True, slots=True)
class Judgement:
    session: Session
    verdict: Verdict


def judge(
    folder: Path,
    relpath: tuple[str, ...],
    config: Config,
    pool: InspectionPool | None = None,
    *,
    progress: Callable[[], None] | None = None,
    spill: Path | None = None,
) -> Judgement:
    """Classify every file of `folder` (dropped at `relpath`), route it and apply the rules.

    With a `pool`, a large session is read by its worker processes (same result, sooner).
    A large session's files are kept in an unnamed file in `spill` (inspection.py).
    `progress` is called often while the files are read (see inspect). Raises
    SessionChangedError when the folder changes while it is read.
    """
    session = inspect(folder, relpath, config.dicom_keywords, pool, progress=progress, spill=spill)
    marker = config.watch.ready_marker
    if marker:  # the "copy finished" signal is the lab's, not data: never uploaded or judged
        ready = {
            i: replace(f, kind=FileKind.JUNK, header=None, note="the ready marker")
            for i, f in enumerate(session.files)
            if f.path == marker
        }
        session = replace(session, files=changed(session.files, ready))
    # Resource files are not the session's images: no label comes from them (core/resources.py).
    parts = split(session.files, config.resources.folder)
    images = replace(session, files=parts[0])
    routed = route(relpath, images, config.routing)
    verdict = evaluate(session, config.rules, routed, config.resources, parts)
    if config.rules.wrong_depth:
        violation, note = label_check(images, routed, config.routing)
        if violation is not None:
            verdict = replace(verdict, violations=(*verdict.violations, violation))
        if note:
            verdict = replace(verdict, notes=(*verdict.notes, note))
    return Judgement(session, verdict)


def check_keywords(config: Config) -> None:
    """Raise ConfigError if a template or PHI tag names an attribute DICOM does not have."""
    problems = []
    for keyword in unknown_keywords(config.routing.dicom_keywords):
        problems.append(f"routing: {{{keyword}}} in a template is not a DICOM keyword")
    for keyword in unknown_keywords(config.rules.phi_tags):
        problems.append(f"rules.phi_tags: {keyword!r} is not a DICOM keyword")
    if problems:
        raise ConfigError(problems, config.source)


def relpath_for(folder: Path, incoming: Path, depth: int) -> tuple[str, ...]:
    """Where `folder` sits for routing: below incoming/ if it lies inside it, else its last
    `depth` path components (fewer if the path is shorter)."""
    resolved = folder.resolve()
    try:
        parts = resolved.relative_to(incoming.resolve()).parts
    except ValueError:
        parts = ()
    if parts:
        return tuple(parts)
    return tuple(resolved.parts[1:][-depth:]) or (resolved.name or "/",)
