"""`xnat-drop retry PATH... | --all [--force]`: send sessions from failed/ back to incoming/.

Each folder moves back (one rename, untouched) to where it was dropped; its reports move to
`failed/.history/<relpath>/<time>.report.*`, so what happened before is never lost. `--force`
leaves a marker beside the folder telling the daemon to upload it even if its ledger says the
same session was delivered before (XNAT's own `on_existing` check still applies).

Data managers often run this as root, in folders lab members can write: every step goes
through open directories and follows no link (beneath.py). A link anywhere on the way is
refused with a sentence, never followed. Folders it has to make (in incoming/ and in
failed/.history/) get the owner, group and mode of the folder they are made in (beneath.py),
so lab members can still drop there, whoever runs it.
"""

from __future__ import annotations

import os
import re
import stat
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from xnat_drop.adapters import configfile
from xnat_drop.adapters.fs.beneath import Dir, UnsafePathError
from xnat_drop.adapters.fs.filing import HISTORY, REPORT_SUFFIXES, leave_force_marker
from xnat_drop.core.shown import shown, shown_path

_SUFFIX = re.compile(r"__\d+$")  # added to a name already taken in done/ or failed/
MAX_LEVELS = 16


def run_retry(config_path: Path, folders: Sequence[str], *, every: bool, force: bool) -> int:
    """Move the given failed sessions (or all of them) back; returns the exit code.

    Raises ConfigError (exit 78) for an unusable configuration.
    """
    cfg = configfile.load(config_path, dict(os.environ))
    failed, incoming = cfg.paths.failed, cfg.paths.incoming
    if every:
        chosen = sorted(_failed_sessions(failed))
    else:
        chosen = []
        for text in folders:
            relpath = _inside(Path(text), failed)
            if relpath is None:
                print(
                    f"xnat-drop retry: {shown(text)} is not a session folder in {failed}",
                    file=sys.stderr,
                )
                return 2
            chosen.append(relpath)
    if not chosen:
        print("xnat-drop retry: nothing to retry", file=sys.stderr)
        return 0
    stamp = time.strftime("%Y%m%dT%H%M%S")
    problems = 0
    for relpath in chosen:
        try:
            _send_back(failed, incoming, relpath, stamp, force)
        except OSError as exc:
            problems += 1
            print(f"skipped {shown_path(relpath)}: {_why(exc)}", file=sys.stderr)
    return 1 if problems else 0


def _why(exc: OSError) -> str:
    """One sentence for a session that could not be sent back."""
    if isinstance(exc, UnsafePathError):
        return f"{exc.strerror}; nothing was moved"
    if isinstance(exc, FileExistsError):
        return f"{shown(str(exc.filename or ''))} already exists (dropped again?); move it by hand"
    where = f" ({shown(str(exc.filename))})" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def _send_back(
    failed: Path, incoming: Path, relpath: tuple[str, ...], stamp: str, force: bool
) -> None:
    """Move one session back, its reports to the history first. Raises OSError (a link on
    the way: UnsafePathError; the name taken in incoming/: FileExistsError)."""
    name = relpath[-1]
    back = (*relpath[:-1], _SUFFIX.sub("", name))  # its name as it was dropped
    with Dir.open(failed) as failed_dir, failed_dir.descend(relpath[:-1]) as source:
        st = source.lstat(name)
        if st is None or not stat.S_ISDIR(st.st_mode):
            raise UnsafePathError(source.shown(name), "is not a session folder (a link?)")
        history_parts = (HISTORY, *relpath)
        with (
            Dir.open(incoming) as incoming_dir,
            incoming_dir.descend(back[:-1], create=True) as target,
            failed_dir.descend(history_parts, create=True) as history,
        ):
            # Everything that can refuse is checked before anything moves.
            if target.exists(back[-1]):
                raise FileExistsError(0, "exists", str(incoming.joinpath(*back)))
            if force:  # before the folder: the daemon must see it when it takes the folder
                leave_force_marker(target, back[-1])
            for suffix in REPORT_SUFFIXES:
                report = source.lstat(name + suffix)
                if report is not None and stat.S_ISREG(report.st_mode):
                    source.move(name + suffix, history, f"{stamp}{suffix}")
            source.move(name, target, back[-1])
    kept = shown(str(failed.joinpath(*history_parts)))
    forced = " (forced)" if force else ""
    there = shown(str(incoming.joinpath(*back)))
    print(f"{shown_path(relpath)} -> {there}{forced}; reports kept in {kept}")


def _inside(folder: Path, failed: Path) -> tuple[str, ...] | None:
    """The folder's path below failed/, read from the words given (links are not resolved:
    what the links on the way point to does not matter, they are refused later)."""
    try:
        parts = Path(os.path.abspath(folder)).relative_to(os.path.abspath(failed)).parts
    except ValueError:
        return None
    if not parts or parts[0] == HISTORY or len(parts) > MAX_LEVELS or ".." in parts:
        return None
    return tuple(parts)


def _failed_sessions(failed: Path) -> list[tuple[str, ...]]:
    """Every folder in failed/ that has a JSON report beside it (the history excluded)."""
    with Dir.open(failed) as top:
        return list(_sessions_below(top, ()))


def _sessions_below(folder: Dir, parts: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    if len(parts) >= MAX_LEVELS:
        return
    names = set(folder.names())
    for name in sorted(names):
        if not parts and name == HISTORY:
            continue
        st = folder.lstat(name)
        if st is None or not stat.S_ISDIR(st.st_mode):
            continue  # files, and links, which are never followed
        if f"{name}.report.json" in names:
            yield (*parts, name)
            continue
        try:
            child = folder.child(name)
        except OSError:
            continue
        with child:
            yield from _sessions_below(child, (*parts, name))
