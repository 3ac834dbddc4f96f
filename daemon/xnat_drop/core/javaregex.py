"""Java regexes read by Python's `re`, taken only where both surely agree. Pure.

XNAT compiles each series filter line with `java.util.regex.Pattern.compile(p,
CASE_INSENSITIVE)` (ASCII case folding only) and tests a value with `matcher(value).find()`.
Python's `re.compile(p, IGNORECASE | ASCII).search(value)` answers the same for ordinary
patterns, but Java and Python each accept constructs the other refuses or reads otherwise.
`read` therefore walks a pattern through a small grammar of constructs that mean the same in
Java 17 and in every Python from 3.10 to 3.13, and refuses everything else with the reason
(`UnpredictablePattern`): never a guess. tests/test_seriesfilter.py runs a table of patterns
and values through the JDK (tests/RegexCheck.java) to hold this module to that promise.

Some differences depend on the value, not the pattern: `Reading.unsure` names them.
"""

from __future__ import annotations

import functools
import re
import warnings
from dataclasses import dataclass

# Java's line terminators (without UNIX_LINES); Python's `.`, `^` and `$` know only "\n".
LINE_TERMINATORS = "\n\r\x85\u2028\u2029"
# Larger counts are refused: the engines' limits differ (2**31 - 1 and 2**32 - 2).
_REPEAT_LIMIT = 65535
_LEADING_FLAGS = re.compile(r"\(\?([imsx]+)\)")
_COUNTED = re.compile(r"\{([0-9]{1,6})(?:(,)([0-9]{0,6}))?\}")
_HEX = re.compile(r"[0-9A-Fa-f]+")
_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ ")
_CONTROLS = {"t": "\t", "n": "\n", "r": "\r", "f": "\f", "a": "\a"}  # one meaning in both
_SHORTHANDS = frozenset("dDsSwW")  # ASCII-only in both: Java without UNICODE_CHARACTER_CLASS
_ESCAPES_THAT_DIFFER = {
    "Z": "\\Z: Java's also matches before a final line terminator",
    "z": "\\z: Java's end of input, refused by Python before 3.14",
    "v": "\\v: vertical whitespace in Java, only \\x0B in Python",
    "V": "\\V: Java only",
    "h": "\\h: horizontal whitespace in Java, refused by Python",
    "H": "\\H: Java only",
    "e": "\\e (escape): Java only",
    "c": "\\cX (a control character): Java only",
    "p": "\\p{...} (a character property): Java only",
    "P": "\\P{...} (a character property): Java only",
    "Q": "\\Q...\\E (quoting): Java only",
    "E": "\\E (end of quoting): Java only",
    "G": "\\G (end of the previous match): Java only",
    "R": "\\R (any line break): Java only",
    "X": "\\X (a grapheme cluster): Java only",
    "N": "\\N{name}: the two read Unicode names from different tables",
    "k": "\\k<name> (a named backreference): Java only",
    "U": "\\U (a long Unicode escape): Python only",
    "0": "\\0: an octal escape in Java, a NUL and digits in Python",
    "b": "[\\b]: a backspace in Python, refused by Java",
}


class UnpredictablePattern(ValueError):  # noqa: N818 - reads as what it is: "raise UnpredictablePattern"
    """A pattern that Java 17 and Python may read differently, or that one of them refuses."""


