"""What XNAT says of its DICOM receivers over HTTP (xnat-api-round2.md §1 point 3, §5): the
receivers any signed-in user may list, and the idle interval after which XNAT builds a
session that stopped receiving objects."""

from __future__ import annotations

from dataclasses import dataclass

from xnat_drop.adapters.xnat.connection import Connection
from xnat_drop.core.errors import XnatRejectedError

DEFAULT_IDENTIFIER = "dicomObjectIdentifier"  # DicomSCPInstance.createDefault
IDLE_INTERVAL_MINUTES = 5.0  # SiteConfigPreferences: sessionXmlRebuilderInterval


@dataclass(frozen=True, slots=True)
class ReceiverRow:
    """One receiver as `GET /xapi/dicomscp` lists it (the fields xnat-drop reads)."""

    ae_title: str
    port: int
    enabled: bool
    identifier: str = DEFAULT_IDENTIFIER
    routing_expressions: bool = False  # its own project/subject/session rules come first
    custom_processing: bool = False
    direct_archive: bool = False  # archives without the prearchive: nothing to verify first


class ReceiverCalls(Connection):
    """The receiver calls, on the XNAT client's connection."""

    def dicom_receivers(self) -> list[ReceiverRow] | None:
        """XNAT's DICOM receivers; None when this XNAT will not list them (a 403 or 404:
        older versions, or a site that restricts the list)."""
        path = "/xapi/dicomscp"
        try:
            response = self.call("GET", path, missing_ok=True)
        except XnatRejectedError as exc:
            if exc.status == 403:
                return None
            raise
        if response.status_code == 404:
            return None
        data = self.answers.json(response, f"GET {path}", "a list of DICOM receivers")
        if not isinstance(data, list):
            raise self.answers.unexpected(response, f"GET {path}", "instead of a JSON list")
        return [row for row in map(_receiver, data) if row is not None]

    def idle_build_minutes(self) -> float:
        """`sessionXmlRebuilderInterval`: minutes a receiving session waits idle before XNAT
        builds it (and, on an auto-archive project, archives it). XNAT's default when unsaid."""
        path = "/xapi/siteConfig/sessionXmlRebuilderInterval"
        try:
            response = self.call("GET", path, missing_ok=True, quick=True)
        except XnatRejectedError:
            return IDLE_INTERVAL_MINUTES
        try:
            minutes = float(response.text.strip().strip('"'))
        except ValueError:
            return IDLE_INTERVAL_MINUTES
        return minutes if response.ok and minutes > 0 else IDLE_INTERVAL_MINUTES


def _receiver(data: object) -> ReceiverRow | None:
    if not isinstance(data, dict):
        return None
    try:
        port = int(data.get("port", 0))
    except (TypeError, ValueError):
        return None
    return ReceiverRow(
        str(data.get("aeTitle", "")),
        port,
        data.get("enabled") is not False,
        str(data.get("identifier") or DEFAULT_IDENTIFIER),
        data.get("routingExpressionsEnabled") is True,
        data.get("customProcessing") is True,
        data.get("directArchive") is True,
    )
