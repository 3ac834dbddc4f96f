"""Where a session goes in XNAT: project, subject and session labels. Pure.

Each label comes from the first source in `routing.order` that gives a value:

- `layout`: the folder names below incoming/ (`routing.layout`);
- `dicom`: XNAT's own convention, `Project: P1 Subject: S01 Session: S01_MR1` in
  PatientComments, StudyComments or AdditionalPatientHistory (xnat-api.md §5.2), or
  `xnat://P1/S01/S01_MR1` in StudyDescription;
- `template`: `routing.<label>_template` over DICOM keywords, e.g. `{PatientID}_{StudyDate}`;
- `default`: `routing.<label>`.

Labels are never cleaned silently: XNAT would archive `S 01` as `S_01`, and a lab looking for
`S 01` would not find it. A bad label is a violation quoting the value, unless the opt-in
`sanitize_labels` maps it the way XNAT does and the mapping is reported.

A label routing took from the headers may be shown (the lab chose that source), but a value
read from the headers that does not become a label (invalid, or files that disagree) is never
quoted (core/noheader.py): the sentence names the source, what is wrong, and the files.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from xnat_drop.core.config import ANY_LEVEL, LABELS, RoutingConfig, template_keywords
from xnat_drop.core.filetable import picked
from xnat_drop.core.model import (
    FileFacts,
    Policy,
    Remedy,
    Route,
    Session,
    Target,
    Violation,
)
from xnat_drop.core.names import assignment
from xnat_drop.core.noheader import FileGroup

# XNAT's own rule for IDs and labels (xnat-api.md §7), limited to 64 like its routing rules.
LABEL_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NOT_LABEL_CHAR = re.compile(r"[^A-Za-z0-9_-]")
# What XNAT's OmUtils.cleanValue turns into "_" at archive time (xnat-api.md §7); other
# characters (accents, quotes, "!") survive it and then fail XNAT's validation.
_XNAT_CLEANED = frozenset("`~@#$%^&*()+=[]{}|\\/?:;',.<> ")
# ContainedAssignmentExtractor: at the start or after whitespace , ; then "Key : value".
_ASSIGNMENT = {label: assignment(label) for label in LABELS}
_XNAT_URL = re.compile(r"xnat://([A-Za-z0-9_-]+)(?:/([A-Za-z0-9_-]+))?(?:/([A-Za-z0-9_-]+))?")
COMMENT_FIELDS = (
    ("PatientComments", "(0010,4000)"),
    ("StudyComments", "(0032,4000)"),
    ("AdditionalPatientHistory", "(0010,21B0)"),
)


def is_valid_label(label: str) -> bool:
    """True when XNAT stores `label` unchanged as a project ID, subject or session label."""
    return LABEL_PATTERN.fullmatch(label) is not None


def suggest_label(label: str) -> str:
    """A valid label close to `label`: each disallowed character becomes `_`."""
    return _NOT_LABEL_CHAR.sub("_", label)[:64] or "_"


def xnat_clean(label: str) -> str:
    """The label as XNAT rewrites it at archive time (characters in its list become `_`)."""
    return "".join("_" if c in _XNAT_CLEANED else c for c in label)


def route(relpath: tuple[str, ...], session: Session, config: RoutingConfig) -> Route:
    """Labels for the session dropped at `relpath` (parts below incoming/)."""
    headers = _with_headers(session)
    folders = _layout_values(relpath, config.layout)
    labels: dict[str, str] = {}
    violations: list[Violation] = []
    notes: list[str] = []
    for label in LABELS:
        found = _first_value(label, config, folders, headers)
        if isinstance(found, Violation):
            violations.append(found)
            continue
        if found is None:
            violations.append(_missing(label, config))
            continue
        value, source = found
        checked = _checked(label, value, source, config.sanitize_labels)
        if isinstance(checked, Violation):
            violations.append(checked)
            continue
        labels[label] = checked
        note = f"{label} “{checked}” from {source}"
        if checked != value:
            was = "" if _from_headers(source) else f"“{value}” "  # never a header's value
            note += f" ({was}sanitised as XNAT would, because routing.sanitize_labels is on)"
        notes.append(note)
    if violations:
        return Route(None, tuple(violations), tuple(notes))
    return Route(Target(labels["project"], labels["subject"], labels["session"]), (), tuple(notes))


def derived_labels(label: str, session: Session, config: RoutingConfig) -> list[tuple[str, str]]:
    """(value, source) for `label` from each source in routing.order that reads the DICOM files
    (the "dicom" convention, a template), for checking a folder name against them (depth.py).

    The source is named in words that never quote a header value; a source that gives nothing,
    or on which the files disagree, is left out.
    """
    headers = _with_headers(session)
    found = []
    for source in config.order:
        if source == "dicom":
            value = _from_dicom(label, headers)
            words = (
                f"the DICOM headers (“{label.title()}:” in the comments or xnat:// in "
                "StudyDescription)"
            )
        elif source == "template" and config.template(label):
            value = _from_template(label, config.template(label), headers)
            words = f"routing.{label}_template “{config.template(label)}”"
        else:
            continue
        if isinstance(value, tuple):
            found.append((value[0], words))
    return found


def _with_headers(session: Session) -> Sequence[FileFacts]:
    """The session's DICOM files whose header was read."""
    return picked(session.files, lambda f: f.header is not None and f.is_dicom)


