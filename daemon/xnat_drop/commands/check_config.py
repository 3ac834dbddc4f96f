"""`xnat-drop check-config`: the configuration, the credentials and the folders' ownership;
exit 0, or 78 with every problem listed (systemd runs it before every start)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from xnat_drop.adapters import configfile, credentials
from xnat_drop.adapters.fs import trust
from xnat_drop.core.errors import ConfigError
from xnat_drop.service.judge import check_keywords


def check_config(config_path: Path) -> int:
    """Print what will be used and return 0; raise ConfigError listing every problem."""
    env = dict(os.environ)
    cfg = configfile.load(config_path, env)
    check_keywords(cfg)
    problems: list[str] = list(trust.problems(cfg.paths))
    try:
        host = urlsplit(cfg.xnat.url).hostname or ""
        found = credentials.load(cfg.xnat.secret_file, env, host)
    except ConfigError as exc:
        problems.extend(exc.problems)
        found = None
    root_parent = cfg.paths.incoming.parent
    if not root_parent.is_dir():
        problems.append(f"paths: {root_parent} does not exist (is the share mounted?)")
    if problems:
        raise ConfigError(problems, str(config_path))
    assert found is not None
    print(f"{config_path}: OK")
    print(f"  XNAT      {cfg.xnat.url} as {found.user} (secret from {found.source})")
    print(f"  incoming  {cfg.paths.incoming}  layout {'/'.join(cfg.routing.layout)}")
    print(f"  done      {cfg.paths.done}")
    print(f"  failed    {cfg.paths.failed}")
    print(f"  watching  {cfg.watch.observer}, settle {cfg.watch.settle:g} s")
    return 0
