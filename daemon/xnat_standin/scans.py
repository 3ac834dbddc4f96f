"""A session's scans and their stored files, alike in the prearchive and the archive, and the
``xsiType`` XNAT gives a session or scan of each modality."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

_SESSION_TYPES = {
    "MR": "mr",
    "CT": "ct",
    "PT": "pet",
    "US": "us",
    "CR": "cr",
    "DX": "dx",
    "MG": "mg",
    "NM": "nm",
    "XA": "xa",
    "RF": "rf",
    "OPT": "opt",
}


@dataclass(frozen=True, slots=True)
class StoredFile:
    name: str
    sop_instance_uid: str
    sop_class_uid: str
    size: int


@dataclass
class Scan:
    id: str
    series_uid: str
    series_description: str
    modality: str
    files: dict[str, StoredFile] = field(default_factory=dict)

    @property
    def file_size(self) -> int:
        return sum(stored.size for stored in self.files.values())


# Copies handed out of the lock. StoredFile is frozen and everything else in a row or an
# experiment is immutable except the scan and file dicts, so copying those is a full copy, and
# far cheaper than deepcopy for sessions of thousands of files (the benchmark's 16,000).


def copy_scans(scans: dict[str, Scan]) -> dict[str, Scan]:
    return {key: replace(scan, files=dict(scan.files)) for key, scan in scans.items()}


def file_names(scans: dict[str, Scan]) -> dict[str, tuple[str, ...]]:
    """Scan id -> its file names, sorted (the tests' snapshots)."""
    return {scan_id: tuple(sorted(scan.files)) for scan_id, scan in sorted(scans.items())}


def session_type(modality: str) -> str:
    prefix = _SESSION_TYPES.get(modality.upper())
    return f"xnat:{prefix}SessionData" if prefix else "xnat:otherDicomSessionData"


def scan_type(modality: str) -> str:
    prefix = _SESSION_TYPES.get(modality.upper())
    return f"xnat:{prefix}ScanData" if prefix else "xnat:otherDicomScanData"
