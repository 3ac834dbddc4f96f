"""The rules about single files: what a file's kind breaks, and the size limits. Pure.

Each sentence names the file and says what to do with it (core/rules.py gathers them).
"""

from __future__ import annotations

from xnat_drop.core import resources
from xnat_drop.core.config import RulesConfig
from xnat_drop.core.model import FileFacts, FileKind, Policy, Rule, Session, Violation
from xnat_drop.core.text import size

KIND_RULES: dict[FileKind, Rule] = {
    FileKind.NIFTI: "nifti",
    FileKind.ANALYZE: "nifti",
    FileKind.CONVERTED: "nifti",
    FileKind.ARCHIVE: "non-dicom",
    FileKind.COMPRESSED_DICOM: "non-dicom",
    FileKind.OTHER: "non-dicom",
    FileKind.UNREADABLE_DICOM: "unreadable-dicom",
    # An empty file is what an interrupted copy leaves: the same cause and fix as a DICOM file
    # cut short, so the same rule (and the lab's policy for it), not "remove it" (non-dicom).
    FileKind.EMPTY: "unreadable-dicom",
    FileKind.UNSAFE: "unsafe-file",
}


def file_violation(rule: Rule, policy: Policy, facts: FileFacts, folder: str) -> Violation:
    """A violation of one file's kind; `folder` is the resources folder (named in advice)."""
    path, note = facts.path, facts.note
    detail = f" ({note})" if note else ""
    if rule == "nifti":
        sentence = (
            f"“{path}” is converted data{detail}, not the scanner's raw DICOM. Only raw DICOM "
            "may go to XNAT. Remove the converted files (keep them elsewhere) and drop the "
            "session again."
        )
    elif facts.kind is FileKind.EMPTY:
        sentence = (
            f"“{path}” is empty: the copy was probably interrupted. Copy the series again from "
            "the scanner export, then drop the session again."
        )
    elif rule == "unreadable-dicom":
        sentence = (
            f"“{path}” looks like DICOM but cannot be used{detail}. The copy is probably "
            "incomplete or damaged: export this series again from the scanner or PACS."
        )
    elif rule == "unsafe-file":
        sentence = (
            f"“{path}” is {note or 'not a regular file'}; xnat-drop never follows or opens such "
            "entries. Replace it with the real file and drop the session again."
        )
    elif facts.kind is FileKind.COMPRESSED_DICOM:
        sentence = (
            f"“{path}” is {note or 'a compressed DICOM file'}, which XNAT cannot read: decompress "
            "it (e.g. with 7-Zip or `gunzip`), delete the compressed file, and drop the session "
            "again."
        )
    elif facts.kind is FileKind.ARCHIVE:
        sentence = (
            f"“{path}” is an archive{detail}. xnat-drop does not open archives: unpack it, "
            f"delete the archive, and drop the session again.{resources.hint(folder)}"
        )
    else:
        sentence = (
            f"“{path}” is not a DICOM file{detail}. Only DICOM files go to XNAT's importer: "
            f"remove it and drop the session again.{resources.hint(folder)}"
        )
    return Violation(rule, policy, path, sentence, (path,), note or facts.kind.value)


def size_limits(session: Session, rules: RulesConfig) -> list[Violation]:
    """Files, and the session, larger than the lab allows (rules.max_file_size and
    max_session_size; off unless set)."""
    found = []
    limit = rules.max_file_bytes
    if limit:
        for f in session.files:
            if f.size > limit and f.kind is not FileKind.JUNK:
                found.append(
                    Violation(
                        "size-limit",
                        Policy.REJECT,
                        f.path,
                        f"“{f.path}” is {size(f.size)}, more than the lab's limit of "
                        f"{size(limit)} for one file (rules.max_file_size). If it is a real "
                        "scan, ask the administrator to raise the limit; otherwise remove it "
                        "and drop the session again.",
                        (f.path,),
                        size(f.size),
                    )
                )
    if not rules.max_session_bytes:
        return found
    total = sum(f.size for f in session.files if f.kind is not FileKind.JUNK)
    if total > rules.max_session_bytes:
        found.append(
            Violation(
                "size-limit",
                Policy.REJECT,
                "the whole session",
                f"The session holds {size(total)}, more than the lab's limit of "
                f"{size(rules.max_session_bytes)} for one session (rules.max_session_size). "
                "Split it, or ask the administrator to raise the limit.",
                detail=size(total),
            )
        )
    return found
