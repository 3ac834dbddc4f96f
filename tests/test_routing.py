"""routing.route: labels from the folder layout, validated the way XNAT validates them."""

from __future__ import annotations

import pytest

from xnat_drop.config import RoutingConfig
from xnat_drop.model import Target, Violation
from xnat_drop.routing import is_valid_label, route, suggest_label

FULL = RoutingConfig(("project", "subject", "session"), "", "")


def test_full_layout() -> None:
    assert route(("P1", "S01", "S01_MR1"), FULL) == Target("P1", "S01", "S01_MR1")


def test_layout_without_project_uses_the_configured_one() -> None:
    cfg = RoutingConfig(("subject", "session"), "LAB", "")
    assert route(("S01", "S01_MR1"), cfg) == Target("LAB", "S01", "S01_MR1")


def test_flat_layout() -> None:
    cfg = RoutingConfig(("session",), "LAB", "PHANTOM")
    assert route(("QA_2026_11_21",), cfg) == Target("LAB", "PHANTOM", "QA_2026_11_21")


@pytest.mark.parametrize(
    ("relpath", "level", "shown"),
    [
        (("P1", "S 01", "E1"), "subject", "a space"),
        (("P1", "S01", "E1.MR"), "session", "“.”"),
        (("P-ü", "S01", "E1"), "project", "“ü”"),
        (("P1", "S01", "E" * 65), "session", "65 characters"),
    ],
)
def test_bad_labels_are_violations_that_name_the_folder(
    relpath: tuple[str, ...], level: str, shown: str
) -> None:
    result = route(relpath, FULL)
    assert isinstance(result, Violation)
    assert result.rule == "bad-label"
    assert result.subject.startswith(level)
    assert shown in result.sentence
    assert "Rename the folder" in result.sentence


def test_bad_configured_default_blames_the_configuration() -> None:
    result = route(("S01", "E1"), RoutingConfig(("subject", "session"), "my project", ""))
    assert isinstance(result, Violation)
    assert "administrator" in result.sentence


@pytest.mark.parametrize(
    ("label", "valid"),
    [
        ("S01_MR-1", True),
        ("a", True),
        ("", False),
        ("S 1", False),
        ("x" * 64, True),
        ("x" * 65, False),
    ],
)
def test_label_pattern(label: str, valid: bool) -> None:
    assert is_valid_label(label) is valid


def test_suggestion_is_always_valid() -> None:
    for label in ("S 01", "DOE^JOHN", "ü", "a.b/c", "x" * 80):
        assert is_valid_label(suggest_label(label))
    assert suggest_label("S 01.MR") == "S_01_MR"
