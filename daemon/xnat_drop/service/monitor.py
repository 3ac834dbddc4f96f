"""What the status page and the metrics show: a sink of the status board (board.py), called on
the loop's thread with each report and, between steps, the ledger.

From the report and the ledger's totals (read when the ledger is handed over, the last ones
reused while a step has it) it builds one immutable Snapshot: the page's HTML, the JSON of
`status --json`, the Prometheus text and the health verdict. The page's threads serve only
that; the node_exporter textfile gets the same Prometheus text. Nothing here blocks the loop
for long: a page that cannot listen is logged once and left out.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from xnat_drop.adapters import prometheus
from xnat_drop.adapters.ledger import Ledger
from xnat_drop.adapters.localzone import lab_zone
from xnat_drop.adapters.page import PageServer, Snapshot
from xnat_drop.core.config import Config
from xnat_drop.core.metrics import Totals, sample, unhealthy
from xnat_drop.core.monitoring import PageConfig
from xnat_drop.core.statusview import render_html, style_hash
from xnat_drop.service.board import STATUS_REFRESH, Report, report_json
from xnat_drop.service.state import Clock

log = logging.getLogger("xnat_drop.service")

# /healthz says the loop is gone when its last report is older than this: it reports at least
# every STATUS_REFRESH, also during a step.
STALE_AFTER = 3 * STATUS_REFRESH


class Monitor:
    """The page (if `page.listen` is set) and the metrics textfile (if `metrics.textfile`)."""

    def __init__(self, config: Config, env: Mapping[str, str], clock: Clock) -> None:
        self.config = config
        self._env = env
        self._clock = clock
        self._zone = lab_zone(config.time_zone, env)
        self._totals = Totals()  # the ledger's, as last read
        self._page: PageServer | None = None
        self._written: tuple[bytes, float] = (b"", float("-inf"))  # the textfile: what, when

    @property
    def page(self) -> PageServer | None:
        return self._page

    def start(self) -> None:
        """Listen, if the page is on. An address that cannot be had (a port in use, an
        address not this machine's) is logged once; the daemon runs on without the page."""
        page = self.config.page
        if not page.enabled or self._page is not None:
            return
        server = PageServer(
            page.host, page.port, stale_after=STALE_AFTER, monotonic=self._clock.monotonic
        )
        try:
            server.start()
        except OSError as exc:
            log.error(
                "the status page cannot listen on %s (%s); the daemon runs on without it "
                "(fix page.listen, then systemctl reload xnat-drop)",
                _where(page),
                exc.strerror or exc,
            )
            return
        self._page = server
        log.info("status page at http://%s/", _where(page))

    def reconfigure(self, config: Config) -> None:
        """After a reload: a changed page.listen moves the page (and a page that could not
        listen tries again); the rest takes effect with the next report."""
        before = self.config.page
        self.config = config
        self._zone = lab_zone(config.time_zone, self._env)
        self._written = (b"", float("-inf"))
        moved = (before.host, before.port) != (config.page.host, config.page.port)
        if moved or self._page is None:
            self.close()
            self.start()

    def close(self) -> None:
        """Stop listening. Idempotent; reports after it still reach the textfile."""
        if self._page is not None:
            self._page.close()
            self._page = None

    def __call__(self, report: Report, ledger: Ledger | None) -> None:
        """The sink. Raises StorageError (the ledger) or OSError (the textfile): the board
        logs it once and carries on."""
        page, textfile = self._page, self.config.metrics.textfile
        if page is None and textfile is None:
            return
        if ledger is not None:
            self._totals = ledger.totals()
        metrics = prometheus.render(sample(report, self._totals, self._clock.wall()))
        if page is not None:
            refresh = self.config.page.refresh
            page.publish(
                Snapshot(
                    html=render_html(report, self._zone, refresh=refresh).encode(),
                    status_json=report_json(report).encode(),
                    metrics=metrics,
                    metrics_type=prometheus.CONTENT_TYPE,
                    problem=unhealthy(report, self._zone),
                    style_source=style_hash(),
                    at=self._clock.monotonic(),
                )
            )
        if textfile is not None:
            # Rewritten when it changed, and every STATUS_REFRESH anyway: node_exporter's
            # node_textfile_mtime_seconds then tells a live daemon from a stopped one.
            now = self._clock.monotonic()
            if metrics != self._written[0] or now - self._written[1] >= STATUS_REFRESH:
                prometheus.write_textfile(textfile, metrics)
                self._written = (metrics, now)


def _where(page: PageConfig) -> str:
    host = f"[{page.host}]" if ":" in page.host else page.host
    return f"{host}:{page.port}"
