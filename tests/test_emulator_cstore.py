"""The XNAT stand-in's DICOM receiver (xnat-api-round2.md §5), over loopback.

Real files from pydicom's test set, sent with pynetdicom as the SCU (and with DCMTK's
``storescu`` where it is installed), routed by the ``Project: ...`` line XNAT's default
identifier reads first, PatientComments.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests

pynetdicom = pytest.importorskip("pynetdicom", reason="the cstore extra (pynetdicom) is missing")
from pynetdicom import AE  # noqa: E402
from pynetdicom.association import Association  # noqa: E402

from xnat_standin import DicomReceiver, Emulator, ScpFault  # noqa: E402
from xnat_standin.scpconfig import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES  # noqa: E402

from data import STUDY_133, copy_study  # noqa: E402
from emulator_helpers import PASSWORD, USER, client, upload, zip_bytes  # noqa: E402

ROUTE = "Project: P1 Subject: S01 Session: S01_MR1"
STUDY_UID = "1.3.6.1.4.1.5962.1.1.0.0.0.1196533885.18148.0.133"
DEFLATED = "1.2.840.10008.1.2.1.99"
PRESENTATION_STATE = "1.2.840.10008.5.1.4.1.1.11.1"  # commented out of XNAT's CUIDS


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[Emulator]:
    users = {USER: PASSWORD, "admin": "admin"}
    with Emulator(
        tmp_path / "xnat", users=users, projects=["P1"], dicom_port=0, idle_build_seconds=60
    ) as emulator:
        emulator.add_project("AUTO", 4)
        yield emulator


def routed(tmp_path: Path, comment: str | None, **fields: str) -> list[Path]:
    """STUDY_133 (two series, four files), with PatientComments (and any field) set."""
    files = copy_study(tmp_path / f"study-{time.monotonic_ns()}", STUDY_133)
    for path in files:
        dataset = pydicom.dcmread(path)
        if comment is not None:
            dataset.PatientComments = comment
        for keyword, value in fields.items():
            setattr(dataset, keyword, value)
        dataset.save_as(path)
    return files


def associate(
    emu: Emulator,
    contexts: list[tuple[str, str]],
    *,
    calling: str = "DROP",
    called: str | None = None,
) -> Association:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for sop_class, syntax in dict.fromkeys(contexts):
        ae.add_requested_context(sop_class, [syntax])
    return ae.associate("127.0.0.1", emu.dicom_port, ae_title=called or emu.ae_title)


def contexts_of(files: list[Path]) -> list[tuple[str, str]]:
    found = []
    for path in files:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        found.append((str(dataset.SOPClassUID), str(dataset.file_meta.TransferSyntaxUID)))
    return found


def send(emu: Emulator, files: list[Path], **kwargs: str) -> list[int]:
    """C-STORE every file in one association; returns the statuses (-1: no answer)."""
    assoc = associate(emu, contexts_of(files), **kwargs)
    assert assoc.is_established
    statuses = []
    for path in files:
        answer = assoc.send_c_store(path)
        statuses.append(int(answer.Status) if "Status" in answer else -1)
        if statuses[-1] == -1 or not assoc.is_established:
            break
    if assoc.is_established:
        assoc.release()
    return statuses


def rejection(assoc: Association) -> tuple[int, int, int]:
    primitive = assoc.acceptor.primitive
    assert assoc.is_rejected and primitive is not None
    return (primitive.result, primitive.result_source, primitive.diagnostic)


def wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# -- routing and the prearchive -------------------------------------------------------------


def test_a_clean_session_lands_in_the_prearchive_of_the_project_in_patient_comments(
    emu: Emulator, tmp_path: Path
) -> None:
    assert send(emu, routed(tmp_path, ROUTE)) == [0, 0, 0, 0]
    [session] = emu.prearchive()
    assert (session.project, session.subject, session.folder) == ("P1", "S01", "S01_MR1")
    assert session.tag == STUDY_UID and session.status == "RECEIVING"
    assert session.file_count == 4 and len(session.scans) == 2
    assert emu.archive() == []
    stores = emu.dicom_stores()
    assert [s.stored for s in stores] == [True] * 4
    assert {(s.calling_ae, s.called_ae) for s in stores} == {("DROP", "XNAT")}
    # The negotiated syntax, whole: the files are sent as they are (explicit VR little endian).
    assert {s.transfer_syntax for s in stores} == {"1.2.840.10008.1.2.1"}


def test_the_order_of_the_places_xnat_looks_in(emu: Emulator, tmp_path: Path) -> None:
    """StudyComments after PatientComments; StudyDescription, then AccessionNumber; subject
    from PatientName, session from PatientID when no comment names them."""
    emu.add_project("P2")
    files = routed(tmp_path, "nothing here", StudyComments="Project: P2 Session: FROM_STUDY")
    assert send(emu, files) == [0] * 4
    files = routed(tmp_path, None, StudyDescription="P1", AccessionNumber="P2")
    files = files[:1]
    assert send(emu, files) == [0]
    by_project = {s.project: s for s in emu.prearchive()}
    assert by_project["P2"].folder == "FROM_STUDY"
    header = pydicom.dcmread(files[0])
    assert by_project["P1"].folder == header.PatientID == "98890234"
    assert by_project["P1"].subject == str(header.PatientName).replace("^", "_")


def test_an_unknown_project_goes_to_unassigned(emu: Emulator, tmp_path: Path) -> None:
    assert send(emu, routed(tmp_path, "Project: NOPE Subject: S01 Session: X1")) == [0] * 4
    [session] = emu.prearchive()
    assert (session.project, session.folder) == ("Unassigned", "X1")


def test_aa_false_keeps_an_auto_archive_session_in_the_prearchive(
    tmp_path: Path,
) -> None:
    with Emulator(
        tmp_path / "x", users={USER: PASSWORD}, dicom_port=0, idle_build_seconds=0.4
    ) as emu:
        emu.add_project("AUTO", 4)
        kept = routed(tmp_path, "Project: AUTO Subject: S01 Session: KEPT AA: false")
        assert send(emu, kept) == [0] * 4
        archived = routed(
            tmp_path, "Project: AUTO Subject: S02 Session: GONE", StudyInstanceUID="1.2.3.4"
        )
        assert send(emu, archived) == [0] * 4
        wait_for(lambda: [s.label for s in emu.archive()] == ["GONE"])
        wait_for(lambda: [s.status for s in emu.prearchive()] == ["READY"])
        [session] = emu.prearchive()
        assert (session.project, session.folder, session.file_count) == ("AUTO", "KEPT", 4)
        assert emu.archive()[0].file_count == 4


def test_the_idle_builder_waits_for_the_interval_and_a_build_can_be_asked_at_once(
    emu: Emulator, tmp_path: Path
) -> None:
    assert send(emu, routed(tmp_path, ROUTE)) == [0] * 4
    time.sleep(0.5)
    [session] = emu.prearchive()
    assert session.status == "RECEIVING"  # the interval is a minute here
    with client() as http:
        built = http.post(emu.url + "/data" + session.uri, params={"action": "build"}, timeout=10)
        assert built.status_code == 200, built.text
    assert [s.status for s in emu.prearchive()] == ["READY"]


def test_objects_dropped_by_a_series_filter_are_answered_with_success(
    emu: Emulator, tmp_path: Path
) -> None:
    files = routed(tmp_path, ROUTE)
    descriptions = {str(pydicom.dcmread(path).SeriesDescription) for path in files}
    dropped = sorted(descriptions)[0]
    emu.set_series_filter("P1", mode="blacklist", list_text=f"^{dropped}$")
    assert send(emu, files) == [0] * 4
    [session] = emu.prearchive()
    kept = [s.stored for s in emu.dicom_stores()]
    assert 0 < kept.count(True) < 4 and session.file_count == kept.count(True)


def test_routing_expressions_of_a_receiver_come_before_the_comments(
    emu: Emulator, tmp_path: Path
) -> None:
    emu.add_project("ROUTED")
    emu.set_dicom_receiver(
        DicomReceiver(
            "RULES",
            id=2,
            routing_expressions_enabled=True,
            project_routing_expression="(0008,1030):xnat://(\\w+)/.*\nbroken-looking but unused",
            session_routing_expression="(0010,0020):(\\d+):1 t:^98 r:S",
        )
    )
    # The second project line cannot be parsed: every object fails.
    assert send(emu, routed(tmp_path, ROUTE), called="RULES") == [0xA700] * 4
    assert emu.prearchive() == []
    emu.set_dicom_receiver(
        DicomReceiver(
            "RULES",
            id=2,
            routing_expressions_enabled=True,
            project_routing_expression="(0008,1030):xnat://(\\w+)/.*",
            session_routing_expression="(0010,0020):(\\d+):1 t:^98 r:S",
        )
    )
    files = routed(tmp_path, ROUTE, StudyDescription="xnat://ROUTED/x")
    assert send(emu, files, called="RULES") == [0] * 4
    [session] = emu.prearchive()
    assert (session.project, session.subject, session.folder) == ("ROUTED", "S01", "S890234")


# -- association ----------------------------------------------------------------------------


def test_an_unknown_called_ae_title_is_rejected(emu: Emulator, tmp_path: Path) -> None:
    assoc = associate(emu, contexts_of(routed(tmp_path, ROUTE)), called="WRONG")
    assert rejection(assoc) == (1, 1, 7)
    emu.set_dicom_receiver(DicomReceiver("XNAT", enabled=False))
    assoc = associate(emu, contexts_of(routed(tmp_path, ROUTE)))
    assert rejection(assoc) == (1, 1, 7)
    assert [a.accepted for a in emu.dicom_associations()] == [False, False]


@pytest.mark.parametrize(
    ("whitelist", "admitted"),
    [
        (("OTHER",), False),
        ((), False),
        (("DROP",), True),
        (("127.0.0.0/8",), True),
        (("10.0.0.0/8",), False),
        (("DROP@127.0.0.1",), True),
        (("OTHER@127.0.0.1", "DROP@10.1.1.1"), False),
        (("DROP@not-an-ip",), False),
    ],
)
def test_the_calling_ae_whitelist(
    emu: Emulator, tmp_path: Path, whitelist: tuple[str, ...], admitted: bool
) -> None:
    emu.set_dicom_receiver(DicomReceiver(whitelist_enabled=True, whitelist=whitelist))
    assoc = associate(emu, contexts_of(routed(tmp_path, ROUTE)))
    if admitted:
        assert assoc.is_established
        assoc.release()
    else:
        assert rejection(assoc) == (1, 1, 3)


def test_unsupported_sop_classes_and_deflate_are_rejected_at_negotiation(
    emu: Emulator, tmp_path: Path
) -> None:
    [(mr, explicit)] = set(contexts_of(routed(tmp_path, ROUTE)))
    assoc = associate(emu, [(mr, explicit), (PRESENTATION_STATE, explicit), (mr, DEFLATED)])
    assert assoc.is_established
    results = {(c.abstract_syntax, c.transfer_syntax[0]): c.result for c in assoc.rejected_contexts}
    assoc.release()
    assert results == {(PRESENTATION_STATE, explicit): 3, (mr, DEFLATED): 4}
    assert DEFLATED not in TRANSFER_SYNTAXES and PRESENTATION_STATE not in STORAGE_SOP_CLASSES
    assert "1.2.840.10008.5.1.4.1.1.4" in STORAGE_SOP_CLASSES


def test_c_echo(emu: Emulator) -> None:
    assoc = associate(emu, [("1.2.840.10008.1.1", "1.2.840.10008.1.2")])
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assoc.release()


# -- XNAT's API ---------------------------------------------------------------------------


def test_xapi_dicomscp_lists_the_receivers(emu: Emulator) -> None:
    emu.set_dicom_receiver(DicomReceiver("SECOND", id=2, whitelist_enabled=True, whitelist=("A",)))
    with client() as http:
        answer = http.get(emu.url + "/xapi/dicomscp", timeout=10)
        interval = http.get(emu.url + "/xapi/siteConfig/sessionXmlRebuilderInterval", timeout=10)
        one = http.get(emu.url + "/xapi/dicomscp/1", timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith(
        "application/json"
    )
    first, second = answer.json()
    assert first == {
        "id": 1,
        "aeTitle": "XNAT",
        "port": emu.dicom_port,
        "identifier": "dicomObjectIdentifier",
        "fileNamer": None,
        "enabled": True,
        "customProcessing": False,
        "directArchive": False,
        "anonymizationEnabled": True,
        "whitelistEnabled": False,
        "whitelist": [],
        "routingExpressionsEnabled": False,
        "projectRoutingExpression": None,
        "subjectRoutingExpression": None,
        "sessionRoutingExpression": None,
    }
    assert (second["aeTitle"], second["whitelist"]) == ("SECOND", ["A"])
    assert interval.json() == 1  # minutes, from idle_build_seconds=60
    assert one.status_code == 403  # admins only
    with client("admin", "admin") as http:
        assert http.get(emu.url + "/xapi/dicomscp/2", timeout=10).json()["aeTitle"] == "SECOND"


def test_no_receivers_are_listed_without_a_dicom_port(tmp_path: Path) -> None:
    with Emulator(tmp_path / "x", users={USER: PASSWORD}) as emu, client() as http:
        assert http.get(emu.url + "/xapi/dicomscp", timeout=10).json() == []
        with pytest.raises(RuntimeError):
            _ = emu.dicom_port


def test_control_routes(emu: Emulator) -> None:
    base = emu.url.rsplit("/", 0)[0] + "/_emulator/"
    fault = {"status": 0xA702, "nth": 2}
    assert requests.post(base + "dicom-faults", json=fault, timeout=10).status_code == 200
    receiver = {"aeTitle": "MORE", "id": 3, "whitelistEnabled": True, "whitelist": ["X"]}
    assert requests.post(base + "dicom-receivers", json=receiver, timeout=10).status_code == 200
    state = requests.get(base + "state", timeout=10).json()["dicom"]
    assert state["faults"][0]["status"] == 0xA702
    assert [r["ae_title"] for r in state["receivers"]] == ["XNAT", "MORE"]
    bad = requests.post(base + "dicom-faults", json={"abort": True, "status": 1}, timeout=10)
    assert bad.status_code == 400
    assert requests.delete(base + "dicom-faults", timeout=10).json()["faults"] == []


# -- faults ---------------------------------------------------------------------------------


def test_a_refused_association(emu: Emulator, tmp_path: Path) -> None:
    emu.inject_dicom(ScpFault(refuse=True))
    assoc = associate(emu, contexts_of(routed(tmp_path, ROUTE)))
    assert rejection(assoc) == (2, 3, 2)
    assert send(emu, routed(tmp_path, ROUTE)) == [0] * 4  # once only


def test_a_failure_status_for_the_nth_store(emu: Emulator, tmp_path: Path) -> None:
    emu.inject_dicom(ScpFault(status=0xA700, error_comment="disk full", nth=2))
    assert send(emu, routed(tmp_path, ROUTE)) == [0, 0xA700, 0, 0]
    assert emu.prearchive()[0].file_count == 3
    assert emu.dicom_stores()[1].error_comment == "disk full"


def test_an_abort_after_n_stores(emu: Emulator, tmp_path: Path) -> None:
    emu.inject_dicom(ScpFault(abort=True, nth=3))
    statuses = send(emu, routed(tmp_path, ROUTE))
    assert statuses == [0, 0, -1]  # no answer to the third: the association is gone
    assert emu.prearchive()[0].file_count == 2
    assert [s.aborted for s in emu.dicom_stores()] == [False, False, True]


def test_a_stall(emu: Emulator, tmp_path: Path) -> None:
    emu.inject_dicom(ScpFault(stall=0.6, nth=1))
    started = time.monotonic()
    assert send(emu, routed(tmp_path, ROUTE)) == [0] * 4
    assert time.monotonic() - started >= 0.6
    assert emu.prearchive()[0].file_count == 4


def test_stop_ends_a_stall_and_frees_the_port(tmp_path: Path) -> None:
    emu = Emulator(tmp_path / "x", users={USER: PASSWORD}, projects=["P1"], dicom_port=0)
    emu.start()
    port = emu.dicom_port
    emu.inject_dicom(ScpFault(stall=30))
    files = routed(tmp_path, ROUTE)
    stalled = threading.Thread(target=send, args=(emu, files[:1]), daemon=True)
    stalled.start()
    time.sleep(0.5)
    started = time.monotonic()
    emu.stop()
    stalled.join(15)
    assert time.monotonic() - started < 10 and not stalled.is_alive()
    emu.start()  # the same port again
    try:
        assert emu.dicom_port == port
        assert send(emu, files) == [0] * 4
    finally:
        emu.stop()


# -- DCMTK ----------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("storescu") is None, reason="DCMTK's storescu is not installed")
def test_dcmtk_storescu_routes_as_the_http_import_does(emu: Emulator, tmp_path: Path) -> None:
    files = routed(tmp_path, ROUTE)
    run = subprocess.run(
        ["storescu", "-aet", "STORESCU", "-aec", emu.ae_title, "127.0.0.1", str(emu.dicom_port)]
        + [str(path) for path in files],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    with Emulator(tmp_path / "http", users={USER: PASSWORD}, projects=["P1"]) as other:
        body = zip_bytes((path.name, path.read_bytes()) for path in files)
        with client() as http:
            answer = upload(http, other, body, PROJECT_ID=None, SUBJECT_ID=None, EXPT_LABEL=None)  # type: ignore[arg-type]
        assert answer.status_code == 200, answer.text
        by_http = other.prearchive()
    by_cstore = emu.prearchive()

    def placement(sessions: list) -> list[tuple[object, ...]]:  # type: ignore[type-arg]
        return [
            (s.project, s.subject, s.folder, s.tag, {k: len(v) for k, v in s.scans.items()})
            for s in sessions
        ]

    assert placement(by_cstore) == placement(by_http)
    assert placement(by_cstore)[0][:3] == ("P1", "S01", "S01_MR1")
    assert {s.calling_ae for s in emu.dicom_stores()} == {"STORESCU"}
