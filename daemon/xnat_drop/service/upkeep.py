"""The loop's upkeep between sessions: reloading the configuration, checking the XNAT account
(at start, periodically, while XNAT is away, and at once after a reload or a changed secret),
and the state directory's pause. A part of the Service (service/loop.py), kept apart for
size: it changes only loop state."""

from __future__ import annotations

import logging
import random
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from xnat_drop.adapters import configfile
from xnat_drop.adapters import credentials as creds
from xnat_drop.adapters.ledger import FILE_NAME as LEDGER_FILE
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
    XnatUnexpectedAnswerError,
)
from xnat_drop.core.shown import shown
from xnat_drop.core.text import duration
from xnat_drop.service.board import Board
from xnat_drop.service.delivery import XnatPort
from xnat_drop.service.inbox import ProvenPaths, prove_path
from xnat_drop.service.judge import check_keywords
from xnat_drop.service.outputs import Outputs
from xnat_drop.service.state import Clock, LoopState, StoragePause
from xnat_drop.service.xnatfilter import FilterCache

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
    _outputs: Outputs
    _client: XnatPort | None
    _filters: FilterCache
    _proven: ProvenPaths

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
            found = self._outputs.check(new)
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
        self.config = new
        self.state.xnat.retry = new.retry
        self.state.xnat.check_interval = new.xnat.check_interval
        self.state.intake.config = new
        self._board.config = new
        try:
            self._outputs.reload(new, found, self._ledger_())
        except StorageError as exc:
            log.error("reload: notifications keep their settings: %s", exc)
        self._filters.clear()  # an operator who changed XNAT's filter may reload to see it now
        self._proven.forget()  # and one who moved the inbox: each project's path proven again
        logging.getLogger("xnat_drop").setLevel(new.log_level.upper())
        # A reload is an operator's action: the account is checked at once, with the new
        # settings and whatever secret is there now, even while uploads are paused.
        self.state.xnat.check_now()
        note = f" ({', '.join(kept)} need a restart to change)" if kept else ""
        log.info("reload: configuration reloaded from %s%s", source, note)
        self.notifier.ready(self.status_line())

    def _check_xnat(self) -> None:
        """Check the account with a new client (the secret read again): a fresh login, the
        version, an alias token's expiry. Refused: uploads pause; no answer: an outage, probed
        by this same check on the backoff schedule."""
        xnat = self.state.xnat
        xnat.secret_stamp = creds.stamp(self.config.xnat.secret_file, self.env)
        try:
            client = self._connect()
        except ConfigError as exc:
            self._pause_auth(f"the XNAT secret cannot be used: {'; '.join(exc.problems)}")
            return
        try:
            account = client.check()
        except XnatAuthError as exc:
            self._use(client)
            self._pause_auth(str(exc))
            return
        except (XnatTransientError, XnatServerError) as exc:
            client.close()
            xnat.forced = False
            if xnat.outage is None:
                xnat.outage_begins(
                    str(exc),
                    retry_after=getattr(exc, "retry_after", None),
                    web_pages=isinstance(exc, XnatUnexpectedAnswerError),
                )
            else:
                xnat.probe_failed(exc)
            return
        self._use(client)
        self.state.server_version = account.server_version
        outage = xnat.outage
        if outage is not None and outage.inbox and self.config.inbox is not None:
            try:  # XNAT answers: the pause is over once the project's inbox path is proven
                prove_path(client, self.config.inbox, self._proven, outage.inbox)
            except (XnatTransientError, XnatServerError, XnatAuthError) as exc:
                xnat.probe_failed(exc)
                return
        if outage is not None and self.config.cstore is not None:
            from xnat_drop.service.cstore import echo  # noqa: PLC0415 (the cstore extra)

            try:  # the DICOM side answers too: C-ECHO, through the same checks as a send
                echo(self.config.cstore)
            except XnatTransientError as exc:  # ReceiverRefusedError among them
                xnat.probe_failed(exc)
                return
        xnat.checked(account, self._waiting_for_xnat())

    def _use(self, client: XnatPort) -> None:
        if self._client is not None:
            self._client.close()
        self._client = client

    def _waiting_for_xnat(self) -> int:
        return sum(1 for j in self.state.jobs if j.verdict is not None)

    def _pause_auth(self, reason: str) -> None:
        self.state.xnat.pause(reason)

    def _watch_secret(self) -> None:
        """A changed secret file is checked at once (one login per change: an account locks
        after 20 refused ones), whether uploads are paused or not."""
        xnat = self.state.xnat
        current = creds.stamp(self.config.xnat.secret_file, self.env)
        if current is None or current == xnat.secret_stamp:
            return
        xnat.secret_stamp = current
        log.info("the XNAT secret changed; checking it now")
        xnat.check_now()

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
            self._board.publish(self.state, self._ledger_(), force=True)
        except (OSError, StorageError) as exc:
            self._pause_storage(str(exc))
            return
        lasted = self.clock.wall() - self.state.storage.since
        self.state.storage = None
        log.info("the state directory works again after %s; work resumes", duration(lasted))


def state_problem(state: Path, exc: BaseException) -> str:
    """Why the state directory cannot be used, and what to do, in one sentence."""
    return (
        f"paths.state_dir: {state} cannot be used ({shown(str(exc))}). Free space if it is "
        f"full; make it writable by the service if it is read-only; if the ledger is damaged, "
        f"move {state / LEDGER_FILE} aside (claimed sessions are recovered from the work "
        "folder, but re-drops of earlier sessions are then no longer recognised)."
    )
