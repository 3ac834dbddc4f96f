"""A declarative table of configuration options, checked and written out by the same code.

An `Option` names one key (its table and name), its `Kind`, its default as written in TOML,
its limits and the comment the example file shows above it. `read` checks parsed TOML against
a table of options; `render` writes the example file from it. core/options.py holds xnat-drop's
table; core/config.py builds the Config from what `read` found. Pure: no I/O, no clock.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, cast

TomlValue = str | int | float | bool | tuple[str, ...]
KEYWORD = re.compile(r"[A-Za-z][A-Za-z0-9]*")  # a DICOM keyword such as PatientName
ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+)*")  # Etc/GMT+1, UTC
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?", re.IGNORECASE)
_SIZE_UNITS = {
    "B": 1,
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40,
}  # fmt: skip
_WIDTH = 100  # longer lists are written one item per line


class Kind(Enum):
    """How a value is written in TOML; the enum value completes "expected ..."."""

    SECONDS = "a number of seconds"  # int or float -> float
    COUNT = "a whole number"  # int (or a float without fraction) -> int
    FLAG = "true or false"
    TEXT = "a string"  # with `choices`, one of them
    STRINGS = "a list of strings"  # -> tuple[str, ...]
    PATH = "a path"  # relative to the file's folder; "" -> None
    SIZE = 'a size such as "4 GiB"'  # bytes, or "500 GB"; "" or 0 is "no limit" -> int


_TOML_TYPES: dict[Kind, tuple[type, ...]] = {
    Kind.SECONDS: (int, float),
    Kind.COUNT: (int, float),
    Kind.FLAG: (bool,),
    Kind.TEXT: (str,),
    Kind.STRINGS: (list, tuple),  # TOML gives lists; the table's defaults are tuples
    Kind.PATH: (str,),
    Kind.SIZE: (int, str),
}


class Check(Enum):
    """A rule every value of an option (every item of a list) must follow; "" is exempt."""

    REGEX = "regex"  # compiles as a Python regular expression
    KEYWORD = "keyword"  # a DICOM keyword such as PatientName
    FILE_NAME = "file name"  # a plain file name: no "/", not "." or ".."
    TIME_ZONE = "time zone"  # an IANA time zone name such as Europe/Berlin


@dataclass(frozen=True, slots=True)
class Option:
    """One configuration key.

    `default` is the value as written in TOML, or None when config.parse derives it from other
    keys or the environment (or the key is required); the comment then says so. `example` is
    shown in the example file instead of the default (a placeholder URL); `commented` shows
    the key as a comment, for keys that only override a derived value.
    """

    table: str
    name: str
    kind: Kind
    default: TomlValue | None
    comment: str = ""  # lines above the key in the example file; indentation is dedented
    note: str = ""  # a short comment at the end of the key's line
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    check: Check | None = None
    example: TomlValue | None = None
    commented: bool = False

    def __post_init__(self) -> None:
        # A limit the reader would ignore is a mistake in the table: say so at import.
        if self.choices and self.kind is not Kind.TEXT:
            raise ValueError(f"{self.key}: choices are for TEXT options")
        if self.minimum is not None and self.kind not in (Kind.SECONDS, Kind.COUNT):
            raise ValueError(f"{self.key}: a minimum is for SECONDS and COUNT options")
        if self.check is not None and self.kind not in (Kind.TEXT, Kind.STRINGS):
            raise ValueError(f"{self.key}: checks are for TEXT and STRINGS options")

    @property
    def key(self) -> str:
        return f"{self.table}.{self.name}"

    @property
    def shown(self) -> TomlValue | None:
        """The value the example file shows."""
        return self.default if self.example is None else self.example


class Section:
    """One table's values after `read`: each option's value, or its default where the file
    lacks it or gives a wrong one. `problem` adds a cross-key problem with its key path."""

    def __init__(
        self,
        table: str,
        options: Mapping[str, Option],
        values: Mapping[str, object],
        problems: list[str],
    ) -> None:
        self.table = table
        self._options = options
        self._values = values
        self._problems = problems

    def problem(self, name: str, text: str) -> None:
        self._problems.append(f"{self.table}.{name}: {text}")

    def is_set(self, name: str) -> bool:
        """Whether the file gives the key a valid value (even "")."""
        if name not in self._options:
            raise KeyError(f"{self.table}.{name} is not in the option table")
        return name in self._values

    def _get(self, name: str, kind: Kind) -> object:
        option = self._options[name]
        if option.kind is not kind:
            raise TypeError(f"{option.key} is {option.kind.name}, not {kind.name}")
        if name in self._values:
            return self._values[name]
        return None if option.default is None else _convert(option, option.default)

    def seconds(self, name: str) -> float:
        return cast(float, self._get(name, Kind.SECONDS))

    def count(self, name: str) -> int:
        return cast(int, self._get(name, Kind.COUNT))

    def flag(self, name: str) -> bool:
        return cast(bool, self._get(name, Kind.FLAG))

    def text(self, name: str) -> str:
        return cast(str, self._get(name, Kind.TEXT))

    def strings(self, name: str) -> tuple[str, ...]:
        return cast("tuple[str, ...]", self._get(name, Kind.STRINGS))

    def size(self, name: str) -> int:
        return cast(int, self._get(name, Kind.SIZE))

    def path(self, name: str, base: Path) -> Path | None:
        """The path taken from `base` (the file's folder); None for "" or no default."""
        value = cast("str | None", self._get(name, Kind.PATH))
        return base / Path(value).expanduser() if value else None


def read(
    data: Mapping[str, Any],
    options: Iterable[Option],
    *,
    refused: Mapping[str, str] | None = None,
) -> tuple[dict[str, Section], list[str]]:
    """Check parsed TOML against `options`.

    `refused` maps keys ("table.name") that are known but may not be set to the reason. Returns
    a Section per table and the problems, each "key.path: text"; the Sections add their own
    problems to that same list. Unknown keys are problems, with the closest known name.
    """
    problems: list[str] = []
    tables: dict[str, dict[str, Option]] = {}
    for option in options:
        tables.setdefault(option.table, {})[option.name] = option
    refusals = {tuple(key.split(".", 1)): reason for key, reason in (refused or {}).items()}
    sections: dict[str, Section] = {}
    for table, known in tables.items():
        raw = data.get(table, {})
        wrong = _expected(raw, (dict,), "a table")
        if wrong:
            problems.append(f"{table}: {wrong}")
            raw = {}
        values: dict[str, object] = {}
        for name, value in raw.items():
            if name in known:
                found = _problems(known[name], value)
                problems += [f"{table}.{name}: {text}" for text in found]
                if not found:
                    values[name] = _convert(known[name], value)
            elif (table, name) in refusals:
                problems.append(f"{table}.{name}: {refusals[table, name]}")
            else:
                names = [*known, *(n for t, n in refusals if t == table)]
                problems.append(f"{table}.{name}: {_unknown(name, names)}")
        sections[table] = Section(table, known, values, problems)
    for name in data:
        if name not in tables:
            problems.append(f"{name}: {_unknown(name, tables)}")
    return sections, problems


def _unknown(name: str, known: Iterable[str]) -> str:
    # Typos must not be silently ignored: name the key that was probably meant.
    hint = difflib.get_close_matches(name, sorted(known), n=1)
    return "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else "")


def _expected(value: object, types: tuple[type, ...], what: str) -> str:
    """The "expected ..." problem when `value` is none of `types`, else ""."""
    # bool is an int in Python, but `settle_seconds = true` is a mistake, not 1 second.
    if isinstance(value, bool) and bool not in types:
        return f"expected {what}, got {value!r}"
    if not isinstance(value, types):
        return f"expected {what}, got {type(value).__name__} {value!r}"
    return ""


def _problems(option: Option, value: object) -> list[str]:
    """What is wrong with `value` for `option` ([] when it is fine)."""
    wrong = _expected(value, _TOML_TYPES[option.kind], option.kind.value)
    if wrong:
        return [wrong]
    if option.kind in (Kind.SECONDS, Kind.COUNT):
        number = cast(float, value)
        # `not >=` also refuses nan, which no comparison would ever stop.
        if option.minimum is not None and not number >= option.minimum:
            return [f"must be at least {option.minimum:g}, got {value!r}"]
        if option.kind is Kind.COUNT and not (math.isfinite(number) and number == int(number)):
            return [f"must be a whole number, got {number:g}"]
        return []
    if option.kind is Kind.SIZE:
        if isinstance(value, int):
            return [f"must not be negative, got {value}"] if value < 0 else []
        if value and _SIZE.fullmatch(cast(str, value).strip()) is None:
            return [f'expected a size such as "4 GiB" or "500 GB", got {value!r}']
        return []
    if option.kind is Kind.STRINGS:
        items = cast("list[object]", value)
        if not all(isinstance(item, str) for item in items):
            return ["every item must be a string"]
        return [text for item in items for text in _broken(option.check, cast(str, item))]
    if option.kind is Kind.TEXT:
        if option.choices and value not in option.choices:
            return [f"must be one of {', '.join(map(repr, option.choices))}, got {value!r}"]
        return _broken(option.check, cast(str, value)) if value else []
    return []


def _broken(check: Check | None, value: str) -> list[str]:
    """What `check` finds wrong with `value` ([] when nothing)."""
    if check is Check.REGEX:
        try:
            re.compile(value)
        except re.error as exc:
            return [f"{value!r} is not a valid regular expression: {exc}"]
    elif check is Check.KEYWORD and not KEYWORD.fullmatch(value):
        return [f"{value!r} is not a DICOM keyword such as PatientName"]
    elif check is Check.FILE_NAME and ("/" in value or value in (".", "..")):
        return [f"must be a plain file name such as READY, got {value!r}"]
    elif check is Check.TIME_ZONE and not is_time_zone(value):
        return [not_a_time_zone(value)]
    return []


def not_a_time_zone(value: str) -> str:
    return f"{value!r} is not a time zone name such as Europe/Berlin (IANA's tz database)"


def is_time_zone(name: str) -> bool:
    """Whether `name` has the form of an IANA zone name ("Europe/Berlin", "UTC"). Whether the
    tz database knows it is asked by adapters.configfile: reading the database is I/O."""
    return ZONE_NAME.fullmatch(name) is not None and ".." not in name


def _convert(option: Option, value: object) -> object:
    """A value `_problems` accepted, as the option's Python type (paths stay text)."""
    if option.kind is Kind.SECONDS:
        return float(cast(float, value))
    if option.kind is Kind.COUNT:
        return int(cast(float, value))
    if option.kind is Kind.STRINGS:
        return tuple(cast("list[str]", value))
    if option.kind is Kind.SIZE:
        if isinstance(value, int):
            return value
        match = _SIZE.fullmatch(cast(str, value).strip())
        if match is None:  # "": no limit
            return 0
        number, unit = match.groups()
        return int(float(number) * _SIZE_UNITS[unit.upper() if unit else "B"])
    return value


def render(options: Iterable[Option], header: str) -> str:
    """The example TOML file: `header`, then each table with its keys, comments and values."""
    out = [textwrap.dedent(header).strip("\n") + "\n"]
    tables: dict[str, list[Option]] = {}
    for option in options:
        tables.setdefault(option.table, []).append(option)
    for table, members in tables.items():
        out.append(f"\n[{table}]\n")
        # A comment starts a group; the notes within a group line up.
        groups: list[list[Option]] = []
        for option in members:
            if option.comment or not groups:
                groups.append([])
            groups[-1].append(option)
        for group in groups:
            out += [_comment(line) for line in _lines(group[0].comment)]
            lines = [(_assignment(option), option.note) for option in group]
            width = max((len(line) for line, note in lines if note), default=0)
            out += [
                f"{line.ljust(width)}  # {note}\n" if note else line + "\n" for line, note in lines
            ]
    return "".join(out)


def _lines(comment: str) -> list[str]:
    return textwrap.dedent(comment).strip("\n").splitlines() if comment else []


def _comment(line: str) -> str:
    return f"# {line}".rstrip() + "\n"


def _assignment(option: Option) -> str:
    shown = option.shown
    if shown is None:
        raise ValueError(f"{option.key}: no default and no example to show")
    text = f"{option.name} = {toml_value(shown, len(option.name) + 3)}"
    return "\n".join(f"# {line}" for line in text.splitlines()) if option.commented else text


def toml_value(value: TomlValue, indent: int = 0) -> str:
    """`value` written as TOML; a list too long for one line gets one item per line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    items = [toml_value(item) for item in value]
    one_line = "[" + ", ".join(items) + "]"
    if indent + len(one_line) <= _WIDTH:
        return one_line
    return "[\n" + "".join(f"    {item},\n" for item in items) + "]"