@dataclass(frozen=True, slots=True)
class Reading:
    """A pattern Python reads as Java does, and what of a value could still tell them apart."""

    regex: re.Pattern[str]
    word_bounds: bool  # uses \b or \B
    line_sensitive: bool  # uses ., ^ or $
    empty_sensitive: bool  # uses \B, or ^ in multiline mode

    def finds(self, value: str) -> bool:
        """Java's `matcher(value).find()`, when `unsure(value)` is empty."""
        return self.regex.search(value) is not None

    def unsure(self, value: str) -> str:
        """Why Java may answer otherwise for this value ("" when it cannot). Never quotes it."""
        # Java's regexes work on UTF-16: find() may start inside a surrogate pair, and the
        # 300-character cut counts UTF-16 units (it may leave half a pair).
        if any(ch > "\uffff" or "\ud800" <= ch <= "\udfff" for ch in value):
            return "the value has characters beyond Unicode's basic plane (Java sees UTF-16)"
        # JDK 17's \b asks Character.isLetterOrDigit: é is a word character there, not in
        # Python's ASCII mode.
        if self.word_bounds and not value.isascii():
            return "the value has non-ASCII letters, which Java's \\b and \\B count as word"
        # On an empty value Java's \B matches (Python's only from 3.14 on), and Java's
        # multiline ^ does not (it never matches at the end of the input).
        if self.empty_sensitive and not value:
            return "the value is empty, where Java's \\B and multiline ^ answer otherwise"
        # Java's ., ^ and $ treat \r, \x85, \u2028 and \u2029 (and \r\n) as line ends; in
        # multiline mode Java's ^ also never matches after a final line end.
        if self.line_sensitive and any(ch in LINE_TERMINATORS for ch in value):
            return "the value has a line break, and Java's ., ^ and $ know other line ends"
        return ""


def read(pattern: str) -> Reading:
    """Python's reading of the Java regex `pattern`.

    Raises UnpredictablePattern (saying why) when Java 17 and Python 3.10–3.13 may disagree on
    what it matches, or when either refuses it.
    """
    reading = _read(pattern)
    if isinstance(reading, str):
        raise UnpredictablePattern(reading)
    return reading


@functools.lru_cache(maxsize=512)
def _read(pattern: str) -> Reading | str:
    try:
        word_bounds, line_sensitive, empty_sensitive = _scan(pattern)
    except UnpredictablePattern as error:
        return str(error)
    try:
        # The scan refuses what Python warns about (nested sets, set operations, misplaced
        # flags: meanings Python is about to change); turning warnings into errors is a
        # second net. catch_warnings is process-wide, but a filter is read once per fetch.
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            regex = re.compile(pattern, re.IGNORECASE | re.ASCII)
    except (re.error, Warning, OverflowError, ValueError, RecursionError) as error:
        return f"Python refuses it ({error})"
    return Reading(regex, word_bounds, line_sensitive, empty_sensitive)


def _scan(p: str) -> tuple[bool, bool, bool]:
    """Walks `p`; returns `Reading`'s three flags. Raises UnpredictablePattern."""
    word = line = empty = False
    multiline = False
    pos = 0
    flags = _LEADING_FLAGS.match(p)
    if flags:
        # Java's comments mode also skips spaces and '#' inside classes, Python's does not:
        # (?x) is taken only when there is nothing it could skip.
        if "x" in flags[1] and any(ch in " \t\n\r\x0b\f#" for ch in p):
            raise UnpredictablePattern("(?x) with spaces or '#': Java skips them in classes too")
        multiline = "m" in flags[1]
        pos = flags.end()
    groups: list[bool] = []  # per open group: is it a lookaround (which cannot be repeated)
    repeats = [False]  # per nesting level: does it hold a repetition
    atom = False  # something to repeat precedes
    atom_repeats = False  # ...and it is a group holding a repetition
    while pos < len(p):
        ch = p[pos]
        if ch in "*+?{":
            if not atom:
                raise UnpredictablePattern(
                    "'{' that is not a count after something (Java refuses it or reads a letter)"
                    if ch == "{"
                    else f"'{ch}' with nothing to repeat"
                )
            pos, repeating = _quantifier(p, pos)
            if repeating:
                # (a+)+ and the like: both engines may backtrack for ages on a near miss.
                if atom_repeats:
                    raise UnpredictablePattern("a repetition inside a repeated group")
                repeats[-1] = True
            atom = atom_repeats = False
            continue
        atom_repeats = False
        if ch == "\\":
            empty = empty or p.startswith("\\B", pos)
            pos, kind, _ = _escape(p, pos, in_class=False)
            word = word or kind == "bound"
            atom = kind in ("char", "set")
        elif ch == "[":
            pos = _class(p, pos)
            atom = True
        elif ch == "(":
            pos, lookaround = _group(p, pos)
            groups.append(lookaround)
            repeats.append(False)
            atom = False
        elif ch == ")":
            if not groups:
                raise UnpredictablePattern("')' that closes no group")
            lookaround = groups.pop()
            atom_repeats = repeats.pop()
            repeats[-1] = repeats[-1] or atom_repeats
            atom = not lookaround
            pos += 1
        else:
            if ch in "^$.":
                line = True
                empty = empty or (multiline and ch == "^")
            elif ch != "|":
                _literal(ch)
            atom = ch not in "^$|"
            pos += 1
    if groups:
        raise UnpredictablePattern("'(' that is never closed")
    return word, line, empty