def _from_headers(source: str) -> bool:
    """True when a label's source (in words) read the DICOM headers."""
    return not (source == "the folder name" or source.startswith("the configuration"))


def _layout_values(relpath: tuple[str, ...], layout: tuple[str, ...]) -> dict[str, str]:
    """Label values from folder names, matching the layout from the deepest level up."""
    values = {}
    for level, name in zip(reversed(layout), reversed(relpath), strict=False):
        if level != ANY_LEVEL:
            values[level] = name
    return values


def _first_value(
    label: str, config: RoutingConfig, folders: dict[str, str], headers: Sequence[FileFacts]
) -> tuple[str, str] | Violation | None:
    """(value, where it came from) from the first source that has one; a Violation when
    the DICOM files disagree; None when no source gives anything."""
    for source in config.order:
        if source == "layout" and label in folders:
            return folders[label], "the folder name"
        if source == "dicom":
            found = _from_dicom(label, headers)
            if found is not None:
                return found
        if source == "template" and config.template(label):
            rendered = _from_template(label, config.template(label), headers)
            if rendered is not None:
                return rendered
        if source == "default" and config.default(label):
            return config.default(label), f"the configuration (routing.{label})"
    return None


def _from_dicom(label: str, files: Sequence[FileFacts]) -> tuple[str, str] | Violation | None:
    for keyword, tag in COMMENT_FIELDS:
        found = _by_value(files, keyword, _ASSIGNMENT[label], 1)
        if len(found) > 1:
            return _disagree(label, f"{keyword} {tag}", found)
        if found:
            return next(iter(found)), f"DICOM {keyword} {tag} (“{label.title()}: …”)"
    index = LABELS.index(label) + 1
    found = _by_value(files, "StudyDescription", _XNAT_URL, index)
    if len(found) > 1:
        return _disagree(label, "StudyDescription (0008,1030)", found)
    if found:
        return next(iter(found)), "DICOM StudyDescription (0008,1030) (xnat://…)"
    return None


def _from_template(
    label: str, template: str, files: Sequence[FileFacts]
) -> tuple[str, str] | Violation | None:
    rendered: dict[str, FileGroup] = {}
    for f in files:
        text = template
        for keyword in template_keywords(template):
            value = _value(f, keyword)
            if not value:
                break
            text = text.replace(f"{{{keyword}}}", value)
        else:
            rendered.setdefault(text, FileGroup()).add(f.path)
    if len(rendered) > 1:
        return _disagree(label, f"routing.{label}_template “{template}”", rendered)
    if rendered:
        return next(iter(rendered)), f"routing.{label}_template “{template}”"
    return None


