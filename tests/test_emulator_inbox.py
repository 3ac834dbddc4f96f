"""The XNAT stand-in's inbox import handler, over real HTTP (xnat-api-round2.md §4).

One local folder is both views: the stand-in sees ``tmp/inbox`` as its ``inboxPath``
(``/data/xnat/inbox``), so a test writes ``tmp/inbox/P1/S`` and asks for
``/data/xnat/inbox/P1/S``. The sessions are real DICOM files from pydicom's test set.
"""

from __future__ import annotations

import os
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from xnat_standin import Emulator, InboxFault
from xnat_standin.cli import build_parser

from data import STUDY_133, copy_study
from emulator_helpers import IMPORT, PASSWORD, USER, client, h3, upload, zip_bytes

INBOX = "/data/xnat/inbox"
GENERIC = (
    "You must specify a valid path to a file or directory. It must be under the main inbox "
    "directory within a subdirectory whose name matches the ID of a project you have edit "
    "access to."
)
NO_DESTINATION = "You do not have permission to edit the specified destination project."
STUDY_UID = "1.3.6.1.4.1.5962.1.1.0.0.0.1196533885.18148.0.133"
LABELS = {"PROJECT_ID": "P1", "SUBJECT_ID": "S01", "EXPT_LABEL": "S01_MR1"}


def not_an_archive(name: str) -> str:
    return (
        f"User inbox file {name} does not have an archive extension - [.zip, .tgz, .tar, "
        ".tar.gz.].  It will be skipped. The path must be to either a directory or an archive "
        "file."
    )


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    (folder / "P1").mkdir(parents=True)
    return folder


@pytest.fixture
def emu(tmp_path: Path, inbox: Path) -> Iterator[Emulator]:
    users = {USER: PASSWORD, "bob": "bob-pw", "admin": "admin"}
    with Emulator(tmp_path / "xnat", users=users, projects=["P1"], inbox_root=inbox) as emulator:
        emulator.add_project("AUTO", 4)
        (inbox / "AUTO").mkdir()
        yield emulator


@pytest.fixture
def http(emu: Emulator) -> Iterator[requests.Session]:
    with client() as session:
        yield session


def post(
    http: requests.Session, emu: Emulator, path: str | None, **params: str
) -> requests.Response:
    """The inbox POST: no body, no Content-Type."""
    query = {"import-handler": "inbox", **({} if path is None else {"path": path}), **params}
    return http.post(emu.url + IMPORT, params=query, timeout=30)


def queued(http: requests.Session, emu: Emulator, path: str, **params: str) -> int:
    """POST a folder that must be accepted; returns the request id."""
    answer = post(http, emu, path, **{**LABELS, **params})
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/uri-list")
    assert answer.text.startswith("/xapi/dicom/")
    assert answer.text.endswith("\r\n")
    return int(answer.text.strip().rsplit("/", 1)[1])


def request_of(http: requests.Session, emu: Emulator, request_id: int) -> dict[str, object]:
    answer = http.get(f"{emu.url}/xapi/dicom/{request_id}", timeout=30)
    assert answer.status_code == 200, answer.text
    found: dict[str, object] = answer.json()
    return found


def settled(
    http: requests.Session,
    emu: Emulator,
    request_id: int,
    until: tuple[str, ...] = ("Processed", "Failed", "Completed"),
) -> dict[str, object]:
    """Poll ``GET /xapi/dicom/{id}`` until the request has one of the ``until`` statuses."""
    deadline = time.monotonic() + 30
    while True:
        found = request_of(http, emu, request_id)
        if found["status"] in until:
            return found
        assert time.monotonic() < deadline, f"request {request_id} stayed {found['status']}"
        time.sleep(0.05)


def history(emu: Emulator, request_id: int) -> tuple[str, ...]:
    (request,) = [r for r in emu.inbox_requests() if r.id == request_id]
    return request.history


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# -- the synchronous checks, in XNAT's order ------------------------------------------------


def test_no_path_outside_the_inbox_or_missing_is_the_generic_400(
    emu: Emulator, http: requests.Session, inbox: Path, tmp_path: Path
):
    copy_study(inbox / "P1" / "S")
    (tmp_path / "elsewhere").mkdir()
    for path in (
        None,
        "",
        str(tmp_path / "elsewhere"),  # exists here, but not under inboxPath
        f"{INBOX}/../inbox-other/P1/S",  # normalised first: outside
        f"{INBOX}X/P1/S",  # a string prefix, yet no such folder on the server
        f"{INBOX}/P1/missing",
    ):
        answer = post(http, emu, path, **LABELS)
        assert (answer.status_code, h3(answer)) == (400, GENERIC), path
    assert emu.inbox_requests() == []


