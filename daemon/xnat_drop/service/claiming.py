"""Sessions into the loop's hands: claiming what has settled in incoming/, and adopting this
daemon's claims that nobody holds (from before a restart or a kill; another host's claims are
left to it: adapters/fs/claims.py). Runs on the loop's thread; returns the new jobs rather than
keeping any."""

from __future__ import annotations

import logging
from pathlib import Path

from xnat_drop.adapters.fs import access, claims, filing
from xnat_drop.adapters.ledger import Ledger
from xnat_drop.core.config import Config
from xnat_drop.core.errors import SessionChangedError
from xnat_drop.core.policy import Failure
from xnat_drop.core.shown import shown, shown_path
from xnat_drop.service import failpoints
from xnat_drop.service.attempt import journal_fields
from xnat_drop.service.finish import shown_in_tree
from xnat_drop.service.intake import Intake
from xnat_drop.service.state import Clock, Job

log = logging.getLogger("xnat_drop.service")


class Claimer:
    """Claims settled candidates and adopts orphaned claims, for the loop."""

    def __init__(self, work: claims.WorkArea, ledger: Ledger, clock: Clock) -> None:
        self.work = work
        self.ledger = ledger
        self.clock = clock

    def settled(self, config: Config, intake: Intake, now: float, jobs: list[Job]) -> None:
        """Claim every candidate that has settled, appending each new job to `jobs` before it
        is recorded (a ledger failure, StorageError, must not lose a claim)."""
        marker = config.watch.ready_marker
        for relpath, seen in intake.ready(now):
            try:
                claim = self.work.claim(relpath, self.clock.wall(), seen.fingerprint, marker)
            except SessionChangedError as exc:
                intake.try_later(relpath, now)
                log.info("%s: not taken: %s", shown_path(relpath), exc)
                continue
            except OSError as exc:  # nothing moved: said once, with the fix; tried again later
                problem, gate = access.diagnose(config.paths.incoming, relpath, exc)
                intake.refused(relpath, problem, gate, now)
                continue
            first_seen = intake.first_seen(relpath, now)
            intake.taken(relpath)
            if claim is None:
                log.info("%s: gone before it could be claimed", shown_path(relpath))
                continue
            forced = filing.take_force_marker(config.paths.incoming, relpath)
            arrived_at = self.clock.wall() - (now - first_seen)
            jobs.append(
                Job(
                    claim,
                    next_at=now,
                    forced=forced,
                    first_seen=first_seen,
                    arrived_at=arrived_at,
                    fingerprint=seen.fingerprint,
                )
            )
            self.ledger.claimed(claim.id, claim.display, self.clock.wall())
            self.ledger.update(
                claim.id, self.clock.wall(), fingerprint=seen.fingerprint.names_hash, forced=forced
            )
            fp = seen.fingerprint
            log.info(
                "%s: settled (%d files, %d bytes); claimed as %s",
                claim.display,
                fp.count,
                fp.total_bytes,
                claim.id,
                extra=journal_fields(claim, None),
            )
            failpoints.hit("after-claim")
        intake.notices.flush()

    def orphans(self, config: Config, now: float, jobs: list[Job]) -> None:
        """Take over this daemon's claims nobody holds, appending a job for each (a session
        decided and reported before a stop only has its move finished)."""
        paths = config.paths
        for claim in self.work.recover():
            self.ledger.claimed(claim.id, claim.display, self.clock.wall())
            entry = self.ledger.entry(claim.id)
            root = paths.done if entry is not None and entry.outcome == "done" else paths.failed
            final = Path(entry.final_path) if entry is not None and entry.final_path else None
            if entry is not None and entry.outcome and final and final.is_relative_to(root):
                # Decided, reported, then stopped before the move: finish the move.
                try:
                    dest = self.work.complete(claim, root, final.relative_to(root).parts)
                except OSError as exc:
                    log.error("%s: cannot finish its move (%s)", claim.display, shown(str(exc)))
                    self.work.release(claim)
                    continue
                log.info(
                    "%s: completed the interrupted move to %s",
                    claim.display,
                    shown_in_tree(paths, dest),
                )
                continue
            failures = tuple(
                Failure(event.at, event.detail)
                for event in self.ledger.events(claim.id)
                if event.kind == "attempt-failed"
            )
            job = Job(claim, next_at=now, failures=failures, forced=bool(entry and entry.forced))
            jobs.append(job)
            log.info(
                "%s: recovered from the work folder (claimed %s)",
                claim.display,
                claim.id,
                extra=journal_fields(claim, None),
            )
