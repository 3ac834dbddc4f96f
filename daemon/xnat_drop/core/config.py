"""The configuration as frozen dataclasses, and `parse`, which builds them from parsed TOML.

Each key is declared once, in the option table of core/options.py, which checks it; the checks
that span keys are here. Every problem is collected and reported at once, each with its key
path, so an operator fixes the file in one go. Pure: adapters/configfile.py reads the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from xnat_drop.core.cstore import AS_IS_KEYWORDS, CStoreConfig, parse_cstore
from xnat_drop.core.errors import ConfigError
from xnat_drop.core.inbox import InboxConfig, parse_inbox
from xnat_drop.core.linkpace import ZipConfig, parse_zip
from xnat_drop.core.model import Policy
from xnat_drop.core.monitoring import (
    MetricsConfig,
    NotifyConfig,
    PageConfig,
    StatusConfig,
    parse_metrics,
    parse_notify,
    parse_page,
    parse_status,
)
from xnat_drop.core.names import resource_label_problem
from xnat_drop.core.options import (
    DEFAULT_DESCRIPTION_PATTERNS,
    DEFAULT_KEEP_PATTERNS,
    DEFAULT_KEEP_TOKENS,
    DEFAULT_PHI_TAGS,
    EXCLUDABLE_RULES,
    OPTIONS,
    REJECT_ONLY_RULES,
    ROUTING_SOURCES,
    IncompleteSeries,
    LogLevel,
    Observer,
    OnConflict,
    RoutingSource,
    SeriesFilterPolicy,
)
from xnat_drop.core.schema import KEYWORD, Section, read
from xnat_drop.core.xnatconfig import XnatConfig, parse_xnat

DEFAULT_PATH = Path("/etc/xnat-drop/config.toml")
LABELS = ("project", "subject", "session")
ANY_LEVEL = "*"  # a folder level whose name is not a label (e.g. a date folder)
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
    """The [watch] table. Defaults here are the option table's (a test keeps them equal)."""

    observer: Observer
    poll_interval: float
    rescan_interval: float
    settle: float
    ready_marker: str = ""  # a file that must exist in a session before it is taken
    max_settle: float = 6 * 3600.0  # a folder still changing after this raises an alarm


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """Where labels come from: per label, the first source in `order` that gives a value.

    `layout` names the folder levels below incoming/ ("project", "subject", "session" or "*"
    for a level that is not a label); the deepest level is the session folder. `defaults` and
    `templates` are (project, subject, session) triples; templates hold `{DicomKeyword}`s.
    """

    layout: tuple[str, ...]
    order: tuple[RoutingSource, ...] = ROUTING_SOURCES
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
    wrong_depth: bool = True  # rules.wrong-depth = "reject": look for wrong-depth drops
    incomplete_series: IncompleteSeries = "reject"  # "accept": series are not counted
    series_import_filter: SeriesFilterPolicy = "exclude"  # XNAT's filter: exclude, reject, off

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
class ResourcesConfig:
    """The [resources] table: session resources in a reserved folder of the session."""

    folder: str = "resources"  # matched ignoring case, directly in the session; "": none
    labels: tuple[str, ...] = ()  # the labels allowed; (): any label XNAT can use
    allow_converted: bool = False  # converted data (NIfTI, ...) may be a resource file
    on_conflict: OnConflict = "reject"  # XNAT holds another file of that name: or "overwrite"


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
    log_level: LogLevel
    source: str = ""
    stop_timeout: float = 60.0  # SIGTERM: the current step may finish within this, then it is left
    time_zone: str = ""  # report.time_zone: an IANA name, or "" for the system's
    resources: ResourcesConfig = ResourcesConfig()
    # Frozen, so one shared default each is safe (ruff cannot see that across modules).
    status: StatusConfig = StatusConfig()  # noqa: RUF009
    page: PageConfig = PageConfig()  # noqa: RUF009
    metrics: MetricsConfig = MetricsConfig()  # noqa: RUF009
    notify: NotifyConfig = NotifyConfig()  # noqa: RUF009
    zip: ZipConfig = ZipConfig()  # noqa: RUF009
    inbox: InboxConfig | None = None  # xnat.transport = "inbox"; None: the zip over HTTP
    cstore: CStoreConfig | None = None  # xnat.transport = "cstore"

    @property
    def dicom_keywords(self) -> tuple[str, ...]:
        """Every extra DICOM attribute that inspection must read for rules and routing."""
        wanted = self.routing.dicom_keywords + self.rules.dicom_keywords
        if self.cstore is not None and self.cstore.routing == "as-is":
            wanted += AS_IS_KEYWORDS  # checked against the target before sending
        return tuple(dict.fromkeys(wanted))


DEFAULT_RULES = RulesConfig(tuple((rule, Policy.REJECT) for rule in EXCLUDABLE_RULES))
DEFAULT_ROUTING = RoutingConfig(("project", "subject", "session"))
DEFAULT_RESOURCES = ResourcesConfig()


# Known keys that may not be set: a policy for a rule that can only reject.
_REFUSED = {
    f"rules.{rule}": f"this rule always rejects; only {', '.join(EXCLUDABLE_RULES)} can be set"
    for rule in REJECT_ONLY_RULES
}


