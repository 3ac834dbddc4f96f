"""`xnat-drop` command line: run / check / retry / status / check-config, and the exit codes.

Exit codes: 0 clean stop, 78 configuration error (systemd: RestartPreventExitStatus=78),
75 `run --once` left sessions waiting for XNAT, 1 anything unexpected.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from xnat_drop import __version__
from xnat_drop.adapters import configfile
from xnat_drop.adapters import credentials as creds
from xnat_drop.adapters.fs import trust
from xnat_drop.core import config as config_mod
from xnat_drop.core.config import Config
from xnat_drop.core.errors import ConfigError, StorageError

if TYPE_CHECKING:
    from xnat_drop.adapters.xnat_api import XnatClient

EX_OK = 0
EX_SOFTWARE = 1
EX_CONFIG = 78

log = logging.getLogger("xnat_drop")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `xnat-drop` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        print(f"xnat-drop: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    except KeyboardInterrupt:
        return 130
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xnat-drop",
        description="Deliver scanner sessions dropped on a share to XNAT: raw DICOM only.",
    )
    parser.add_argument("--version", action="version", version=f"xnat-drop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        return p

    run = add("run", "watch the drop folder and deliver sessions (what the service runs)")
    _config_option(run)
    run.add_argument(
        "--once", action="store_true", help="process the sessions present now, then exit"
    )
    run.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="with --once: give up after this long (exit 75)",
    )
    run.set_defaults(handler=_cmd_run)

    check = add(
        "check",
        "judge session folders by the rules and routing, without uploading or moving anything",
    )
    _config_option(check)
    check.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    check.add_argument(
        "--server", action="store_true", help="also ask XNAT whether each project exists"
    )
    # Kept as typed: the verdicts name each folder exactly as the user wrote it.
    check.add_argument("folders", nargs="+", metavar="FOLDER")
    check.set_defaults(handler=_cmd_check)

    retry = add(
        "retry", "send sessions from failed/ back to incoming/ (reports kept in failed/.history)"
    )
    _config_option(retry)
    retry.add_argument("--all", action="store_true", dest="every", help="every session in failed/")
    retry.add_argument(
        "--force", action="store_true", help="upload even if the same session was delivered before"
    )
    retry.add_argument("folders", nargs="*", metavar="PATH", help="session folders in failed/")
    retry.set_defaults(handler=_cmd_retry)

    status = add("status", "what the daemon is doing: settling, waiting, retrying; last outcomes")
    _config_option(status)
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(handler=_cmd_status)

    check_config = add("check-config", "validate the configuration and credentials; exit 0 or 78")
    _config_option(check_config)
    check_config.set_defaults(handler=_cmd_check_config)

    return parser


def _config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        default=config_mod.DEFAULT_PATH,
        help=f"configuration file (default: {config_mod.DEFAULT_PATH})",
    )


def load_config(path: Path, env: Mapping[str, str]) -> Config:
    """The configuration at `path`; raises ConfigError."""
    return configfile.load(path, env)


def setup_logging(level: str, env: Mapping[str, str] | None = None) -> None:
    """Under journald: the journal, with SYSLOG_IDENTIFIER=xnat-drop and structured fields
    (SESSION, PROJECT, RULE, XNAT_URI). Otherwise plain timestamped lines on stderr."""
    from xnat_drop.adapters import systemd_api as systemd

    env = os.environ if env is None else env
    handler = systemd.journal_handler() if systemd.under_journal(env) else None
    if handler is not None:
        handler.setFormatter(logging.Formatter("%(message)s"))
        logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    else:
        fmt = "%(asctime)s %(levelname)s %(message)s"
        logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr, force=True)
    for each in logging.getLogger().handlers:
        each.addFilter(systemd.EscapedNames())
    # urllib3 logs every connection at DEBUG, with URLs: keep it quiet unless asked.
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def _cmd_run(args: argparse.Namespace) -> int:
    from xnat_drop.adapters.systemd_api import Notifier
    from xnat_drop.service.loop import Service

    env = dict(os.environ)
    cfg = load_config(args.config, env)
    setup_logging(cfg.log_level, env)
    # `connect` reads the configuration the service holds now, so a reload takes effect.
    service: Service = Service(
        cfg, connect=lambda: _connect(service.config, env), env=env, notifier=Notifier(env)
    )

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; stopping after the current step", signal.Signals(signum).name)
        service.stop()

    def on_hangup(_signum: int, _frame: FrameType | None) -> None:
        service.request_reload()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    try:
        return service.run(once=args.once, timeout=args.timeout)
    except ConfigError:
        raise
    except Exception:
        log.exception("xnat-drop stopped by an unexpected error")
        return EX_SOFTWARE


def _connect(cfg: Config, env: Mapping[str, str]) -> XnatClient:

    from xnat_drop.adapters.xnat_api import connect

    return connect(cfg.xnat, env)


def _cmd_check(args: argparse.Namespace) -> int:
    from xnat_drop.commands.check import run_check

    return run_check(args.config, args.folders, as_json=args.json, server=args.server)


def _cmd_retry(args: argparse.Namespace) -> int:
    from xnat_drop.commands.retry import run_retry

    if bool(args.folders) == args.every:
        print("xnat-drop retry: give session folders in failed/, or --all", file=sys.stderr)
        return 2
    return run_retry(args.config, args.folders, every=args.every, force=args.force)


def _cmd_status(args: argparse.Namespace) -> int:
    import json
    import time

    from xnat_drop.adapters.fs import statusfile as status
    from xnat_drop.adapters.ledger import FILE_NAME, Ledger

    cfg = load_config(args.config, dict(os.environ))
    state = cfg.paths.state
    done, failed = [], []
    if (state / FILE_NAME).exists():
        try:
            ledger = Ledger(state / FILE_NAME, readonly=True)
            try:
                done, failed = ledger.recent("done"), ledger.recent("failed")
            finally:
                ledger.close()
        except StorageError as exc:
            raise ConfigError(
                [
                    f"paths.state_dir: cannot read {state / FILE_NAME} ({exc}). If the file is "
                    "damaged, stop the daemon and move it aside; the daemon makes a new one."
                ],
                str(args.config),
            ) from exc
    now = time.time()  # noqa: TID251 - the command's own "now", for ages
    data = status.report(status.read(state), done, failed, now)
    print(
        json.dumps(data, indent=2, ensure_ascii=False) if args.json else status.render(data, now),
        end="",
    )
    return EX_OK if data["running"] else 3


def _cmd_check_config(args: argparse.Namespace) -> int:
    from xnat_drop.service.judge import check_keywords

    env = dict(os.environ)
    cfg = load_config(args.config, env)
    check_keywords(cfg)
    problems: list[str] = list(trust.problems(cfg.paths))
    try:
        found = creds.load(cfg.xnat.secret_file, env, urlsplit(cfg.xnat.url).hostname or "")
    except ConfigError as exc:
        problems.extend(exc.problems)
        found = None
    root_parent = cfg.paths.incoming.parent
    if not root_parent.is_dir():
        problems.append(f"paths: {root_parent} does not exist (is the share mounted?)")
    if problems:
        raise ConfigError(problems, str(args.config))
    assert found is not None
    print(f"{args.config}: OK")
    print(f"  XNAT      {cfg.xnat.url} as {found.user} (secret from {found.source})")
    print(f"  incoming  {cfg.paths.incoming}  layout {'/'.join(cfg.routing.layout)}")
    print(f"  done      {cfg.paths.done}")
    print(f"  failed    {cfg.paths.failed}")
    print(f"  watching  {cfg.watch.observer}, settle {cfg.watch.settle:g} s")
    return EX_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
