"""core/cstore.py: the routing line, the refusals' words, which hosts plain C-STORE may reach."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from xnat_drop.core import cstore
from xnat_drop.core.model import DicomHeader, FileFacts, FileKind, Remedy, Target


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


# -- [cstore] --------------------------------------------------------------------------------


def _config(**cstore: object) -> dict[str, dict[str, object]]:
    return {
        "paths": {"root": "/srv/drop"},
        "xnat": {"url": "https://xnat.lab.internal:8443", "transport": "cstore"},
        "cstore": dict(cstore),
    }


def test_the_host_defaults_to_xnat_urls_and_the_rest_to_xnats_default_receiver() -> None:
    from xnat_drop.core.config import parse

    found = parse(_config(), base=Path("/etc/xnat-drop"), env={}).cstore
    assert found == cstore.CStoreConfig("xnat.lab.internal", 8104, "XNAT", "XNAT_DROP")
    other = parse(_config(host="10.0.0.5", called_ae="XNATAD"), base=Path("/"), env={}).cstore
    assert other is not None and (other.host, other.called_ae) == ("10.0.0.5", "XNATAD")


def test_no_cstore_config_for_the_other_transports() -> None:
    from xnat_drop.core.config import parse

    data = _config(called_ae="not checked: not used")
    data["xnat"]["transport"] = "import"
    assert parse(data, base=Path("/"), env={}).cstore is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("called_ae", "SEVENTEEN_CHARS_X"),
        ("calling_ae", "A\\B"),
        ("calling_ae", "   "),
        ("called_ae", ""),
        ("called_ae", "TAB\tTITLE"),
        ("port", 70000),
    ],
)
def test_bad_ae_titles_and_ports_are_refused_with_the_key(key: str, value: object) -> None:
    from xnat_drop.core.config import parse
    from xnat_drop.core.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        parse(_config(**{key: value}), base=Path("/"), env={})
    assert [p.split(":")[0] for p in caught.value.problems] == [f"cstore.{key}"]


def test_sixteen_characters_with_inner_spaces_are_an_ae_title() -> None:
    from xnat_drop.core.config import parse

    found = parse(_config(calling_ae="LAB DROP 16CHARS"), base=Path("/"), env={}).cstore
    assert found is not None and found.calling_ae == "LAB DROP 16CHARS"


# -- cstore.routing = "as-is" ----------------------------------------------------------------


def _file(path: str, **values: str) -> FileFacts:
    header = DicomHeader("1.2.840.10008.5.1.4.1.1.4", "9.1", "1.2.3", "1.2.3.1", 1, "T1", (), "MR")
    return FileFacts(path, 10, FileKind.DICOM, header=replace(header, values=tuple(values.items())))


TARGET = Target("P1", "S01", "S01_MR1")


def test_xnat_reads_the_comment_fields_in_order_then_patient_name_and_id() -> None:
    first = _file(
        "a.dcm",
        PatientComments="Project: P1 Subject: S01",
        StudyComments="Project: P9 Session: S01_MR1 AA: false",
        PatientName="Doe^J",
        PatientID="X",
    )
    assert cstore.headers_route(first) == ("P1", "S01", "S01_MR1", "false")
    bare = _file("b.dcm", AdditionalPatientHistory="project:P1", PatientName="S01", PatientID="E")
    assert cstore.headers_route(bare) == ("P1", "S01", "E", "")


def test_files_that_route_elsewhere_are_named_but_their_values_never_quoted() -> None:
    line = "Project: P1 Subject: S01 Session: S01_MR1"
    good = [_file(f"1/{n}.dcm", PatientComments=line) for n in range(3)]
    assert cstore.unrouted(good, TARGET, auto_archive=False) is None
    stray = _file("2/x.dcm", PatientComments="Project: SECRETPROJ Subject: S01 Session: S01_MR1")
    found = cstore.unrouted([*good, stray], TARGET, auto_archive=False)
    assert found is not None and found.rule == "cstore-unrouted"
    assert "1 file (such as 2/x.dcm) do not name project P1" in found.sentence
    assert "SECRETPROJ" not in found.sentence and "Nothing was sent" in found.sentence


def test_an_auto_archive_project_needs_aa_false_in_the_files_own_headers() -> None:
    line = "Project: P1 Subject: S01 Session: S01_MR1"
    plain = [_file("a.dcm", PatientComments=line)]
    assert cstore.unrouted(plain, TARGET, auto_archive=False) is None
    found = cstore.unrouted(plain, TARGET, auto_archive=True)
    assert found is not None and 'do not say "AA: false"' in found.sentence
    held = [_file("a.dcm", PatientComments=line + " AA: FALSE")]
    assert cstore.unrouted(held, TARGET, auto_archive=True) is None