def parse(
    data: Mapping[str, Any], *, base: Path, env: Mapping[str, str], source: str = ""
) -> Config:
    """Build a Config from parsed TOML.

    The option table (core/options.py) checks each key; the checks that span keys follow here.
    Relative paths are taken from `base` (the config file's folder). Raises ConfigError listing
    every problem.
    """
    sections, problems = read(data, OPTIONS, refused=_REFUSED)
    paths = _parse_paths(sections["paths"], base, env)
    watch = _parse_watch(sections["watch"])
    xnat = parse_xnat(sections["xnat"], base)
    routing = _parse_routing(sections["routing"])
    rules = _parse_rules(sections["rules"])
    retry = _parse_retry(sections["retry"])
    resources = _parse_resources(sections["resources"])
    log_level = cast(LogLevel, sections["log"].text("level"))
    stop_timeout = sections["service"].seconds("stop_timeout_seconds")
    time_zone = sections["report"].text("time_zone")
    status = parse_status(sections["status"])
    page = parse_page(sections["page"])
    metrics = parse_metrics(sections["metrics"], base)
    notify = parse_notify(sections["notify"], base)
    packing = parse_zip(sections["zip"])
    transport = sections["xnat"].text("transport")
    inbox = parse_inbox(sections["inbox"], transport, base)
    cstore = parse_cstore(sections["cstore"], transport, sections["xnat"].text("url"))
    if problems or paths is None or xnat is None:
        raise ConfigError(problems or ["configuration incomplete"], source)
    return Config(
        paths,
        watch,
        xnat,
        routing,
        rules,
        retry,
        log_level,
        source,
        stop_timeout,
        time_zone,
        resources,
        status,
        page,
        metrics,
        notify,
        packing,
        inbox,
        cstore,
    )


def _parse_paths(t: Section, base: Path, env: Mapping[str, str]) -> PathsConfig | None:
    root = t.path("root", base)
    named: dict[str, Path | None] = {}
    # A folder left out lies in root; one set to "" is unset, and reported below.
    for name, folder in (
        ("incoming", "incoming"),
        ("done", "done"),
        ("failed", "failed"),
        ("work", ".work"),
    ):
        derived = root / folder if root else None
        named[name] = t.path(name, base) if t.is_set(name) else derived
    # systemd's StateDirectory= exports STATE_DIRECTORY; otherwise the FHS place.
    state_default = Path(env.get("STATE_DIRECTORY", "/var/lib/xnat-drop").split(":")[0])
    state = t.path("state_dir", base) or state_default
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


def _parse_watch(t: Section) -> WatchConfig:
    return WatchConfig(
        cast(Observer, t.text("observer")),  # read() lets only the option's choices through
        t.seconds("poll_interval_seconds"),
        t.seconds("rescan_seconds"),
        t.seconds("settle_seconds"),
        t.text("ready_marker"),
        t.seconds("max_settle_seconds"),
    )


def _parse_routing(t: Section) -> RoutingConfig:
    layout_text = t.text("layout")
    order = t.strings("order")
    defaults = tuple(t.text(label) for label in LABELS)
    templates = tuple(t.text(f"{label}_template") for label in LABELS)
    layout = tuple(part.strip() for part in layout_text.split("/"))
    named = [p for p in layout if p != ANY_LEVEL]
    if any(p not in (*LABELS, ANY_LEVEL) for p in layout) or len(set(named)) != len(named):
        t.problem(
            "layout",
            f"must be levels from {', '.join(LABELS)} or '*' joined by '/', each label at most "
            f"once, got {layout_text!r}",
        )
        layout = ("project", "subject", "session")
    sources = tuple(s for s in order if s in ROUTING_SOURCES)
    if sources != order or len(set(order)) != len(order) or not order:
        t.problem("order", f"must list sources from {', '.join(ROUTING_SOURCES)}, each once")
        sources = ROUTING_SOURCES
    for label, template in zip(LABELS, templates, strict=True):
        for keyword in template_keywords(template):
            if not KEYWORD.fullmatch(keyword):
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
        sources,
        (defaults[0], defaults[1], defaults[2]),
        (templates[0], templates[1], templates[2]),
        t.flag("sanitize_labels"),
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


def _parse_rules(t: Section) -> RulesConfig:
    return RulesConfig(
        tuple((rule, Policy(t.text(rule))) for rule in EXCLUDABLE_RULES),
        tuple(m.upper() for m in t.strings("extra_derived_markers")),
        t.strings("derived_description_patterns"),
        tuple(k.upper() for k in t.strings("keep_image_types")),
        t.strings("keep_description_patterns"),
        t.text("phi") == "reject",
        t.strings("phi_tags"),
        t.size("max_file_size"),
        t.size("max_session_size"),
        wrong_depth=t.text("wrong-depth") == "reject",
        incomplete_series=cast(IncompleteSeries, t.text("incomplete-series")),
        series_import_filter=cast(SeriesFilterPolicy, t.text("series-import-filter")),
    )


def _parse_retry(t: Section) -> RetryConfig:
    first = t.seconds("first_delay_seconds")
    most = t.seconds("max_delay_seconds")
    if most < first:
        t.problem("max_delay_seconds", "must not be smaller than first_delay_seconds")
    return RetryConfig(first, max(first, most), t.count("max_attempts"))


def _parse_resources(t: Section) -> ResourcesConfig:
    labels = t.strings("labels")
    for label in labels:
        problem = resource_label_problem(label)
        if problem:
            t.problem("labels", f"{label!r} {problem}")
    return ResourcesConfig(
        t.text("folder"),
        labels,
        t.flag("allow_converted"),
        cast(OnConflict, t.text("on_conflict")),
    )
