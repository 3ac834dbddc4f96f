"""A receiver's routing expressions (``XnatDefaultPerReceiverDicomObjectIdentifier``).

With ``routingExpressionsEnabled`` each of the receiver's project, subject and session
expressions (lines of ``(gggg,eeee):regex[:group][ t:target r:replacement]``,
``ExtractorFromRuleProvider``) is tried before the classic identifier's ``Project:`` comments,
StudyDescription and so on (``identifier.route``). An extractor takes the attribute's first value,
cut to 64 characters, and needs the regex to match it whole (``MatchedPatternExtractor``);
``t:``/``r:`` then apply Java's ``replaceAll``. For the project the first value naming a project
wins; for subject and session the first value found.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydicom.multival import MultiValue

from .dicomheader import PARSE_LOCK, DicomHeader, NotDicomError, read_dataset
from .identifier import route
from .importjob import ImportJob
from .prearchive import Placement
from .scpconfig import DicomReceiver

_RULE = re.compile(r"\(([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})\):(.+?)(?::(\d+))?(?: t:(.*) r:(.*))?")
_JAVA_GROUP = re.compile(r"\$(\d+)")
MAX_LENGTH = 64


@dataclass(frozen=True, slots=True)
class RoutingRule:
    """One parsed expression."""

    tag: int
    pattern: re.Pattern[str]
    group: int
    target: str | None
    replacement: str | None

    def extract(self, value: str | None) -> str | None:
        if not value:
            return None
        match = self.pattern.fullmatch(value[:MAX_LENGTH])
        if match is None:
            return None
        found = match.group(self.group)
        if found is None or self.target is None or self.replacement is None:
            return found
        return re.sub(self.target, _JAVA_GROUP.sub(r"\\g<\1>", self.replacement), found)


def parse_rules(text: str | None) -> tuple[RoutingRule, ...]:
    """Every non-empty line of an expression; raises ValueError as XNAT's parser does."""
    rules = []
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line:
            continue
        match = _RULE.fullmatch(line)
        if match is None:
            raise ValueError(f"Failed to parse routing expression '{line}'")
        rules.append(
            RoutingRule(
                tag=int(match.group(1) + match.group(2), 16),
                pattern=re.compile(match.group(3)),
                group=int(match.group(4) or 1),
                target=match.group(5),
                replacement=match.group(6),
            )
        )
    return tuple(rules)


class ReceiverRouter:
    """``ImportJob.router`` for a receiver with routing expressions enabled."""

    def __init__(self, receiver: DicomReceiver) -> None:
        self.project = parse_rules(receiver.project_routing_expression)
        self.subject = parse_rules(receiver.subject_routing_expression)
        self.session = parse_rules(receiver.session_routing_expression)

    def __call__(self, job: ImportJob, header: DicomHeader, path: Path) -> Placement:
        rules = self.project + self.subject + self.session
        values = _tag_values(path, {rule.tag for rule in rules}) if rules else {}
        params = dict(job.params)
        for rule in self.project:
            found = rule.extract(values.get(rule.tag))
            if found and job.store.project(found) is not None:
                params["PROJECT_ID"] = found
                break
        for key, chosen in (("SUBJECT_ID", self.subject), ("EXPT_LABEL", self.session)):
            for rule in chosen:
                found = rule.extract(values.get(rule.tag))
                if found:
                    params[key] = found
                    break
        return route(replace(job, params=params), header)


def _tag_values(path: Path, tags: set[int]) -> dict[int, str]:
    """The first value of each attribute as text (absent: left out)."""
    found: dict[int, str] = {}
    with PARSE_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dataset = read_dataset(path)
        except NotDicomError:
            return found
        for tag in tags:
            element: Any = dataset.get(tag)
            if element is None or element.VR == "SQ" or element.value in (None, ""):
                continue
            value = element.value
            found[tag] = str(value[0] if isinstance(value, (list, tuple, MultiValue)) else value)
    return found
