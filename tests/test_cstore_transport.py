"""service/cstore.py's decisions that need no receiver: what XNAT's list of receivers says,
which objects a resumed send may skip, and the start-up checks (service/transportcheck.py)."""

from __future__ import annotations

import importlib.util

import pytest

pytest.importorskip("pynetdicom", reason="the cstore extra (pynetdicom) is missing")

from xnat_drop.adapters.xnat.receivercalls import ReceiverRow
from xnat_drop.core.cstore import CStoreConfig
from xnat_drop.core.errors import ReceiverRefusedError, XnatTransientError
from xnat_drop.core.model import FileFacts, FileKind
from xnat_drop.service import cstore, transportcheck

CONFIG = CStoreConfig("127.0.0.1", 8104, "XNAT", "XNAT_DROP")


def test_the_receiver_must_be_listed_enabled_and_not_archive_directly() -> None:
    assert cstore.receiver_problem(CONFIG, None) is None  # XNAT will not list: not checked
    assert cstore.receiver_problem(CONFIG, [ReceiverRow("XNAT", 8104, True)]) is None
    missing = cstore.receiver_problem(CONFIG, [ReceiverRow("OTHER", 8105, True)])
    assert missing is not None and "no DICOM receiver with the AE title XNAT" in missing
    assert "OTHER:8105" in missing and "paused" in missing
    disabled = cstore.receiver_problem(CONFIG, [ReceiverRow("XNAT", 8104, False)])
    assert disabled is not None and "is disabled" in disabled
    direct = [ReceiverRow("XNAT", 8104, True, direct_archive=True)]
    words = cstore.receiver_problem(CONFIG, direct)
    assert words is not None and "archives directly" in words


def test_rules_that_route_past_patient_comments_are_warned_of() -> None:
    plain = [ReceiverRow("XNAT", 8104, True)]
    assert cstore.routing_warnings(CONFIG, plain) == []
    ruled = [ReceiverRow("XNAT", 8104, True, routing_expressions=True)]
    [warning] = cstore.routing_warnings(CONFIG, ruled)
    assert "routing expressions" in warning
    custom = [ReceiverRow("XNAT", 8104, True, identifier="siteIdentifier")]
    assert len(cstore.routing_warnings(CONFIG, custom)) == 1
    other = [ReceiverRow("OTHER", 8104, True, routing_expressions=True)]
    assert cstore.routing_warnings(CONFIG, other) == []  # not the one xnat-drop sends to
    [moved] = cstore.routing_warnings(CONFIG, [ReceiverRow("XNAT", 11112, True)])
    assert "on port 11112, not on cstore.port 8104" in moved


def test_the_order_key_changes_with_any_file_or_its_place() -> None:
    a = FileFacts("1/a.dcm", 10, FileKind.DICOM, stamp=1)
    b = FileFacts("1/b.dcm", 10, FileKind.DICOM, stamp=2)
    key = cstore.order_key([a, b])
    assert key == cstore.order_key((a, b))
    assert key != cstore.order_key([b, a])  # another order: skipping the first is wrong
    assert key != cstore.order_key([a, FileFacts("1/b.dcm", 10, FileKind.DICOM, stamp=3)])
    assert key != cstore.order_key([a])


def test_a_public_address_is_refused_before_each_send_and_at_start() -> None:
    public = CStoreConfig("1.1.1.1")
    with pytest.raises(ReceiverRefusedError, match="not a loopback or private address"):
        transportcheck.address(public)
    [problem] = transportcheck.startup_problems(public)
    assert "allow_remote_plain" in problem
    allowed = CStoreConfig("1.1.1.1", allow_remote_plain=True)
    assert transportcheck.address(allowed) == "1.1.1.1"
    assert transportcheck.startup_problems(allowed) == []
    assert transportcheck.startup_problems(None) == []
    assert transportcheck.address(CONFIG) == "127.0.0.1"


def test_an_unresolvable_host_waits_for_dns_instead_of_stopping_the_service() -> None:
    nowhere = CStoreConfig("no-such-host.invalid")
    assert transportcheck.startup_problems(nowhere) == []
    with pytest.raises(XnatTransientError, match=r"cannot resolve cstore\.host") as caught:
        transportcheck.address(nowhere)
    assert not isinstance(caught.value, ReceiverRefusedError)  # an outage, not the setup's


def test_without_the_cstore_extra_the_service_does_not_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    [problem] = transportcheck.startup_problems(CONFIG)
    assert "needs pynetdicom" in problem and "xnat-drop[cstore]" in problem
