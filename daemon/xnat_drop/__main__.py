"""`python -m xnat_drop ...`: the same as the `xnat-drop` command."""

import sys

from xnat_drop.commands.cli import main

sys.exit(main())
