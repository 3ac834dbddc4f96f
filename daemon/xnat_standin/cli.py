"""``xnat-standin`` / ``python -m xnat_standin``: run the XNAT stand-in."""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType

from .app import Emulator
from .inboxstate import INBOX_PATH


def _user(text: str) -> tuple[str, str]:
    name, sep, password = text.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected USER:PASSWORD, got {text!r}")
    return name, password


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xnat-standin",
        description="Serve a local XNAT stand-in (upload, prearchive, archive) over HTTP.",
    )
    parser.add_argument("--port", type=int, default=8080, help="TCP port (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument(
        "--project",
        action="append",
        default=[],
        metavar="P",
        help="a project to create (repeatable)",
    )
    parser.add_argument(
        "--user",
        action="append",
        default=[],
        type=_user,
        metavar="USER:PASSWORD",
        help="an account (repeatable)",
    )
    parser.add_argument("--root", type=Path, help="data folder (default: a new temporary one)")
    parser.add_argument("--version", default="1.8.10", help="XNAT version to behave as")
    parser.add_argument(
        "--idle-build-seconds",
        type=float,
        default=300.0,
        help="idle time before a receiving session is built (default 300)",
    )
    parser.add_argument(
        "--fast",
        action="store_true",
        help="benchmarks only: read just the header bytes the importer needs from each "
        "DICOM-zip entry and write it straight into the prearchive (the zip itself is "
        "checked as usual)",
    )
    parser.add_argument(
        "--fast-headers-only",
        action="store_true",
        help="benchmarks only: --fast, and store each object only up to its header, not its "
        "pixel data (when copying the bytes into storage would make the stand-in the slowest "
        "part of a benchmark)",
    )
    parser.add_argument(
        "--receive-rate",
        type=_rate,
        metavar="MBPS",
        help="read request bodies at most this fast, in MB/s (10^6 bytes/s), as over a slow "
        "link: 12 is about 100 Mbit/s (default: no limit)",
    )
    parser.add_argument(
        "--inbox-root",
        type=Path,
        metavar="DIR",
        help="the local folder the server sees as its inboxPath, for import-handler=inbox "
        "(default: server paths are local paths)",
    )
    parser.add_argument(
        "--inbox-path",
        default=INBOX_PATH,
        metavar="PATH",
        help=f"the site preference inboxPath (default {INBOX_PATH})",
    )
    parser.add_argument(
        "--dicom-port",
        type=int,
        metavar="PORT",
        help="serve XNAT's DICOM receiver (C-STORE) on this port, 0 for a free one (needs the "
        "cstore extra, pynetdicom; default: no receiver)",
    )
    parser.add_argument(
        "--dicom-ae-title",
        default="XNAT",
        metavar="AE",
        help="the receiver's AE title (default XNAT)",
    )
    parser.add_argument(
        "--context-path",
        default="",
        metavar="PATH",
        help='serve the site below this path, e.g. "/xnat" (default: at the root)',
    )
    return parser


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a rate in MB/s above 0, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM; returns the exit status (0, or 2 for bad arguments)."""
    args = build_parser().parse_args(argv)
    users = dict(args.user) or {"admin": "admin"}
    root = args.root
    temporary = None
    if root is None:
        temporary = tempfile.TemporaryDirectory(prefix="xnat-stand-in-")
        root = Path(temporary.name)
    try:
        emulator = Emulator(
            root,
            users=users,
            projects=args.project,
            version=args.version,
            idle_build_seconds=args.idle_build_seconds,
            host=args.host,
            port=args.port,
            fast=args.fast or args.fast_headers_only,
            headers_only=args.fast_headers_only,
            receive_rate=args.receive_rate,
            inbox_path=args.inbox_path,
            inbox_root=args.inbox_root,
            context_path=args.context_path,
            dicom_port=args.dicom_port,
            dicom_ae_title=args.dicom_ae_title,
        )
    except ValueError as error:
        print(f"xnat-drop emulator: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        emulator.start()
        print(
            f"XNAT stand-in listening on {emulator.url} "
            f"(projects: {', '.join(args.project) or '-'}; user: {', '.join(users)})"
            + ("; FAST PATH: for benchmarks only" if args.fast or args.fast_headers_only else "")
            + (f"; receiving at most {args.receive_rate:g} MB/s" if args.receive_rate else "")
            + (
                f"; DICOM receiver {emulator.ae_title} on port {emulator.dicom_port}"
                if args.dicom_port is not None
                else ""
            ),
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    finally:
        emulator.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if temporary is not None:
            temporary.cleanup()
    return 0
