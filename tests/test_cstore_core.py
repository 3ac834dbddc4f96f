"""core/cstore.py: the routing line, the refusals' words, which hosts plain C-STORE may reach."""

from __future__ import annotations

import pytest

from xnat_drop.core import cstore
from xnat_drop.core.model import Remedy, Target


def test_the_routing_line_names_the_target_and_keeps_it_in_the_prearchive() -> None:
    line = cstore.routing_line(Target("P1", "S01", "S01_MR1"))
    assert line == "Project: P1 Subject: S01 Session: S01_MR1 AA: false"
    assert len(line) <= 10240  # PatientComments is LT


def test_routing_failed_says_where_the_session_probably_is() -> None:
    found = cstore.routing_failed(12, "P1")
    assert found.rule == "routing-failed" and found.remedy is Remedy.ADMIN
    assert found.sentence.startswith(
        "XNAT took all 12 objects but no session appeared in P1; it is probably in the "
        "Unassigned prearchive (administrators only)."
    )


def test_unsupported_names_class_syntax_and_count() -> None:
    found = cstore.unsupported("MR Image Storage", "JPEG 2000 Image Compression", 1)
    assert found.rule == "cstore-unsupported"
    assert "MR Image Storage in JPEG 2000 Image Compression, which 1 file" in found.sentence


@pytest.mark.parametrize(
    ("addresses", "allowed", "refused"),
    [
        (("127.0.0.1",), False, False),
        (("::1",), False, False),
        (("10.1.2.3", "192.168.0.4"), False, False),
        (("fd00::5",), False, False),
        (("fe80::1%eth0",), False, False),
        (("10.1.2.3", "134.76.1.1"), False, True),  # one public address is enough
        (("134.76.1.1",), False, True),
        ((), False, True),
        (("134.76.1.1",), True, False),
    ],
)
def test_plain_c_store_only_to_private_hosts_unless_allowed(
    addresses: tuple[str, ...], allowed: bool, refused: bool
) -> None:
    problem = cstore.plain_problem("xnat.example.org", addresses, allowed)
    assert (problem is not None) == refused
    if problem:
        assert (
            problem.startswith("cstore.host: xnat.example.org (")
            and "allow_remote_plain" in problem
        )
