"""The configuration as frozen dataclasses, and `parse`, which builds them from parsed TOML.

Every problem is collected and reported at once, each with its key path, so an operator fixes
the file in one go. Pure: adapters/configfile.py reads the file.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from xnat_drop.core.errors import ConfigError
from xnat_drop.core.model import Policy

DEFAULT_PATH = Path("/etc/xnat-drop/config.toml")
LABELS = ("project", "subject", "session")
ANY_LEVEL = "*"  # a folder level whose name is not a label (e.g. a date folder)
ROUTING_SOURCES = ("layout", "dicom", "template", "default")
OBSERVERS = ("inotify", "polling")
# Rules whose offending files can be left out of an upload instead of rejecting the session.
EXCLUDABLE_RULES = ("nifti", "derived-series", "non-dicom", "unreadable-dicom")
# Rules that always reject: a policy key for them is refused with this explanation.
REJECT_ONLY_RULES = (
    "mixed-studies",
    "no-dicom",
    "duplicate-instance",
    "unsafe-file",
    "bad-label",
    "size-limit",
)
LOG_LEVELS = ("debug", "info", "warning", "error")
# Anchored, because GE and Philips often leave derived images unmarked and a bare "FA" would
# also match "FAT_SAT" (dicom-notes.md §1). Searched case-insensitively in SeriesDescription.
DEFAULT_DESCRIPTION_PATTERNS = (
    r"_ADC$",
    r"_FA$",
    r"_ColFA$",
    r"_TRACEW$",
    r"_TENSOR$",
    r"MoCoSeries",
    r"_MPR_(cor|sag|tra)$",
    r"_MIP_(cor|sag|tra)$",
)
DEFAULT_KEEP_TOKENS = ("UNI",)  # MP2RAGE's uniform image: DERIVED\PRIMARY\M\ND\UNI
DEFAULT_KEEP_PATTERNS = (r"_UNI_Images$",)
DEFAULT_PHI_TAGS = (
    "PatientName",
    "PatientBirthDate",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "OtherPatientNames",
    "PatientMotherBirthName",
)
_KEYWORD = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?", re.IGNORECASE)
_SIZE_UNITS = {
    "B": 1,
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40,
}  # fmt: skip
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True, slots=True)
class PathsConfig:
    incoming: Path
    done: Path
    failed: Path
    work: Path
    state: Path


@dataclass(frozen=True, slots=True)
class WatchConfig:
    observer: str
    poll_interval: float
    rescan_interval: float
    settle: float
    ready_marker: str = ""  # a file that must exist in a session before it is taken
    max_settle: float = 6 * 3600.0  # a folder still changing after this raises an alarm


DESTINATIONS = ("prearchive", "archive")
ON_EXISTING = ("reject", "append", "replace")
# xnat.ca_bundle value for the CA bundle of the certifi package (what requests ships with).
CERTIFI: Final = "certifi"


@dataclass(frozen=True, slots=True)
class XnatConfig:
    url: str
    secret_file: Path | None
    verify_tls: bool
    ca_bundle: Path | Literal["certifi"] | None  # None: the system's CA store
    connect_timeout: float
    read_timeout: float
    destination: str = "prearchive"  # built, verified, left READY; "archive": then committed
    on_existing: str = "reject"  # the session already exists in XNAT: reject, append or replace


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """Where labels come from: per label, the first source in `order` that gives a value.

    `layout` names the folder levels below incoming/ ("project", "subject", "session" or "*"
    for a level that is not a label); the deepest level is the session folder. `defaults` and
    `templates` are (project, subject, session) triples; templates hold `{DicomKeyword}`s.
    """

    layout: tuple[str, ...]
    order: tuple[str, ...] = ROUTING_SOURCES
    defaults: tuple[str, str, str] = ("", "", "")
    templates: tuple[str, str, str] = ("", "", "")
    sanitize_labels: bool = False

    def default(self, label: str) -> str:
        return self.defaults[LABELS.index(label)]

    def template(self, label: str) -> str:
        return self.templates[LABELS.index(label)]

    @property
    def dicom_keywords(self) -> tuple[str, ...]:
        """The DICOM attributes routing reads: the comment fields and the templates' keywords."""
        keywords: list[str] = []
        if "dicom" in self.order:
            keywords += [
                "PatientComments",
                "StudyComments",
                "AdditionalPatientHistory",
                "StudyDescription",
            ]
        if "template" in self.order:
            keywords += [k for t in self.templates for k in template_keywords(t)]
        return tuple(dict.fromkeys(keywords))


