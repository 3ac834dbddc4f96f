"""The status on the share: STATUS.txt (and STATUS.html) beside incoming/ for lab members with
no shell, or one STATUS-<project>.txt per project (`status.share = "per-project"`). A sink of
the board (board.py): it is handed every report published and writes what core/statusview.py
renders.

A file is rewritten when what it says changed, at most every `status.interval` seconds (a
change inside that gap is written by a later call: the board calls at least every 10 s), and
at least every minute even when nothing changed, so that its time shows a live daemon. When
the daemon stops, its files say so.

Per project, a file is written for every project folder in incoming/, every project a session
of the report (or one of the last few hundred finished) belongs to, and every project written
for since the start: a file once written keeps being rewritten ("nothing waiting") rather
than going stale. Each project's file lists its own last delivered and failed sessions.

One daemon writes them (docs/several-hosts.md): a file found replaced by someone else since it
was written here, as a second daemon on the same share would, is logged once as a warning.

A folder that cannot be written is logged once (and again once it works), shown in
status.json (`share_status`) and tried again every interval; the daemon runs on. Files this
daemon no longer writes (the share switched to per-project or off, STATUS.html turned off)
are removed, if they are still the ones it wrote.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import tzinfo
from pathlib import Path
from typing import Any

from xnat_drop.adapters import localzone
from xnat_drop.adapters.fs import sharefiles
from xnat_drop.adapters.fs.sharefiles import Ident
from xnat_drop.adapters.ledger import Ledger
from xnat_drop.core.config import Config
from xnat_drop.core.errors import StorageError
from xnat_drop.core.shown import shown
from xnat_drop.core.statusview import file_names, page, text
from xnat_drop.core.statuswords import View, project_of, view, within
from xnat_drop.service.board import Report, report

log = logging.getLogger("xnat_drop.service")

REFRESH = 60.0  # seconds: a file is rewritten at least this often, changed or not
POOL = 500  # finished sessions read per outcome to find each project's last ones
BOM = b"\xef\xbb\xbf"  # so that every Notepad reads STATUS.txt as UTF-8
Project = str | None  # None: the one file for all projects


@dataclass(frozen=True, slots=True)
class _Written:
    """A project's files as last written: what they said (without the time), when, and what
    each name is (to remove only our own)."""

    content: View
    at: float  # monotonic
    files: Mapping[str, Ident]


class StatusFiles:
    """The board's sink that keeps the status files beside incoming/ up to date."""

    def __init__(
        self, config: Callable[[], Config], monotonic: Callable[[], float], env: Mapping[str, str]
    ) -> None:
        self._config = config  # the current configuration (a reload changes it)
        self._monotonic = monotonic
        self._env = env
        self._zone: tuple[str, tzinfo] | None = None
        self._written: dict[Project, _Written] = {}
        self._last: Report | None = None
        self._problem: str | None = None  # why the folder cannot be written, while it cannot
        self._retry_at = float("-inf")
        self._pool: tuple[str, list[Any], list[Any]] = ("", [], [])  # key, last done, failed
        self._folders: tuple[float, list[str]] = (float("-inf"), [])
        self._held = float("inf")  # when a change held back by the interval may be written
        self._rival = False  # a file of ours was found replaced by someone else (said once)

    def __call__(self, data: Report, ledger: Ledger | None) -> None:
        """Write the files `data` (a published report) changes, as far as due."""
        self._last = data
        self._publish(data, ledger, force=False)

    def due(self) -> float:
        """When (monotonic) a change held back by the interval may be written: the loop wakes
        for it and calls `flush` (inf: nothing held back)."""
        return self._held

    def flush(self) -> None:
        """Write what the interval held back, once it may be (the board would call again only
        when something else changes, or 10 s later)."""
        if self._last is not None and self._monotonic() >= self._held:
            self._publish(self._last, None, force=False)

    def stop(self) -> None:
        """The daemon stops: every file says it is not running (and since when)."""
        if self._last is not None:
            self._publish(self._last | {"running": False}, None, force=True)

    def state(self) -> dict[str, Any] | None:
        """What status.json says of the files: where, which, and why they cannot be written."""
        config = self._config()
        if config.status.share == "off":
            return None
        names = sorted(name for w in self._written.values() for name in w.files)
        folder = sharefiles.folder_of(config.paths.incoming)
        return {"folder": shown(str(folder)), "files": names, "problem": self._problem}

    # -- writing --------------------------------------------------------------------------------

    def _publish(self, data: Report, ledger: Ledger | None, *, force: bool) -> None:
        config = self._config()
        status = config.status
        now = self._monotonic()
        folder = sharefiles.folder_of(config.paths.incoming)
        self._held = float("inf")  # set again below by whatever the interval holds back
        if self._problem is not None and now < self._retry_at and not force:
            return
        try:
            if status.share == "off":
                self._forget({})
                return
            views = self._views(data, ledger, config, now)
            wanted = {p: file_names(p, html=status.html) for p in views}
            self._forget(wanted)
            for project, found in views.items():
                self._write(project, found, wanted[project], now, force=force)
        except OSError as exc:
            self._failed(f"cannot write the status files in {shown(str(folder))}: {exc}", now)
            return
        if self._problem is not None:
            log.info("the status files in %s are written again", shown(str(folder)))
            self._problem = None

    def _write(
        self, project: Project, found: View, names: tuple[str, ...], now: float, *, force: bool
    ) -> None:
        """Write one project's files if due: changed (and the interval passed), or old."""
        config = self._config()
        before = self._written.get(project)
        content = found.content()
        if before is not None and not force and tuple(before.files) == names:
            allowed = before.at + config.status.interval  # compared as `flush` does: no spin
            if content != before.content and now < allowed:
                self._held = min(self._held, allowed)
                return
            if content == before.content and now < before.at + REFRESH:
                return
        data = {names[0]: BOM + text(found).encode("utf-8", "backslashreplace")}
        if len(names) > 1:
            data[names[1]] = page(found).encode("utf-8", "backslashreplace")
        folder = sharefiles.folder_of(config.paths.incoming)
        if before is not None and not self._rival:
            self._check_rival(folder, before.files)
        self._written[project] = _Written(content, now, sharefiles.write(folder, data))

    def _check_rival(self, folder: Path, files: Mapping[str, Ident]) -> None:
        """Warn once when a file written here was replaced by someone else since."""
        rewritten = sharefiles.replaced(folder, files)
        if rewritten:
            self._rival = True
            log.warning(
                "%s in %s was replaced by someone else since xnat-drop wrote it: does another "
                "xnat-drop daemon write the status files of this share too? Let one host "
                'write them (status.share = "off" on the others; docs/several-hosts.md)',
                shown(rewritten[0]),
                shown(str(folder)),
            )

    def _forget(self, wanted: Mapping[Project, tuple[str, ...]]) -> None:
        """Remove the files of ours no longer wanted (a reload changed the settings)."""
        folder = sharefiles.folder_of(self._config().paths.incoming)
        for project, written in list(self._written.items()):
            keep = wanted.get(project, ())
            gone = {n: ident for n, ident in written.files.items() if n not in keep}
            if not gone:
                continue
            sharefiles.remove(folder, gone)
            files = {n: ident for n, ident in written.files.items() if n in keep}
            if files:
                self._written[project] = replace(written, files=files)
            else:
                del self._written[project]

    def _failed(self, problem: str, now: float) -> None:
        if self._problem is None:
            log.warning(
                "%s; xnat-drop runs on without them and tries again every %.0f s (the service "
                "user must be able to write the folder holding incoming/)",
                problem,
                self._config().status.interval,
            )
        self._problem = problem
        self._retry_at = now + self._config().status.interval

    # -- what each file says --------------------------------------------------------------------

    def _views(
        self, data: Report, ledger: Ledger | None, config: Config, now: float
    ) -> dict[Project, View]:
        zone = self._lab_zone(config)
        share = shown(str(sharefiles.folder_of(config.paths.incoming)))
        if config.status.share == "one":
            return {None: view(data, zone, share=share)}
        by_folder = config.routing.layout[0] == "project"
        done, failed = self._finished(data, ledger)
        snap = data.get("snapshot") or {}
        sessions = [i for k in ("settling", "not_taken", "work") for i in snap.get(k) or []]
        projects: set[Project] = set(self._written)
        if by_folder:
            projects.update(self._project_folders(config, now))
        for item in (*sessions, *done, *failed):
            projects.add(project_of(item, by_folder=by_folder))
        projects.discard(None)
        listed = config.status.listed
        views: dict[Project, View] = {}
        for project in sorted(p for p in projects if p is not None):
            mine = data | {
                "last_done": within(done, project, by_folder=by_folder)[:listed],
                "last_failed": within(failed, project, by_folder=by_folder)[:listed],
            }
            views[project] = view(mine, zone, project=project, by_folder=by_folder, share=share)
        return views

    def _finished(self, data: Report, ledger: Ledger | None) -> tuple[list[Any], list[Any]]:
        """The last POOL delivered and failed sessions, so that a quiet project still shows
        its own last ones; read again only when the report's last ones changed."""
        key = repr((data.get("last_done"), data.get("last_failed")))
        if key != self._pool[0] and ledger is not None:
            try:
                found = report(None, ledger.recent("done", POOL), ledger.recent("failed", POOL), 0)
            except StorageError as exc:
                log.debug("status files: cannot read the last sessions from the ledger: %s", exc)
            else:
                self._pool = (key, found["last_done"], found["last_failed"])
        # While a step has the ledger, the report may know of newer ones than the pool.
        return (
            _merged(data.get("last_done") or [], self._pool[1]),
            _merged(data.get("last_failed") or [], self._pool[2]),
        )

    def _project_folders(self, config: Config, now: float) -> list[str]:
        """The project folders in incoming/, looked at no more often than the interval."""
        at, names = self._folders
        if now - at >= config.status.interval:
            names = [shown(n) for n in sharefiles.project_folders(config.paths.incoming)]
            self._folders = (now, names)
        return names

    def _lab_zone(self, config: Config) -> tzinfo:
        if self._zone is None or self._zone[0] != config.time_zone:
            self._zone = (config.time_zone, localzone.lab_zone(config.time_zone, self._env))
        return self._zone[1]


def _merged(first: list[Any], rest: list[Any]) -> list[Any]:
    """Two lists of finished sessions as one, newest first, each session once."""
    seen: set[tuple[str, str]] = set()
    found = []
    for item in (*first, *rest):
        key = (str(item.get("session")), str(item.get("at")))
        if key not in seen:
            seen.add(key)
            found.append(item)
    return sorted(found, key=lambda item: str(item.get("at") or ""), reverse=True)
