"""XNAT's series import filters: building one from its config contents, and its verdict.

Written from XNAT 1.8's Java (xnat-api-round2.md §2: ``DicomFilterService``,
``AbstractSeriesImportFilter``, ``RegExBasedSeriesImportFilter``, ``DicomUtils``), independently
of the daemon's evaluator. Building a filter fails where the Java fails, as a ``JavaError``
naming the exception XNAT would throw:

- contents that are not a JSON object of strings: NrgServiceRuntimeException (``UNMARSHAL``);
- no ``mode``, or no ``list``: NullPointerException;
- a ``[header]`` that is not a tag name or ``gggg,eeee``: IllegalArgumentException;
- a pattern that does not compile: NullPointerException (XNAT's error path looks its list up
  under the wrong key). Patterns are compiled with Python's ``re`` (IGNORECASE | ASCII, Java's
  CASE_INSENSITIVE without UNICODE_CASE); Java-only syntax that ``re`` refuses (``\\p{Alpha}``,
  ``\\Q..\\E``, class intersections, possessive quantifiers on 3.10) is treated as not
  compiling, which is where the stand-in differs from XNAT; a few things Java refuses and ``re``
  takes (a stray ``{``, ``(?P``, ``(?(``) are refused here as in Java.

Evaluating an enabled filter whose mode XNAT does not know (anything but blacklist, whitelist)
fails too: a NullPointerException while logging. ``modalityMap`` filters (JavaScript
expressions) are not emulated: an enabled one counts as one XNAT could not build.
"""

from __future__ import annotations

import json
import re
import unicodedata
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

from pydicom.datadict import tag_for_keyword

from .dicomheader import PARSE_LOCK

SERIES_DESCRIPTION = 0x0008103E
NPE = "java.lang.NullPointerException"
IAE = "java.lang.IllegalArgumentException"
NRG_RUNTIME = "org.nrg.framework.exceptions.NrgServiceRuntimeException"
UNSUPPORTED = "java.lang.UnsupportedOperationException"
NOT_EMULATED = "xnat_standin.NotEmulated"
UNMARSHAL = "Something went wrong unmarshalling the series import filter configuration."
MODALITY_MAP = "modalityMap"
MODES = ("blacklist", "whitelist")
DEFAULT_CONTENTS: dict[str, str | None] = {"mode": "blacklist", "list": ""}

_HEADER_CHARS = re.compile(r"[A-Za-z0-9(),]+")  # Java's ^[\p{Alnum}(),]+$, ASCII only
_HEADER_TAG = re.compile(r"(\(?)([A-Za-z0-9]{4}),([A-Za-z0-9]{4})(\)?)")
_QUANTIFIER = re.compile(r"\{\d+(?:,\d*)?\}")
_JAVA_SPACE_CONTROLS = frozenset("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f")
_NO_BREAK_SPACES = frozenset("\u00a0\u2007\u202f")


class JavaError(Exception):
    """What XNAT's Java would throw: the exception's class and its message (None for an NPE)."""

    def __init__(self, java_class: str, message: str | None = None) -> None:
        super().__init__(java_class if message is None else f"{java_class}: {message}")
        self.java_class = java_class
        self.message = message

    @property
    def illegal_argument(self) -> bool:
        return self.java_class == IAE


@dataclass(frozen=True, slots=True)
class Rule:
    """One line of the list: a pattern, or the literal ``EXISTS`` / ``!EXISTS``."""

    text: str
    regex: re.Pattern[str]

    def matches(self, value: str | None) -> bool:
        """``testValueAgainstFilter``: EXISTS wants a value, !EXISTS none, a pattern a find."""
        if self.text == "EXISTS" and value is not None:
            return True
        if self.text == "!EXISTS" and value is None:
            return True
        if value is None:
            return False
        return self.regex.search(value) is not None


