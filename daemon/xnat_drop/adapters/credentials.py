"""XNAT credentials, read from a protected file: never from the TOML, argv or the environment.

Sources, first found wins:
1. the systemd credential `$CREDENTIALS_DIRECTORY/xnat-secret` (`LoadCredential=`);
2. `xnat.secret_file` from the configuration;
3. `~/.netrc`, the entry for XNAT's host name.

The secret files hold one line `USER:SECRET`: a user name and password, or (better) an XNAT
alias token and its secret. Every file must be readable by its owner only.
"""

from __future__ import annotations

import errno
import netrc
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from xnat_drop.core.errors import ConfigError

CREDENTIAL_NAME = "xnat-secret"
KEY = "xnat.secret_file"


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
    """The credential file to use (a `.netrc` last). Raises ConfigError when there is none."""
    # os.path.exists, not Path.exists: a folder we may not enter is "not there" here, and
    # the read below says why it cannot be used.
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if cred_dir and os.path.exists(Path(cred_dir) / CREDENTIAL_NAME):
        return Path(cred_dir) / CREDENTIAL_NAME
    if secret_file is not None:
        return secret_file
    home = env.get("HOME")
    if home and os.path.exists(Path(home) / ".netrc"):
        return Path(home) / ".netrc"
    raise ConfigError(
        [
            f"{KEY}: no XNAT credentials: set xnat.secret_file, pass the systemd credential "
            f"{CREDENTIAL_NAME!r} with LoadCredential=, or add XNAT's host to ~/.netrc"
        ]
    )


def load(secret_file: Path | None, env: Mapping[str, str], host: str = "") -> Credentials:
    """Read the credentials for XNAT at `host`. Raises ConfigError with a clear reason."""
    path = locate(secret_file, env)
    # systemd >= 254 grants the service its credential through an ACL (mode 0440): group
    # read is fine there, since the directory is the service's own.
    from_systemd = path.parent == Path(env.get("CREDENTIALS_DIRECTORY") or "/nonexistent")
    text = read_private(path, allowed=0o040 if from_systemd else 0)
    if path.name == ".netrc" and secret_file is None:
        return _from_netrc(path, text, host)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ConfigError(
            [
                f"{KEY}: {path} is empty; it must hold one line USER:SECRET (user and password, "
                "or alias token and secret)"
            ]
        )
    user, sep, secret = lines[0].partition(":")
    if not sep or not user or not secret:
        raise ConfigError(
            [
                f"{KEY}: {path} must hold one line USER:SECRET "
                "(user and password, or alias token and secret)"
            ]
        )
    return Credentials(user.strip(), secret, str(path))


def read_private(
    path: Path,
    key: str = KEY,
    allowed: int = 0,
    *,
    credential: str = CREDENTIAL_NAME,
    holds: str = "the line USER:SECRET",
) -> str:
    """The text of a regular file that only its owner can read (plus the `allowed` bits): a
    secret. Problems are ConfigErrors under `key`, with the fix (the systemd `credential`
    that would pass it, what the file `holds`). Also reads the notifications' secrets."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError([_open_problem(path, exc, key, credential, holds)]) from exc
    # Looked at before fdopen, which itself refuses a folder with an exception of its own.
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        what = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise ConfigError([f"{key}: {path} is {what}; give the file that holds {holds}"])
    with os.fdopen(fd, "rb") as fp:
        if st.st_mode & 0o077 & ~allowed:
            raise ConfigError(
                [
                    f"{key}: {path} is readable by group or others "
                    f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"
                ]
            )
        try:
            raw = fp.read(64 * 1024)
        except OSError as exc:
            raise ConfigError([f"{key}: cannot read {path}: {exc.strerror}"]) from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{key}: {path} is not UTF-8 text"]) from exc


def _open_problem(path: Path, exc: OSError, key: str, credential: str, holds: str) -> str:
    """Why the secret cannot be opened, and the usual fix, in one sentence."""
    if isinstance(exc, PermissionError):
        return (
            f"{key}: cannot open {path}: {exc.strerror} for user id {os.geteuid()}. The secret "
            f"stays 0600 root: the service gets it from systemd (LoadCredential={credential}:"
            f"{path}); check it as root, or through systemd-run with the same LoadCredential= "
            "(README, Install as a service, step 5)"
        )
    if isinstance(exc, FileNotFoundError):
        return f"{key}: cannot open {path}: it does not exist; write {holds} into it (chmod 600)"
    if exc.errno == errno.ELOOP:
        return f"{key}: {path} is a symbolic link; give the file itself"
    return f"{key}: cannot open {path}: {exc.strerror}"


def _from_netrc(path: Path, text: str, host: str) -> Credentials:
    try:
        parsed = netrc.netrc(os.fspath(path))  # permissions were checked above
    except (netrc.NetrcParseError, OSError) as exc:
        raise ConfigError([f"{KEY}: {path} cannot be read as a .netrc file: {exc}"]) from exc
    del text  # read above only to check the file is private and readable
    entry = parsed.authenticators(host)
    if entry is None or not entry[0] or not entry[2]:
        raise ConfigError([f"{KEY}: {path} has no login and password for machine {host!r}"])
    login, _account, password = entry
    return Credentials(login, password or "", f"{path} (machine {host})")


def stamp(secret_file: Path | None, env: Mapping[str, str]) -> SecretStamp | None:
    """The current stamp of the credential file, or None if it cannot be found."""
    try:
        path = locate(secret_file, env)
        st = path.stat()
    except (ConfigError, OSError):
        return None
    return SecretStamp(str(path), st.st_ino, st.st_size, st.st_mtime_ns)
