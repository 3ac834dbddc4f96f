"""XNAT's DICOM receivers as configured: ``DicomSCPInstance``, its lists and its whitelist.

Written from xnat-api-round2.md §5 and XNAT's Java (``DicomSCPInstance``, ``DicomSCP``,
``CStoreService``, ``XnatApplicationEntity``). No pynetdicom here: ``/xapi/dicomscp`` and the
control routes work without the optional extra; ``dicomscp`` is the network side.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, fields
from typing import Any

DEFAULT_AE_TITLE = "XNAT"
DEFAULT_IDENTIFIER = "dicomObjectIdentifier"
VERIFICATION = "1.2.840.10008.1.1"

# DicomSCP.VERIFICATION_SOP_TS: C-ECHO in little endian only.
VERIFICATION_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")

# DicomSCP.TSUIDS: no Deflated Explicit VR LE (1.2.840.10008.1.2.1.99), no HTJ2K, no MPEG-4/HEVC.
TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless, Non-Hierarchical (Process 14)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.92",  # JPEG 2000 Part 2 Lossless
    "1.2.840.10008.1.2.4.93",  # JPEG 2000 Part 2
    "1.2.840.10008.1.2.4.94",  # JPIP Referenced
    "1.2.840.10008.1.2.4.95",  # JPIP Referenced Deflate
    "1.2.840.10008.1.2.4.100",  # MPEG2 Main Profile @ Main Level
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.6.1",  # RFC 2557 MIME encapsulation
    "1.2.840.10008.1.2.6.2",  # XML Encoding
)

_STANDARD = "1.2.840.10008.5.1.4.1.1."
# CStoreService.CUIDS in its order, as suffixes of _STANDARD (34.x: of 1.2.840.10008.5.1.4.).
# Presentation states (11.1-11.4) are commented out there.
_CUIDS = (
    "1 1.1 1.1.1 1.2 1.2.1 1.3 1.3.1 2 2.1 3.1 4 4.1 4.2 6.1 7 7.1 7.2 7.3 7.4 "
    "9.1.1 9.1.2 9.1.3 9.2.1 9.3.1 9.4.1 12.1 12.1.1 12.2 12.2.1 13.1.1 13.1.2 20 66 "
    "66.1 66.2 66.3 66.4 67 77.1.1 77.1.1.1 77.1.2 77.1.2.1 77.1.3 77.1.4 77.1.4.1 "
    "77.1.5.1 77.1.5.2 77.1.5.4 77.1.5.3 88.11 88.22 88.33 88.40 88.50 88.59 88.65 "
    "88.67 104.1 128 481.1 481.2 481.3 481.4 481.5 481.6 481.7 481.8 481.9 4.3"
)
_PRIVATE = (
    "1.3.12.2.1107.5.9.1",  # Siemens CSA Non-Image (listed in HEAD, round2 §5)
    # Philips private classes.
    "1.3.46.670589.2.4.1.1",
    "1.3.46.670589.5.0.1",
    "1.3.46.670589.5.0.2",
    "1.3.46.670589.5.0.2.1",
    "1.3.46.670589.5.0.3",
    "1.3.46.670589.5.0.3.1",
    "1.3.46.670589.5.0.4",
    "1.3.46.670589.5.0.7",
    "1.3.46.670589.5.0.8",
    "1.3.46.670589.5.0.9",
    "1.3.46.670589.5.0.10",
    "1.3.46.670589.5.0.11",
    "1.3.46.670589.5.0.12",
    "1.3.46.670589.11.0.0.12.1",
    "1.3.46.670589.11.0.0.12.2",
    "1.3.46.670589.11.0.0.12.4",
    "1.3.46.670589.2.3.1.1",
)
# "Adding new additions to the DICOM standard", in CUIDS' order.
_NEWER = (
    "78.5 9.5.1 130 13.1.3 88.68 11.6 11.10 11.9 11.11 78.3 81.1 128.1 88.69 11.8 88.71 "
    "78.7 66.6 79.1 13.1.5 14.1 34.10 30 77.1.5.6 9.6.1 66.5 481.10 88.74 77.1.5.5 "
    "77.1.5.7 104.2 88.75 4.4 78.2 2.2 77.1.5.8 78.1 80.1 481.11 14.2 11.5 77.1.6 131 "
    "11.7 200.2 13.1.4 9.4.2 88.73 34.7 78.4 78.8 104.3 68.1 90.1 78.6 68.2 6.2 88.34 "
    "88.72 82.1 88.70 88.35"
)


def _standard(suffixes: str) -> tuple[str, ...]:
    return tuple(
        ("1.2.840.10008.5.1.4." if suffix.startswith("34.") else _STANDARD) + suffix
        for suffix in suffixes.split()
    )


STORAGE_SOP_CLASSES: tuple[str, ...] = (*_standard(_CUIDS), *_PRIVATE, *_standard(_NEWER))


@dataclass(frozen=True, slots=True)
class DicomReceiver:
    """One ``DicomSCPInstance``. Every receiver of the stand-in listens on its one DICOM port.

    ``whitelist`` entries: an AE title, an IP or CIDR, or ``AE@IP[/bits]``. The routing
    expressions are lines of ``(gggg,eeee):regex[:group][ t:target r:replacement]``, used
    (before the headers' ``Project:`` etc.) only with ``routing_expressions_enabled``.
    ``custom_processing`` and ``direct_archive`` are listed but not emulated.
    """

    ae_title: str = DEFAULT_AE_TITLE
    id: int = 1
    identifier: str = DEFAULT_IDENTIFIER
    file_namer: str | None = None
    enabled: bool = True
    custom_processing: bool = False
    direct_archive: bool = False
    anonymization_enabled: bool = True
    whitelist_enabled: bool = False
    whitelist: tuple[str, ...] = ()
    routing_expressions_enabled: bool = False
    project_routing_expression: str | None = None
    subject_routing_expression: str | None = None
    session_routing_expression: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.ae_title, str) or not 0 < len(self.ae_title.strip()) <= 16:
            raise ValueError("an AE title has 1 to 16 characters")
        if not all(isinstance(entry, str) for entry in self.whitelist):
            raise ValueError("whitelist entries are strings")

    def as_json(self, port: int) -> dict[str, Any]:
        """The JSON of ``GET /xapi/dicomscp`` (the field set of ``DicomSCPInstance``)."""
        return {
            "id": self.id,
            "aeTitle": self.ae_title,
            "port": port,
            "identifier": self.identifier,
            "fileNamer": self.file_namer,
            "enabled": self.enabled,
            "customProcessing": self.custom_processing,
            "directArchive": self.direct_archive,
            "anonymizationEnabled": self.anonymization_enabled,
            "whitelistEnabled": self.whitelist_enabled,
            "whitelist": list(self.whitelist),
            "routingExpressionsEnabled": self.routing_expressions_enabled,
            "projectRoutingExpression": self.project_routing_expression,
            "subjectRoutingExpression": self.subject_routing_expression,
            "sessionRoutingExpression": self.session_routing_expression,
        }

    @classmethod
    def from_json(cls, data: object) -> DicomReceiver:
        """From XNAT's JSON field names (``aeTitle``, ...); ``port`` is ignored. ValueError."""
        if not isinstance(data, dict):
            raise ValueError("a receiver is a JSON object")
        names = {_camel(f.name): f.name for f in fields(cls)}
        unknown = sorted(set(data) - set(names) - {"port"})
        if unknown:
            raise ValueError(f"unknown receiver fields: {', '.join(unknown)}")
        values = {names[key]: value for key, value in data.items() if key in names}
        if "whitelist" in values:
            values["whitelist"] = tuple(values["whitelist"] or ())
        return cls(**values)

    def admits(self, calling_ae: str, peer_ip: str) -> bool:
        """``XnatApplicationEntity.isWhitelisted`` (always true with the whitelist off)."""
        if not self.whitelist_enabled:
            return True
        entries = {entry.strip() for entry in self.whitelist if entry.strip()}
        for entry in entries:
            parts = entry.split("@")
            if len(parts) == 2:
                if calling_ae == parts[0] and _ip_matches(parts[1], peer_ip):
                    return True
            elif len(parts) == 1:
                # Spring's IpAddressMatcher refuses a non-address, and then the AE title counts.
                matched = _ip_matches(entry, peer_ip)
                if matched or (matched is None and calling_ae == entry):
                    return True
        return False


def _ip_matches(pattern: str, peer_ip: str) -> bool | None:
    """Does ``peer_ip`` fall in ``pattern`` (an address or CIDR)? None: not an address."""
    try:
        network = ipaddress.ip_network(pattern, strict=False)
        address = ipaddress.ip_address(peer_ip)
    except ValueError:
        return None
    return address.version == network.version and address in network


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)
