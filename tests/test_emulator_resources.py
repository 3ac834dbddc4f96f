"""The XNAT stand-in's session resources, over real HTTP (xnat-api-round2.md §3)."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from xnat_standin import Emulator, Fault

from emulator_helpers import (
    PASSWORD,
    USER,
    client,
    h3,
    new_study,
    series_files,
    upload,
    uris,
    zip_bytes,
)

FILE_COLUMNS = [
    "Name",
    "Size",
    "URI",
    "collection",
    "file_tags",
    "file_format",
    "file_content",
    "cat_ID",
    "digest",
]
RESOURCE_COLUMNS = [
    "xnat_abstractresource_id",
    "label",
    "element_name",
    "category",
    "cat_id",
    "cat_desc",
    "file_count",
    "file_size",
    "tags",
    "content",
    "format",
]
LABEL = "S01_MR1"  # emulator_helpers.ZIP_PARAMS


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def prearchived(emulator: Emulator, http: requests.Session) -> str:
    """One small session in the prearchive (not built); returns its URL (with /data)."""
    response = upload(http, emulator, zip_bytes(series_files(new_study(), 1, 1)))
    assert response.status_code == 200, response.text
    (uri,) = uris(response)
    return emulator.url + uri


def archived(emulator: Emulator, http: requests.Session) -> str:
    """One small archived session; returns ``{url}/data/experiments/{ID}``."""
    session = prearchived(emulator, http)
    committed = http.post(session, params={"action": "commit", "AA": "true"}, allow_redirects=False)
    assert committed.status_code == 301, committed.text
    (experiment,) = emulator.archive()
    return f"{emulator.url}/data/experiments/{experiment.id}"


@pytest.fixture
def session(emulator: Emulator, http: requests.Session) -> str:
    return archived(emulator, http)


def put(http: requests.Session, url: str, data: bytes, **params: str) -> requests.Response:
    return http.put(
        url,
        data=data,
        params={"inbody": "true", **params},
        headers={"Content-Type": "application/octet-stream"},
    )


def rows(http: requests.Session, url: str) -> tuple[list[str], list[dict[str, str]]]:
    """(column names of the first row, rows) of a ResultSet."""
    response = http.get(url, params={"format": "json"})
    assert response.status_code == 200, response.text
    result: list[dict[str, str]] = response.json()["ResultSet"]["Result"]
    return (list(result[0]) if result else []), result


# -- creating resources -----------------------------------------------------------------------


def test_create_answers_409_when_the_resource_exists_on_every_route_form(
    emulator: Emulator, http: requests.Session, session: str
):
    by_label = f"{emulator.url}/data/projects/P1/subjects/S01/experiments/{LABEL}/resources"
    assert http.put(session + "/resources/NOTES", params={"content": "LOGS"}).status_code == 200
    for url in (session + "/resources/NOTES", by_label + "/NOTES"):
        again = http.put(url)
        assert again.status_code == 409
        assert h3(again) == "Specified resource already exists."
    archive_form = by_label.replace("/data/", "/data/archive/") + "/NOTES"
    assert http.post(archive_form).status_code == 409

    columns, listed = rows(http, session + "/resources")
    assert columns == RESOURCE_COLUMNS
    (row,) = listed
    assert (row["label"], row["category"], row["content"], row["file_count"]) == (
        "NOTES",
        "resources",
        "LOGS",
        "0",
    )
    assert all(isinstance(value, str) for value in row.values())
    assert rows(http, by_label)[1] == listed


def test_a_label_with_a_quote_fails_and_digits_also_match_the_resource_id(
    emulator: Emulator, http: requests.Session, session: str
):
    assert put(http, session + "/resources/it's/files/a.txt", b"x").status_code == 500
    assert emulator.session_resources(LABEL) == {}

    assert http.put(session + "/resources/NOTES").status_code == 200
    resource_id = rows(http, session + "/resources")[1][0]["xnat_abstractresource_id"]
    assert resource_id.isdigit()
    assert put(http, f"{session}/resources/{resource_id}/files/a.txt", b"x").status_code == 200
    assert emulator.session_resources(LABEL) == {"NOTES": {"a.txt": b"x"}}


def test_writing_needs_edit_permission(emulator: Emulator, http: requests.Session, session: str):
    emulator.set_project_readers("P1", ["bob"])
    refused = put(http, session + "/resources/NOTES/files/a.txt", b"x")
    assert refused.status_code == 403
    assert h3(refused) == "User account doesn't have permission to modify this session."
    assert emulator.session_resources(LABEL) == {}


# -- uploading files ----------------------------------------------------------------------------


def test_in_body_upload_creates_the_resource_and_folders_and_lists_md5(
    emulator: Emulator, http: requests.Session, session: str
):
    data = b"line 1\nline 2\n"
    stored = put(http, session + "/resources/LOGS/files/run/1/log.txt", data)
    assert stored.status_code == 200, stored.text

    columns, listed = rows(http, session + "/resources/LOGS/files")
    assert columns == FILE_COLUMNS
    (row,) = listed
    experiment_id = emulator.archive()[0].id
    assert row == {
        "Name": "log.txt",
        "Size": str(len(data)),
        "URI": f"/data/experiments/{experiment_id}/resources/LOGS/files/run/1/log.txt",
        "collection": "LOGS",
        "file_tags": "",
        "file_format": "",
        "file_content": "",
        "cat_ID": row["cat_ID"],
        "digest": md5(data),
    }
    assert http.get(emulator.url + row["URI"]).content == data
    assert emulator.session_resources(LABEL) == {"LOGS": {"run/1/log.txt": data}}


def test_checksums_off_lists_empty_digests_and_the_preference_is_readable(
    emulator: Emulator, http: requests.Session, session: str
):
    checksums = emulator.url + "/xapi/siteConfig/checksums"
    assert http.get(checksums).json() is True
    assert http.post(emulator.url + "/_emulator/checksums", json={"on": False}).ok
    assert http.get(checksums).json() is False
    assert http.get(emulator.url + "/xapi/siteConfig/values/checksums").json() == {
        "checksums": False
    }

    assert put(http, session + "/resources/LOGS/files/a.txt", b"abc").status_code == 200
    assert [r["digest"] for r in rows(http, session + "/resources/LOGS/files")[1]] == [""]

    emulator.set_checksums(True)  # the next catalog write fills in missing digests
    assert put(http, session + "/resources/LOGS/files/b.txt", b"de").status_code == 200
    listed = rows(http, session + "/resources/LOGS/files")[1]
    assert {r["Name"]: r["digest"] for r in listed} == {"a.txt": md5(b"abc"), "b.txt": md5(b"de")}


def test_an_empty_in_body_upload_fails_unless_typed_application_zip(
    emulator: Emulator, http: requests.Session, session: str
):
    refused = http.put(
        session + "/resources/LOGS/files/empty.log",
        params={"inbody": "true"},
        data=b"",
        headers={"Content-Type": "text/plain"},
    )
    assert refused.status_code == 500
    assert "the request entity size is 0 but the media type is not application/zip" in h3(refused)
    assert emulator.session_resources(LABEL) == {}

    zipped = http.put(
        session + "/resources/LOGS/files/empty.log",
        params={"inbody": "true"},
        data=b"",
        headers={"Content-Type": "application/zip"},
    )
    assert zipped.status_code == 200
    assert emulator.session_resources(LABEL) == {"LOGS": {"empty.log": b""}}


def test_a_zero_byte_file_goes_as_a_multipart_part(
    emulator: Emulator, http: requests.Session, session: str
):
    response = http.put(
        session + "/resources/LOGS/files/logs/empty.log",
        files={"file": ("empty.log", b"", "application/octet-stream")},
    )
    assert response.status_code == 200, response.text
    both = http.post(
        session + "/resources/LOGS/files",
        files=[("a", ("a.txt", b"A", "text/plain")), ("b", ("b.txt", b"", "text/plain"))],
    )
    assert both.status_code == 200, both.text
    assert emulator.session_resources(LABEL) == {
        "LOGS": {"logs/empty.log": b"", "a.txt": b"A", "b.txt": b""}
    }
    sizes = {r["Name"]: r["Size"] for r in rows(http, session + "/resources/LOGS/files")[1]}
    assert sizes == {"empty.log": "0", "a.txt": "1", "b.txt": "0"}


def test_a_body_without_an_upload_type_stores_nothing_yet_answers_200(
    emulator: Emulator, http: requests.Session, session: str
):
    response = http.put(session + "/resources/LOGS/files/a.txt", data=b"lost")  # no type
    assert response.status_code == 200
    assert emulator.session_resources(LABEL) == {"LOGS": {}}


def test_an_existing_file_is_reported_as_a_duplicate_with_200_and_kept(
    emulator: Emulator, http: requests.Session, session: str
):
    url = session + "/resources/LOGS/files/dir/a.txt"
    assert put(http, url, b"first").status_code == 200
    again = put(http, url, b"second")
    assert again.status_code == 200
    assert again.headers["Content-Type"].startswith("text/html")
    assert again.text == '{"duplicates":["dir/a.txt"]}'
    assert emulator.session_resources(LABEL) == {"LOGS": {"dir/a.txt": b"first"}}

    replaced = put(http, url, b"second", overwrite="true")
    assert (replaced.status_code, replaced.text) == (200, "")
    assert emulator.session_resources(LABEL) == {"LOGS": {"dir/a.txt": b"second"}}
    (row,) = rows(http, session + "/resources/LOGS/files")[1]
    assert (row["Size"], row["digest"]) == ("6", md5(b"second"))


def test_a_file_put_there_beforehand_blocks_the_upload(
    emulator: Emulator, http: requests.Session, session: str
):
    emulator.put_resource_file(LABEL, "LOGS", "a.txt", b"someone else's")
    response = put(http, session + "/resources/LOGS/files/a.txt", b"mine")
    assert response.text == '{"duplicates":["a.txt"]}'
    assert emulator.session_resources(LABEL)["LOGS"]["a.txt"] == b"someone else's"


@pytest.mark.parametrize("name", ["notes_catalog.xml", ".~lock-notes.odt"])
def test_names_xnat_cannot_catalog_fail_with_500(
    emulator: Emulator, http: requests.Session, session: str, name: str
):
    response = put(http, f"{session}/resources/LOGS/files/sub/{name}", b"x")
    assert response.status_code == 500
    assert h3(response) == f"XNAT cannot catalog {name}"
    assert emulator.session_resources(LABEL) == {"LOGS": {}}


def test_the_path_is_decoded_only_when_it_holds_percent_20_or_2b(
    emulator: Emulator, http: requests.Session, session: str
):
    base = session + "/resources/LOGS/files/"
    for raw in ("a%20b+c.txt", "x%2By.txt", "caf%C3%A9.txt", "p+q.txt", "h%23.txt"):
        assert put(http, base + raw, raw.encode()).status_code == 200
    assert emulator.session_resources(LABEL)["LOGS"] == {
        "a b c.txt": b"a%20b+c.txt",  # URLDecoder: "+" is a space too
        "x+y.txt": b"x%2By.txt",
        "caf%C3%A9.txt": b"caf%C3%A9.txt",  # kept escaped
        "p+q.txt": b"p+q.txt",
        "h%23.txt": b"h%23.txt",
    }


def test_a_second_writer_on_one_catalog_gets_500(
    emulator: Emulator, http: requests.Session, session: str
):
    release = threading.Event()

    def slow() -> Iterator[bytes]:
        yield b"first part "
        release.wait(10)
        yield b"last part"

    first: dict[str, requests.Response] = {}

    def upload_slowly() -> None:
        with client() as other:
            first["response"] = other.put(
                session + "/resources/LOGS/files/slow.txt",
                data=slow(),  # chunked: only application/zip may have no length
                params={"inbody": "true"},
                headers={"Content-Type": "application/zip"},
            )

    thread = threading.Thread(target=upload_slowly)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while "slow.txt" not in emulator.session_resources(LABEL).get("LOGS", {}):
            assert time.monotonic() < deadline, "the first upload never started"
            time.sleep(0.02)
        refused = put(http, session + "/resources/LOGS/files/other.txt", b"x")
        assert refused.status_code == 500
        assert "ConcurrentModificationException" in h3(refused)
        other = put(http, session + "/resources/OTHER/files/other.txt", b"x")
        assert other.status_code == 200  # another resource, another catalog
    finally:
        release.set()
        thread.join(20)
    assert first["response"].status_code == 200
    assert emulator.session_resources(LABEL)["LOGS"] == {"slow.txt": b"first part last part"}


# -- faults -------------------------------------------------------------------------------------


def test_a_cut_mid_file_leaves_a_partial_file_that_blocks_a_plain_retry(
    emulator: Emulator, http: requests.Session, session: str
):
    url = session + "/resources/LOGS/files/big.bin"
    data = bytes(range(256)) * 40
    emulator.inject(Fault(method="PUT", path=url.removeprefix(emulator.url), drop_after_bytes=1000))
    with pytest.raises(requests.ConnectionError):
        put(http, url, data)
    assert emulator.session_resources(LABEL) == {"LOGS": {"big.bin": data[:1000]}}
    assert rows(http, session + "/resources/LOGS/files")[1] == []  # never catalogued

    retry = put(http, url, data)
    assert (retry.status_code, retry.text) == (200, '{"duplicates":["big.bin"]}')
    assert emulator.session_resources(LABEL)["LOGS"]["big.bin"] == data[:1000]

    assert put(http, url, data, overwrite="true").status_code == 200
    assert emulator.session_resources(LABEL)["LOGS"]["big.bin"] == data
    (row,) = rows(http, session + "/resources/LOGS/files")[1]
    assert (row["Size"], row["digest"]) == (str(len(data)), md5(data))


def test_a_fault_fails_one_chosen_file(emulator: Emulator, http: requests.Session, session: str):
    base = session + "/resources/LOGS/files/"
    path = (base + "b.txt").removeprefix(emulator.url)
    emulator.inject(Fault(method="PUT", path=path, status=500))
    names = ("a.txt", "b.txt", "c.txt")
    statuses = [put(http, base + name, name.encode()).status_code for name in names]
    assert statuses == [200, 500, 200]
    assert emulator.session_resources(LABEL) == {"LOGS": {"a.txt": b"a.txt", "c.txt": b"c.txt"}}


# -- the prearchive -------------------------------------------------------------------------


def test_prearchive_resources_need_the_built_session_overwrite_and_move_on_commit(
    emulator: Emulator, http: requests.Session
):
    session = prearchived(emulator, http)
    url = session + "/resources/LOGS/files/run/log.txt"
    unbuilt = put(http, url, b"v1")
    assert unbuilt.status_code == 404
    assert h3(unbuilt) == "Unable to locate prearc resource."

    assert http.post(session, params={"action": "build"}).status_code == 200
    assert put(http, url, b"v1").status_code == 200
    again = put(http, url, b"version 2")  # no duplicates report in the prearchive
    assert (again.status_code, again.text) == (200, "")
    assert emulator.session_resources(LABEL) == {"LOGS": {"run/log.txt": b"version 2"}}
    columns, listed = rows(http, session + "/resources/LOGS/files")
    assert columns == ["Name", "Size", "URI"]
    path = session.removeprefix(emulator.url)
    assert listed == [
        {"Name": "log.txt", "Size": "9", "URI": f"{path}/resources/LOGS/files/run/log.txt"}
    ]
    labels = [r["label"] for r in rows(http, session + "/resources")[1]]
    assert labels == ["DICOM", "LOGS"]

    committed = http.post(session, params={"action": "commit", "AA": "true"}, allow_redirects=False)
    assert committed.status_code == 301
    assert emulator.prearchive() == []
    assert emulator.session_resources(LABEL) == {"LOGS": {"run/log.txt": b"version 2"}}
    experiment = f"{emulator.url}/data/experiments/{emulator.archive()[0].id}"
    (row,) = rows(http, experiment + "/resources/LOGS/files")[1]
    assert (row["Size"], row["digest"]) == ("9", md5(b"version 2"))
    assert not Path(emulator.root, "prearchive", "P1").joinpath(*path.split("/")[-2:]).exists()


def test_prearchive_resource_writes_are_refused_before_1_8_4(tmp_path: Path):
    with (
        Emulator(tmp_path / "x", users={USER: PASSWORD}, projects=["P1"], version="1.8.3") as emu,
        client() as http,
    ):
        session = prearchived(emu, http)
        assert http.post(session, params={"action": "build"}).status_code == 200
        refused = put(http, session + "/resources/LOGS/files/a.txt", b"x")
        assert refused.status_code == 405
        assert emu.session_resources(LABEL) == {}
