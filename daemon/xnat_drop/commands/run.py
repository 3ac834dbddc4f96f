"""`xnat-drop run [--once [--timeout S]]`: the daemon itself (what the service runs).

Signal handlers set a flag on the service and nothing else; `signal.set_wakeup_fd` writes the
signal's number into the loop's self-pipe, so a stop or a reload wakes the loop at once without
the handler taking any lock (one held by the very code it interrupted would hang the daemon).
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from xnat_drop.adapters import configfile
from xnat_drop.adapters.systemd_api import Notifier
from xnat_drop.adapters.xnat.client import XnatClient, connect
from xnat_drop.commands.logs import setup_logging
from xnat_drop.core.config import Config
from xnat_drop.core.errors import ConfigError
from xnat_drop.service.loop import Service

EX_SOFTWARE = 1

log = logging.getLogger("xnat_drop")


def run_daemon(config_path: Path, *, once: bool, timeout: float | None) -> int:
    """Run until SIGTERM (or, with `once`, until what is there now is done); the exit code.

    Raises ConfigError (exit 78) for an unusable configuration.
    """
    env = dict(os.environ)
    cfg = configfile.load(config_path, env)
    setup_logging(cfg.log_level, env)
    # `connect` reads the configuration the service holds now, so a reload takes effect.
    service: Service = Service(
        cfg, connect=lambda: _client(service.config, env), env=env, notifier=Notifier(env)
    )
    install_signals(service)
    try:
        return service.run(once=once, timeout=timeout)
    except ConfigError:
        raise
    except Exception:
        log.exception("xnat-drop stopped by an unexpected error")
        return EX_SOFTWARE
    finally:
        service.close()  # idempotent; unroutes signals before it closes the pipe
        # Stopped: a late signal is ignored. Python's shutdown puts every signal it handles
        # back to the default (for SIGHUP: die), except those set to be ignored; a reload
        # arriving then would end an orderly exit as "killed by SIGHUP".
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)


def install_signals(service: Service) -> None:
    """SIGTERM and SIGINT stop the service, SIGHUP reloads it: flags and a wake-up only."""

    def stop(signum: int, _frame: FrameType | None) -> None:
        service.note_stop(signum)

    def reload(_signum: int, _frame: FrameType | None) -> None:
        service.note_reload()

    service.waker.route_signals()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)


def _client(cfg: Config, env: Mapping[str, str]) -> XnatClient:
    return connect(cfg.xnat, env)