def test_the_first_folder_must_be_a_project_the_user_can_edit(
    emu: Emulator, http: requests.Session, inbox: Path
):
    emu.add_project("P2", aliases=["ALIAS2"])
    emu.set_project_readers("P2", ["bob"])
    for folder in ("NOPE", "P2", "ALIAS2"):  # unknown; not editable by alice; an alias
        copy_study(inbox / folder / "S")
        answer = post(http, emu, f"{INBOX}/{folder}/S", **LABELS)
        assert (answer.status_code, h3(answer)) == (400, GENERIC), folder
    assert emu.inbox_requests() == []


def test_project_id_must_be_an_editable_project(emu: Emulator, http: requests.Session, inbox: Path):
    emu.add_project("P2")
    emu.set_project_readers("P2", ["bob"])
    copy_study(inbox / "P1" / "S")
    for params in ({"EXPT_LABEL": "E"}, {"PROJECT_ID": "P2"}, {"PROJECT_ID": "NOPE"}):
        answer = post(http, emu, f"{INBOX}/P1/S", **params)
        assert (answer.status_code, h3(answer)) == (400, NO_DESTINATION), params
    # The folder's project is checked before the destination: the generic message wins.
    copy_study(inbox / "NOPE" / "S")
    answer = post(http, emu, f"{INBOX}/NOPE/S", PROJECT_ID="P2")
    assert h3(answer) == GENERIC


def test_a_plain_file_is_refused_with_the_archive_extension_message(
    emu: Emulator, http: requests.Session, inbox: Path
):
    """The daemon's path-mapping canary: only a correct mapping reaches this message."""
    (inbox / "P1" / ".canary-1").write_text("canary")
    (inbox / "P1" / "study.tar.gz").write_bytes(b"not read")  # ".tar.gz." in XNAT's list

    for name in (".canary-1", "study.tar.gz"):
        answer = post(http, emu, f"{INBOX}/P1/{name}", **LABELS)
        assert (answer.status_code, h3(answer)) == (400, not_an_archive(name))
    assert (inbox / "P1" / ".canary-1").read_text() == "canary"
    # Before the file check come the permission checks.
    answer = post(http, emu, f"{INBOX}/P1/.canary-1", PROJECT_ID="NOPE")
    assert h3(answer) == NO_DESTINATION
    assert emu.inbox_requests() == []


def test_an_empty_folder_is_refused(emu: Emulator, http: requests.Session, inbox: Path):
    (inbox / "P1" / "empty").mkdir()
    answer = post(http, emu, f"{INBOX}/P1/empty", **LABELS)
    assert (answer.status_code, h3(answer)) == (
        400,
        "Specified directory does not contain any files.",
    )


def test_an_existing_label_is_a_409(emu: Emulator, http: requests.Session, inbox: Path):
    files = copy_study(inbox / "P1" / "S")
    assert upload(http, emu, zip_bytes((f.name, f.read_bytes()) for f in files)).status_code == 200
    (session,) = emu.prearchive()
    archived = http.post(
        emu.url + "/data/services/archive", params={"src": "/data" + session.uri}, timeout=30
    )
    assert archived.status_code == 200

    answer = post(http, emu, f"{INBOX}/P1/S", **LABELS)
    assert (answer.status_code, h3(answer)) == (
        409,
        "Experiment with that label already exists in that project.",
    )
    answer = post(http, emu, f"{INBOX}/P1/S", PROJECT_ID="P1", session="S01_MR1")
    assert (answer.status_code, h3(answer)) == (409, "Session already exists in that project.")
    experiment_id = emu.archive()[0].id  # an ID counts as well as a label
    answer = post(http, emu, f"{INBOX}/P1/S", PROJECT_ID="P1", EXPT_LABEL=experiment_id)
    assert answer.status_code == 409
    assert emu.inbox_requests() == []


# -- the import --------------------------------------------------------------------------