@dataclass(frozen=True, slots=True)
class RulesConfig:
    """The upload rules' settings; `policy()` gives each rule's policy (reject by default)."""

    policies: tuple[tuple[str, Policy], ...]
    extra_derived_markers: tuple[str, ...] = ()
    description_patterns: tuple[str, ...] = DEFAULT_DESCRIPTION_PATTERNS
    keep_image_type_tokens: tuple[str, ...] = DEFAULT_KEEP_TOKENS
    keep_description_patterns: tuple[str, ...] = DEFAULT_KEEP_PATTERNS
    phi: bool = False
    phi_tags: tuple[str, ...] = DEFAULT_PHI_TAGS
    max_file_bytes: int = 0  # 0: no limit
    max_session_bytes: int = 0

    def policy(self, rule: str) -> Policy:
        """The policy for `rule`; rules without a setting always reject."""
        return dict(self.policies).get(rule, Policy.REJECT)

    @property
    def dicom_keywords(self) -> tuple[str, ...]:
        """The DICOM attributes the rules read beyond the fixed header fields."""
        return self.phi_tags if self.phi else ()


def template_keywords(template: str) -> tuple[str, ...]:
    """The `{Keyword}` placeholders of a routing template, in order."""
    return tuple(_PLACEHOLDER.findall(template))


@dataclass(frozen=True, slots=True)
class RetryConfig:
    first_delay: float
    max_delay: float
    max_attempts: int = 5  # failures that are not outages, before failed/ with the history


@dataclass(frozen=True, slots=True)
class Config:
    paths: PathsConfig
    watch: WatchConfig
    xnat: XnatConfig
    routing: RoutingConfig
    rules: RulesConfig
    retry: RetryConfig
    log_level: str
    source: str = ""
    stop_timeout: float = 60.0  # SIGTERM: the current step may finish within this, then it is left

    @property
    def dicom_keywords(self) -> tuple[str, ...]:
        """Every extra DICOM attribute that inspection must read for rules and routing."""
        return tuple(dict.fromkeys(self.routing.dicom_keywords + self.rules.dicom_keywords))


DEFAULT_RULES = RulesConfig(tuple((rule, Policy.REJECT) for rule in EXCLUDABLE_RULES))
DEFAULT_ROUTING = RoutingConfig(("project", "subject", "session"))


