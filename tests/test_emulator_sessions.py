"""The XNAT stand-in's prearchive and archive, over real HTTP (xnat-api.md §3.7, §3.9, §6, §7)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from xnat_standin import Emulator, PrearchiveSession

from emulator_helpers import (
    PASSWORD,
    USER,
    Study,
    client,
    h3,
    new_study,
    series_files,
    upload,
    uris,
    zip_bytes,
)

PREARCHIVE_COLUMNS = [
    "project",
    "timestamp",
    "lastmod",
    "uploaded",
    "scan_date",
    "scan_time",
    "subject",
    "folderName",
    "name",
    "tag",
    "status",
    "url",
    "autoarchive",
    "prevent_anon",
    "prevent_auto_commit",
    "SOURCE",
    "VISIT",
    "PROTOCOL",
    "TIMEZONE",
]


def received(
    emulator: Emulator, http: requests.Session, study: Study, *series: int, **params: str
) -> PrearchiveSession:
    """Upload 2 files per series of `study`; returns the prearchive session they went to."""
    files = [item for number in series for item in series_files(study, number, 2)]
    response = upload(http, emulator, zip_bytes(files), **params)
    assert response.status_code == 200, response.text
    (uri,) = uris(response)
    return next(s for s in emulator.prearchive() if "/data" + s.uri == uri)


def commit(
    emulator: Emulator, http: requests.Session, session: PrearchiveSession, **params: str
) -> requests.Response:
    return http.post(
        emulator.url + "/data" + session.uri,
        params={"action": "commit", **params},
        allow_redirects=False,
    )


def json_rows(http: requests.Session, url: str, **params: str) -> list[dict[str, str]]:
    response = http.get(url, params={"format": "json", **params})
    assert response.status_code == 200, response.text
    result: list[dict[str, str]] = response.json()["ResultSet"]["Result"]
    return result


# -- prearchive listing ---------------------------------------------------------------------


def test_prearchive_list_rows_are_all_strings_with_xnat_columns(
    emulator: Emulator, http: requests.Session
):
    study = new_study()
    session = received(emulator, http, study, 1, prevent_auto_commit="true")

    body = http.get(emulator.url + "/data/prearchive/projects/P1", params={"format": "json"}).json()
    assert list(body["ResultSet"]) == ["Result"]  # no totalRecords on prearchive lists
    (row,) = body["ResultSet"]["Result"]
    assert list(row) == PREARCHIVE_COLUMNS
    assert all(isinstance(value, str) for value in row.values())
    assert row["url"] == session.uri
    assert (row["tag"], row["status"], row["prevent_auto_commit"]) == (
        study.uid,
        "RECEIVING",
        "true",
    )
    assert (row["autoarchive"], row["scan_date"]) == ("Manual", "2024-01-05 10:11:12.0")


def test_prearchive_filters(emulator: Emulator, http: requests.Session):
    one, two = new_study(), new_study()
    received(emulator, http, one, 1)
    received(emulator, http, two, 1, PROJECT_ID="NOPE")

    everything = json_rows(http, emulator.url + "/data/prearchive")
    assert {row["project"] for row in everything} == {"P1", "Unassigned"}
    tagged = json_rows(http, emulator.url + "/data/prearchive/projects/P1,Unassigned", tag=two.uid)
    assert [row["project"] for row in tagged] == ["Unassigned"]
    assert http.get(emulator.url + "/data/prearchive/projects/NOPE?format=json").status_code == 404


def test_one_session_and_its_scans_once_built(emulator: Emulator, http: requests.Session):
    session = received(emulator, http, new_study(), 4, 5)
    base = emulator.url + "/data" + session.uri

    (row,) = json_rows(http, base)
    assert row["folderName"] == session.folder
    unbuilt = http.get(base + "/scans/4/resources", params={"format": "json"})
    assert (unbuilt.status_code, h3(unbuilt)) == (404, "Unable to locate prearc resource.")

    built = http.post(base, params={"action": "build"})
    assert (built.status_code, built.text) == (200, "/data" + session.uri)
    assert built.headers["Content-Type"].startswith("text/uri-list")
    assert emulator.prearchive()[0].status == "READY"
    assert [scan["ID"] for scan in json_rows(http, base + "/scans")] == ["4", "5"]
    (resource,) = json_rows(http, base + "/scans/5/resources")
    assert (resource["label"], resource["file_count"]) == ("DICOM", "2")
    assert int(resource["file_size"]) > 0
    assert http.get(base + "/nothing").status_code == 404
    assert (
        http.get(emulator.url + "/data/prearchive/projects/P1/1/2?format=json").status_code == 404
    )


def test_concurrent_uploads_of_one_study_share_one_session(emulator: Emulator):
    study = new_study()
    bodies = [zip_bytes(series_files(study, series, 3)) for series in range(1, 7)]

    def send(body: bytes) -> int:
        with client() as http:
            return upload(http, emulator, body).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        assert list(pool.map(send, bodies)) == [200] * 6
    (session,) = emulator.prearchive()
    assert session.file_count == 18


def test_new_files_reopen_a_ready_session(emulator: Emulator, http: requests.Session):
    study = new_study()
    session = received(emulator, http, study, 1)
    http.post(emulator.url + "/data" + session.uri, params={"action": "build"})
    again = received(emulator, http, study, 2)

    assert again.uri == session.uri
    assert again.status == "RECEIVING"


def test_delete_removes_the_session_and_its_files(emulator: Emulator, http: requests.Session):
    session = received(emulator, http, new_study(), 1)
    folder = emulator.root / "prearchive/P1" / session.timestamp / session.folder
    assert folder.is_dir()

    assert http.delete(emulator.url + "/data" + session.uri).status_code == 200
    assert emulator.prearchive() == []
    assert not folder.exists()


def test_unknown_action_is_refused(emulator: Emulator, http: requests.Session):
    session = received(emulator, http, new_study(), 1)
    response = http.post(emulator.url + "/data" + session.uri, params={"action": "fly"})
    assert (response.status_code, h3(response)) == (
        400,
        f"User {USER} requested an unsupported action on prearchive session: fly",
    )


# -- commit and the archive ------------------------------------------------------------------


def test_commit_without_auto_archive_builds_and_stays(emulator: Emulator, http: requests.Session):
    session = received(emulator, http, new_study(), 1)
    response = commit(emulator, http, session)

    assert (response.status_code, response.text) == (200, "/data" + session.uri)
    assert emulator.prearchive()[0].status == "READY"
    assert emulator.archive() == []


def test_commit_with_aa_archives_and_the_archive_answers_lookups(
    emulator: Emulator, http: requests.Session
):
    study = new_study()
    session = received(emulator, http, study, 4, 5)
    response = commit(emulator, http, session, AA="true")

    assert response.status_code == 301
    assert response.text == "/data/archive/projects/P1/subjects/S01/experiments/S01_MR1"
    assert emulator.prearchive() == []
    (archived,) = emulator.archive()
    assert (archived.id, archived.uid, archived.file_count) == ("XNAT_E00001", study.uid, 4)

    found = json_rows(
        http,
        emulator.url + "/data/projects/P1/experiments",
        UID=study.uid,
        columns="ID,label,UID,subject_label",
    )
    assert found == [
        {
            "ID": "XNAT_E00001",
            "label": "S01_MR1",
            "UID": study.uid,
            "subject_label": "S01",
            "URI": "/data/experiments/XNAT_E00001",
        }
    ]
    assert json_rows(http, emulator.url + "/data/projects/P1/experiments", UID="1.2.3") == []
    everywhere = json_rows(http, emulator.url + "/data/experiments", UID=study.uid)
    assert [row["ID"] for row in everywhere] == ["XNAT_E00001"]

    item = http.get(
        emulator.url + "/data/archive/projects/P1/subjects/S01/experiments/S01_MR1",
        params={"format": "json"},
    ).json()["items"][0]
    assert item["meta"]["xsi:type"] == "xnat:mrSessionData"
    assert (item["data_fields"]["ID"], item["data_fields"]["UID"]) == ("XNAT_E00001", study.uid)
    (scans,) = item["children"]
    assert scans["field"] == "scans/scan"
    assert [scan["data_fields"]["ID"] for scan in scans["items"]] == ["4", "5"]

    listed = json_rows(http, emulator.url + "/data/experiments/XNAT_E00001/scans")
    assert [(scan["ID"], scan["URI"]) for scan in listed] == [
        ("4", "/data/experiments/XNAT_E00001/scans/4"),
        ("5", "/data/experiments/XNAT_E00001/scans/5"),
    ]
    (resource,) = json_rows(http, emulator.url + "/data/experiments/XNAT_E00001/scans/4/resources")
    assert (resource["label"], resource["file_count"]) == ("DICOM", "2")
    files = json_rows(
        http, emulator.url + "/data/experiments/XNAT_E00001/scans/ALL/resources/DICOM/files"
    )
    assert sorted(f["Name"] for f in files) == [
        "004_0001.dcm",
        "004_0002.dcm",
        "005_0001.dcm",
        "005_0002.dcm",
    ]
    assert all(len(f["digest"]) == 32 for f in files)
    download = http.get(emulator.url + files[0]["URI"])
    assert download.status_code == 200
    assert download.content[128:132] == b"DICM"

    subject = http.get(emulator.url + "/data/projects/P1/subjects/S01?format=json").json()
    assert subject["items"][0]["data_fields"]["label"] == "S01"
    assert http.get(emulator.url + "/data/projects/P1/subjects/S02?format=json").status_code == 404
    missing = http.get(emulator.url + "/data/projects/P1/subjects/S01/experiments/X?format=json")
    assert missing.status_code == 404


def test_commit_merges_into_an_existing_session(emulator: Emulator, http: requests.Session):
    study = new_study()
    commit(emulator, http, received(emulator, http, study, 1), AA="true")
    response = commit(emulator, http, received(emulator, http, study, 2), AA="true")

    assert response.status_code == 301
    (archived,) = emulator.archive()
    assert sorted(archived.scans) == ["1", "2"]


@pytest.mark.parametrize(
    ("second", "params", "message"),
    [
        pytest.param(
            {}, {}, "Invalid modification of session UID via archive process.", id="other-study"
        ),
        pytest.param(
            {"same_study": True, "SUBJECT_ID": "S02"},
            {},
            "Invalid modification of session subject via archive process.: S01_MR1 "
            "Already Exists for another Subject",
            id="other-subject",
        ),
        pytest.param(
            {"same_study": True, "same_series": True},
            {},
            "Session already exists with matching files.",
            id="same-files",
        ),
    ],
)
def test_commit_conflicts_fail_with_500_and_mark_the_row(
    emulator: Emulator,
    http: requests.Session,
    second: dict[str, object],
    params: dict[str, str],
    message: str,
):
    first = new_study()
    commit(emulator, http, received(emulator, http, first, 1), AA="true")
    study = first if second.pop("same_study", False) else new_study()
    series = 1 if second.pop("same_series", False) else 2
    session = received(emulator, http, study, series, **{k: str(v) for k, v in second.items()})

    response = commit(emulator, http, session, AA="true", **params)

    assert response.status_code == 500
    assert h3(response) == f"FAILED: Unable to archive S01_MR1: Operation Failed: {message}"
    assert emulator.prearchive()[0].status == "CONFLICT"


def test_overwrite_files_allows_replacing_archived_files(
    emulator: Emulator, http: requests.Session
):
    study = new_study()
    commit(emulator, http, received(emulator, http, study, 1), AA="true")
    response = commit(
        emulator, http, received(emulator, http, study, 1), AA="true", overwrite_files="true"
    )
    assert response.status_code == 301
    assert emulator.archive()[0].file_count == 2


def test_old_servers_report_failed_commits_vaguely(tmp_path: Path):
    with (
        Emulator(
            tmp_path / "x", users={USER: PASSWORD}, projects=["P1"], version="1.8.2"
        ) as emulator,
        client() as http,
    ):
        commit(emulator, http, received(emulator, http, new_study(), 1), AA="true")
        session = received(emulator, http, new_study(), 1)
        response = commit(emulator, http, session, AA="true")
    assert response.status_code == 500
    assert h3(response).endswith("did not return a valid data URI.")


def test_labels_are_cleaned_then_validated_at_archive_time(
    emulator: Emulator, http: requests.Session
):
    cleaned = received(emulator, http, new_study(), 1, EXPT_LABEL="S1.MR 2", SUBJECT_ID="S 1")
    response = commit(emulator, http, cleaned, AA="true")
    assert response.text == "/data/archive/projects/P1/subjects/S_1/experiments/S1_MR_2"

    invalid = received(emulator, http, new_study(), 1, EXPT_LABEL="Séance")
    refused = commit(emulator, http, invalid, AA="true")
    assert refused.status_code == 500
    assert h3(refused).endswith("Identifiers cannot use special characters.")
    assert emulator.prearchive()[0].status == "ERROR"


def test_auto_archive_project_archives_on_commit_even_with_aa_false(
    emulator: Emulator, http: requests.Session
):
    emulator.add_project("AUTO", prearchive_code=4)
    session = received(emulator, http, new_study(), 1, PROJECT_ID="AUTO")
    assert commit(emulator, http, session, AA="false").status_code == 301


def test_services_archive(emulator: Emulator, http: requests.Session):
    session = received(emulator, http, new_study(), 1)
    response = http.post(
        emulator.url + "/data/services/archive", params={"src": session.uri, "overwrite": "append"}
    )
    assert (response.status_code, response.text) == (
        200,
        "/data/archive/projects/P1/subjects/S01/experiments/S01_MR1\r\n",
    )


def test_projects_and_prearchive_codes(emulator: Emulator, http: requests.Session):
    emulator.add_project("AUTO", prearchive_code=5)
    project = http.get(emulator.url + "/data/projects/P1", params={"format": "json"}).json()
    assert project["items"][0]["data_fields"]["ID"] == "P1"
    assert http.get(emulator.url + "/data/projects/AUTO/prearchive_code").text == "5"
    missing = http.get(emulator.url + "/data/projects/NOPE", params={"format": "json"})
    assert (missing.status_code, h3(missing)) == (404, "Unable to find the specified experiment.")
    assert http.get(emulator.url + "/data/nothing/here").status_code == 404


# -- the background auto-builder (§3.9) ---------------------------------------------------------


def wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_idle_sessions_are_built_unless_the_client_said_it_commits(tmp_path: Path):
    with (
        Emulator(
            tmp_path / "x", users={USER: PASSWORD}, projects=["P1"], idle_build_seconds=0.3
        ) as emulator,
        client() as http,
    ):
        emulator.add_project("AUTO", prearchive_code=4)
        plain = received(emulator, http, new_study(), 1)
        held = received(emulator, http, new_study(), 1, prevent_auto_commit="true")
        uploader = received(emulator, http, new_study(), 1, SOURCE="uploader")
        # A partial upload into an auto-archive project gets archived as it is (XNAT does).
        received(emulator, http, new_study(), 1, PROJECT_ID="AUTO")

        wait_for(lambda: len(emulator.archive()) == 1)
        status = {s.uri: s.status for s in emulator.prearchive()}
    assert status == {plain.uri: "READY", held.uri: "RECEIVING", uploader.uri: "RECEIVING"}
    assert emulator.archive()[0].project == "AUTO"
