"""The option table (core/options.py): defaults parse, choices and limits hold, the example
file is the table's text, and the Config's defaults and Literal types agree with it."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args, get_type_hints

import pytest

from xnat_drop.core import config as config_mod
from xnat_drop.core import cstore, inbox, linkpace, monitoring, xnatconfig
from xnat_drop.core.config import Config, parse
from xnat_drop.core.errors import ConfigError
from xnat_drop.core.monitoring import NotifyConfig, StatusConfig
from xnat_drop.core.options import OPTIONS, example
from xnat_drop.core.schema import Check, Kind, Option, Section, read, render, toml_value

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

EXAMPLE = Path(__file__).parent.parent / "etc" / "xnat-drop.toml"
MINIMAL: dict[str, dict[str, Any]] = {
    "paths": {"root": "/srv/drop"},
    "xnat": {"url": "https://xnat.example.org"},
    # Read only with xnat.transport = "inbox", which then needs both.
    "inbox": {"root": "/srv/inbox", "server_path": "/data/xnat/inbox"},
}
BASE = Path("/etc/xnat-drop")
REGENERATE = (
    ".venv/bin/python -c 'from xnat_drop.core.options import example; "
    'print(example(), end="")\' > etc/xnat-drop.toml'
)


def with_key(table: str, name: str, value: object) -> dict[str, Any]:
    data = {t: dict(keys) for t, keys in MINIMAL.items()}
    data.setdefault(table, {})[name] = value
    return data


def parsed(data: dict[str, Any]) -> Config:
    return parse(data, base=BASE, env={})


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parsed(data)
    return list(caught.value.problems)


def options(test: Callable[[Option], bool]) -> list[Any]:
    return [pytest.param(o, id=o.key) for o in OPTIONS if test(o)]


# -- the example file ------------------------------------------------------------------------


def test_the_example_file_is_the_tables_text() -> None:
    assert EXAMPLE.read_text() == example(), f"regenerate it: {REGENERATE}"


def test_the_example_names_every_key_in_its_table_with_its_default() -> None:
    text = EXAMPLE.read_text()
    data = tomllib.loads(text)
    for option in OPTIONS:
        if option.commented:
            assert f"# {option.name} = {toml_value(option.shown or '')}" in text, option.key
            assert option.name not in data[option.table], option.key
        else:
            assert data[option.table][option.name] == _as_toml(option.shown), option.key
        if option.example is None:  # the value shown is the default
            assert option.shown == option.default, option.key
        else:  # a placeholder or derived default: the comment above the key says so
            assert _comment_above(option), option.key
    tables = list(dict.fromkeys(o.table for o in OPTIONS))
    assert list(data) == tables


def _as_toml(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def _comment_above(option: Option) -> str:
    group = [o for o in OPTIONS if o.table == option.table]
    before = group[: group.index(option) + 1]
    return next((o.comment for o in reversed(before) if o.comment), "")


def test_the_example_with_real_folders_passes_check_config(tmp_path: Path) -> None:
    (tmp_path / "drop").mkdir(mode=0o750)
    (tmp_path / "state").mkdir(mode=0o750)
    secret = tmp_path / "secret"
    secret.write_text("alice:pw\n")
    secret.chmod(0o600)
    config = tmp_path / "config.toml"
    config.write_text(
        example()
        .replace('"/srv/xnat-drop', f'"{tmp_path}/drop')
        .replace('"/var/lib/xnat-drop"', f'"{tmp_path}/state"')
        .replace('"/etc/xnat-drop/xnat-secret"', f'"{secret}"')
    )
    result = subprocess.run(
        [sys.executable, "-m", "xnat_drop", "check-config", "--offline", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


# -- defaults, choices, limits ----------------------------------------------------------------


@pytest.mark.parametrize(
    "option", options(lambda o: o.default is not None and o.name not in MINIMAL.get(o.table, {}))
)
def test_every_default_parses_to_what_leaving_the_key_out_gives(option: Option) -> None:
    assert parsed(with_key(option.table, option.name, option.default)) == parsed(MINIMAL)


@pytest.mark.parametrize("option", options(lambda o: o.example is not None))
def test_every_example_value_parses(option: Option) -> None:
    parsed(with_key(option.table, option.name, option.example))


# How a Config shows each option that has choices: every choice must come through as itself.
READ_BACK: dict[str, Callable[[Config], str]] = {
    "watch.observer": lambda c: c.watch.observer,
    "xnat.destination": lambda c: c.xnat.destination,
    "xnat.on_existing": lambda c: c.xnat.on_existing,
    "log.level": lambda c: c.log_level,
    "rules.phi": lambda c: "reject" if c.rules.phi else "off",
    "rules.wrong-depth": lambda c: "reject" if c.rules.wrong_depth else "off",
    "rules.incomplete-series": lambda c: c.rules.incomplete_series,
    "rules.series-import-filter": lambda c: c.rules.series_import_filter,
    "resources.on_conflict": lambda c: c.resources.on_conflict,
    "status.share": lambda c: c.status.share,
    "notify.smtp_security": lambda c: c.notify.smtp_security,
    "notify.webhook": lambda c: c.notify.webhook,
    "zip.compression": lambda c: c.zip.compression,
    "xnat.transport": lambda c: "inbox" if c.inbox else ("cstore" if c.cstore else "import"),
    "inbox.link": lambda c: c.inbox.link if c.inbox else "",
    "cstore.routing": lambda c: c.cstore.routing if c.cstore else "",
    **{
        f"rules.{rule}": (lambda c, rule=rule: c.rules.policy(rule).value)
        for rule in config_mod.EXCLUDABLE_RULES
    },
}


def test_every_option_with_choices_is_read_back() -> None:
    assert sorted(READ_BACK) == sorted(o.key for o in OPTIONS if o.choices)


@pytest.mark.parametrize(
    ("option", "choice"),
    [pytest.param(o, c, id=f"{o.key}={c}") for o in OPTIONS for c in o.choices],
)
def test_every_choice_is_accepted(option: Option, choice: str) -> None:
    data = with_key(option.table, option.name, choice)
    if option.table in ("inbox", "cstore"):  # read only for their transport
        data["xnat"]["transport"] = option.table
    config = parsed(data)
    assert READ_BACK[option.key](config) == choice
    assert type(READ_BACK[option.key](config)) is str  # plain strings, as before the Literals


@pytest.mark.parametrize("option", options(lambda o: bool(o.choices)))
def test_a_value_outside_the_choices_is_refused(option: Option) -> None:
    problems = problems_of(with_key(option.table, option.name, "nonsense"))
    listed = ", ".join(map(repr, option.choices))
    assert problems == [f"{option.key}: must be one of {listed}, got 'nonsense'"]


# The Literal type of each Config field that holds a choice, and the option it comes from.
LITERAL_FIELDS = [
    (config_mod.WatchConfig, "observer", "watch.observer"),
    (xnatconfig.XnatConfig, "destination", "xnat.destination"),
    (xnatconfig.XnatConfig, "on_existing", "xnat.on_existing"),
    (Config, "log_level", "log.level"),
    (config_mod.RulesConfig, "incomplete_series", "rules.incomplete-series"),
    (config_mod.RulesConfig, "series_import_filter", "rules.series-import-filter"),
    (config_mod.ResourcesConfig, "on_conflict", "resources.on_conflict"),
    (StatusConfig, "share", "status.share"),
    (NotifyConfig, "smtp_security", "notify.smtp_security"),
    (NotifyConfig, "webhook", "notify.webhook"),
    (linkpace.ZipConfig, "compression", "zip.compression"),
    (inbox.InboxConfig, "link", "inbox.link"),
    (cstore.CStoreConfig, "routing", "cstore.routing"),
]


@pytest.mark.parametrize(("cls", "field", "key"), LITERAL_FIELDS)
def test_the_configs_literal_types_are_the_tables_choices(cls: type, field: str, key: str) -> None:
    hint = get_type_hints(
        cls,
        {
            **vars(config_mod),
            **vars(monitoring),
            **vars(linkpace),
            **vars(inbox),
            **vars(xnatconfig),
            **vars(cstore),
        },
    )[field]
    assert get_args(hint) == next(o.choices for o in OPTIONS if o.key == key)


@pytest.mark.parametrize("option", options(lambda o: o.minimum is not None))
def test_values_below_the_minimum_are_refused_with_the_key_path(option: Option) -> None:
    assert option.minimum is not None
    below = option.minimum - (1 if option.kind is Kind.COUNT else 0.001)
    problems = problems_of(with_key(option.table, option.name, below))
    assert problems == [f"{option.key}: must be at least {option.minimum:g}, got {below!r}"]
    nan = problems_of(with_key(option.table, option.name, math.nan))
    assert nan == [f"{option.key}: must be at least {option.minimum:g}, got nan"]
    # The minimum itself is fine (with first_delay_seconds low enough for max_delay_seconds).
    data = with_key("retry", "first_delay_seconds", 0.01)
    data.setdefault(option.table, {})[option.name] = option.minimum
    parsed(data)


@pytest.mark.parametrize("option", options(lambda o: True))
def test_a_value_of_the_wrong_type_is_refused_with_the_key_path(option: Option) -> None:
    problems = problems_of(with_key(option.table, option.name, {"a": 1}))
    assert f"{option.key}: expected {option.kind.value}, got dict {{'a': 1}}" in problems


BROKEN = {
    Check.REGEX: "(unclosed",
    Check.KEYWORD: "Patient Name",
    Check.FILE_NAME: "a/b",
    Check.TIME_ZONE: "Europe/../Berlin",  # the form; the tz database: tests/test_config.py
}


@pytest.mark.parametrize("option", options(lambda o: o.check is not None))
def test_every_checked_option_refuses_a_broken_value(option: Option) -> None:
    assert option.check is not None
    broken = BROKEN[option.check]
    value = [broken] if option.kind is Kind.STRINGS else broken
    problems = problems_of(with_key(option.table, option.name, value))
    assert len(problems) == 1 and problems[0].startswith(f"{option.key}: "), problems
    assert repr(broken) in problems[0]


@pytest.mark.parametrize("table", sorted({o.table for o in OPTIONS}))
def test_a_misspelt_key_in_any_table_names_the_key_meant(table: str) -> None:
    name = next(o.name for o in OPTIONS if o.table == table)
    problems = problems_of(with_key(table, name + "x", 1))
    assert f"{table}.{name}x: unknown key (did you mean {name!r}?)" in problems


@pytest.mark.parametrize(
    ("text", "size"),
    [("", 0), (0, 0), (12, 12), ("12", 12), ("1.5 KiB", 1536), ("4 GiB", 4 * 2**30),
     ("500 gb", 500 * 10**9), (" 2MB ", 2 * 10**6)],
)  # fmt: skip
def test_sizes(text: object, size: int) -> None:
    assert parsed(with_key("rules", "max_file_size", text)).rules.max_file_bytes == size


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (-1, "must not be negative, got -1"),
        ("four GiB", 'expected a size such as "4 GiB" or "500 GB", got \'four GiB\''),
        (True, 'expected a size such as "4 GiB", got True'),
    ],
)
def test_bad_sizes(value: object, problem: str) -> None:
    assert problems_of(with_key("rules", "max_session_size", value)) == [
        f"rules.max_session_size: {problem}"
    ]


@pytest.mark.parametrize(
    ("value", "result"), [(3, 3), (3.0, 3), (2.5, "must be a whole number, got 2.5")]
)
def test_max_attempts_is_a_whole_number(value: float, result: int | str) -> None:
    data = with_key("retry", "max_attempts", value)
    if isinstance(result, int):
        assert parsed(data).retry.max_attempts == result
    else:
        assert problems_of(data) == [f"retry.max_attempts: {result}"]


# -- the dataclasses' own defaults -------------------------------------------------------------


def test_the_dataclass_defaults_are_the_tables() -> None:
    """Code and tests build configs without parse: their defaults must be the file's."""
    cfg = parsed(MINIMAL)
    for part in (cfg.watch, cfg.xnat, cfg.routing, cfg.rules, cfg.retry, cfg.resources, cfg):
        required = {
            f.name: getattr(part, f.name)
            for f in dataclasses.fields(part)
            if f.default is dataclasses.MISSING
        }
        assert type(part)(**required) == part, type(part).__name__