def test_a_folder_is_imported_and_kept_with_cleanup_false(
    emu: Emulator, http: requests.Session, inbox: Path
):
    copy_study(inbox / "P1" / "S")
    before = tree(inbox / "P1" / "S")

    answer = post(http, emu, f"{INBOX}/P1/S/", cleanupAfterImport="false", **LABELS)
    assert (answer.status_code, answer.text) == (200, "/xapi/dicom/1\r\n")
    found = settled(http, emu, 1)

    assert found["status"] == "Processed"
    assert found["resolution"] is None
    assert found["sessionPath"] == f"{INBOX}/P1/S"  # normalised, as the server sees it
    assert (found["username"], found["cleanupAfterImport"]) == (USER, False)
    assert found["parameters"] == {
        "import-handler": "inbox",
        "path": f"{INBOX}/P1/S/",
        "cleanupAfterImport": "false",
        **LABELS,
    }
    assert {"id", "created", "timestamp", "enabled", "disabled"} <= set(found)
    assert history(emu, 1) == ("Queued", "Accepted", "Importing", "Processed")
    (session,) = emu.prearchive()
    assert (session.project, session.subject, session.folder) == ("P1", "S01", "S01_MR1")
    assert (session.tag, session.status, session.file_count) == (STUDY_UID, "READY", 4)
    assert tree(inbox / "P1" / "S") == before


def test_cleanup_is_the_default_and_deletes_the_folder_as_xnat_does(
    emu: Emulator, http: requests.Session, inbox: Path
):
    """The fidelity test: without cleanupAfterImport=false the imported folder is gone."""
    for name in ("S", "T", "U"):
        copy_study(inbox / "P1" / name)

    settled(http, emu, queued(http, emu, f"{INBOX}/P1/S"))
    settled(
        http, emu, queued(http, emu, f"{INBOX}/P1/T", EXPT_LABEL="T", cleanupAfterImport="TRUE")
    )
    settled(http, emu, queued(http, emu, f"{INBOX}/P1/U", EXPT_LABEL="U", cleanupAfterImport="yes"))

    assert not (inbox / "P1" / "S").exists()
    assert not (inbox / "P1" / "T").exists()
    assert len(list((inbox / "P1" / "U").iterdir())) == 4  # Boolean.valueOf("yes") is false
    assert (inbox / "P1").is_dir()
    assert sorted(s.file_count for s in emu.prearchive()) == [4, 4, 4]


def test_symlinks_are_followed(emu: Emulator, http: requests.Session, inbox: Path, tmp_path: Path):
    outside = tmp_path / "outside"
    copy_study(outside / "series", STUDY_133[1:])
    (single,) = copy_study(outside / "single", STUDY_133[:1])
    session = inbox / "P1" / "S"
    session.mkdir()
    (session / "series").symlink_to(outside / "series", target_is_directory=True)
    (session / "one.dcm").symlink_to(single)
    (session / "loop").symlink_to(session, target_is_directory=True)  # passed over

    found = settled(http, emu, queued(http, emu, f"{INBOX}/P1/S", cleanupAfterImport="false"))

    assert found["status"] == "Processed"
    (prearchived,) = emu.prearchive()
    assert prearchived.file_count == 4
    assert prearchived.scans == {
        "1": ("one.dcm",),  # a link's own name, as GradualDicomImporter names the file
        "2": ("MR2_4950.dcm", "MR2_4981.dcm", "MR2_5011.dcm"),
    }
    assert len(list(outside.rglob("*.dcm"))) == 4


def test_files_that_cannot_be_read_or_imported_are_skipped_silently(
    emu: Emulator, http: requests.Session, inbox: Path
):
    session = inbox / "P1" / "S"
    copy_study(session)
    (session / "notes.txt").write_text("not DICOM")
    (session / "gone.dcm").symlink_to(session / "nowhere.dcm")

    found = settled(http, emu, queued(http, emu, f"{INBOX}/P1/S", cleanupAfterImport="false"))

    assert (found["status"], found["resolution"]) == ("Processed", None)
    assert emu.prearchive()[0].file_count == 4


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file of mode 000")
def test_an_unreadable_file_is_skipped(emu: Emulator, http: requests.Session, inbox: Path):
    session = inbox / "P1" / "S"
    files = copy_study(session)
    files[0].chmod(0)
    try:
        found = settled(http, emu, queued(http, emu, f"{INBOX}/P1/S", cleanupAfterImport="false"))
    finally:
        files[0].chmod(0o644)

    assert found["status"] == "Processed"
    assert emu.prearchive()[0].file_count == 3


