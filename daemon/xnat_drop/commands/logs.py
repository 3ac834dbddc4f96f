"""Where the commands' log lines go: the journal under systemd, stderr otherwise."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

from xnat_drop.adapters import systemd_api


def setup_logging(level: str, env: Mapping[str, str] | None = None) -> None:
    """Under journald: the journal, with SYSLOG_IDENTIFIER=xnat-drop and structured fields
    (SESSION, PROJECT, RULE, XNAT_URI). Otherwise plain timestamped lines on stderr. Either
    way every name in a line is shown escaped (systemd_api.EscapedNames)."""
    env = os.environ if env is None else env
    handler = systemd_api.journal_handler() if systemd_api.under_journal(env) else None
    if handler is not None:
        handler.setFormatter(logging.Formatter("%(message)s"))
        logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    else:
        fmt = "%(asctime)s %(levelname)s %(message)s"
        logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr, force=True)
    for each in logging.getLogger().handlers:
        each.addFilter(systemd_api.EscapedNames())
    # urllib3 logs every connection at DEBUG, with URLs: keep it quiet unless asked.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
