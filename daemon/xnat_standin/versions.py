"""Which XNAT behaviour band the emulated server belongs to (xnat-api.md §0, §3.10)."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class XnatVersion:
    """An XNAT release such as "1.8.10"; the properties name the behaviours that changed."""

    text: str
    parts: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> XnatVersion:
        """Read "1.8.10", "1.8.7.1" or "1.8.11-SNAPSHOT"; raises ValueError on anything else."""
        match = re.fullmatch(r"(\d+(?:\.\d+)*)(?:[-.+][A-Za-z0-9.+-]*)?", text.strip())
        if match is None:
            raise ValueError(f"not an XNAT version: {text!r}")
        return cls(text.strip(), tuple(int(part) for part in match.group(1).split(".")))

    def at_least(self, *parts: int) -> bool:
        return self.parts >= parts

    @property
    def zip_only(self) -> bool:
        """<= 1.8.2: DICOM-zip reads every upload as a zip and ignores the file name."""
        return not self.at_least(1, 8, 3)

    @property
    def has_ignore_unparsable(self) -> bool:
        """>= 1.8.3: ``Ignore-Unparsable`` exists (skips DICOM decode errors only)."""
        return self.at_least(1, 8, 3)

    @property
    def ignores_any_entry_error(self) -> bool:
        """>= 1.8.10: ``Ignore-Unparsable`` skips any per-entry client error."""
        return self.at_least(1, 8, 10)

    @property
    def zip_importer_commits(self) -> bool:
        """>= 1.8.10: DICOM-zip honours action=commit, AA, dest parts, project/subject/session."""
        return self.at_least(1, 8, 10)

    @property
    def accepts_chunked_zip(self) -> bool:
        """>= 1.7.6: an in-body upload without a length is accepted as ``application/zip``."""
        return self.at_least(1, 7, 6)

    @property
    def default_handler(self) -> str:
        """The import handler used when the request names none (and is not DICOM)."""
        return "DICOM-zip" if self.at_least(1, 8, 10) else "SI"

    @property
    def zip_read_failure(self) -> str:
        """The 400 message for a stream the archive reader cannot read."""
        if self.at_least(1, 8, 3):
            return "unable to read data from file"
        return "unable to read data from zip file"

    @property
    def commit_failure_detailed(self) -> bool:
        """>= 1.8.3: a failed commit answers "FAILED: Unable to archive ..." (else a vaguer 500)."""
        return self.at_least(1, 8, 3)

    @property
    def has_prearchive_resources(self) -> bool:
        """>= 1.8.4 (XNAT-6883): session resources can be written in the prearchive."""
        return self.at_least(1, 8, 4)
