"""What the daemon shows and tells, beyond its log: the status files on the share, the status
page and the metrics, the notifications. Each is a sink of the board (board.py); this module
only makes them, hands them to the board, and takes them through start, reload and stop, so
that the loop (loop.py) and the reload (upkeep.py) each see one thing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from xnat_drop.adapters.ledger import Ledger
from xnat_drop.adapters.notify.secrets import Secrets
from xnat_drop.core.config import Config
from xnat_drop.service.board import Board
from xnat_drop.service.monitor import Monitor
from xnat_drop.service.notify import Notifications
from xnat_drop.service.sharestatus import StatusFiles
from xnat_drop.service.state import Clock


class Outputs:
    """The status files, the page and metrics, the notifications of one daemon."""

    def __init__(
        self, config: Callable[[], Config], clock: Clock, env: Mapping[str, str], board: Board
    ) -> None:
        self._config = config  # the current configuration (a reload changes it)
        self._clock = clock
        self._env = env
        self._board = board
        # The status files: always a sink, idle while status.share is "off", so that a reload
        # can turn them on or off.
        self.share = StatusFiles(config, clock.monotonic, env)
        board.sinks.append(self.share)
        board.parts["share_status"] = self.share.state
        self.monitor = Monitor(config(), env, clock)
        board.sinks.append(self.monitor)
        self.notify: Notifications | None = None  # made by `open`, which reads its secrets

    def open(self) -> None:
        """Read the notification channels' secrets. Raises ConfigError (exit 78)."""
        self.notify = Notifications(self._config(), self._clock, self._env)

    def start(self, ledger: Ledger) -> None:
        """Listen (the page, if on) and start the notifications, before the first report."""
        self.monitor.start()
        if self.notify is not None:
            self.notify.attach(self._board, ledger)

    def check(self, new: Config) -> Secrets | None:
        """What a reload to `new` needs that may be missing. Raises ConfigError."""
        return None if self.notify is None else self.notify.check(new)

    def reload(self, new: Config, secrets: Secrets | None, ledger: Ledger) -> None:
        """Take `new` (checked by `check`). Raises StorageError (the notifications' ledger
        state), after the page has moved."""
        self.monitor.reconfigure(new)  # a changed page.listen moves the page
        if self.notify is not None and secrets is not None:
            self.notify.reload(new, secrets, ledger)

    def due(self) -> float:
        """When (monotonic) the status files want the loop to `flush` them."""
        return self.share.due()

    def flush(self) -> None:
        self.share.flush()

    def stopped(self) -> None:
        """After the last report: the files say the daemon stopped; what is due is sent (for
        a few seconds at most)."""
        self.share.stop()
        self.close_notifications()

    def close_notifications(self) -> None:
        if self.notify is not None:
            self.notify.close()
            self.notify = None

    def close(self) -> None:
        """Stop listening and sending (after `stopped`, or after a start that failed).
        Idempotent."""
        self.close_notifications()
        self.monitor.close()