def test_no_valid_dicom_fails_with_xnats_words_and_keeps_the_folder(
    emu: Emulator, http: requests.Session, inbox: Path
):
    session = inbox / "P1" / "S"
    session.mkdir()
    (session / "notes.txt").write_text("not DICOM")

    found = settled(http, emu, queued(http, emu, f"{INBOX}/P1/S"))

    assert found["status"] == "Failed"
    assert (
        found["resolution"] == f"No valid DICOM files found for the specified session :{INBOX}/P1/S"
    )
    assert history(emu, 1) == ("Queued", "Accepted", "Importing", "Failed")
    assert (session / "notes.txt").exists()  # no cleanup after a failure
    assert emu.prearchive() == []


def test_objects_go_through_the_series_filters_and_parameters(
    emu: Emulator, http: requests.Session, inbox: Path
):
    emu.set_series_filter("P1", list_text="localizer")
    copy_study(inbox / "P1" / "S")

    found = settled(http, emu, queued(http, emu, f"{INBOX}/P1/S", prevent_auto_commit="true"))

    assert found["status"] == "Processed"
    (session,) = emu.prearchive()
    assert session.scans == {"2": ("MR2_4950.dcm", "MR2_4981.dcm", "MR2_5011.dcm")}
    assert session.prevent_auto_commit is True
    assert session.status == "READY"  # the rebuild ignores prevent_auto_commit


def test_a_site_filter_xnat_cannot_build_fails_the_request(
    emu: Emulator, http: requests.Session, inbox: Path
):
    emu.set_series_filter(None, contents='{"list": "localizer"}')  # no mode: an NPE
    copy_study(inbox / "P1" / "S")

    found = settled(http, emu, queued(http, emu, f"{INBOX}/P1/S"))

    assert found["status"] == "Failed"
    assert found["resolution"] == (
        f"The request to import data located at {INBOX}/P1/S failed due to an exception of "
        "type NullPointerException:\nnull"
    )
    assert (inbox / "P1" / "S").is_dir()


def test_an_auto_archive_project_archives_at_once_and_completes(
    emu: Emulator, http: requests.Session, inbox: Path
):
    copy_study(inbox / "AUTO" / "S")

    request_id = queued(http, emu, f"{INBOX}/AUTO/S", PROJECT_ID="AUTO", prevent_auto_commit="true")
    found = settled(http, emu, request_id, until=("Completed", "Failed"))

    assert found["status"] == "Completed"
    assert found["resolution"] == "/data/archive/projects/AUTO/subjects/S01/experiments/S01_MR1"
    assert history(emu, request_id) == (
        "Queued",
        "Accepted",
        "Importing",
        "Processed",
        "Importing",
        "Completed",
    )
    assert emu.prearchive() == []
    (archived,) = emu.archive()
    assert (archived.project, archived.label, archived.file_count) == ("AUTO", "S01_MR1", 4)


def test_a_refused_archive_fails_the_request(emu: Emulator, http: requests.Session, inbox: Path):
    files = copy_study(inbox / "AUTO" / "S")
    emu.inject_inbox(InboxFault(stuck=True))
    request_id = queued(http, emu, f"{INBOX}/AUTO/S", PROJECT_ID="AUTO")
    # While the request waits, the label is archived for another subject.
    body = zip_bytes((f.name, f.read_bytes()) for f in files)
    assert upload(http, emu, body, PROJECT_ID="AUTO", SUBJECT_ID="OTHER").status_code == 200
    (session,) = emu.prearchive()
    archived = http.post(
        emu.url + "/data/services/archive", params={"src": "/data" + session.uri}, timeout=30
    )
    assert archived.status_code == 200
    emu.clear_inbox_faults()

    found = settled(http, emu, request_id, until=("Completed", "Failed"))

    assert found["status"] == "Failed"
    assert found["resolution"] == (
        "Unable to archive S01_MR1: Invalid modification of session subject via archive "
        "process.: S01_MR1 Already Exists for another Subject"
    )
    assert history(emu, request_id)[-3:] == ("Processed", "Importing", "Failed")
    assert [s.status for s in emu.prearchive()] == ["CONFLICT"]


