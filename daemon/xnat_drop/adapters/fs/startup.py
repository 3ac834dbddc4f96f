"""The start-up checks of the drop tree and the state directory, changing nothing. Effect
(stat, access, statvfs only).

`run` and `check-config` both call `problems`, so they cannot disagree: what `run` would
refuse, `check-config` reports first, and neither creates a folder to find out. Each problem
is one sentence that names the path and ends in the fix; OSErrors never escape.

- every configured folder must be reachable: a folder the service user cannot enter is
  reported alone (the rest would be noise), with the usual cause (SupplementaryGroups=);
- incoming/, done/, failed/ and the work folder must be writable (or, while missing, their
  parent, where `run` creates them) and on one filesystem, since every move is a rename;
- the state directory (or its parent while it is missing) must be writable, and so must an
  existing ledger;
- the ownership, modes and links of trust.py.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import stat
from pathlib import Path

from xnat_drop.adapters.fs import trust
from xnat_drop.core.config import PathsConfig
from xnat_drop.core.shown import shown

READ_ONLY_HINT = (
    "a read-only mount, or (under systemd) the folder missing from ReadWritePaths= in the "
    "unit's drop-in"
)


def problems(paths: PathsConfig, ledger_file: str, *, any_owner: bool = False) -> list[str]:
    """Everything `run` would refuse about the folders, as sentences with their fix.

    The service user is this process's; `any_owner` is for an administrator checking as
    root, who is not it: then any one user may own the service's folders (trust.py).
    """
    tree = {
        "paths.incoming": paths.incoming,
        "paths.done": paths.done,
        "paths.failed": paths.failed,
        "paths.work": paths.work,
    }
    unreachable = _unreachable([*tree.values(), paths.state])
    if unreachable:
        return unreachable
    found = trust.problems(paths, any_owner=any_owner)
    places = _places(tree, found)
    found.extend(_write_problems(sorted(set(places.values()))))
    devices: dict[str, tuple[Path, int]] = {}
    for key, place in places.items():
        with contextlib.suppress(OSError):
            devices[key] = (tree[key], os.stat(place).st_dev)
    if len({dev for _, dev in devices.values()}) > 1:
        which = ", ".join(f"{k[6:]} {shown(str(f))}" for k, (f, _) in devices.items())
        found.append(
            "paths: incoming, done, failed and work must be on one filesystem, so that every "
            f"move is an atomic rename; they are not ({which}). Fix: put them on one "
            "filesystem (set paths.root only)"
        )
    found.extend(_state_problems(paths.state, ledger_file))
    return found


def _unreachable(folders: list[Path]) -> list[str]:
    """The folders above `folders` this process cannot enter, each named once."""
    found: dict[Path, str] = {}
    for folder in folders:
        for above in reversed((folder, *folder.parents)):
            if not os.path.lexists(above) and _searchable(above.parent):
                break  # missing: judged by the other checks
            if _searchable(above):
                continue
            if above not in found and os.path.isdir(above):
                found[above] = _cannot_enter(above)
            break
    return list(found.values())


def _searchable(folder: Path) -> bool:
    try:
        return os.access(folder, os.X_OK, effective_ids=_EFFECTIVE)
    except OSError:
        return False


def _cannot_enter(folder: Path) -> str:
    try:
        st = os.stat(folder)
        what = f" ({_owner(st)}, mode {stat.S_IMODE(st.st_mode):04o})"
    except OSError:
        what = ""
    return (
        f"paths: the service user ({_me()}) cannot enter {shown(str(folder))}{what}. Is "
        "SupplementaryGroups= set to the drop tree's group in the unit's drop-in (and is the "
        "share mounted with that group)?"
    )


def _places(tree: dict[str, Path], found: list[str]) -> dict[str, Path]:
    """Where `run` writes for each folder: itself, or its parent while it is missing (where
    `run` creates it). Links and non-folders are trust.py's to report; problems go to `found`."""
    places: dict[str, Path] = {}
    missing: set[Path] = set()
    for key, folder in tree.items():
        try:
            st = os.lstat(folder)
        except FileNotFoundError:
            if os.path.isdir(folder.parent):
                places[key] = folder.parent
            else:
                missing.add(folder.parent)
            continue
        except OSError as exc:
            found.append(f"{key}: cannot look at {shown(str(folder))}: {exc.strerror}")
            continue
        if stat.S_ISDIR(st.st_mode):
            places[key] = folder
    found.extend(
        f"paths: {shown(str(p))} does not exist (is the share mounted?)" for p in sorted(missing)
    )
    return places


def _write_problems(places: list[Path]) -> list[str]:
    """The places this process may not create and rename entries in, as at most two
    sentences: the read-only ones, and the ones it lacks permission for."""
    refused = [p for p in places if not _may_write(p)]
    read_only = [p for p in refused if _read_only(p)]
    denied = [p for p in refused if p not in read_only]
    found = []
    if read_only:
        names = ", ".join(shown(str(p)) for p in read_only)
        verb = "is" if len(read_only) == 1 else "are"
        found.append(f"paths: {names} {verb} on a read-only filesystem: {READ_ONLY_HINT}")
    if denied:
        names = ", ".join(f"{shown(str(p))} ({_described(p)})" for p in denied)
        found.append(
            f"paths: the service user ({_me()}) cannot write to {names}: give it write access "
            f"(README, Install as a service, step 4), or it is {READ_ONLY_HINT}"
        )
    return found


def _may_write(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK, effective_ids=_EFFECTIVE)


def _described(folder: Path) -> str:
    try:
        st = os.stat(folder)
    except OSError as exc:
        return str(exc.strerror)
    return f"{_owner(st)}, mode {stat.S_IMODE(st.st_mode):04o}"


def _state_problems(state: Path, ledger_file: str) -> list[str]:
    key = "paths.state_dir"
    if not os.path.lexists(state):
        parent = _nearest(state)
        if _may_write(parent) and not _read_only(parent):
            return []
        return [
            f"{key}: {shown(str(state))} does not exist and the service user ({_me()}) cannot "
            f"create it in {shown(str(parent))}. Under systemd, StateDirectory= makes it (run "
            "check-config through systemd-run as the README shows); otherwise: install -d -o "
            f"<service user> -m 0750 {shown(str(state))}"
        ]
    if not os.path.isdir(state):
        return [f"{key}: {shown(str(state))} is not a folder"]
    if not _may_write(state):
        where = f"{shown(str(state))} ({_described(state)})"
        if _read_only(state):
            return [f"{key}: {where} is on a read-only filesystem: {READ_ONLY_HINT}"]
        return [
            f"{key}: the service user ({_me()}) cannot write to {where}, where the ledger and "
            f"status.json live. Fix: chown <service user> {shown(str(state))}"
        ]
    ledger = state / ledger_file
    if os.path.lexists(ledger) and not os.access(
        ledger, os.R_OK | os.W_OK, effective_ids=_EFFECTIVE
    ):
        return [
            f"{key}: the service user ({_me()}) cannot read and write the ledger "
            f"{shown(str(ledger))}. Fix: chown <service user> {shown(str(ledger))}"
        ]
    return []


def _nearest(folder: Path) -> Path:
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    return folder


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _me() -> str:
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = "?"
    groups = ", ".join(_group(g) for g in sorted({os.getegid(), *os.getgroups()}))
    return f"{name}, user id {uid}, groups {groups}"


def _owner(st: os.stat_result) -> str:
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    return f"owner {user}, group {_group(st.st_gid)}"


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


_EFFECTIVE = os.access in os.supports_effective_ids
