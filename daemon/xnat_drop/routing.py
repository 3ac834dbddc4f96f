"""Where a session goes in XNAT: project, subject and session labels. Pure.

First version: labels come from the folder layout below incoming/ (config `routing.layout`),
with config defaults for levels the layout lacks. Labels are never cleaned silently: XNAT would
archive `S 01` as `S_01`, and a lab looking for `S 01` would not find it, so a bad label is a
violation that names the folder and suggests a fix.
"""

from __future__ import annotations

import re

from .config import RoutingConfig
from .model import Policy, Target, Violation

# XNAT's own rule for IDs and labels (xnat-api.md §7), limited to 64 like its routing rules.
LABEL_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NOT_LABEL_CHAR = re.compile(r"[^A-Za-z0-9_-]")


def is_valid_label(label: str) -> bool:
    """True when XNAT stores `label` unchanged as a project ID, subject or session label."""
    return LABEL_PATTERN.fullmatch(label) is not None


def suggest_label(label: str) -> str:
    """A valid label close to `label`: each disallowed character becomes `_` (as XNAT does)."""
    return _NOT_LABEL_CHAR.sub("_", label)[:64] or "_"


def route(relpath: tuple[str, ...], config: RoutingConfig) -> Target | Violation:
    """Labels for the session dropped at `relpath` (parts below incoming/).

    Returns a Target, or a `bad-label` Violation naming the first folder that cannot be a label.
    """
    by_level = dict(zip(config.layout, relpath[-len(config.layout) :], strict=True))
    labels = {
        "project": by_level.get("project", config.project),
        "subject": by_level.get("subject", config.subject),
        "session": by_level["session"],
    }
    for level in ("project", "subject", "session"):
        label = labels[level]
        if not is_valid_label(label):
            return _bad_label(level, label, from_folder=level in by_level)
    return Target(labels["project"], labels["subject"], labels["session"])


def _bad_label(level: str, label: str, *, from_folder: bool) -> Violation:
    what = "project ID" if level == "project" else f"{level} label"
    if len(label) > 64:
        why = f"it has {len(label)} characters, at most 64 are allowed"
    else:
        bad = sorted(set(_NOT_LABEL_CHAR.findall(label)))
        shown = ", ".join("a space" if c == " " else f"“{c}”" for c in bad)
        why = f"it contains {shown}" if bad else "it is empty"
    rule = "XNAT allows only letters A-Z, digits, “_” and “-”"
    if from_folder:
        sentence = (
            f"The folder name “{label}” cannot be used as the XNAT {what}: {why}. {rule}. "
            f"Rename the folder (for example to “{suggest_label(label)}”) and drop it again."
        )
    else:
        sentence = (
            f"The configured {what} “{label}” is not valid for XNAT: {why}. {rule}. "
            "Ask the administrator to fix routing in the xnat-drop configuration."
        )
    return Violation("bad-label", Policy.REJECT, f"{level} “{label}”", sentence)
