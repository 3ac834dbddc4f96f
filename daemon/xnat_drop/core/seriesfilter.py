"""XNAT's series import filters, evaluated as XNAT does, or said to be unpredictable. Pure.

XNAT (RegExBasedSeriesImportFilter) silently drops every DICOM object that the site's or the
project's filter refuses, so the daemon must know beforehand what XNAT will keep. A filter is
a config-service row (`from_config`) or the site preferences (`from_site_values`); `decide`
judges one object from its rendered values (`rendered`, `UNRENDERABLE`); `described` puts a
decision in words. Wherever XNAT's answer cannot be known here (a construct Java reads
otherwise, JavaScript modality maps, a filter XNAT fails to build), the answer says so instead
of guessing (`SeriesFilter.unpredictable`, `Decision.unsure`). Facts: xnat-api-round2.md §2.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from xnat_drop.core.javaregex import UnpredictablePattern, read

DEFAULT_TAG = 0x0008103E  # SeriesDescription: the attribute before any [header] line
VALUE_LIMIT = 300  # dcm4che2 renders at most this many UTF-16 units, the last three "..."
MODES = ("blacklist", "whitelist")

TagOf = Callable[[str], int | None]

_DEFAULT_ATTRIBUTE = "SeriesDescription"
_JAVA_TRIMMED = "".join(map(chr, range(0x21)))  # String.trim(): everything <= U+0020
# Character.isWhitespace (StringUtils.isBlank), as JDK 17 lists it.
_JAVA_WHITESPACE = frozenset(
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2008\u2009\u200a\u2028\u2029\u205f\u3000"
)
_HEADER_CHARACTERS = re.compile(r"[A-Za-z0-9(),]+")  # DicomUtils.VALID_DICOM_HEADER_OR_TAG_CHARS
_NUMERIC_TAG = re.compile(r"(\(?)([A-Za-z0-9]{4}),([A-Za-z0-9]{4})(\)?)")  # DicomUtils.DICOM_TAG
_KEYWORD = re.compile(r"[A-Za-z][A-Za-z0-9]*")  # a field name of dcm4che2's Tag class
_NESTING_LIMIT = 16  # "contents" inside "contents": deeper is not a real configuration


class _Unrenderable:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNRENDERABLE"


# A value the adapter cannot render as dcm4che2 does (a sequence, floats, binary): present,
# but no regex can be judged against it.
UNRENDERABLE: Final = _Unrenderable()


@dataclass(frozen=True, slots=True)
class Pattern:
    """One line of a filter's list."""

    tag: int  # the attribute it tests
    attribute: str  # as written in the filter ("SeriesDescription", "0018,1030", "(0008,0008)")
    text: str  # the line as written: "EXISTS", "!EXISTS" or a regex