def _by_value(
    files: Sequence[FileFacts], keyword: str, pattern: re.Pattern[str], group: int
) -> dict[str, FileGroup]:
    """What `pattern`'s `group` finds in each file's `keyword`, mapped to the files that give it
    (each distinct text searched once: a session's files mostly repeat one)."""
    found: dict[str, FileGroup] = {}
    seen: dict[str, str] = {}
    for f in files:
        text = _value(f, keyword)
        if text not in seen:
            match = pattern.search(text)
            seen[text] = (match.group(group) or "") if match else ""
        if seen[text]:
            found.setdefault(seen[text], FileGroup()).add(f.path)
    return found


def _value(facts: FileFacts, keyword: str) -> str:
    return facts.header.value(keyword) if facts.header is not None else ""


def _checked(label: str, value: str, source: str, sanitize: bool) -> str | Violation:
    if is_valid_label(value):
        return value
    if sanitize:
        cleaned = xnat_clean(value)
        if is_valid_label(cleaned):
            return cleaned
    return _bad_label(label, value, source)


def _bad_label(label: str, value: str, source: str) -> Violation:
    what = "project ID" if label == "project" else f"{label} label"
    header = _from_headers(source)
    if len(value) > 64:
        why = f"it has {len(value)} characters, at most 64 are allowed"
    elif header:  # a header's value: not even its characters are shown
        why = "it contains characters XNAT does not allow"
    else:
        bad = sorted(set(_NOT_LABEL_CHAR.findall(value)))
        shown = ", ".join("a space" if c == " " else f"“{c}”" for c in bad)
        why = f"it contains {shown}"
    rule = "XNAT allows only letters A-Z, digits, “_” and “-”"
    remedy = Remedy.RENAME
    if source == "the folder name":
        fix = f"Rename the folder (for example to “{suggest_label(value)}”) and drop it again."
    elif source.startswith("the configuration"):
        fix = "Ask the administrator to fix routing in the xnat-drop configuration."
        remedy = Remedy.ADMIN
    else:
        fix = "Fix the value at the scanner or PACS, or name the session by its folder instead."
        remedy = Remedy.CHOICE
    if header:
        sentence = f"The {what} that {source} gives cannot be the XNAT {what}: {why}. {rule}. {fix}"
        subject = f"{label} from the DICOM headers"
    else:
        sentence = f"“{value}” (from {source}) cannot be the XNAT {what}: {why}. {rule}. {fix}"
        subject = f"{label} “{value}”"
    return Violation("bad-label", Policy.REJECT, subject, sentence, detail=why, remedy=remedy)


def _missing(label: str, config: RoutingConfig) -> Violation:
    tried = ", ".join(_source_words(label, config)) or "no source"
    sentence = (
        f"No {label} label was found (tried: {tried}). Put the session in a folder that names "
        f"the {label}, or ask the administrator to configure where the {label} comes from."
    )
    return Violation(
        "bad-label",
        Policy.REJECT,
        f"{label} (missing)",
        sentence,
        detail=f"tried {tried}",
        remedy=Remedy.CHOICE,
    )


def _source_words(label: str, config: RoutingConfig) -> list[str]:
    words = []
    for source in config.order:
        if source == "layout" and label in config.layout:
            words.append("the folder name")
        elif source == "dicom":
            words.append(
                f"“{label.title()}:” in the DICOM comments and xnat:// in StudyDescription"
            )
        elif source == "template" and config.template(label):
            words.append(f"routing.{label}_template")
        elif source == "default" and config.default(label):
            words.append(f"routing.{label}")
    return words


def _disagree(label: str, where: str, values: dict[str, FileGroup]) -> Violation:
    """The files disagree on a label: `values` maps each value (never shown: it was read from
    the headers) to the files that give it."""
    groups = sorted((g.files() for g in values.values()), key=lambda g: g.first)
    shown = "; ".join(g.listed for g in groups[:5])
    more = f"; and {len(groups) - 5} more" if len(groups) > 5 else ""
    sentence = (
        f"The DICOM files disagree on the {label} label: {where} gives {len(groups)} different "
        f"values, one for each of these: {shown}{more}. One session folder must hold one "
        "session. Split the folder, or name the label by the folder."
    )
    return Violation(
        "bad-label",
        Policy.REJECT,
        f"{label} (ambiguous)",
        sentence,
        detail=f"{where}: {len(groups)} different values",
        remedy=Remedy.SPLIT,
    )
