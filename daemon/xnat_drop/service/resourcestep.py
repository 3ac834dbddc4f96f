"""Session resources (resources/<label>/... in a dropped session) into XNAT, after the images
are verified there, and checked byte for byte (xnat-api-round2.md §3).

Each resource is created (409: it exists, fine), then its files are sent one at a time (XNAT
fails concurrent catalog writes), in a stable order, streamed from the claimed folder with
their MD5 computed on the way. Each file is recorded in the ledger before and after its
request, keyed by the XNAT session: a kill -9 or a cut connection anywhere resumes without
writing a file twice, and a file whose request was cut is sent again with overwrite=true.
XNAT's duplicates answer (200, nothing written) is read: the same bytes there already is fine,
anything else is a `resource-conflict` unless the lab chose to overwrite. Then every file must
be listed by XNAT with the same size and, where XNAT keeps one, the same MD5.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from xnat_drop.adapters.fs.filebody import FileBody
from xnat_drop.adapters.ledger import Ledger
from xnat_drop.adapters.xnat.connection import Body
from xnat_drop.adapters.xnat.resourcecalls import RemoteFile
from xnat_drop.core.errors import XnatRejectedError, XnatServerError
from xnat_drop.core.model import (
    Policy,
    Remedy,
    ResourceFile,
    ResourceReceipt,
    Verdict,
    Violation,
)
from xnat_drop.core.text import plural
from xnat_drop.core.xnatconfig import XnatConfig
from xnat_drop.service import failpoints

log = logging.getLogger("xnat_drop.service")

LIST_LIMIT = 10  # resource files named in a report sentence; the rest are counted


class ResourcePort(Protocol):
    """What this step needs from XNAT (xnat.XnatClient)."""

    def create_resource(self, session_uri: str, label: str) -> None: ...
    def put_resource_file(
        self,
        session_uri: str,
        label: str,
        name: str,
        body: Callable[[], Body],
        size: int,
        *,
        overwrite: bool,
    ) -> bool: ...
    def resource_files(self, session_uri: str, label: str) -> list[RemoteFile]: ...
    def checksums_enabled(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Where:
    """The XNAT session the resources go to, and how to name it in a report."""

    uri: str  # /data/archive/... or /data/prearchive/...
    url: str  # a person's link to it
    prearchive: bool


class ResourceStep:
    """Sends and verifies one session's resource files (see the module's docstring)."""

    def __init__(
        self,
        port: ResourcePort,
        ledger: Ledger,
        folder: Path,
        where: Where,
        *,
        overwrite: bool,
        wall: Callable[[], float],
        beat: Callable[[], None] = lambda: None,
    ) -> None:
        self.port = port
        self.ledger = ledger
        self.folder = folder
        self.where = where
        self.overwrite = overwrite
        self.wall = wall
        self.beat = beat

    def run(self, files: tuple[ResourceFile, ...]) -> tuple[ResourceReceipt, ...]:
        """Deliver and verify `files`; the receipts per label. Raises XnatRejectedError
        (`resource-conflict`, `resource-mismatch`) or the transient Xnat*Error types."""
        by_label: dict[str, list[ResourceFile]] = defaultdict(list)
        for f in sorted(files, key=lambda f: (f.label, f.name)):
            by_label[f.label].append(f)
        failpoints.hit("before-resources")
        try:
            for label, group in by_label.items():
                if not self.where.prearchive:  # the prearchive creates it with the first file
                    self.port.create_resource(self.where.uri, label)
                for f in group:
                    self._send(f, files)
                    failpoints.hit("between-resource-files")
        except XnatServerError as exc:
            # Retried, and listed in a delivery-failed report: say what is in XNAT already.
            left = sum(
                1
                for g in files
                if (row := self.ledger.resource_file(self.where.uri, g.label, g.name)) is None
                or row.state != "sent"
            )
            raise XnatServerError(
                f"{exc} (the images are in XNAT at {self.where.url}; "
                f"{plural(left, 'resource file')} not delivered yet)",
                message=exc.message,
            ) from exc
        failpoints.hit("after-resources")
        checksums = not self.where.prearchive and self.port.checksums_enabled()
        problems: list[tuple[ResourceFile, str]] = []
        receipts = tuple(
            self._verify(label, group, checksums, problems) for label, group in by_label.items()
        )
        if problems:
            raise self._mismatch(problems, files)
        return receipts

    # -- sending -------------------------------------------------------------------------------

    def _send(self, f: ResourceFile, every: tuple[ResourceFile, ...]) -> None:
        uri = self.where.uri
        row = self.ledger.resource_file(uri, f.label, f.name)
        if row is not None and row.state == "sent" and row.size == f.size:
            return  # written before a restart
        cut = row is not None and row.state == "sending"  # XNAT may hold part of it
        self.ledger.record_resource_file(uri, f.label, f.name, "sending", f.size, "", self.wall())
        written, md5 = self._put(f, overwrite=self.overwrite or cut)
        if not written:
            md5 = md5 or _md5_of(self.folder, f)
            same = self._same_there(f, md5)
            if same:
                log.info("%s/%s: already in XNAT, the same bytes", f.label, f.name)
            elif self.overwrite or cut:
                raise self._refused("resource-conflict", f, every, "XNAT kept another file")
            else:
                raise self._conflict(f, every)
        self.ledger.record_resource_file(uri, f.label, f.name, "sent", f.size, md5, self.wall())
        self.beat()

    def _put(self, f: ResourceFile, *, overwrite: bool) -> tuple[bool, str]:
        """Send `f` once; (whether XNAT wrote it, the MD5 of what was read)."""
        bodies: list[FileBody] = []

        def body() -> FileBody:
            bodies.append(FileBody(self.folder, f.path, f.size, f.stamp))
            return bodies[-1]

        try:
            written = self.port.put_resource_file(
                self.where.uri, f.label, f.name, body, f.size, overwrite=overwrite
            )
            md5 = bodies[-1].md5 if bodies and f.size else _md5_of(self.folder, f)
        finally:
            for b in bodies:
                b.close()
        return written, md5

    def _same_there(self, f: ResourceFile, md5: str) -> bool:
        """XNAT answered "exists": is it the same file (a resumed run)? Only a matching MD5
        says so; a size alone proves nothing."""
        for remote in self.port.resource_files(self.where.uri, f.label):
            if remote.name == f.name:
                return remote.size == f.size and remote.digest.lower() == md5
        return False

    # -- verifying -----------------------------------------------------------------------------

    def _verify(
        self,
        label: str,
        group: list[ResourceFile],
        checksums: bool,
        problems: list[tuple[ResourceFile, str]],
    ) -> ResourceReceipt:
        """The receipt for one resource; each file XNAT does not hold intact goes to
        `problems` with what is wrong."""
        there = {r.name: r for r in self.port.resource_files(self.where.uri, label)}
        sent = {r.name: r for r in self.ledger.resource_files(self.where.uri) if r.label == label}
        for f in group:
            remote, mine = there.get(f.name), sent.get(f.name)
            md5 = mine.md5 if mine is not None else ""
            if remote is None:
                problems.append((f, "XNAT does not list it"))
            elif remote.size != f.size:
                problems.append((f, f"XNAT holds {remote.size} bytes of {f.size}"))
            elif checksums and remote.digest.lower() != md5:
                missing = not remote.digest
                problems.append((f, "XNAT keeps no checksum for it" if missing else "MD5 differs"))
        if self.where.prearchive:
            how = "size (the prearchive lists no checksums; XNAT computes them when archiving)"
        elif checksums:
            how = "MD5"
        else:
            how = "size (XNAT's checksums setting is off)"
        files = tuple((f.name, f.size, sent[f.name].md5 if f.name in sent else "") for f in group)
        return ResourceReceipt(label, files, how)

    # -- the failures: the images are in XNAT, these files are not ------------------------

    def _conflict(self, f: ResourceFile, every: tuple[ResourceFile, ...]) -> XnatRejectedError:
        return self._refused("resource-conflict", f, every, conflict_words(f), Remedy.CHOICE)

    def _mismatch(
        self, problems: list[tuple[ResourceFile, str]], every: tuple[ResourceFile, ...]
    ) -> XnatRejectedError:
        for f, _ in problems:  # sent again (overwrite=true) when the session comes back
            self.ledger.record_resource_file(
                self.where.uri, f.label, f.name, "sending", f.size, "", self.wall()
            )
        shown = "; ".join(f"“{f.label}/{f.name}”: {why}" for f, why in problems[:LIST_LIMIT])
        if len(problems) > LIST_LIMIT:
            shown += f"; and {len(problems) - LIST_LIMIT} more"
        why = f"{plural(len(problems), 'file')} did not arrive intact ({shown})"
        return self._refused("resource-mismatch", problems[0][0], every, why, Remedy.AGAIN)

    def _refused(
        self,
        rule: str,
        f: ResourceFile,
        every: tuple[ResourceFile, ...],
        why: str,
        remedy: Remedy = Remedy.AGAIN,
    ) -> XnatRejectedError:
        missing = [
            g
            for g in every
            if (row := self.ledger.resource_file(self.where.uri, g.label, g.name)) is None
            or row.state != "sent"
            or g == f
        ]
        violation = partial_failure(rule, self.where.url, why, f, missing, remedy)
        return XnatRejectedError(violation.rule, violation.sentence, violation=violation)


def conflict_words(f: ResourceFile) -> str:
    """Why `f` was not delivered: XNAT holds another file of that name."""
    return (
        f"XNAT already holds a different file “{f.name}” in resource {f.label}. Rename the "
        f"file in resources/{f.label}/, or ask the administrator to set "
        'resources.on_conflict = "overwrite" if the new file should replace it'
    )


def partial_failure(
    rule: str,
    url: str,
    why: str,
    f: ResourceFile,
    missing: list[ResourceFile],
    remedy: Remedy,
) -> Violation:
    """The images are in XNAT at `url`, the `missing` resource files are not: why, and that a
    return of the folder resumes at the resources."""
    names = ", ".join(f"{g.label}/{g.name}" for g in missing[:LIST_LIMIT])
    if len(missing) > LIST_LIMIT:
        names += f" and {len(missing) - LIST_LIMIT} more"
    sentence = (
        f"The images are in XNAT ({url}), but not all resource files: {why}. "
        f"Not delivered ({plural(len(missing), 'file')}): {names}. Moved back into "
        "incoming/ (or with `xnat-drop retry`), the session resumes with the resource "
        "files; its images are not sent again."
    )
    return Violation(
        rule,  # type: ignore[arg-type]
        Policy.REJECT,
        f"resources/{f.label}",
        sentence,
        tuple(g.path for g in missing),
        remedy=remedy,
    )


def _md5_of(folder: Path, f: ResourceFile) -> str:
    """The MD5 of a claimed file, read once more (only after XNAT answered "exists")."""
    body = FileBody(folder, f.path, f.size, f.stamp)
    try:
        while body.read(1 << 20):
            pass
        return body.md5
    finally:
        body.close()


PREARCHIVE_RESOURCES = (1, 8, 4)  # XNAT-6883: resources on a prearchive session


def resources_unsupported(
    xnat: XnatConfig, server_version: str, verdict: Verdict
) -> Violation | None:
    """Before anything is sent: resources for the prearchive need XNAT 1.8.4 or newer."""
    if not verdict.resources or xnat.destination != "prearchive":
        return None
    numbers = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", server_version)
    if numbers is None:
        return None  # XNAT did not say: try (a refusal then fails the resources step)
    version = tuple(int(n or 0) for n in numbers.groups())
    if version >= PREARCHIVE_RESOURCES:
        return None
    count = plural(len(verdict.resources), "resource file")
    sentence = (
        f"This session has {count} in resources/, but XNAT {server_version} cannot attach "
        "resources to a session in its prearchive (XNAT 1.8.4 and newer can), and xnat-drop "
        "delivers to the prearchive here. Nothing was sent. Ask the administrator to set "
        'xnat.destination = "archive" or to upgrade XNAT; or move resources/ out of the '
        "folder to deliver the images alone, then move the folder back."
    )
    return Violation(
        "resources-unsupported", Policy.REJECT, "resources/", sentence, remedy=Remedy.CHOICE
    )
