"""No DICOM header value ever appears in a message, page, file or metric (issue 16). Pure.

The rule, for every output of the daemon and its commands (reports, receipts, notes beside
folders, log lines, status.json and `xnat-drop status`, `xnat-drop check`, and whatever comes
later: status page, metrics, notifications):

- Allowed: folder and file names (chosen by people; shown escaped, core/shown.py), XNAT labels
  (project, subject, session; also when routing took one from a header because the lab
  configured that), rule ids, counts, sizes, times, attribute keywords and tags
  ("ImageType (0008,0008)"), what comes from the configuration or from XNAT's filter settings
  (patterns, markers, templates), and standard constants the code compares against: names of
  standard SOP classes and transfer syntaxes, the ImageType defined terms ORIGINAL, DERIVED,
  PRIMARY and SECONDARY, PhotometricInterpretation's PALETTE COLOR, and the words xnat-drop's
  own table gives a derived marker it recognised ("a multiplanar reformat (MPR)").
- Not allowed: any other value read from a header: names, IDs, dates, descriptions, comments,
  institutions, UIDs of studies, series and instances, SeriesNumber (and so XNAT's scan IDs,
  which XNAT makes from it), vendor ImageType tokens.

A series is named by where its files are in the dropped folder (`series_words`: "the series of
12 files under T1_MPR_cor/ (first: T1_MPR_cor/IM0001.dcm)"), a study likewise
(`studies_words`). A derived series found by a description pattern names the attribute and the
pattern, never the description. Text that comes from outside (XNAT's answers, library and
exception messages) may quote anything: it passes through `scrubbed`, which takes out what looks
like a UID and quoted values, before it is shown.

The ledger (SQLite, in the state directory) is internal: it keeps UIDs, or keyed hashes of
them, for its dedup logic, and hands none of them to an output.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from posixpath import commonpath, dirname

from xnat_drop.core.shown import shown
from xnat_drop.core.text import plural

# A DICOM UID as it may appear in foreign text: dotted numbers starting 0, 1 or 2, with five
# components or more, or longer than any IPv4 address ("2.25.<uuid as one number>"). Version
# numbers (1.8.10) and addresses (127.0.0.1) are left alone.
_DOTTED = re.compile(r"(?<![\w.])[0-2](?:\.\d+){2,}(?![\w]|\.\d)")
# A quoted value in a library's message: 'x', "x", b'x', “x” (pydicom quotes what it read).
_QUOTED = re.compile(r"""(?<!\w)(?:b?'[^'\n]*'|b?"[^"\n]*"|“[^”\n]*”)(?!\w)""")
UID_WORDS = "<UID>"
VALUE_WORDS = "<value>"


@dataclass(frozen=True, slots=True)
class Files:
    """Files of one series or study as a person finds them: their common folder in the
    session ("" for the session folder itself), how many, and the first of them."""

    folder: str
    count: int
    first: str

    @classmethod
    def of(cls, paths: Iterable[str]) -> Files:
        """The group of these session-relative paths ("/"-separated; at least one)."""
        group = FileGroup()
        for path in paths:
            group.add(path)
        return group.files()

    @property
    def where(self) -> str:
        """`under T1_MPR_cor/`, or `in the session folder`."""
        return f"under {shown(self.folder)}/" if self.folder else "in the session folder"

    @property
    def counted(self) -> str:
        """`12 files under T1_MPR_cor/`."""
        return f"{plural(self.count, 'file')} {self.where}"

    @property
    def listed(self) -> str:
        """`12 files under T1_MPR_cor/ (first: T1_MPR_cor/IM0001.dcm)`."""
        return f"{self.counted} (first: {shown(self.first)})"

    @property
    def series(self) -> str:
        """`the series of 12 files under T1_MPR_cor/ (first: T1_MPR_cor/IM0001.dcm)`;
        a series of one file: `the series of 1 file, T1_MPR_cor/IM0001.dcm`."""
        if self.count == 1:
            return f"the series of 1 file, {shown(self.first)}"
        return f"the series of {self.listed}"


class FileGroup:
    """Files.of one path at a time: the count, the first path and the folder they share, never
    the paths themselves (a series may have 50,000 files)."""

    __slots__ = ("_folder", "count", "first")

    def __init__(self) -> None:
        self.count = 0
        self.first = ""
        self._folder: str | None = None  # None before the first path

    def add(self, path: str) -> None:
        self.count += 1
        if self.count == 1 or path < self.first:
            self.first = path
        folder = dirname(path)
        if self._folder is None:
            self._folder = folder
        elif self._folder and folder != self._folder:
            self._folder = commonpath((self._folder, folder)) if folder else ""

    def files(self) -> Files:
        assert self._folder is not None, "a group of no files"
        return Files(self._folder, self.count, self.first)


def series_words(paths: Iterable[str]) -> str:
    """How every output names a series: by its files (see `Files.series`)."""
    return Files.of(paths).series


def studies_words(studies: Sequence[Iterable[str]]) -> str:
    """How an output names several studies, each given by its files' paths, largest first:
    `2 studies: 40 files under A/, 12 files under B/`. Where two studies share a folder,
    each also names its first file."""
    groups = sorted((Files.of(paths) for paths in studies), key=lambda g: (-g.count, g.first))
    shared = {g.folder for g in groups if sum(h.folder == g.folder for h in groups) > 1}
    parts = [g.listed if g.folder in shared else g.counted for g in groups]
    return f"{plural(len(groups), 'study', 'studies')}: {', '.join(parts)}"


def capital(text: str) -> str:
    """`text` with its first letter in upper case (a name at the start of a sentence)."""
    return text[:1].upper() + text[1:]


def scrubbed(text: str, *, quotes: bool = True) -> str:
    """Foreign text (XNAT's answer, an exception's message) without what may be a header
    value: UIDs become `<UID>`, and (unless `quotes` is False) quoted values `<value>`."""
    text = _DOTTED.sub(_uid_or_not, text)
    return _QUOTED.sub(VALUE_WORDS, text) if quotes else text


def scrubbed_traceback(text: str) -> str:
    """A formatted traceback without header values: UIDs out of every line, quoted values out
    of the exceptions' own lines (the indented lines are file names and source code)."""
    return "\n".join(
        scrubbed(line, quotes=not line.startswith(" ") and not line.startswith("Traceback"))
        for line in text.split("\n")
    )


def _uid_or_not(match: re.Match[str]) -> str:
    found = match.group(0)
    return UID_WORDS if found.count(".") >= 4 or len(found) > 15 else found