def _quantifier(p: str, pos: int) -> tuple[int, bool]:
    """Reads *, +, ?, {n}, {n,}, {n,m}, maybe lazy; returns (end, repeats more than once)."""
    if p[pos] == "{":
        counted = _COUNTED.match(p, pos)
        # Java refuses any other '{' ("Illegal repetition"); Python reads it as a letter, and
        # reads {,m} as a count.
        if counted is None:
            raise UnpredictablePattern("'{' that is not {n}, {n,} or {n,m}: Java refuses it")
        low = int(counted[1])
        high = int(counted[3]) if counted[3] else (None if counted[2] else low)
        if max(low, high or 0) > _REPEAT_LIMIT or (high is not None and high < low):
            raise UnpredictablePattern(f"the count {counted[0]}")
        repeating = high is None or high > 1
        pos = counted.end()
    else:
        repeating = p[pos] != "?"
        pos += 1
    if p.startswith("?", pos):  # lazy: the same in both
        pos += 1
    if pos < len(p) and p[pos] in "*+?{":
        # a*+ is possessive in Java and Python 3.11+ only; a{2}{3} Java takes, Python refuses.
        raise UnpredictablePattern("a possessive or doubled quantifier (Python 3.11+ or Java only)")
    return pos, repeating


def _group(p: str, pos: int) -> tuple[int, bool]:
    """Reads a group's opening; returns (end, is a lookaround)."""
    if not p.startswith("(?", pos):
        return pos + 1, False
    for opening, lookaround in (("(?:", False), ("(?=", True), ("(?!", True)):
        if p.startswith(opening, pos):
            return pos + 3, lookaround
    for opening in ("(?<=", "(?<!"):  # Python insists on a fixed width, within Java's bound
        if p.startswith(opening, pos):
            return pos + 4, True
    after = p[pos + 2 : pos + 3]
    if after == "P":
        why = "(?P...) named groups: Python only"
    elif after == "<":
        why = "(?<name>...) named groups: Java only (Python 3.10–3.13)"
    elif after == ">":
        why = "(?>...) atomic groups: Python 3.11+ only"
    elif after == "#":
        why = "(?#...) comments: Python only"
    elif after == "(":
        why = "(?(...)...) conditionals: Python only"
    else:
        why = "inline flags other than (?i), (?m), (?s), (?x) at the very start"
    raise UnpredictablePattern(why)


