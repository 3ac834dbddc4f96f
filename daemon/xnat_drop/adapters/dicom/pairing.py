"""Files that are one image only together: Analyze/NIfTI .hdr + .img, NRRD .nhdr + .raw. Pure.

A half of such a pair says little about itself: an `.img` is raw voxels. It is recognised by
its other half in the same session, which a file's own classification may not know yet (a
worker reads a few files of a folder, not all of them): `pair` then decides once every
name is known, as the classification with all siblings would have.
"""

from __future__ import annotations

from dataclasses import replace

from xnat_drop.core.model import FileFacts, FileKind

ANALYZE_SUFFIXES = (".hdr", ".img", ".hdr.gz", ".img.gz")
PAIR_NOTE = "half of an .hdr/.img pair"
# A detached NRRD (dcm2niix -e y) is a header `x.nhdr` and its data `x.raw[.gz]` beside it.
NRRD_DATA = (".raw", ".raw.gz", ".raw.bz2")
# The names (lower-cased) worth remembering during a walk, to find pairs afterwards.
PAIRED_SUFFIXES = (*ANALYZE_SUFFIXES, ".nhdr", *NRRD_DATA)


def has_pair(lowered: str, siblings: frozenset[str]) -> bool:
    """True when the .hdr or .img `lowered` (a lower-cased path) has its other half, gzipped
    or not, among `siblings` (lower-cased paths)."""
    stem, _, ext = lowered.rpartition(".")
    if ext == "gz":
        stem, _, ext = stem.rpartition(".")
    other = "img" if ext == "hdr" else "hdr"
    return any(f"{stem}.{other}{gz}" in siblings for gz in ("", ".gz"))


def pair(facts: FileFacts, names: frozenset[str]) -> FileFacts | None:
    """`facts` (classified without siblings) made an Analyze file when it is an .hdr/.img with
    its other half among `names` (the session's lower-cased paths with a PAIRED_SUFFIXES
    ending), or the data of an NRRD image when it is a .raw beside an .nhdr; None otherwise.

    Without siblings, such a file can only have come out as OTHER (or ARCHIVE, for a
    compressed .raw, or EMPTY): the pair check is the last test before that answer.
    """
    lowered = facts.path.lower()
    if (
        facts.kind in (FileKind.OTHER, FileKind.EMPTY)
        and lowered.endswith(ANALYZE_SUFFIXES)
        and has_pair(lowered, names)
    ):
        return replace(facts, kind=FileKind.ANALYZE, note=PAIR_NOTE)
    if facts.kind in (FileKind.OTHER, FileKind.ARCHIVE, FileKind.EMPTY) and lowered.endswith(
        NRRD_DATA
    ):
        stem = lowered[: lowered.rindex(".raw")]
        if f"{stem}.nhdr" in names:
            header = facts.path[: len(stem)].rsplit("/", 1)[-1] + ".nhdr"
            note = f"the data of the NRRD image {header}"
            return replace(facts, kind=FileKind.CONVERTED, note=note)
    return None
