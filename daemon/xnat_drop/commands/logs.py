"""Where the commands' log lines go: the journal under systemd, stderr otherwise."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

from xnat_drop.adapters import systemd_api
from xnat_drop.core.noheader import scrubbed_traceback


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
        each.addFilter(ScrubbedTracebacks())
    # urllib3 logs every connection at DEBUG, with URLs: keep it quiet unless asked.
    logging.getLogger("urllib3").setLevel(logging.WARNING)


class ScrubbedTracebacks(logging.Filter):
    """A traceback in the log without header values (core/noheader.py): an exception's message
    may quote anything (a KeyError of a UID). The text is formatted here, scrubbed, and the
    exception itself dropped from the record, so no handler (the journal's EXCEPTION_INFO)
    formats it again."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is not None:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_text, record.exc_info = scrubbed_traceback(text), None
        return True
