"""The keys of the transports other than the zip import: [inbox] (issue 18) and [cstore]
(issue 19), in the order of the example file. Pure: part of core/options.py's table."""

from __future__ import annotations

from xnat_drop.core.schema import Kind, Option

TRANSPORTS = ("import", "inbox", "cstore")
LINK_MODES = ("hardlink", "copy")
CSTORE_ROUTINGS = ("comments", "as-is")

_INBOX = (
    Option("inbox", "root", Kind.PATH, "", example="/srv/xnat-inbox", comment="""
        With xnat.transport = "inbox" (required then): the inbox folder as this machine sees
        it, on the drop tree's filesystem (hard links cannot cross filesystems). It must not
        be writable by lab members: XNAT follows links in it.
    """),
    Option("inbox", "server_path", Kind.TEXT, "", example="/data/xnat/inbox", comment="""
        The same folder as the XNAT server sees it: its inboxPath preference, or a folder
        below it. A plain file is offered to XNAT there before each project's first session,
        to prove the mapping; until it is, inbox delivery pauses and sessions wait.
    """),
    Option("inbox", "link", Kind.TEXT, "hardlink", choices=LINK_MODES, comment="""
        "hardlink" stages hard links to the accepted files (no copy; the files keep their
        owner and mode, so XNAT's account must be able to read them); "copy" copies them.
    """),
    Option("inbox", "stall_seconds", Kind.SECONDS, 900, minimum=1.0, comment="""
        An import request still queued or importing after this many seconds pauses the
        queue with an alarm in the status; it is watched again (never sent twice).
    """),
)  # fmt: skip

_CSTORE = (
    Option("cstore", "host", Kind.TEXT, "", comment="""
        With xnat.transport = "cstore": the host of XNAT's DICOM receiver ("": xnat.url's
        host). C-STORE is unencrypted, so it must be a loopback or private address.
    """),
    Option("cstore", "port", Kind.COUNT, 8104, minimum=1, comment="""
        The receiver's port, as XNAT lists it under Administer > Site Administration > DICOM
        SCP Receivers (XNAT's default receiver listens on 8104).
    """),
    Option("cstore", "called_ae", Kind.TEXT, "XNAT", comment="""
        The receiver's AE title: it decides which receiver (and so which routing and
        anonymisation) XNAT applies.
    """),
    Option("cstore", "calling_ae", Kind.TEXT, "XNAT_DROP", comment="""
        xnat-drop's own AE title, as a receiver's whitelist names it.
    """),
    Option("cstore", "routing", Kind.TEXT, "comments", choices=CSTORE_ROUTINGS, comment="""
        "comments" sets PatientComments to "Project: P Subject: S Session: E AA: false" on
        each object sent (the files stay unchanged; XNAT stores that value); "as-is" sends
        the objects unchanged, and only sessions whose own headers already route them so
        (as XNAT reads them) are sent.
    """),
    Option("cstore", "timeout_seconds", Kind.SECONDS, 60, minimum=1.0, comment="""
        Longest wait for the receiver to accept an association or answer one object.
    """),
    Option("cstore", "session_wait_seconds", Kind.SECONDS, 120, minimum=1.0, comment="""
        After the last object, how long XNAT has to show the session in the project's
        prearchive; none by then is routing-failed (a receiver rule sent it elsewhere).
    """),
    Option("cstore", "allow_remote_plain", Kind.FLAG, False, comment="""
        true lets xnat-drop send unencrypted C-STORE to a host that is neither loopback nor
        private: only where the lab accepts that risk (a tunnel or a private network is
        better).
    """),
)  # fmt: skip

TRANSPORT_OPTIONS: tuple[Option, ...] = _INBOX + _CSTORE
