"""A claimed folder is filed only as inspection read it: nothing added, removed or written
since (a writer that kept a handle open after the claim). Run on the step thread after
judging (service/attempt.py)."""

from __future__ import annotations

from pathlib import Path

from xnat_drop.adapters.fs.tree import REGULAR, walk
from xnat_drop.core.errors import SessionChangedError
from xnat_drop.core.model import FileKind, Session
from xnat_drop.core.names import is_junk_path


def unchanged_since_inspection(folder: Path, session: Session) -> None:
    """Raise SessionChangedError when a file of `folder` was added, removed or written since
    inspection read it (a writer that kept a handle open after the claim): a verdict is filed
    only for the files as they are.

    The session's files are in the order of the walk that found them, and an unchanged folder
    walks the same way: the two are compared side by side, holding neither in memory. Only
    when they part is each looked up in a table, to name what changed.
    """
    files = iter(session.files)
    facts = next(files, None)
    for entry in walk(folder):
        while facts is not None and facts.kind is FileKind.JUNK and facts.path != entry.relpath:
            facts = next(files, None)  # junk that went: no matter
        if facts is not None and facts.path == entry.relpath:
            if (
                facts.kind is not FileKind.JUNK
                and entry.kind == REGULAR
                and facts.stamp
                and facts.stamp != entry.stamp
            ):
                raise SessionChangedError(f"{entry.relpath} was written while it was inspected")
            facts = next(files, None)
        elif not is_junk_path(entry.relpath):  # new junk is no matter either
            _compared(folder, session)
            return
    while facts is not None:
        if facts.kind is not FileKind.JUNK:
            raise SessionChangedError(f"{facts.path} vanished while the session was inspected")
        facts = next(files, None)


def _compared(folder: Path, session: Session) -> None:
    """_unchanged_since_inspection with a table of every file: what changed, by name."""
    junk = {f.path for f in session.files if f.kind is FileKind.JUNK}
    judged = {f.path: f.stamp for f in session.files if f.kind is not FileKind.JUNK}
    for entry in walk(folder):
        if entry.relpath in junk or is_junk_path(entry.relpath):
            continue
        if entry.relpath not in judged:
            raise SessionChangedError(f"{entry.relpath} appeared while the session was inspected")
        was = judged.pop(entry.relpath)
        if entry.kind == REGULAR and was and was != entry.stamp:
            raise SessionChangedError(f"{entry.relpath} was written while it was inspected")
    if judged:
        raise SessionChangedError(f"{next(iter(judged))} vanished while the session was inspected")