def _escape(p: str, pos: int, *, in_class: bool) -> tuple[int, str, str]:
    """Reads a backslash escape; returns (end, kind, the character when kind is "char").

    Kinds: "char" (one character), "set" (\\d \\s \\w and negations), "bound" (\\b \\B),
    "anchor" (\\A). Raises UnpredictablePattern for an escape not known to mean the same.
    """
    if pos + 1 >= len(p):
        raise UnpredictablePattern("a single backslash at the end")
    ch = p[pos + 1]
    if ch in _SHORTHANDS:
        return pos + 2, "set", ""
    if ch in _CONTROLS:
        return pos + 2, "char", _CONTROLS[ch]
    if ch in "xu":
        digits = p[pos + 2 : pos + (4 if ch == "x" else 6)]
        if len(digits) != (2 if ch == "x" else 4) or not _HEX.fullmatch(digits):
            raise UnpredictablePattern(
                f"\\{ch} without {len(digits)} hex digits (Java's \\x{{...}})"
            )
        code = int(digits, 16)
        if 0xD800 <= code <= 0xDFFF:
            # Java joins \uD83D\uDE00 into one character; Python keeps two halves.
            raise UnpredictablePattern("a \\u escape of half a surrogate pair")
        return pos + len(digits) + 2, "char", chr(code)
    if ch in "bB" and not in_class:
        return pos + 2, "bound", ""
    if ch == "A" and not in_class:
        return pos + 2, "anchor", ""
    if ch in _PUNCTUATION:
        return pos + 2, "char", ch
    if ch.isdigit():
        # Java reads \12 as group 1 and a '2' when there is no group 12; Python refuses it.
        raise UnpredictablePattern(f"\\{ch}: backreferences and octal escapes read differently")
    raise UnpredictablePattern(_ESCAPES_THAT_DIFFER.get(ch, f"\\{ch}: not known to mean the same"))


def _class(p: str, pos: int) -> int:
    """Reads a character class from its '['; returns the position after its ']'."""
    pos += 1
    if p.startswith("^", pos):
        pos += 1
    if p.startswith("]", pos):
        raise UnpredictablePattern("a class that starts with ']'")
    start = pos
    previous = ""  # the single character before, which may start a range
    while True:
        if pos >= len(p):
            raise UnpredictablePattern("'[' that is never closed")
        ch = p[pos]
        if ch == "]":
            return pos + 1
        if ch == "[":
            raise UnpredictablePattern("'[' in a class: a nested class in Java, a '[' in Python")
        _not_an_operator(p, pos)
        if ch == "-" and pos != start and not p.startswith("]", pos + 1):
            # A range, between two single characters only: Java and Python read [\w-a],
            # [a-c-e] and their kin in their own ways.
            if not previous:
                raise UnpredictablePattern("'-' that is not a range between two characters")
            _not_an_operator(p, pos + 1)
            pos, last = _class_character(p, pos + 1)
            if not last:
                raise UnpredictablePattern("a range that ends in \\d, \\s or \\w")
            if last < previous:
                raise UnpredictablePattern(f"the range {previous}-{last} runs backwards")
            previous = ""
            continue
        if ch == "-":  # a '-' first or last is a '-' in both
            pos, previous = pos + 1, ""
            continue
        pos, previous = _class_character(p, pos)


def _class_character(p: str, pos: int) -> tuple[int, str]:
    """Reads one class member; returns (end, the character, or "" for \\d \\s \\w...)."""
    ch = p[pos] if pos < len(p) else ""
    if ch in ("", "[", "]"):
        raise UnpredictablePattern("a range without an end")
    if ch == "\\":
        pos, kind, char = _escape(p, pos, in_class=True)
        return pos, char if kind == "char" else ""
    _literal(ch)
    return pos + 1, ch


def _not_an_operator(p: str, pos: int) -> None:
    # Java intersects with &&; Python warns about &&, ||, ~~ and -- as future set operations.
    if p[pos : pos + 1] in ("&", "|", "~", "-") and p[pos + 1 : pos + 2] == p[pos]:
        raise UnpredictablePattern(f"'{p[pos] * 2}' in a class: a set operation")


def _literal(ch: str) -> None:
    """Refuses literal characters that the two parsers may take otherwise."""
    # A control character may end Java's pattern early (its parser pads with NULs); UTF-16
    # halves and characters beyond the BMP are matched by code unit in Java.
    if ch < " " or ch == "\x7f":
        raise UnpredictablePattern(f"the control character U+{ord(ch):04X}")
    if ch > "\uffff" or "\ud800" <= ch <= "\udfff":
        raise UnpredictablePattern(f"U+{ord(ch):04X}, beyond Unicode's basic plane")