def test_a_manual_project_stays_processed_for_good(
    emu: Emulator, http: requests.Session, inbox: Path
):
    copy_study(inbox / "P1" / "S")
    request_id = queued(http, emu, f"{INBOX}/P1/S")
    settled(http, emu, request_id)
    time.sleep(0.5)

    assert request_of(http, emu, request_id)["status"] == "Processed"
    active = http.get(emu.url + "/xapi/dicom/list/active", timeout=30).json()
    assert [r["id"] for r in active] == [request_id]
    assert emu.archive() == []


def test_an_archive_file_is_extracted_beside_itself(
    emu: Emulator, http: requests.Session, inbox: Path, tmp_path: Path
):
    files = copy_study(tmp_path / "study")
    with zipfile.ZipFile(inbox / "P1" / "study.v1.ZIP", "w") as archive:
        for file in files:
            archive.write(file, f"dicom/{file.name}")
    with tarfile.open(inbox / "P1" / "other.tgz", "w:gz") as archive:
        for file in files:
            archive.add(file, file.name)
    (inbox / "P1" / "other").mkdir()  # taken: the tgz goes to other_1

    zipped = settled(http, emu, queued(http, emu, f"{INBOX}/P1/study.v1.ZIP"))
    tarred = settled(
        http,
        emu,
        queued(http, emu, f"{INBOX}/P1/other.tgz", EXPT_LABEL="T", cleanupAfterImport="false"),
    )

    assert zipped["sessionPath"] == f"{INBOX}/P1/study"
    assert tarred["sessionPath"] == f"{INBOX}/P1/other_1"
    assert not (inbox / "P1" / "study.v1.ZIP").exists()  # deleted with cleanup, as the folder
    assert not (inbox / "P1" / "study").exists()
    assert (inbox / "P1" / "other.tgz").is_file()
    assert len(list((inbox / "P1" / "other_1").iterdir())) == 4
    assert sorted(s.file_count for s in emu.prearchive()) == [4, 4]


# -- faults --------------------------------------------------------------------------------


def test_a_stuck_request_stays_queued_until_the_fault_is_cleared(
    emu: Emulator, http: requests.Session, inbox: Path
):
    emu.inject_inbox(InboxFault(path=f"{INBOX}/P1/", stuck=True))
    copy_study(inbox / "P1" / "S")
    request_id = queued(http, emu, f"{INBOX}/P1/S")
    time.sleep(0.5)

    assert request_of(http, emu, request_id)["status"] == "Queued"
    assert (inbox / "P1" / "S").is_dir()
    emu.clear_inbox_faults()
    assert settled(http, emu, request_id)["status"] == "Processed"


def test_a_failing_request_fails_with_the_given_resolution(
    emu: Emulator, http: requests.Session, inbox: Path
):
    copy_study(inbox / "P1" / "S")
    control = requests.post(
        emu.url + "/_emulator/inbox-faults", json={"fail": "Broken on purpose"}, timeout=30
    )
    assert control.status_code == 200

    found = settled(http, emu, queued(http, emu, f"{INBOX}/P1/S"))

    assert (found["status"], found["resolution"]) == ("Failed", "Broken on purpose")
    assert (inbox / "P1" / "S").is_dir()
    assert emu.prearchive() == []
    assert emu.state()["inbox"]["faults"] == []  # times=1: taken


def test_a_path_invisible_for_a_while_is_missing_then_found(
    emu: Emulator, http: requests.Session, inbox: Path
):
    emu.inject_inbox(InboxFault(invisible_seconds=1.0))
    copy_study(inbox / "P1" / "S")

    answer = post(http, emu, f"{INBOX}/P1/S", **LABELS)
    assert (answer.status_code, h3(answer)) == (400, GENERIC)
    time.sleep(1.1)
    assert settled(http, emu, queued(http, emu, f"{INBOX}/P1/S"))["status"] == "Processed"


def test_inbox_faults_are_checked():
    for bad in ({}, {"stuck": True, "fail": "x"}, {"path": "relative", "stuck": True}, {"x": 1}):
        with pytest.raises(ValueError):
            InboxFault.from_json(bad)


# -- the request endpoints, the preference, the map ----------------------------------------


