"""Value objects that flow through the pipeline. Pure: no I/O, no clock."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from xnat_drop.core.shown import shown_path


class FileKind(str, Enum):
    """What a file in a session is, decided by content (and by name only for junk)."""

    DICOM = "dicom"  # Part 10: 128-byte preamble + "DICM"
    DICOM_NO_PREAMBLE = "dicom-no-preamble"  # a bare dataset, still DICOM to XNAT
    UNREADABLE_DICOM = "unreadable-dicom"  # claims to be DICOM but is truncated or corrupt
    NIFTI = "nifti"  # NIfTI-1/-2 single file, plain or gzipped
    ANALYZE = "analyze"  # .hdr/.img pairs (Analyze 7.5 or NIfTI pair)
    CONVERTED = "converted"  # MINC, MGH/MGZ, NRRD, dcm2niix/BIDS side-cars, .bval/.bvec
    ARCHIVE = "archive"  # gzip, zip, tar, 7-Zip, RAR: unpack it before dropping
    COMPRESSED_DICOM = "compressed-dicom"  # a gzip-compressed DICOM file (IM0001.dcm.gz)
    EMPTY = "empty"  # zero bytes: what an interrupted copy leaves
    OTHER = "other"  # anything else that is not junk
    JUNK = "junk"  # OS clutter and DICOMDIR: ignored, never uploaded
    UNSAFE = "unsafe"  # symlink, FIFO, socket, device: never opened


# Every rule a session can break. The first four and the resource rules can exclude files
# instead of rejecting (options.EXCLUDABLE_RULES).
Rule = Literal[
    "nifti",
    "derived-series",
    "non-dicom",
    "unreadable-dicom",
    "unsafe-file",
    "duplicate-instance",
    "mixed-studies",
    "phi",
    "size-limit",
    "no-dicom",
    "bad-label",
    "wrong-depth",
    "unknown-project",
    "session-exists",
    "already-delivered",
    "count-mismatch",
    "delivery-failed",
    "xnat-rejected",
    "xnat-empty-answer",
    "xnat-unassigned",
    "incomplete-series",
    "late-files",
    "series-import-filter",
    "resource-conflict",
    "resource-mismatch",
    "resources-unsupported",
    "resource-layout",
    "resource-label",
    "resource-name",
    "dicom-in-resources",
    "cstore-unsupported",
    "cstore-unrouted",
    "routing-failed",
]


class Policy(str, Enum):
    """What a broken rule does to the session."""

    REJECT = "reject"  # the whole session goes to failed/
    EXCLUDE = "exclude"  # the offending files stay out of the upload; the rest is delivered


class Remedy(str, Enum):
    """What a lab member does with a failed session's folder. The report's "What to do" block
    follows it, so it never contradicts a rule's own advice (report.py: RULE_REMEDIES)."""

    FIX = "fix"  # change what is inside, then move it back under the same name
    AGAIN = "again"  # nothing to change: move it back as it is
    RENAME = "rename"  # move it back under another name or in another place
    SPLIT = "split"  # make several session folders of it
    CHOICE = "choice"  # change the folder, or the administrator changes something instead
    ADMIN = "admin"  # the administrator acts first; then move it back as it is
    NONE = "none"  # nothing to do: XNAT already has it


