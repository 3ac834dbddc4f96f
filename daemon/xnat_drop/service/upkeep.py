"""The loop's upkeep between sessions: reloading the configuration, probing XNAT while it is
away, logging in again once the refused secret changed, and the state directory's pause.
A part of the Service (service/loop.py), kept apart for size: it changes only loop state."""

from __future__ import annotations

import logging
import random
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from xnat_drop.adapters import configfile
from xnat_drop.adapters import credentials as creds
from xnat_drop.adapters.ledger import Ledger
from xnat_drop.adapters.systemd_api import Notifier
from xnat_drop.core.backoff import backoff
from xnat_drop.core.config import Config
from xnat_drop.core.errors import (
    ConfigError,
    StorageError,
    XnatAuthError,
    XnatServerError,
    XnatTransientError,
)
from xnat_drop.core.shown import shown
from xnat_drop.core.text import duration
from xnat_drop.service.board import Board
from xnat_drop.service.delivery import XnatPort
from xnat_drop.service.judge import check_keywords
from xnat_drop.service.state import Clock, LoopState, StoragePause

log = logging.getLogger("xnat_drop.service")

STORAGE_PROBE = (5.0, 300.0)  # first and longest wait between looks at a broken state dir


class Upkeep:
    """Reload, XNAT probes, credentials and the state directory, for the Service."""

    config: Config
    env: dict[str, str]
    clock: Clock
    rng: random.Random
    notifier: Notifier
    state: LoopState
    _board: Board
    _client: XnatPort | None

    if TYPE_CHECKING:  # provided by the Service (or the other part of it)

        def status_line(self) -> str: ...

        def _connect(self) -> XnatPort: ...

        def _ledger_(self) -> Ledger: ...

    def _reload(self) -> None:
        """SIGHUP: read the configuration again; a broken one keeps the current one."""
        self.notifier.reloading()
        source = Path(self.config.source)
        try:
            new = configfile.load(source, self.env)
            check_keywords(new)
        except ConfigError as exc:
            log.error(
                "reload: keeping the current configuration, the new one has problems: %s", exc
            )
            self.notifier.ready(self.status_line())
            return
        kept = []
        if new.paths != self.config.paths:
            new = replace(new, paths=self.config.paths)
            kept.append("paths")
        if new.watch.observer != self.config.watch.observer:
            new = replace(new, watch=replace(new.watch, observer=self.config.watch.observer))
            kept.append("watch.observer")
        reconnect = new.xnat != self.config.xnat
        self.config = new
        self.state.xnat.retry = new.retry
        self.state.intake.config = new
        self._board.config = new
        logging.getLogger("xnat_drop").setLevel(new.log_level.upper())
        if reconnect:
            try:
                client = self._connect()
            except ConfigError as exc:
                log.error(
                    "reload: cannot use the new XNAT settings (%s); keeping the old client", exc
                )
            else:
                if self._client is not None:
                    self._client.close()
                self._client = client
                self.state.server_version = client.server_version()
        note = f" ({', '.join(kept)} need a restart to change)" if kept else ""
        log.info("reload: configuration reloaded from %s%s", source, note)
        self.notifier.ready(self.status_line())

    def _probe(self) -> None:
        """One light request while XNAT is unavailable; it ends the outage if it succeeds."""
        assert self._client is not None
        try:
            self._client.probe()
        except (XnatTransientError, XnatServerError) as exc:
            self.state.xnat.probe_failed(exc)
            return
        except XnatAuthError as exc:
            self._pause_auth(str(exc))
            return
        self.state.xnat.outage_ends(self._waiting_for_xnat())

    def _waiting_for_xnat(self) -> int:
        return sum(1 for j in self.state.jobs if j.verdict is not None)

    def _pause_auth(self, reason: str) -> None:
        self.state.xnat.pause(reason, creds.stamp(self.config.xnat.secret_file, self.env))

    def _retry_credentials(self) -> None:
        """Resume uploads once an operator replaced the refused secret (one login per change)."""
        auth = self.state.xnat.auth
        if auth is None:
            return
        current = creds.stamp(self.config.xnat.secret_file, self.env)
        if current is None or current == auth.stamp:
            return
        auth.stamp = current
        log.info("the XNAT secret changed; trying to log in again")
        try:
            client = self._connect()
            client.login()
        except (ConfigError, XnatAuthError) as exc:
            auth.reason = str(exc)
            log.error("UPLOADS STILL PAUSED: %s", exc)
            return
        except (XnatTransientError, XnatServerError) as exc:
            log.warning("cannot check the new secret yet: %s", exc)
            auth.stamp = None  # try again on the next turn
            return
        if self._client is not None:
            self._client.close()
        self._client = client
        self.state.xnat.resume()

    def _pause_storage(self, reason: str) -> None:
        """The ledger or status file cannot be written: all work waits, loudly, losing nothing."""
        now = self.clock.monotonic()
        state = self.state
        if state.storage is None:
            state.storage = StoragePause(shown(reason), self.clock.wall(), 0, now)
            log.error(
                "WORK PAUSED: the state directory %s cannot be used (%s). Nothing is lost: "
                "sessions stay where they are and work resumes by itself once it can be "
                "written again (is it full or read-only?)",
                self.config.paths.state,
                state.storage.reason,
            )
        pause = state.storage
        pause.failures += 1
        first, longest = STORAGE_PROBE
        pause.next_probe = now + backoff(pause.failures, first, longest, self.rng.random())
        self.notifier.status(self.status_line())

    def _probe_storage(self) -> None:
        """While paused: one ledger write and one status write; both must succeed."""
        assert self.state.storage is not None
        try:
            self._ledger_().probe()
            self._board.publish(self.state, force=True)
        except (OSError, StorageError) as exc:
            self._pause_storage(str(exc))
            return
        lasted = self.clock.wall() - self.state.storage.since
        self.state.storage = None
        log.info("the state directory works again after %s; work resumes", duration(lasted))
