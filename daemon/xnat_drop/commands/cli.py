"""`xnat-drop` command line: run / check / retry / status / check-config, and the exit codes.

Exit codes: 0 clean stop, 78 configuration error (systemd: RestartPreventExitStatus=78),
75 `run --once` left sessions waiting for XNAT, 1 anything unexpected.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from xnat_drop import __version__
from xnat_drop.core import config as config_mod
from xnat_drop.core.errors import ConfigError

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
    except OSError as exc:
        # The checks name every folder and file they look at; this is the net below them, so
        # that a permission or configuration mistake never ends in a traceback.
        where = f" {exc.filename}" if exc.filename else ""
        print(
            f"xnat-drop: configuration error: cannot use{where}: {exc.strerror or exc}. Check "
            "that the service user may read (and where it writes, write) it, and that the "
            "share is mounted",
            file=sys.stderr,
        )
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

    check_config = add(
        "check-config",
        "validate the configuration, the folders and the credentials, and log in to XNAT once; "
        "exit 0 or 78",
    )
    _config_option(check_config)
    check_config.add_argument(
        "--offline", action="store_true", help="do not contact XNAT (what systemd runs at start)"
    )
    check_config.set_defaults(handler=_cmd_check_config)

    return parser


def _config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        default=config_mod.DEFAULT_PATH,
        help=f"configuration file (default: {config_mod.DEFAULT_PATH})",
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from xnat_drop.commands.run import run_daemon

    return run_daemon(args.config, once=args.once, timeout=args.timeout)


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
    from xnat_drop.commands.status import show_status

    return show_status(args.config, as_json=args.json)


def _cmd_check_config(args: argparse.Namespace) -> int:
    from xnat_drop.commands.check_config import check_config

    return check_config(args.config, offline=args.offline)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
