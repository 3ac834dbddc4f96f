"""Names as people see them: any byte sequence made safe to print, log, notify or store. Pure.

File names on the share are data written by other people: bytes that are not UTF-8 (a
Latin-1 name from an old Windows export reaches Python as surrogate escapes), newlines, ANSI
escapes, bidirectional overrides. Written as they are they break UTF-8 encoders (the journal,
JSON, SQLite) or forge lines (a newline in a name would start a new sd_notify assignment).
`shown` renders each such character visibly, so a person can still find the folder: an
undecodable byte as `\\xNN`, a control character as `\\n`, `\\t` or `\\xNN`, any other
character Python does not call printable (format, separator, private-use and unassigned code
points) as `\\uNNNN`. Everything else, backslashes included (ImageType values are
backslash-separated), is kept as it is.
"""

from __future__ import annotations

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the original byte
        return f"\\x{code - 0xDC00:02x}"
    if char in _NAMED:
        return _NAMED[char]
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def shown(text: str) -> str:
    """`text` with undecodable bytes and non-printable characters escaped.

    The result encodes as UTF-8 and holds no line break or control character. Text that needs
    no escaping (almost every name) is returned unchanged after one C-speed check.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def shown_path(parts: tuple[str, ...] | list[str]) -> str:
    """A relative path given as its parts, joined with "/", each part `shown`."""
    return "/".join(shown(part) for part in parts)