class _Table:
    """Typed reads from one TOML table, recording problems instead of raising."""

    def __init__(self, data: Mapping[str, Any], path: str, problems: list[str]) -> None:
        self._data = data
        self._path = path
        self._problems = problems
        self._known: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self._path}.{name}" if self._path else name

    def problem(self, name: str, text: str) -> None:
        self._problems.append(f"{self.key(name)}: {text}")

    def has(self, name: str) -> bool:
        self._known.add(name)
        return name in self._data

    def _get(self, name: str, kind: type | tuple[type, ...], what: str) -> Any:
        self._known.add(name)
        if name not in self._data:
            return None
        value = self._data[name]
        # bool is an int in Python, but `settle_seconds = true` is a mistake, not 1 second.
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            self.problem(name, f"expected {what}, got {value!r}")
            return None
        if not isinstance(value, kind):
            self.problem(name, f"expected {what}, got {type(value).__name__} {value!r}")
            return None
        return value

    def text(self, name: str, default: str, choices: tuple[str, ...] = ()) -> str:
        value = self._get(name, str, "a string")
        if value is None:
            return default
        if choices and value not in choices:
            self.problem(name, f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
            return default
        return str(value)

    def seconds(self, name: str, default: float, minimum: float = 0.0) -> float:
        value = self._get(name, (int, float), "a number of seconds")
        if value is None:
            return default
        if value < minimum:
            self.problem(name, f"must be at least {minimum:g}, got {value!r}")
            return default
        return float(value)

    def size(self, name: str) -> int:
        """A size in bytes: a whole number, or text such as "4 GiB" or "500 GB"; "" or 0 is
        "no limit" (0)."""
        value = self._get(name, (int, str), 'a size such as "4 GiB"')
        if value is None or value == "":
            return 0
        if isinstance(value, int):
            if value < 0:
                self.problem(name, f"must not be negative, got {value}")
                return 0
            return value
        match = _SIZE.fullmatch(value.strip())
        if match is None:
            self.problem(name, f'expected a size such as "4 GiB" or "500 GB", got {value!r}')
            return 0
        number, unit = match.groups()
        return int(float(number) * _SIZE_UNITS[unit.upper() if unit else "B"])

    def flag(self, name: str, default: bool) -> bool:
        value = self._get(name, bool, "true or false")
        return default if value is None else bool(value)

    def path(self, name: str, default: Path | None, base: Path) -> Path | None:
        value = self._get(name, str, "a path")
        if value is None:
            return default
        if not value:
            return None
        return base / Path(value).expanduser()

    def strings(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self._get(name, list, "a list of strings")
        if value is None:
            return default
        if not all(isinstance(v, str) for v in value):
            self.problem(name, "every item must be a string")
            return default
        return tuple(value)

    def table(self, name: str) -> _Table:
        value = self._get(name, dict, "a table")
        return _Table(value or {}, self.key(name), self._problems)

    def finish(self) -> None:
        """Report keys nobody asked for: typos must not be silently ignored."""
        for name in self._data:
            if name not in self._known:
                hint = difflib.get_close_matches(name, sorted(self._known), n=1)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                self.problem(name, f"unknown key{extra}")


def parse(
    data: Mapping[str, Any], *, base: Path, env: Mapping[str, str], source: str = ""
) -> Config:
    """Build a Config from parsed TOML.

    Relative paths are taken from `base` (the config file's folder). Raises ConfigError listing
    every problem.
    """
    problems: list[str] = []
    top = _Table(data, "", problems)

    paths = _parse_paths(top.table("paths"), base, env)
    watch = _parse_watch(top.table("watch"))
    xnat = _parse_xnat(top.table("xnat"), base)
    routing = _parse_routing(top.table("routing"))
    rules = _parse_rules(top.table("rules"))
    retry = _parse_retry(top.table("retry"))
    log = top.table("log")
    log_level = log.text("level", "info", LOG_LEVELS)
    log.finish()
    service = top.table("service")
    stop_timeout = service.seconds("stop_timeout_seconds", 60.0, minimum=1.0)
    service.finish()
    top.finish()

    if problems or paths is None or xnat is None:
        raise ConfigError(problems or ["configuration incomplete"], source)
    return Config(paths, watch, xnat, routing, rules, retry, log_level, source, stop_timeout)


def _parse_paths(t: _Table, base: Path, env: Mapping[str, str]) -> PathsConfig | None:
    root = t.path("root", None, base)
    named: dict[str, Path | None] = {}
    for name, folder in (("incoming", "incoming"), ("done", "done"), ("failed", "failed")):
        named[name] = t.path(name, root / folder if root else None, base)
    named["work"] = t.path("work", root / ".work" if root else None, base)
    # systemd's StateDirectory= exports STATE_DIRECTORY; otherwise the FHS place.
    state_default = Path(env.get("STATE_DIRECTORY", "/var/lib/xnat-drop").split(":")[0])
    state = t.path("state_dir", state_default, base) or state_default
    t.finish()
    missing = [name for name, value in named.items() if value is None]
    if missing:
        t.problem("root", f"set paths.root (or all of: {', '.join(missing)})")
        return None
    resolved = {name: value for name, value in named.items() if value is not None}
    if len({p.resolve() for p in resolved.values()}) < len(resolved):
        t.problem("root", "incoming, done, failed and work must be four different folders")
    incoming = resolved["incoming"].resolve()
    for name in ("done", "failed", "work"):
        other = resolved[name].resolve()
        if other.is_relative_to(incoming) or incoming.is_relative_to(other):
            t.problem(name, f"must not overlap incoming ({incoming}): it would be watched")
    return PathsConfig(
        incoming=resolved["incoming"],
        done=resolved["done"],
        failed=resolved["failed"],
        work=resolved["work"],
        state=state,
    )


def _parse_watch(t: _Table) -> WatchConfig:
    observer = t.text("observer", "inotify", OBSERVERS)
    poll = t.seconds("poll_interval_seconds", 5.0, minimum=0.1)
    rescan = t.seconds("rescan_seconds", 60.0, minimum=0.1)
    settle = t.seconds("settle_seconds", 60.0, minimum=0.0)
    marker = t.text("ready_marker", "")
    max_settle = t.seconds("max_settle_seconds", 6 * 3600.0, minimum=1.0)
    t.finish()
    if marker and ("/" in marker or marker in (".", "..")):
        t.problem("ready_marker", f"must be a plain file name such as READY, got {marker!r}")
        marker = ""
    return WatchConfig(observer, poll, rescan, settle, marker, max_settle)


def _parse_xnat(t: _Table, base: Path) -> XnatConfig | None:
    url = t.text("url", "")
    secret = t.path("secret_file", None, base)
    verify = t.flag("verify_tls", True)
    ca_bundle = _parse_ca_bundle(t, base)
    connect = t.seconds("connect_timeout_seconds", 10.0, minimum=0.1)
    read = t.seconds("read_timeout_seconds", 600.0, minimum=1.0)
    plain_http = t.flag("allow_plain_http", False)
    destination = t.text("destination", "prearchive", DESTINATIONS)
    on_existing = t.text("on_existing", "reject", ON_EXISTING)
    t.finish()
    if not url:
        t.problem("url", "required: the XNAT base URL, e.g. https://xnat.example.org")
        return None
    problem = _url_problem(url, plain_http)
    if problem:
        t.problem("url", problem)
    if ca_bundle is not None and not verify:
        t.problem("ca_bundle", "is ignored while verify_tls = false; remove one of them")
    return XnatConfig(
        url.rstrip("/"), secret, verify, ca_bundle, connect, read, destination, on_existing
    )


def _parse_ca_bundle(t: _Table, base: Path) -> Path | Literal["certifi"] | None:
    """xnat.ca_bundle: "" is the system's store (None), "certifi" certifi's, else a PEM file."""
    value = t.text("ca_bundle", "")
    if not value:
        return None
    if value == CERTIFI:
        return CERTIFI
    path = base / Path(value).expanduser()
    if not path.is_file():
        # requests would only find out at the first upload, and then not as a TLS problem.
        t.problem(
            "ca_bundle",
            f'no such file: {path} (give a PEM file of CA certificates, "certifi", '
            'or "" for the system\'s store)',
        )
    return path


def _url_problem(url: str, plain_http: bool) -> str:
    """Why `url` is unusable as an XNAT base URL, or "" when it is fine."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return f"must be an https:// URL with a host name, got {url!r}"
    if parts.username or parts.password:
        return "must not contain credentials; put them in the secret file"
    if parts.query or parts.fragment:
        return "must not contain a query or fragment"
    if parts.scheme == "http" and not plain_http and not _is_loopback(parts.hostname):
        return (
            "plain http:// would send the XNAT password in clear text; use https:// "
            "(or set xnat.allow_plain_http = true for a test server)"
        )
    return ""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parse_routing(t: _Table) -> RoutingConfig:
    layout_text = t.text("layout", "project/subject/session")
    order = t.strings("order", ROUTING_SOURCES)
    defaults = tuple(t.text(label, "") for label in LABELS)
    templates = tuple(t.text(f"{label}_template", "") for label in LABELS)
    sanitize = t.flag("sanitize_labels", False)
    t.finish()
    layout = tuple(part.strip() for part in layout_text.split("/"))
    named = [p for p in layout if p != ANY_LEVEL]
    if any(p not in (*LABELS, ANY_LEVEL) for p in layout) or len(set(named)) != len(named):
        t.problem(
            "layout",
            f"must be levels from {', '.join(LABELS)} or '*' joined by '/', each label at most "
            f"once, got {layout_text!r}",
        )
        layout = ("project", "subject", "session")
    unknown = [s for s in order if s not in ROUTING_SOURCES]
    if unknown or len(set(order)) != len(order) or not order:
        t.problem("order", f"must list sources from {', '.join(ROUTING_SOURCES)}, each once")
        order = ROUTING_SOURCES
    for label, template in zip(LABELS, templates, strict=True):
        for keyword in template_keywords(template):
            if not _KEYWORD.fullmatch(keyword):
                t.problem(
                    f"{label}_template",
                    f"{{{keyword}}} is not a DICOM keyword such as {{PatientID}}",
                )
        if template and not template_keywords(template):
            t.problem(
                f"{label}_template", "has no {DicomKeyword} placeholder; use routing." + label
            )
    config = RoutingConfig(
        layout,
        order,
        (defaults[0], defaults[1], defaults[2]),
        (templates[0], templates[1], templates[2]),
        sanitize,
    )
    for label in LABELS:
        if not _has_source(config, label):
            t.problem(
                label,
                f"no source can give the {label} label: add it to the layout, set routing.{label}, "
                f'set routing.{label}_template, or put "dicom" in routing.order',
            )
    return config


def _has_source(config: RoutingConfig, label: str) -> bool:
    return any(
        (source == "layout" and label in config.layout)
        or (source == "dicom")
        or (source == "template" and config.template(label))
        or (source == "default" and config.default(label))
        for source in config.order
    )


def _parse_rules(t: _Table) -> RulesConfig:
    choices = tuple(p.value for p in Policy)
    policies = [
        (rule, Policy(t.text(rule, Policy.REJECT.value, choices))) for rule in EXCLUDABLE_RULES
    ]
    phi = t.text("phi", "off", ("off", "reject")) == "reject"
    phi_tags = t.strings("phi_tags", DEFAULT_PHI_TAGS)
    markers = t.strings("extra_derived_markers", ())
    patterns = t.strings("derived_description_patterns", DEFAULT_DESCRIPTION_PATTERNS)
    keep_tokens = t.strings("keep_image_types", DEFAULT_KEEP_TOKENS)
    keep_patterns = t.strings("keep_description_patterns", DEFAULT_KEEP_PATTERNS)
    max_file = t.size("max_file_size")
    max_session = t.size("max_session_size")
    for rule in REJECT_ONLY_RULES:
        if t.has(rule):
            t.problem(
                rule, f"this rule always rejects; only {', '.join(EXCLUDABLE_RULES)} can be set"
            )
    t.finish()
    for key, values in (
        ("derived_description_patterns", patterns),
        ("keep_description_patterns", keep_patterns),
    ):
        for pattern in values:
            try:
                re.compile(pattern)
            except re.error as exc:
                t.problem(key, f"{pattern!r} is not a valid regular expression: {exc}")
    for tag in phi_tags:
        if not _KEYWORD.fullmatch(tag):
            t.problem("phi_tags", f"{tag!r} is not a DICOM keyword such as PatientName")
    return RulesConfig(
        tuple(policies),
        tuple(m.upper() for m in markers),
        patterns,
        tuple(k.upper() for k in keep_tokens),
        keep_patterns,
        phi,
        phi_tags,
        max_file,
        max_session,
    )


def _parse_retry(t: _Table) -> RetryConfig:
    first = t.seconds("first_delay_seconds", 30.0, minimum=0.01)
    most = t.seconds("max_delay_seconds", 3600.0, minimum=0.01)
    attempts = t.seconds("max_attempts", 5, minimum=1)
    t.finish()
    if most < first:
        t.problem("max_delay_seconds", "must not be smaller than first_delay_seconds")
    if attempts != int(attempts):
        t.problem("max_attempts", f"must be a whole number, got {attempts:g}")
    return RetryConfig(first, max(first, most), int(attempts))
