"""The C-STORE transport's words and decisions (issue 19). Pure.

XNAT's DICOM receiver takes no parameters: it routes each object by its headers, first by
the `Project: P Subject: S Session: E AA: false` line in PatientComments (0010,4000)
(xnat-api-round2.md §5). `AA: false` keeps the session in the prearchive even where the
project archives automatically, so xnat-drop verifies it before anything is archived.
adapters/dicom/cstore.py sends; service/cstore.py drives a delivery.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, cast
from urllib.parse import urlsplit

from xnat_drop.core.model import FileFacts, Policy, Remedy, Target, Violation
from xnat_drop.core.names import assignment
from xnat_drop.core.noheader import FileGroup
from xnat_drop.core.schema import Section
from xnat_drop.core.text import plural

CStoreRouting = Literal["comments", "as-is"]

PORT = 8104  # XNAT's default receiver (DicomSCPInstance.createDefault)
CALLED_AE = "XNAT"
CALLING_AE = "XNAT_DROP"
# PS3.5 AE: at most 16 characters of the default repertoire, no backslash, not only spaces.
_AE_TITLE = re.compile(r"(?=.*[^ ])[\x20-\x5b\x5d-\x7e]{1,16}")


@dataclass(frozen=True, slots=True)
class CStoreConfig:
    """[cstore]: where XNAT's DICOM receiver listens and how long to wait for it."""

    host: str
    port: int = PORT
    called_ae: str = CALLED_AE
    calling_ae: str = CALLING_AE
    timeout: float = 60.0  # an association, or one object's answer
    session_wait: float = 120.0  # after the last object, for the session to show in the project
    allow_remote_plain: bool = False
    routing: CStoreRouting = "comments"  # "as-is": the files' own headers route them


def parse_cstore(t: Section, transport: str, url: str) -> CStoreConfig | None:
    """The [cstore] table when xnat.transport is "cstore" (problems reported on `t`), else
    None. The host defaults to that of xnat.url."""
    if transport != "cstore":
        return None
    host = t.text("host").strip() or (urlsplit(url).hostname or "")
    if not host:
        t.problem("host", 'required with xnat.transport = "cstore" when xnat.url has no host')
    port = t.count("port")
    if not 1 <= port <= 65535:
        t.problem("port", f"a TCP port from 1 to 65535 (got {port})")
    for name in ("called_ae", "calling_ae"):
        if not _AE_TITLE.fullmatch(t.text(name)):
            t.problem(
                name,
                "an AE title: 1 to 16 printable ASCII characters, no backslash, not only spaces "
                f"(got {t.text(name)!r})",
            )
    return CStoreConfig(
        host,
        port,
        t.text("called_ae").strip(),
        t.text("calling_ae").strip(),
        t.seconds("timeout_seconds"),
        t.seconds("session_wait_seconds"),
        t.flag("allow_remote_plain"),
        cast(CStoreRouting, t.text("routing")),
    )


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


# Where XNAT's default identifier looks, in its order (xnat-api-round2.md §5): `Key: value`
# in these three, then PatientName for the subject and PatientID for the session.
COMMENT_KEYWORDS = ("PatientComments", "StudyComments", "AdditionalPatientHistory")
AS_IS_KEYWORDS = (*COMMENT_KEYWORDS, "PatientName", "PatientID")
_KEYS = {key: assignment(key) for key in ("Project", "Subject", "Session", "AA")}


def headers_route(facts: FileFacts) -> tuple[str, str, str, str]:
    """(project, subject, session, AA) as XNAT reads them from an object's own headers; the
    project only from a `Project:` line (XNAT's later guesses need its list of projects)."""
    header = facts.header
    if header is None:
        return "", "", "", ""

    def assigned(key: str) -> str:
        for keyword in COMMENT_KEYWORDS:
            found = _KEYS[key].search(header.value(keyword))
            if found:
                return found.group(1)
        return ""

    subject = assigned("Subject") or header.value("PatientName")
    session = assigned("Session") or header.value("PatientID")
    return assigned("Project"), subject, session, assigned("AA")


def unrouted(files: Iterable[FileFacts], target: Target, auto_archive: bool) -> Violation | None:
    """With cstore.routing = "as-is": the files whose own headers do not send them to `target`
    (or, where the project archives automatically, do not say `AA: false`), or None. The
    sentence names files, never a header's value."""
    elsewhere, archived = FileGroup(), FileGroup()
    for facts in files:
        project, subject, session, aa = headers_route(facts)
        if (project, subject, session) != (target.project, target.subject, target.session):
            elsewhere.add(facts.path)
        elif auto_archive and aa.lower() != "false":
            archived.add(facts.path)
    if not elsewhere.count and not archived.count:
        return None
    parts = []
    if elsewhere.count:
        parts.append(
            f"{plural(elsewhere.count, 'file')} (such as {elsewhere.first}) do not name project "
            f"{target.project}, subject {target.subject} and session {target.session} as XNAT "
            "reads them (Project:, Subject: and Session: in PatientComments, StudyComments or "
            "AdditionalPatientHistory; else PatientName and PatientID)"
        )
    if archived.count:
        parts.append(
            f"project {target.project} archives automatically and "
            f"{plural(archived.count, 'file')} (such as {archived.first}) do not say "
            '"AA: false" there, so XNAT would archive the session before xnat-drop verified it'
        )
    sentence = (
        'With cstore.routing = "as-is" xnat-drop sends the files unchanged, so their own '
        f"headers must route them, and {'; and '.join(parts)}. Nothing was sent. Export the "
        "session with that routing, or ask the administrator to set cstore.routing = "
        '"comments" (xnat-drop then sets it on the copies it sends).'
    )
    return Violation("cstore-unrouted", Policy.REJECT, "XNAT", sentence, remedy=Remedy.CHOICE)