# -- the schema machinery ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ['a "quoted" \\ back\\slash', "tab\tand ünïcode", "", True, False, 0, 21600, 0.25,
     (), ("x",), tuple(f"item{i}" for i in range(30))],
)  # fmt: skip
def test_toml_values_read_back(value: Any) -> None:
    assert tomllib.loads(f"key = {toml_value(value)}")["key"] == _as_toml(value)


def test_render_aligns_notes_and_comments_out_overrides() -> None:
    table = [
        Option("t", "a", Kind.TEXT, "x", comment="Two\n  lines.", note="short"),
        Option("t", "longer", Kind.FLAG, False, note="aligned"),
        Option("t", "p", Kind.PATH, None, example="/p", commented=True),
    ]
    assert render(table, "# head") == (
        "# head\n\n[t]\n# Two\n#   lines.\n"
        'a = "x"         # short\nlonger = false  # aligned\n# p = "/p"\n'
    )


def test_a_section_refuses_names_and_kinds_outside_its_table() -> None:
    sections, problems = read({}, OPTIONS)
    watch: Section = sections["watch"]
    assert problems == [] and watch.seconds("settle_seconds") == 60.0
    with pytest.raises(KeyError):
        watch.seconds("settle")
    with pytest.raises(TypeError, match=r"watch\.observer is TEXT, not SECONDS"):
        watch.seconds("observer")


def test_refused_keys_say_why_and_count_for_did_you_mean() -> None:
    _, problems = read(
        {"rules": {"mixed-studies": "exclude", "mixed-studys": "x"}},
        OPTIONS,
        refused={"rules.mixed-studies": "always rejects"},
    )
    assert problems == [
        "rules.mixed-studies: always rejects",
        "rules.mixed-studys: unknown key (did you mean 'mixed-studies'?)",
    ]
