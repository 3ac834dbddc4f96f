"""Snapshots the emulator hands to tests: prearchive sessions, archived sessions, requests."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class PrearchiveSession:
    """One prearchive row as it is now; ``scans`` maps scan id to stored file names (sorted)."""

    project: str  # "Unassigned" when no project was identified
    timestamp: str  # yyyyMMdd_HHmmssSSS
    folder: str
    name: str
    subject: str
    tag: str  # StudyInstanceUID
    status: str  # RECEIVING, READY, CONFLICT, ERROR, ...
    uri: str  # "/prearchive/projects/{project}/{timestamp}/{folder}" (no /data)
    prevent_auto_commit: bool
    source: str
    scans: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False)

    @property
    def file_count(self) -> int:
        return sum(len(files) for files in self.scans.values())


@dataclass(frozen=True, slots=True)
class ArchivedSession:
    """One archived imaging session; ``scans`` maps scan id to stored file names (sorted)."""

    project: str
    subject: str  # subject label
    label: str
    id: str  # accession number, e.g. "XNAT_E00001"
    uid: str  # StudyInstanceUID
    scans: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False)

    @property
    def file_count(self) -> int:
        return sum(len(files) for files in self.scans.values())

    @property
    def uri(self) -> str:
        """The URI XNAT answers after archiving (with the /data prefix)."""
        subject = f"/data/archive/projects/{self.project}/subjects/{self.subject}"
        return f"{subject}/experiments/{self.label}"


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request the emulator answered (control requests under /_emulator/ excluded)."""

    method: str
    path: str  # decoded path, without the query
    query: dict[str, str] = field(hash=False)  # first value of each parameter
    status: int | None  # None: the connection was dropped without an answer
    user_agent: str
    user: str | None  # authenticated user name (an alias token's owner), else None
    body_bytes: int = 0  # request body bytes read by the server
