"""The receipt of a delivered session, as the text report shows it, and people's links to XNAT.
Pure."""

from __future__ import annotations

from xnat_drop.core.model import UploadReceipt
from xnat_drop.core.shown import shown
from xnat_drop.core.text import plural, size


def wrap(text: str, first: str, rest: str, width: int = 92) -> list[str]:
    """`text` in lines of at most `width` characters: the first after `first`, the others
    after `rest` (names made safe to print)."""
    words, lines, line = shown(text).split(), [], first
    for word in words:
        if len(line) + len(word) + 1 > width and line.strip():
            lines.append(line.rstrip())
            line = rest
        line += word + " "
    lines.append(line.rstrip())
    return lines


def xnat_page(base: str, uri: str) -> str:
    """A person's link to what `uri` names in XNAT: an archived session's page (XNAT shows the
    experiment's report for `?format=html`), or the prearchive session's REST address."""
    url = base.rstrip("/") + uri
    return f"{url}?format=html" if "/archive/" in uri or "/experiments/" in uri else url


def prearchive_page(base: str) -> str:
    """XNAT's prearchive page, where a project's owner or member archives a session."""
    return base.rstrip("/") + "/app/template/XDATScreen_prearchives.vm"


def uploaded_words(r: UploadReceipt) -> str:
    """ "1.2 GB in 55.0 s", with the rate on the wire and how it was packed when known:
    "1.2 GB in 55.0 s, sent as 640 MB at 11.6 MB/s (auto: 100% compressed, 1.9:1)"."""
    whole = r.session_bytes or r.bytes_sent
    words = f"{size(whole)} in {r.seconds:.1f} s"
    if not r.packing:
        return words
    rate = f"{size(round(r.bytes_sent / r.seconds))}/s" if r.seconds > 0 else ""
    if r.packing != "stored" and r.bytes_sent < 0.95 * whole:  # compression paid off
        words += f", sent as {size(r.bytes_sent)}"
    return words + (f" at {rate}" if rate else "") + f" ({r.packing})"


def receipt_lines(r: UploadReceipt, base: str) -> list[str]:
    """A delivered session's receipt in a text report: where it is, what was verified."""
    lines = ["", f"Uploaded:  {plural(r.files, 'DICOM file')}, {uploaded_words(r)}"]
    lines += [f"In XNAT:   {xnat_page(base, uri) if base else uri}" for uri in r.uris]
    if r.verified:
        where = "archive" if r.destination == "archive" else "prearchive (built, ready for review)"
        sent = sum(n for _, n, _ in r.verified)
        text = (
            f"Verified in the {where}: XNAT holds the {plural(sent, 'file')} of "
            f"{plural(len(r.verified), 'series', 'series')} as sent"
        )
        more = [f"{name}: {held} in XNAT" for name, n, held in r.verified if held != n]
        if more:  # a session that existed before: XNAT may hold more of a series
            text += f", and more of some (the session existed before): {'; '.join(more)}"
        lines += wrap(text, "", "           ")
    for resource in r.resources:
        files = plural(len(resource.files), "file")
        verified = f"verified by {resource.verified_by}"
        text = f"{resource.label}: {files}, {size(resource.bytes)}, {verified}"
        lines += wrap(text, "Resource:  ", "           ")
    for note in r.notes:
        lines += wrap(f"{note}.", "Note:      ", "           ")
    if r.destination == "prearchive":
        page = prearchive_page(base) if base else "XNAT's prearchive page"
        lines += [
            "",
            *wrap(
                "It is in XNAT's prearchive, not yet archived: someone with the project's owner "
                f"or member role must archive it at {page}",
                "Next:      ",
                "           ",
            ),
        ]
    return lines
