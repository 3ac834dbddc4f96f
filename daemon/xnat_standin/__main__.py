"""``python -m xnat_standin``: the same as ``xnat-standin``."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