@dataclass(frozen=True, slots=True)
class SeriesFilter:
    """A built filter. ``mode`` is None for a mode XNAT does not know (fails when evaluated)."""

    mode: str | None
    enabled: bool
    rules: Mapping[int, tuple[Rule, ...]]  # attribute tag -> its rules, in the order listed

    @property
    def tags(self) -> tuple[int, ...]:
        """The attributes the filter reads (a header with no rules under it still counts)."""
        return tuple(self.rules)

    def includes(self, values: Mapping[int, str | JavaError | None]) -> bool:
        """Keep the object? ``values`` holds each of ``tags``: its rendered value, None when
        absent, or the JavaError that rendering it raised (a sequence).

        Whitelist: kept iff some rule of some attribute matches; blacklist: iff none does.
        """
        if not self.enabled:
            return True
        seen: dict[int, str | None] = {}
        for tag in self.rules:  # XNAT renders every attribute before testing any
            value = values.get(tag)
            if isinstance(value, JavaError):
                raise value
            seen[tag] = value
        for tag, rules in self.rules.items():
            if any(rule.matches(seen[tag]) for rule in rules):
                return self._mode() == "whitelist"
        return self._mode() == "blacklist"

    def _mode(self) -> str:
        if self.mode is None:  # log.debug(..., getMode().getValue(), ...) on a null mode
            raise JavaError(NPE)
        return self.mode


def build_filter(contents: str | None, *, enabled: bool) -> SeriesFilter:
    """``DicomFilterService.getSeriesImportFilter``: the config's contents, and its status
    (``enabled`` is ``status == "enabled"``; the ``enabled`` key inside the JSON is ignored).
    Raises JavaError where XNAT cannot build the filter (whatever its status)."""
    values = contents_map(contents)
    mode = values.get("mode")
    if mode is None:  # map.get(KEY_MODE).equals(...)
        raise JavaError(NPE)
    if mode == MODALITY_MAP:
        if enabled:
            raise JavaError(NOT_EMULATED, "The XNAT stand-in does not emulate modalityMap filters")
        return SeriesFilter(None, False, {})
    listed = values.get("list")
    if listed is None:  # list.split(...) on a missing list
        raise JavaError(NPE)
    return SeriesFilter(mode if mode in MODES else None, enabled, _rules(split_list(listed)))


def contents_map(contents: str | None) -> dict[str, str | None]:
    """The contents as XNAT reads them: blank means blacklist with an empty list; an inner
    ``contents`` (or ``content``) string is unwrapped, again and again."""
    values = _json_map(contents)
    while True:
        if "contents" in values:
            values = _json_map(values["contents"])
        elif "content" in values:
            values = _json_map(values["content"])
        else:
            return values


def split_list(text: str) -> list[str]:
    """``parsePersistedFilters``: split on the two characters backslash-n if the text holds
    them, else on real newlines (then only there); every line trimmed."""
    parts = text.split("\\n") if "\\n" in text else text.split("\n")
    return [java_trim(part) for part in parts]


def parse_header_id(text: str) -> int:
    """``DicomUtils.parseDicomHeaderId``: a dcm4che2 tag name or ``gggg,eeee`` (parentheses
    allowed, both or neither). Raises JavaError (IllegalArgumentException)."""
    if java_is_blank(text) or not _HEADER_CHARS.fullmatch(text):
        raise JavaError(
            IAE, f"Invalid DICOM tag: blank or invalid characters submitted. {_it(text)}"
        )
    match = _HEADER_TAG.fullmatch(text)
    if match is not None:
        if bool(match.group(1)) != bool(match.group(4)):
            raise JavaError(
                IAE, f"Invalid DICOM tag: must either have no or matching parentheses. {_it(text)}"
            )
        try:
            tag = int(match.group(2) + match.group(3), 16)
        except ValueError:
            tag = -1
        if not 0 <= tag <= 0x7FFFFFFF:  # Integer.parseInt: no sign here, 32-bit signed
            raise JavaError(
                IAE,
                "Invalid DICOM tag: the specified header doesn't parse to an integer. " + _it(text),
            )
        return tag
    found = tag_for_keyword(text)
    if found is None:
        raise JavaError(IAE, f"Invalid DICOM tag: unknown tag name. {_it(text)}")
    return int(found)


