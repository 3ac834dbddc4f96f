"""`xnat-drop retry PATH... | --all [--force]`: send sessions from failed/ back to incoming/.

Each folder moves back (one rename, untouched) to where it was dropped; its reports move to
`failed/.history/<relpath>/<time>.report.*`, so what happened before is never lost. `--force`
leaves a marker beside the folder telling the daemon to upload it even if its ledger says the
same session was delivered before (XNAT's own `on_existing` check still applies).
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import config as config_mod
from .errors import ConfigError
from .store import REPORT_SUFFIXES, force_marker

HISTORY = ".history"
_SUFFIX = re.compile(r"__\d+$")  # added to a name already taken in done/ or failed/


def run_retry(config_path: Path, folders: Sequence[str], *, every: bool, force: bool) -> int:
    """Move the given failed sessions (or all of them) back; returns the exit code."""
    try:
        cfg = config_mod.load(config_path, dict(os.environ))
    except ConfigError as exc:
        print(f"xnat-drop retry: configuration error: {exc}", file=sys.stderr)
        return 2
    failed, incoming = cfg.paths.failed, cfg.paths.incoming
    if every:
        chosen = sorted(_failed_sessions(failed))
    else:
        chosen = []
        for text in folders:
            relpath = _inside(Path(text), failed)
            if relpath is None:
                print(
                    f"xnat-drop retry: {text} is not a session folder in {failed}", file=sys.stderr
                )
                return 2
            chosen.append(relpath)
    if not chosen:
        print("xnat-drop retry: nothing to retry", file=sys.stderr)
        return 0
    stamp = time.strftime("%Y%m%dT%H%M%S")
    problems = 0
    for relpath in chosen:
        problem = _send_back(failed, incoming, relpath, stamp, force)
        if problem:
            problems += 1
            print(f"skipped {'/'.join(relpath)}: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _send_back(
    failed: Path, incoming: Path, relpath: tuple[str, ...], stamp: str, force: bool
) -> str:
    """Move one session back; returns why not, or "" when done."""
    source = failed.joinpath(*relpath)
    back = (*relpath[:-1], _SUFFIX.sub("", relpath[-1]))  # its name as it was dropped
    target = incoming.joinpath(*back)
    if target.exists():
        return f"{target} already exists (dropped again?); move it by hand"
    history = failed / HISTORY / Path(*relpath)
    history.mkdir(parents=True, exist_ok=True)
    for suffix in REPORT_SUFFIXES:
        report = source.with_name(source.name + suffix)
        if report.exists():
            os.rename(report, history / f"{stamp}{suffix}")
    target.parent.mkdir(parents=True, exist_ok=True)
    if force:
        force_marker(
            incoming, back
        ).touch()  # first: the daemon must see it when it takes the folder
    os.rename(source, target)
    print(
        f"{'/'.join(relpath)} -> {target}{' (forced)' if force else ''}; reports kept in {history}"
    )
    return ""


def _inside(folder: Path, failed: Path) -> tuple[str, ...] | None:
    """The folder's path below failed/, if it is a session folder there."""
    if not folder.is_dir() or folder.is_symlink():
        return None
    try:
        parts = folder.resolve().relative_to(failed.resolve()).parts
    except ValueError:
        return None
    if not parts or parts[0] == HISTORY:
        return None
    return tuple(parts)


def _failed_sessions(failed: Path) -> list[tuple[str, ...]]:
    """Every folder in failed/ that has a report beside it (the history folder excluded)."""
    found = []
    for report in failed.rglob("*.report.json"):
        relpath = report.relative_to(failed).parts
        if relpath[0] == HISTORY:
            continue
        folder = report.with_name(report.name.removesuffix(".report.json"))
        if folder.is_dir() and not folder.is_symlink():
            found.append(folder.relative_to(failed).parts)
    return found
