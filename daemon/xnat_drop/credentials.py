"""XNAT credentials, read from a protected file: never from the TOML, argv or the environment.

Sources, first found wins: the systemd credential `$CREDENTIALS_DIRECTORY/xnat-secret`
(`LoadCredential=`), then `xnat.secret_file` from the configuration. The file holds one line
`USER:SECRET`: a user name and password, or an XNAT alias token and its secret.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

CREDENTIAL_NAME = "xnat-secret"


@dataclass(frozen=True, slots=True)
class Credentials:
    user: str
    secret: str = field(repr=False)  # never printed, not even by a traceback's repr
    source: str = ""


@dataclass(frozen=True, slots=True)
class SecretStamp:
    """Identity of the secret file's current contents: a change means an operator fixed it."""

    path: str
    inode: int
    size: int
    mtime_ns: int


def locate(secret_file: Path | None, env: Mapping[str, str]) -> Path:
    """The credential file to use. Raises ConfigError when there is none."""
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if cred_dir and (Path(cred_dir) / CREDENTIAL_NAME).exists():
        return Path(cred_dir) / CREDENTIAL_NAME
    if secret_file is not None:
        return secret_file
    raise ConfigError(
        [
            "xnat.secret_file: no XNAT credentials: set xnat.secret_file, or pass the systemd "
            f"credential {CREDENTIAL_NAME!r} with LoadCredential="
        ]
    )


def load(secret_file: Path | None, env: Mapping[str, str]) -> Credentials:
    """Read `USER:SECRET` from the credential file. Raises ConfigError with a clear reason."""
    path = locate(secret_file, env)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError([f"xnat.secret_file: cannot open {path}: {exc.strerror}"]) from exc
    with os.fdopen(fd, "rb") as fp:
        st = os.fstat(fp.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError([f"xnat.secret_file: {path} is not a regular file"])
        if st.st_mode & 0o077:
            raise ConfigError(
                [
                    f"xnat.secret_file: {path} is readable by group or others "
                    f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"
                ]
            )
        raw = fp.read(64 * 1024)
    try:
        lines = [line.strip() for line in raw.decode("utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        raise ConfigError([f"xnat.secret_file: {path} is not UTF-8 text"]) from exc
    user, sep, secret = (lines[0] if lines else "").partition(":")
    if not sep or not user or not secret:
        raise ConfigError(
            [
                f"xnat.secret_file: {path} must hold one line USER:SECRET "
                "(user and password, or alias token and secret)"
            ]
        )
    return Credentials(user.strip(), secret, str(path))


def stamp(secret_file: Path | None, env: Mapping[str, str]) -> SecretStamp | None:
    """The current stamp of the credential file, or None if it cannot be found."""
    try:
        path = locate(secret_file, env)
        st = path.stat()
    except (ConfigError, OSError):
        return None
    return SecretStamp(str(path), st.st_ino, st.st_size, st.st_mtime_ns)