def test_requests_are_shown_to_their_owner_and_admins(
    emu: Emulator, http: requests.Session, inbox: Path
):
    copy_study(inbox / "P1" / "S")
    (inbox / "P1" / "E").mkdir()
    (inbox / "P1" / "E" / "x.txt").write_text("x")
    done = settled(http, emu, queued(http, emu, f"{INBOX}/P1/S"))
    failed = settled(http, emu, queued(http, emu, f"{INBOX}/P1/E", EXPT_LABEL="E"))
    assert (done["status"], failed["status"]) == ("Processed", "Failed")

    mine = http.get(emu.url + "/xapi/dicom/list/all", timeout=30).json()
    assert [r["id"] for r in mine] == [1, 2]
    active = http.get(emu.url + "/xapi/dicom/list/active", timeout=30).json()
    assert [r["id"] for r in active] == [1]
    with client("bob", "bob-pw") as bob:
        assert bob.get(emu.url + "/xapi/dicom/list/all", timeout=30).json() == []
        other = bob.get(emu.url + "/xapi/dicom/1", timeout=30)
        assert (other.status_code, other.text) == (404, "")
    with client("admin", "admin") as admin:
        assert [
            r["id"] for r in admin.get(emu.url + "/xapi/dicom/list/all", timeout=30).json()
        ] == [1, 2]
        assert admin.get(emu.url + "/xapi/dicom/2", timeout=30).json()["status"] == "Failed"
    assert http.get(emu.url + "/xapi/dicom/99", timeout=30).status_code == 404
    assert (
        requests.get(emu.url + "/xapi/dicom/1", auth=(USER, "wrong"), timeout=30).status_code == 401
    )


def test_inbox_path_is_readable_by_admins_only(emu: Emulator, http: requests.Session):
    refused = http.get(emu.url + "/xapi/siteConfig/inboxPath", timeout=30)
    assert refused.status_code == 403
    values = http.get(emu.url + "/xapi/siteConfig/values/checksums,inboxPath", timeout=30)
    assert values.status_code == 403
    assert http.get(emu.url + "/xapi/siteConfig/checksums", timeout=30).json() is True
    with client("admin", "admin") as admin:
        assert admin.get(emu.url + "/xapi/siteConfig/inboxPath", timeout=30).text == INBOX
        both = admin.get(emu.url + "/xapi/siteConfig/values/checksums,inboxPath", timeout=30)
        assert both.json() == {"checksums": True, "inboxPath": INBOX}


def test_another_inbox_path_and_a_context_path(tmp_path: Path):
    root = tmp_path / "server-inbox"
    copy_study(root / "P1" / "S")
    with (
        Emulator(
            tmp_path / "xnat",
            users={USER: PASSWORD},
            projects=["P1"],
            inbox_path="/srv/inbox",
            inbox_root=root,
            context_path="/xnat",
        ) as emu,
        client() as http,
    ):
        assert emu.url.endswith("/xnat")
        refused = post(http, emu, f"{INBOX}/P1/S", **LABELS)
        assert (refused.status_code, h3(refused)) == (400, GENERIC)
        answer = post(http, emu, "/srv/inbox/P1/S", **LABELS)
        assert (answer.status_code, answer.text) == (200, "/xnat/xapi/dicom/1\r\n")
        assert settled(http, emu, 1)["sessionPath"] == "/srv/inbox/P1/S"
        outside = http.get(emu.url.removesuffix("/xnat") + "/xapi/dicom/1", timeout=30)
        assert outside.status_code == 404
    assert not (root / "P1" / "S").exists()


def test_the_command_line_sets_the_map():
    args = build_parser().parse_args(["--inbox-root", "/tmp/x", "--inbox-path", "/srv/in"])
    assert (args.inbox_root, args.inbox_path, args.context_path) == (Path("/tmp/x"), "/srv/in", "")
    assert build_parser().parse_args([]).inbox_path == INBOX


def test_the_worker_stops_with_the_stand_in_and_resumes_queued_requests(
    emu: Emulator, http: requests.Session, inbox: Path
):
    emu.inject_inbox(InboxFault(stuck=True))
    copy_study(inbox / "P1" / "S")
    request_id = queued(http, emu, f"{INBOX}/P1/S")
    emu.stop()
    assert not any(t.name == "xnat-emulator-inbox" for t in threading.enumerate())
    emu.clear_inbox_faults()
    time.sleep(0.3)
    assert history(emu, request_id) == ("Queued",)  # nobody works while stopped
    emu.start()
    assert settled(http, emu, request_id)["status"] == "Processed"
