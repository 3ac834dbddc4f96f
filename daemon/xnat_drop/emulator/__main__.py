"""``python -m xnat_drop.emulator``."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
