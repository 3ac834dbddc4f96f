"""The configuration file: read it, parse it as TOML, hand it to core.config.parse; then
what only the machine can answer (is the time zone in its tz database?)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from xnat_drop.adapters import localzone
from xnat_drop.core.config import Config, parse
from xnat_drop.core.errors import ConfigError
from xnat_drop.core.schema import not_a_time_zone

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]


def load(path: Path, env: Mapping[str, str]) -> Config:
    """Read and parse the TOML file at `path`. Raises ConfigError (also for unreadable files)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            [f"cannot read the configuration file: {exc.strerror}"], str(path)
        ) from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([f"the file is not UTF-8 text: {exc}"], str(path)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"TOML syntax error: {exc}"], str(path)) from exc
    config = parse(data, base=path.resolve().parent, env=env, source=str(path))
    # The core checked the zone's form; whether the tz database knows it is read here.
    if config.time_zone and localzone.named(config.time_zone) is None:
        raise ConfigError([f"report.time_zone: {not_a_time_zone(config.time_zone)}"], str(path))
    return config