def compile_pattern(text: str) -> re.Pattern[str]:
    """Java's ``Pattern.compile(text, CASE_INSENSITIVE)`` as far as ``re`` can stand in for it.
    A pattern that fails raises JavaError (NullPointerException, as XNAT's error path does)."""
    if _java_refuses(text):
        raise JavaError(NPE)
    with PARSE_LOCK, warnings.catch_warnings():  # warning filters are process-global
        warnings.simplefilter("error")  # e.g. "Possible set intersection": Java means otherwise
        try:
            return re.compile(text, re.IGNORECASE | re.ASCII)
        except Exception:  # re.error, a Warning, RecursionError, OverflowError
            raise JavaError(NPE) from None


def java_trim(text: str) -> str:
    """``String.trim``: drop characters up to U+0020 at both ends."""
    start, end = 0, len(text)
    while start < end and text[start] <= " ":
        start += 1
    while end > start and text[end - 1] <= " ":
        end -= 1
    return text[start:end]


def java_is_blank(text: str) -> bool:
    """commons-lang ``StringUtils.isBlank``: empty, or only ``Character.isWhitespace``."""
    return all(_java_whitespace(char) for char in text)


def _java_whitespace(char: str) -> bool:
    if char in _JAVA_SPACE_CONTROLS:
        return True
    if char in _NO_BREAK_SPACES:
        return False
    return unicodedata.category(char) in ("Zs", "Zl", "Zp")


def _it(text: str) -> str:
    return f"Submitted tag: {text}"


def _rules(lines: list[str]) -> dict[int, tuple[Rule, ...]]:
    """``createFilterConfiguration``: SeriesDescription until a ``[header]`` line."""
    rules: dict[int, list[Rule]] = {SERIES_DESCRIPTION: []}
    current = SERIES_DESCRIPTION
    for line in lines:
        if java_is_blank(line) or line.startswith("#"):
            continue
        trimmed = java_trim(line)
        if trimmed.startswith("[") and trimmed.endswith("]"):
            current = parse_header_id(trimmed[1:-1])
            rules.setdefault(current, [])
        else:
            rules[current].append(Rule(trimmed, compile_pattern(trimmed)))
    if not rules[SERIES_DESCRIPTION]:
        del rules[SERIES_DESCRIPTION]
    return {tag: tuple(found) for tag, found in rules.items()}


def _json_map(text: str | None) -> dict[str, str | None]:
    """Jackson reading a ``LinkedHashMap<String, String>``: scalars become their text, null
    stays null, objects and arrays (or no object at all) fail; trailing text is ignored."""
    if text is None or java_is_blank(text):
        return dict(DEFAULT_CONTENTS)
    decoder = json.JSONDecoder(parse_float=str, parse_int=str, parse_constant=_no_constant)
    try:
        decoded, _ = decoder.raw_decode(text.lstrip(" \t\r\n"))
    except ValueError:
        raise JavaError(NRG_RUNTIME, UNMARSHAL) from None
    if not isinstance(decoded, dict):
        raise JavaError(NRG_RUNTIME, UNMARSHAL)
    values: dict[str, str | None] = {}
    for key, value in decoded.items():
        if value is None or isinstance(value, str):
            values[key] = value
        elif isinstance(value, bool):
            values[key] = "true" if value else "false"
        else:
            raise JavaError(NRG_RUNTIME, UNMARSHAL)
    return values


def _no_constant(name: str) -> None:
    raise ValueError(f"Jackson does not read {name}")


def _java_refuses(text: str) -> bool:
    """Syntax ``re`` compiles but Java's Pattern refuses: a ``{`` that is no quantifier,
    Python's ``(?P...)`` groups and ``(?(...)`` conditionals."""
    index, in_class = 0, False
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            if text[index + 1 : index + 2] == "^":
                index += 1
            if text[index + 1 : index + 2] == "]":  # a leading ] is literal
                index += 1
        elif text.startswith(("(?P", "(?("), index) or (
            char == "{" and not _QUANTIFIER.match(text, index)
        ):
            return True
        index += 1
    return False
