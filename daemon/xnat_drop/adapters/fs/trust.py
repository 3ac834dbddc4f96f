"""Who may write where: the drop tree's trust boundaries, checked at start. Effect (lstat only).

- The root of the drop tree (the folder holding incoming/, done/, failed/ and .work/), the
  work folder and the state directory belong to the service: owned by its user (or root) and
  writable by nobody else. Anyone who could write there could plant a claim record, swap
  .work/ or a ledger for a link, or move the service's own files into the shared tree.
- incoming/ is the lab's to write; done/ and failed/ are the lab's to read and to take
  sessions back from. The daemon trusts nothing below those three (see beneath.py).
- The configured folders themselves must be folders, not links: the daemon never follows a
  link below them, and a link at the top would be the one place it did.

`problems` lists every breach with the command that fixes it; the caller exits 78.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from xnat_drop.core.config import PathsConfig


def problems(paths: PathsConfig, uid: int | None = None, *, any_owner: bool = False) -> list[str]:
    """What is wrong with the ownership and modes of the service's own folders, as sentences
    that end in the fix. Folders that do not exist yet are judged by the folder that will
    hold them.

    `uid` is the service user's (default: this process's). `any_owner` is for an
    administrator checking as root, who does not know it: then the service's folders may
    belong to any one user besides root.
    """
    uid = None if any_owner else os.geteuid() if uid is None else uid
    found: list[str] = []
    owners: dict[int, Path] = {}
    own = {
        "the drop tree's root": {paths.incoming.parent, paths.done.parent, paths.failed.parent},
        "the work folder": {paths.work, paths.work.parent},
        "the state directory": {paths.state},
    }
    seen: set[Path] = set()
    for role, folders in own.items():
        for configured in sorted(folders):
            folder = _existing(configured)
            if folder in seen:
                continue
            seen.add(folder)
            found.extend(_owned(folder, role, uid, owners))
    if uid is None and len(owners) > 1:
        which = ", ".join(f"{path} (user id {owner})" for owner, path in sorted(owners.items()))
        found.append(
            "paths: the drop tree's root, the work folder and the state directory must all "
            f"belong to the service user (or root); they belong to different users: {which}"
        )
    for name, folder in (
        ("incoming", paths.incoming),
        ("done", paths.done),
        ("failed", paths.failed),
    ):
        found.extend(_not_a_link(folder, f"paths.{name}"))
    found.extend(_not_a_link(paths.work, "paths.work"))
    return found


def _existing(folder: Path) -> Path:
    """`folder`, or its nearest ancestor that exists (what a new folder would be made in)."""
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    return folder


def _owned(folder: Path, role: str, uid: int | None, owners: dict[int, Path]) -> list[str]:
    try:
        st = os.stat(folder)  # the administrator's own path: links above it are theirs
    except OSError as exc:
        return [f"paths: cannot look at {folder} ({role}): {exc.strerror}"]
    found = []
    if st.st_uid != 0:
        owners.setdefault(st.st_uid, folder)
    if uid is not None and st.st_uid not in (uid, 0):
        found.append(
            f"paths: {folder} ({role}) belongs to user id {st.st_uid}, not to the service "
            f"(user id {uid}) or root. Fix: chown {uid} {folder}"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        mode = stat.S_IMODE(st.st_mode)
        found.append(
            f"paths: {folder} ({role}) is writable by its group or by others (mode {mode:04o}): "
            "lab members could plant files or links there. Only incoming/ is theirs to write, "
            f"and done/ and failed/ to take sessions back from. Fix: chmod g-w,o-w {folder}"
        )
    return found


def _not_a_link(folder: Path, key: str) -> list[str]:
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        return []
    except OSError as exc:
        return [f"{key}: cannot look at {folder}: {exc.strerror}"]
    if stat.S_ISLNK(st.st_mode):
        return [
            f"{key}: {folder} is a symbolic link; xnat-drop follows no links in the drop tree. "
            f"Fix: configure the folder it points to ({os.path.realpath(folder)})"
        ]
    if not stat.S_ISDIR(st.st_mode):
        return [f"{key}: {folder} is not a folder"]
    return []
