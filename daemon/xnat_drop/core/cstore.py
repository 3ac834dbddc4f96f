"""The C-STORE transport's words and decisions (issue 19). Pure.

XNAT's DICOM receiver takes no parameters: it routes each object by its headers, first by
the `Project: P Subject: S Session: E AA: false` line in PatientComments (0010,4000)
(xnat-api-round2.md §5). `AA: false` keeps the session in the prearchive even where the
project archives automatically, so xnat-drop verifies it before anything is archived.
adapters/dicom/cstore.py sends; service/cstore.py drives a delivery.
"""

from __future__ import annotations

import ipaddress

from xnat_drop.core.model import Policy, Remedy, Target, Violation
from xnat_drop.core.text import plural

PORT = 8104  # XNAT's default receiver (DicomSCPInstance.createDefault)
CALLED_AE = "XNAT"
CALLING_AE = "XNAT_DROP"


def routing_line(target: Target) -> str:
    """What PatientComments says on every object sent: XNAT's default identifier reads the
    project, subject and session there first; AA: false keeps it in the prearchive."""
    return (
        f"Project: {target.project} Subject: {target.subject} Session: {target.session} AA: false"
    )


def unsupported(sop_class: str, syntax: str, files: int) -> Violation:
    """XNAT's receiver rejected a context the session needs (`sop_class` and `syntax` in
    words, standard names only): nothing was sent."""
    sentence = (
        f"XNAT's DICOM receiver does not accept {sop_class} in {syntax}, which "
        f"{plural(files, 'file')} of this session use, so nothing was sent. Leave those files "
        "out and drop the session again, or ask the administrator to deliver it with xnat."
        'transport = "import" (the zip over HTTPS takes every class XNAT can store).'
    )
    return Violation("cstore-unsupported", Policy.REJECT, "XNAT", sentence, remedy=Remedy.CHOICE)


def routing_failed(objects: int, project: str) -> Violation:
    """XNAT took every object, but no session appeared in the project: a receiver's routing
    rule (or an anonymisation script) sent them elsewhere."""
    sentence = (
        f"XNAT took all {objects} objects but no session appeared in {project}; it is "
        "probably in the Unassigned prearchive (administrators only). A routing rule of XNAT's "
        "DICOM receiver, or its anonymisation, decides before PatientComments does: ask the "
        "XNAT administrator to move the session to the project and to check the receiver."
    )
    return Violation("routing-failed", Policy.REJECT, "XNAT", sentence, remedy=Remedy.ADMIN)


def is_private(address: str) -> bool:
    """True for a loopback or private (RFC 1918, unique local, link-local) IP address: C-STORE
    is unencrypted, and only such a network is taken to be the lab's own."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local


def plain_problem(host: str, addresses: tuple[str, ...], allowed: bool) -> str | None:
    """Why C-STORE to `host` (resolved to `addresses`) is refused at start, or None."""
    if allowed or (addresses and all(is_private(a) for a in addresses)):
        return None
    where = ", ".join(addresses) or "no address"
    return (
        f"cstore.host: {host} ({where}) is not a loopback or private address, and C-STORE "
        "sends the images unencrypted: reach XNAT's DICOM receiver through a private network "
        "or a tunnel, or set cstore.allow_remote_plain = true if the lab accepts that risk"
    )
