"""Who dropped a session: the owner of its folder, as notify.owners names people (a uid, and
the login name when the system knows it)."""

from __future__ import annotations

import os
import pwd
from pathlib import Path


def owner_of(folder: Path) -> tuple[str, ...]:
    """The folder's owner as (uid, login name), or (uid,) when the uid has no name here; ()
    when the folder cannot be looked at. The link itself, never followed."""
    try:
        uid = os.lstat(folder).st_uid
    except OSError:
        return ()
    try:
        return (str(uid), pwd.getpwuid(uid).pw_name)
    except KeyError:
        return (str(uid),)