class Outcome(str, Enum):
    """Where a finished session goes."""

    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What a folder looks like right now; equal fingerprints mean nothing changed."""

    names_hash: str
    count: int
    total_bytes: int
    newest_mtime_ns: int
    has_partial: bool  # a name such as *.part or *.tmp says a copy is still running
    has_marker: bool = False  # the configured ready marker (e.g. READY) is present


@dataclass(frozen=True, slots=True)
class Seen:
    """A fingerprint and since when it has been observed unchanged."""

    fingerprint: Fingerprint
    since: float


@dataclass(frozen=True, slots=True)
class DicomHeader:
    """The header fields the rules and routing need; strings are stripped, never None.

    `frame_types` holds the distinct FrameType (0008,9007) values of an enhanced multi-frame
    object (shared and per-frame functional groups).
    `values` holds the extra attributes asked for by keyword (routing sources and templates,
    PHI checks) as text; `value()` reads them.
    The last seven are what core/completeness.py judges a series by: InstanceNumber,
    AcquisitionNumber, TemporalPositionIdentifier, ImagesInAcquisition,
    NumberOfTemporalPositions, NumberOfFrames (None when absent or not one integer), and for an
    enhanced multi-frame object the items of its PerFrameFunctionalGroupsSequence.
    """

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    series_number: int | None
    series_description: str
    image_type: tuple[str, ...]
    modality: str
    photometric_interpretation: str = ""
    frame_types: tuple[tuple[str, ...], ...] = ()
    values: tuple[tuple[str, str], ...] = ()
    instance_number: int | None = None
    acquisition_number: int | None = None
    temporal_position: int | None = None
    images_in_acquisition: int | None = None
    temporal_positions: int | None = None
    frames: int | None = None
    frame_items: int | None = None

    def value(self, keyword: str) -> str:
        """The text of an extra attribute read by keyword; "" when absent or empty."""
        for key, text in self.values:
            if key == keyword:
                return text
        return ""


@dataclass(frozen=True, slots=True)
class FileFacts:
    """One file of a session as inspected.

    `path` is relative to the session folder, with "/" separators. `note` says why the file got
    its kind (a magic number, a parse error) in words fit for a report.
    """

    path: str
    size: int
    kind: FileKind
    header: DicomHeader | None = None
    note: str = ""
    # Only for DICOM files sharing a SOP Instance UID: the SHA-256 of the content, or
    # "size-<bytes>" (its size alone tells it from the others), or "unhashed-<path>" (too
    # large to compare: different from every other file's).
    digest: str = ""
    stamp: int = 0  # beneath.stamp of the file as it was read (0: never opened)

    @property
    def is_dicom(self) -> bool:
        return self.kind in (FileKind.DICOM, FileKind.DICOM_NO_PREAMBLE)


@dataclass(frozen=True, slots=True)
class Session:
    """A claimed session folder: its name, where it was dropped, and every file in it."""

    name: str
    relpath: tuple[str, ...]  # parts below incoming/, the last one is `name`
    # A tuple, or for a large session a view of files kept on disk (core/filetable.py).
    files: Sequence[FileFacts]

    @property
    def display(self) -> str:
        """The path below incoming/ as people read it (escaped: names are data)."""
        return shown_path(self.relpath)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a session goes in XNAT. Every label is already valid for XNAT."""

    project: str
    subject: str
    session: str


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule.

    `subject` names the offending file or series; `sentence` tells a lab member what is wrong and
    what to do; `detail` says briefly what is wrong with this one item (for lists); `files`
    lists the session-relative paths concerned (what EXCLUDE leaves out). `remedy` is set where
    the sentence asks for another remedy than the rule's usual one (report.RULE_REMEDIES).
    """

    rule: Rule
    policy: Policy
    subject: str
    sentence: str
    files: tuple[str, ...] = ()
    detail: str = ""
    remedy: Remedy | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """Routing's answer: the target (None when a label is missing or invalid), the problems,
    and one note per label saying where it came from (and any sanitising)."""

    target: Target | None
    violations: tuple[Violation, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ResourceFile:
    """A file to deliver as a session resource (resources/<label>/<name> in the session)."""

    label: str  # the resource label, e.g. "physio"
    name: str  # its path inside the resource, "/"-separated, e.g. "run1/ecg.tsv"
    path: str  # its path in the session folder, e.g. "resources/physio/run1/ecg.tsv"
    size: int
    stamp: int = 0  # beneath.stamp as inspected: only judged bytes leave


@dataclass(frozen=True, slots=True)
class Verdict:
    """The judgement on a session: what to upload where, and what is wrong with it.

    `duplicates` are exact copies of files already in `upload` (same SOP Instance UID, same
    bytes): sent once. `notes` say where the labels came from. `resources` are delivered as
    session resources once the images are verified.
    """

    target: Target | None
    violations: tuple[Violation, ...]
    upload: Sequence[FileFacts]  # a tuple, or a view (core/filetable.py)
    excluded: tuple[str, ...]
    ignored: tuple[str, ...]
    duplicates: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    resources: tuple[ResourceFile, ...] = ()

    @property
    def rejections(self) -> tuple[Violation, ...]:
        return tuple(v for v in self.violations if v.policy is Policy.REJECT)

    @property
    def accepted(self) -> bool:
        return self.target is not None and not self.rejections and bool(self.upload)


@dataclass(frozen=True, slots=True)
class ResourceReceipt:
    """One session resource as XNAT holds it, verified: its files (path in the resource, size,
    MD5 of what was sent) and how XNAT's copy was checked ("MD5", or "size (why)")."""

    label: str
    files: tuple[tuple[str, int, str], ...]
    verified_by: str

    @property
    def bytes(self) -> int:
        return sum(size for _, size, _ in self.files)


@dataclass(frozen=True, slots=True)
class UploadReceipt:
    """What XNAT holds of a delivered session: where, and the counts verified there."""

    uris: tuple[str, ...]
    files: int
    bytes_sent: int
    seconds: float
    server_version: str = ""
    # Per series sent: (the series by its files, files sent, files XNAT holds of it). Never
    # XNAT's scan IDs: they are SeriesNumbers (core/noheader.py).
    verified: tuple[tuple[str, int, int], ...] = ()
    destination: str = ""  # "archive" or "prearchive"
    notes: tuple[str, ...] = ()  # what verification tolerated, and why (XNAT's series filter)
    resources: tuple[ResourceReceipt, ...] = ()  # session resources delivered after the images
    packing: str = ""  # how the zip was packed: "stored", "auto: 80% compressed, 1.7:1", ...
    session_bytes: int = 0  # the DICOM files' bytes (bytes_sent: what went over the wire)
