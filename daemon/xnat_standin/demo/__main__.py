"""`python -m xnat_standin.demo [--keep DIR]`: the daemon against the stand-in, on samples."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .runner import run_demo


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xnat_standin.demo",
        description="Run the daemon against the XNAT stand-in on three sample sessions.",
    )
    parser.add_argument(
        "--keep", metavar="DIR", type=Path, help="build the demo in DIR and keep it"
    )
    return run_demo(parser.parse_args().keep)


if __name__ == "__main__":
    sys.exit(main())