@dataclass(frozen=True, slots=True)
class SeriesFilter:
    """A site or project series import filter, as XNAT builds it."""

    scope: str  # words: "the site" or "project P1"
    mode: str  # "blacklist" or "whitelist" (modalityMap -> unpredictable, mode kept as given)
    patterns: tuple[Pattern, ...]
    unpredictable: str = ""  # why XNAT's decisions cannot be predicted here; "" when they can

    @property
    def tags(self) -> frozenset[int]:
        """Every attribute it reads."""
        return frozenset(pattern.tag for pattern in self.patterns)


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether XNAT keeps one DICOM object, and which filter and pattern say so."""

    keep: bool
    filter: SeriesFilter | None = None  # the filter that drops it (or made it unsure)
    pattern: Pattern | None = None  # the blacklist pattern that matched (or was unsure of it);
    # None for a whitelist nothing matched
    unsure: str = ""  # non-empty: this object's fate cannot be predicted (why); keep is then True


def from_config(scope: str, status: str, contents: str, tag_of: TagOf) -> SeriesFilter | None:
    """The filter a config-service row describes; None when the row's status is not "enabled"
    (the row's status decides, never the `enabled` key inside contents). `tag_of` resolves a
    dcm4che2/DICOM keyword (e.g. "ImageType") to its tag, None if unknown (injected: the core
    has no DICOM dictionary)."""
    if status != "enabled":
        return None
    return _from_contents(scope, contents, tag_of, 0)


def from_site_values(
    enabled: bool, mode: str, list_text: str, tag_of: TagOf
) -> SeriesFilter | None:
    """The site filter from /xapi/siteConfig values (the fallback when /data/config cannot be
    read): enableSitewideSeriesImportFilter, sitewideSeriesImportFilterMode and
    sitewideSeriesImportFilter. None when it is not enabled."""
    if not enabled:
        return None
    return _from_map("the site", {"mode": mode, "list": list_text}, tag_of, 0)


def rendered(text: str) -> str:
    """A decoded DICOM string value (multi-values joined with backslash) as dcm4che2 renders it for
    the filter: trimmed like Java's String.trim() (chars <= U+0020), longer than 300 chars -> the
    first 297 plus "...", blank -> ""."""
    value = text.strip(_JAVA_TRIMMED)
    # Java counts UTF-16 units, and its cut may leave half a pair (then `decide` is unsure).
    units = value.encode("utf-16-le", "surrogatepass")
    if len(units) > 2 * VALUE_LIMIT:
        value = units[: 2 * (VALUE_LIMIT - 3)].decode("utf-16-le", "surrogatepass") + "..."
    return "" if _is_blank(value) else value


def decide(filters: Sequence[SeriesFilter], values: Mapping[int, str | object | None]) -> Decision:
    """Whether XNAT keeps one DICOM object. `values` maps every tag the filters read to its
    rendered value, None when absent, or UNRENDERABLE. Kept only if every filter keeps it (the
    site AND the project filter). An unpredictable filter, or a value that makes a pattern's
    meaning differ between Java and Python, gives keep=True with `unsure` set.

    Raises KeyError when `values` lacks a tag that a filter reads."""
    for series_filter in filters:
        if series_filter.unpredictable:  # its answer is unknown (XNAT may even fail on all)
            return Decision(True, series_filter, unsure=series_filter.unpredictable)
    unsure: Decision | None = None
    for series_filter in filters:
        decision = _judge(series_filter, values)
        if not decision.keep:  # one sure "drop" settles it, whatever the others say
            return decision
        if decision.unsure and unsure is None:
            unsure = decision
    return unsure or Decision(True)


def described(decision: Decision) -> str:
    """Words for a report, e.g. 'SeriesDescription (0008,103E) matches “localizer” in project
    P1's blacklist' or 'nothing in the site's whitelist matches it'. Never the DICOM value
    itself (no header value leaves the daemon); patterns and attribute names are fine."""
    series_filter, pattern = decision.filter, decision.pattern
    if series_filter is None:
        return "no series import filter drops it"
    mode = series_filter.mode if series_filter.mode in MODES else "series import filter"
    whose = f"{series_filter.scope}'s {mode}"
    if pattern is not None:
        matches = f"{_attribute_words(pattern)} matches “{pattern.text}” in {whose}"
        if decision.unsure:
            return f"whether {matches} cannot be predicted: {decision.unsure}"
        return matches
    if decision.unsure:
        return f"{whose} cannot be predicted: {decision.unsure}"
    return f"nothing in {whose} matches it"


def _judge(series_filter: SeriesFilter, values: Mapping[int, object]) -> Decision:
    """One predictable filter's decision; a sure match wins over any unsure pattern."""
    whitelist = series_filter.mode == "whitelist"
    first_unsure: tuple[Pattern, str] | None = None
    for pattern in series_filter.patterns:
        matched, unsure = _test(pattern, values[pattern.tag])
        if matched:
            return Decision(True) if whitelist else Decision(False, series_filter, pattern)
        if unsure and first_unsure is None:
            first_unsure = (pattern, unsure)
    if first_unsure is not None:
        return Decision(True, series_filter, first_unsure[0], first_unsure[1])
    return Decision(False, series_filter) if whitelist else Decision(True)


def _test(pattern: Pattern, value: object) -> tuple[bool, str]:
    """testValueAgainstFilter: (matches, why that cannot be known)."""
    if pattern.text == "EXISTS" and value is not None:
        return True, ""
    if pattern.text == "!EXISTS" and value is None:
        return True, ""
    if value is None:
        return False, ""
    if value is UNRENDERABLE:
        # "!EXISTS" is then a search for the text "!exists", which numbers never hold.
        if pattern.text == "!EXISTS":
            return False, ""
        return False, "its value cannot be rendered here as XNAT (dcm4che2) renders it"
    if not isinstance(value, str):
        raise TypeError(f"a value must be a str, None or UNRENDERABLE, not {type(value).__name__}")
    try:  # a filter made by hand may hold a pattern `from_config` would have refused
        reading = read(pattern.text)
    except UnpredictablePattern as error:
        return False, f"Java may read “{pattern.text}” otherwise: {error}"
    unsure = reading.unsure(value)
    return (False, unsure) if unsure else (reading.finds(value), "")


def _from_contents(scope: str, contents: str, tag_of: TagOf, depth: int) -> SeriesFilter:
    """DicomFilterService.buildSeriesImportFilter from the contents JSON."""
    if _is_blank(contents):  # XNAT's default: an empty blacklist
        return _from_map(scope, {"mode": "blacklist", "list": ""}, tag_of, depth)
    try:
        data = json.loads(contents, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return _unpredictable(scope, "", "XNAT cannot read its contents as JSON")
    if not isinstance(data, dict):
        return _unpredictable(scope, "", "XNAT cannot build it: its contents are not an object")
    return _from_map(scope, data, tag_of, depth)


def _from_map(scope: str, data: dict[str, object], tag_of: TagOf, depth: int) -> SeriesFilter:
    """buildSeriesImportFilter from the contents map (all its values must be strings)."""
    mode = data.get("mode")
    shown_mode = mode if isinstance(mode, str) else ""
    if any(isinstance(value, (dict, list)) for value in data.values()):
        why = "XNAT cannot build it: its contents hold a value that is not a string"
        return _unpredictable(scope, shown_mode, why)
    for key in ("contents", "content"):  # "contents" wins, as in XNAT
        if key in data:
            inner = data[key]
            if depth >= _NESTING_LIMIT or not isinstance(inner, (str, type(None))):
                why = f"XNAT cannot build it: its {key!r} is not a JSON string"
                return _unpredictable(scope, shown_mode, why)
            return _from_contents(scope, inner or "", tag_of, depth + 1)
    if not isinstance(mode, str):
        why = "it has no mode" if mode is None else "its mode is not a string"
        return _unpredictable(scope, "", f"XNAT cannot build it: {why}")
    if mode == "modalityMap":
        return _unpredictable(scope, mode, "mode modalityMap runs JavaScript expressions")
    if mode not in MODES:
        why = f"its mode {mode!r} is neither blacklist nor whitelist: XNAT fails on every object"
        return _unpredictable(scope, mode, why)
    listed = data.get("list")
    if not isinstance(listed, str):
        why = "it has no list" if listed is None else "its list is not a string"
        return _unpredictable(scope, mode, f"XNAT cannot build it: {why}")
    return _parse_list(scope, mode, listed, tag_of)


def _parse_list(scope: str, mode: str, listed: str, tag_of: TagOf) -> SeriesFilter:
    """createFilterConfiguration(parsePersistedFilters(list)): [headers], EXISTS, regexes."""
    # XNAT splits on the two characters backslash-n when there are any, else on line feeds.
    lines = listed.split("\\n") if "\\n" in listed else listed.split("\n")
    tag, attribute = DEFAULT_TAG, _DEFAULT_ATTRIBUTE
    patterns: list[Pattern] = []
    for line in (raw.strip(_JAVA_TRIMMED) for raw in lines):
        if _is_blank(line) or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):  # even [abc]: XNAT takes it as a header
            attribute = line[1:-1]
            found = _header_tag(attribute, tag_of)
            if isinstance(found, str):
                why = f"XNAT cannot build it: its header [{attribute}] is refused ({found})"
                return SeriesFilter(scope, mode, tuple(patterns), why)
            tag = found
            continue
        pattern = Pattern(tag, attribute, line)
        patterns.append(pattern)
        if line not in ("EXISTS", "!EXISTS"):
            try:
                read(line)
            except UnpredictablePattern as error:
                why = f"Java may read “{line}” ({attribute}) otherwise: {error}"
                return SeriesFilter(scope, mode, tuple(patterns), why)
    return SeriesFilter(scope, mode, tuple(patterns))


def _header_tag(text: str, tag_of: TagOf) -> int | str:
    """DicomUtils.parseDicomHeaderId: the tag, or why XNAT throws."""
    if not _HEADER_CHARACTERS.fullmatch(text):
        return "only letters, digits, '(', ')' and ',' are allowed"
    numeric = _NUMERIC_TAG.fullmatch(text)
    if numeric:
        opened, group, element, closed = numeric.groups()
        if bool(opened) != bool(closed):
            return "unbalanced parentheses"
        try:
            tag = int(group + element, 16)
        except ValueError:
            return "not hexadecimal"
        # Integer.parseInt refuses 8000,0000 and above.
        return tag if tag <= 0x7FFFFFFF else "above 7FFF,FFFF"
    tag_found = tag_of(text) if _KEYWORD.fullmatch(text) else None
    return "an unknown keyword" if tag_found is None else tag_found


def _unpredictable(scope: str, mode: str, why: str) -> SeriesFilter:
    return SeriesFilter(scope, mode, (), why)


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")  # Jackson refuses NaN and Infinity; Python takes them


def _is_blank(text: str) -> bool:
    return all(ch in _JAVA_WHITESPACE for ch in text)


def _attribute_words(pattern: Pattern) -> str:
    """'SeriesDescription (0008,103E)', or '(0018,1030)' for an attribute written as a tag."""
    tag = f"({pattern.tag >> 16:04X},{pattern.tag & 0xFFFF:04X})"
    return f"{pattern.attribute} {tag}" if _KEYWORD.fullmatch(pattern.attribute) else tag
