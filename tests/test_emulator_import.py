"""The XNAT stand-in's POST /data/services/import, over real HTTP (xnat-api.md §3, §4, §5)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pydicom.data
import pytest
import requests

from xnat_standin import Emulator

from emulator_helpers import (
    CENTRAL_DIRECTORY_END,
    IMPORT,
    PASSWORD,
    USER,
    ZIP_PARAMS,
    client,
    dicom_bytes,
    h3,
    local_entry,
    new_study,
    series_files,
    streamed_zip,
    upload,
    uris,
    zip_bytes,
)


def emulator_of(tmp_path: Path, version: str) -> Emulator:
    return Emulator(tmp_path / version, users={USER: PASSWORD}, projects=["P1"], version=version)


def chunks(data: bytes, size: int = 4096) -> Iterator[bytes]:
    """A generator body: requests sends it chunked, without Content-Length."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


# -- success --------------------------------------------------------------------------------


def test_zip_lands_in_prearchive_and_answers_uri_list(emulator: Emulator, http: requests.Session):
    study = new_study()
    response = upload(
        http, emulator, zip_bytes(series_files(study, 4, 3) + series_files(study, 5, 2))
    )

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/uri-list")
    (session,) = emulator.prearchive()
    assert response.text == f"/data{session.uri}\r\n"
    assert session.uri == f"/prearchive/projects/P1/{session.timestamp}/S01_MR1"
    assert (session.project, session.subject, session.tag) == ("P1", "S01", study.uid)
    assert session.status == "RECEIVING"
    assert session.scans == {
        "4": ("004_0001.dcm", "004_0002.dcm", "004_0003.dcm"),
        "5": ("005_0001.dcm", "005_0002.dcm"),
    }
    stored = (
        emulator.root / "prearchive/P1" / session.timestamp / "S01_MR1/SCANS/4/DICOM/004_0002.dcm"
    )
    assert stored.is_file()


def test_format_txt_answers_plain_text_without_crlf(emulator: Emulator, http: requests.Session):
    response = upload(http, emulator, zip_bytes(series_files(new_study(), 1, 1)), format="txt")

    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.text == "/data" + emulator.prearchive()[0].uri


def test_second_upload_of_a_study_joins_the_same_session(
    emulator: Emulator, http: requests.Session
):
    study = new_study()
    first = upload(http, emulator, zip_bytes(series_files(study, 1, 2)))
    second = upload(http, emulator, zip_bytes(series_files(study, 2, 2)))

    assert uris(first) == uris(second)
    (session,) = emulator.prearchive()
    assert session.file_count == 4


def test_two_studies_in_one_zip_make_two_sessions(emulator: Emulator, http: requests.Session):
    one, two = new_study(), new_study()
    response = upload(
        http, emulator, zip_bytes(series_files(one, 1, 1) + series_files(two, 1, 1, prefix="b"))
    )

    listed = uris(response)
    assert len(listed) == 2
    # Same EXPT_LABEL for two studies in one request: the second folder gets a suffix.
    assert {session.folder for session in emulator.prearchive()} == {"S01_MR1", "S01_MR1_1"}
    assert {session.tag for session in emulator.prearchive()} == {one.uid, two.uid}


def test_same_name_same_sop_overwrites_but_another_sop_is_renamed(
    emulator: Emulator, http: requests.Session
):
    study = new_study()
    original = dicom_bytes(study, 1, 1, sop_uid="1.2.3.4.1")
    upload(http, emulator, zip_bytes([("a.dcm", original)]))
    upload(http, emulator, zip_bytes([("a.dcm", original)]))
    assert emulator.prearchive()[0].scans == {"1": ("a.dcm",)}

    upload(http, emulator, zip_bytes([("a.dcm", dicom_bytes(study, 1, 2, sop_uid="1.2.3.4.2"))]))
    names = emulator.prearchive()[0].scans["1"]
    assert len(names) == 2
    assert "a.dcm" in names
    assert any(name.startswith(f"{study.uid}-1-2-") for name in names)


def test_directories_are_skipped_and_entry_names_reduced_to_their_last_part(
    emulator: Emulator, http: requests.Session
):
    study = new_study()
    body = zip_bytes([("top/", b""), ("top/deeper/x.dcm", dicom_bytes(study))])
    upload(http, emulator, body)

    assert emulator.prearchive()[0].scans == {"1": ("x.dcm",)}


def test_deflated_entries_with_data_descriptors_are_accepted(
    emulator: Emulator, http: requests.Session
):
    body = streamed_zip(series_files(new_study(), 1, 3), zipfile.ZIP_DEFLATED)
    assert upload(http, emulator, body).status_code == 200
    assert emulator.prearchive()[0].file_count == 3


def test_large_entries_stream_through_in_chunks(emulator: Emulator, http: requests.Session):
    study = new_study()
    # ~2.9 MB each: several 1 MiB reads per entry; zeros inflate far beyond each input chunk.
    noisy = dicom_bytes(study, 7, 1, pixels=1200)
    quiet = dicom_bytes(study, 7, 2, pixels=1200, noise=False)
    entries = [("noisy.dcm", noisy), ("quiet.dcm", quiet)]
    for body in (streamed_zip(entries, zipfile.ZIP_DEFLATED), zip_bytes(entries, 0)):
        assert upload(http, emulator, chunks(body, 1 << 16)).status_code == 200
    stored = next((emulator.root / "prearchive/P1").glob("*/S01_MR1/SCANS/7/DICOM"))
    assert (stored / "noisy.dcm").read_bytes() == noisy
    assert (stored / "quiet.dcm").read_bytes() == quiet


def test_reading_stops_at_the_first_record_that_is_not_a_local_header(
    emulator: Emulator, http: requests.Session
):
    study = new_study()
    good = local_entry(b"a.dcm", dicom_bytes(study))
    hidden = local_entry(b"b.dcm", dicom_bytes(study, 1, 2))
    upload(http, emulator, good + CENTRAL_DIRECTORY_END + hidden)

    assert emulator.prearchive()[0].scans == {"1": ("a.dcm",)}


# -- the zip-reading trap and other unreadable zips ------------------------------------------


def test_stored_entry_with_data_descriptor_fails_and_earlier_entries_stay(
    emulator: Emulator, http: requests.Session
):
    study = new_study()
    body = zip_bytes(series_files(study, 1, 2), zipfile.ZIP_STORED)[:-22]  # drop the EOCD
    body = body[: body.index(b"PK\x01\x02")]  # and the central directory
    body += streamed_zip([("late.dcm", dicom_bytes(study, 1, 3))], zipfile.ZIP_STORED)

    response = upload(http, emulator, body)

    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("text/html")
    assert h3(response) == "unable to read data from file"
    (session,) = emulator.prearchive()  # no rollback: what came before the bad entry stays
    assert session.scans == {"1": ("001_0001.dcm", "001_0002.dcm")}


def test_old_servers_name_the_zip_in_the_read_failure(tmp_path: Path):
    with emulator_of(tmp_path, "1.8.2") as emulator, client() as http:
        body = streamed_zip(series_files(new_study(), 1, 1), zipfile.ZIP_STORED)
        response = upload(http, emulator, body)
    assert (response.status_code, h3(response)) == (400, "unable to read data from zip file")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        pytest.param(
            local_entry(b"e.dcm", b"x", flags=1), "unable to read data from file", id="encrypted"
        ),
        pytest.param(local_entry(b"\xff\xfe.dcm", b"x"), "MALFORMED", id="bad-utf8-name"),
        pytest.param(
            local_entry(b"b.dcm", b"xyz" * 100, method=12),
            "unable to read DICOM object b.dcm",
            id="bzip2-method",
        ),
        pytest.param(
            local_entry(b"c.dcm", b"xyz" * 100, crc=1234),
            "unable to read DICOM object c.dcm",
            id="crc-mismatch",
        ),
    ],
)
def test_unreadable_entries_are_refused(
    emulator: Emulator, http: requests.Session, entry: bytes, message: str
):
    response = upload(http, emulator, entry + CENTRAL_DIRECTORY_END)
    assert (response.status_code, h3(response)) == (400, message)


def test_zip64_descriptor_on_a_small_entry_is_refused(emulator: Emulator, http: requests.Session):
    # Python's force_zip64 writes 8-byte descriptor sizes; Java expects 4 below 4 GiB.
    body = streamed_zip(
        [("z.dcm", dicom_bytes(new_study()))], zipfile.ZIP_DEFLATED, force_zip64=True
    )
    response = upload(http, emulator, body)
    assert (response.status_code, h3(response)) == (400, "unable to read DICOM object z.dcm")


# -- DICOM content -----------------------------------------------------------------------------


def test_non_dicom_entry_is_refused_by_name_after_earlier_entries(
    emulator: Emulator, http: requests.Session
):
    study = new_study()
    entries = [*series_files(study, 1, 2), ("notes.txt", b"not DICOM at all\n")]
    response = upload(http, emulator, zip_bytes(entries))

    assert (response.status_code, h3(response)) == (400, "unable to read DICOM object notes.txt")
    assert emulator.prearchive()[0].file_count == 2


def test_dicomdir_has_no_sop_class_uid(emulator: Emulator, http: requests.Session):
    dicomdir = Path(str(pydicom.data.get_testdata_file("DICOMDIR", download=False)))
    response = upload(http, emulator, zip_bytes([("DICOMDIR", dicomdir.read_bytes())]))

    assert h3(response) == "object DICOMDIR contains no SOP Class UID"


def test_object_without_sop_instance_uid_is_refused(emulator: Emulator, http: requests.Session):
    data = dicom_bytes(new_study(), with_sop_instance=False)
    response = upload(http, emulator, zip_bytes([("x.dcm", data)]))
    assert h3(response) == "object x.dcm contains no SOP Instance UID"


@pytest.mark.parametrize(
    ("version", "text_skipped"), [("1.8.2", False), ("1.8.6", True), ("1.8.10", True)]
)
def test_ignore_unparsable_by_version(tmp_path: Path, version: str, text_skipped: bool):
    dicomdir = Path(str(pydicom.data.get_testdata_file("DICOMDIR", download=False))).read_bytes()
    study = new_study()
    with emulator_of(tmp_path, version) as emulator, client() as http:
        with_text = upload(
            http,
            emulator,
            zip_bytes([*series_files(study, 1, 1), ("t.txt", b"hi")]),
            **{"Ignore-Unparsable": "true"},
        )
        with_dicomdir = upload(
            http, emulator, zip_bytes([("DICOMDIR", dicomdir)]), **{"Ignore-Unparsable": "true"}
        )
    assert (with_text.status_code == 200) is text_skipped
    # Nothing importable at all: even a skipped error comes back as the answer.
    assert with_dicomdir.status_code == 400
    assert h3(with_dicomdir) == "object DICOMDIR contains no SOP Class UID"


def test_dicomdir_beside_images_is_skipped_only_from_1_8_10(tmp_path: Path):
    dicomdir = Path(str(pydicom.data.get_testdata_file("DICOMDIR", download=False))).read_bytes()
    results = {}
    for version in ("1.8.6", "1.8.10"):
        with emulator_of(tmp_path, version) as emulator, client() as http:
            body = zip_bytes([("DICOMDIR", dicomdir), *series_files(new_study(), 1, 1)])
            results[version] = upload(http, emulator, body, **{"Ignore-Unparsable": "true"})
    assert results["1.8.6"].status_code == 400
    assert results["1.8.10"].status_code == 200


def test_datasets_without_preamble_are_dicom_too(emulator: Emulator, http: requests.Session):
    entries = []
    for name in ("ExplVR_LitEndNoMeta.dcm", "ExplVR_BigEndNoMeta.dcm"):
        path = pydicom.data.get_testdata_file(name, download=False)
        entries.append((name, Path(str(path)).read_bytes()))
    response = upload(http, emulator, zip_bytes(entries), PROJECT_ID="P1", EXPT_LABEL="RT")
    assert response.status_code == 200
    assert emulator.prearchive()[0].file_count == 2


def test_a_zip_without_dicom_imports_nothing_and_answers_an_empty_200(
    emulator: Emulator, http: requests.Session
):
    response = upload(http, emulator, zip_bytes([("dir/", b"")]))
    assert (response.status_code, response.text) == (200, "")


# -- routing: project, subject, session ----------------------------------------------------------


def test_unknown_project_silently_lands_in_unassigned(emulator: Emulator, http: requests.Session):
    response = upload(http, emulator, zip_bytes(series_files(new_study(), 1, 1)), PROJECT_ID="NOPE")

    assert response.status_code == 200
    assert uris(response)[0].startswith("/data/prearchive/projects/Unassigned/")
    assert emulator.prearchive()[0].project == "Unassigned"


def test_dicom_project_conventions_when_project_id_is_unknown(
    emulator: Emulator, http: requests.Session
):
    emulator.add_project("P2")
    emulator.add_project("P3")
    by_comment = new_study(comments="Project: P2 Subject: SUBJ7 Session: SESS7")
    by_description = new_study(description="P3")
    upload(
        http,
        emulator,
        zip_bytes(series_files(by_comment, 1, 1)),
        PROJECT_ID="NOPE",
        SUBJECT_ID=None,
        EXPT_LABEL=None,
    )
    upload(
        http,
        emulator,
        zip_bytes(series_files(by_description, 1, 1)),
        PROJECT_ID=None,
        SUBJECT_ID=None,
        EXPT_LABEL=None,
    )

    found = {session.tag: session for session in emulator.prearchive()}
    commented = found[by_comment.uid]
    assert (commented.project, commented.subject, commented.folder) == ("P2", "SUBJ7", "SESS7")
    described = found[by_description.uid]
    # Without parameters or comments: subject from PatientName, session from PatientID.
    assert (described.project, described.subject, described.folder) == ("P3", "DOE_JOHN", "PID001")


def test_parameter_labels_are_used_verbatim(emulator: Emulator, http: requests.Session):
    upload(
        http,
        emulator,
        zip_bytes(series_files(new_study(), 1, 1)),
        SUBJECT_ID="S 1",
        EXPT_LABEL="S1.MR 2",
    )
    session = emulator.prearchive()[0]
    assert (session.subject, session.folder) == ("S 1", "S1.MR 2")


def test_session_options_are_recorded(emulator: Emulator, http: requests.Session):
    upload(
        http,
        emulator,
        zip_bytes(series_files(new_study(), 1, 1)),
        prevent_auto_commit="true",
        SOURCE="uploader",
    )
    session = emulator.prearchive()[0]
    assert session.prevent_auto_commit
    assert session.source == "uploader"


# -- request forms and refusals (§3.2, §3.3, §3.8) ------------------------------------------------


def test_chunked_application_zip_is_accepted(emulator: Emulator, http: requests.Session):
    response = upload(http, emulator, chunks(zip_bytes(series_files(new_study(), 1, 3))))
    assert response.status_code == 200
    assert emulator.prearchive()[0].file_count == 3


def test_chunked_octet_stream_is_refused(emulator: Emulator, http: requests.Session):
    body = chunks(zip_bytes(series_files(new_study(), 1, 1)))
    response = upload(http, emulator, body, content_type="application/octet-stream")

    assert response.status_code == 400
    assert h3(response) == (
        "In-body File posts must include the file directly as the body of the message. In this "
        "case, the request entity size is -1 but the media type is not application/zip (i.e. "
        "streaming compressed upload)."
    )
    assert emulator.prearchive() == []


def test_zero_length_zip_imports_nothing(emulator: Emulator, http: requests.Session):
    response = upload(http, emulator, b"")
    assert (response.status_code, response.text) == (200, "")


@pytest.mark.parametrize(
    ("content_type", "path", "message"),
    [
        ("application/octet-stream", IMPORT, "Unsupported format UNKNOWN"),
        ("application/x-gzip", IMPORT, "Unsupported format UNKNOWN"),
        ("application/octet-stream", IMPORT + "/upload.gz", "Unsupported format GZ"),
        ("application/octet-stream", IMPORT + "/UPLOAD.ZIP", "Unsupported format UNKNOWN"),
        ("application/x-zip-compressed", IMPORT, "Unable to identify upload format."),
        ("application/zip; foo=bar", IMPORT, "Unable to identify upload format."),
    ],
)
def test_upload_format_comes_from_the_file_name(
    emulator: Emulator, http: requests.Session, content_type: str, path: str, message: str
):
    body = zip_bytes(series_files(new_study(), 1, 1))
    response = upload(http, emulator, body, content_type=content_type, path=path)
    assert (response.status_code, h3(response)) == (400, message)


def test_url_remainder_names_the_upload(emulator: Emulator, http: requests.Session):
    body = zip_bytes(series_files(new_study(), 1, 1))
    response = upload(
        http, emulator, body, content_type="application/octet-stream", path=IMPORT + "/session.zip"
    )
    assert response.status_code == 200


def test_zip_only_servers_ignore_the_name(tmp_path: Path):
    with emulator_of(tmp_path, "1.8.2") as emulator, client() as http:
        body = zip_bytes(series_files(new_study(), 1, 1))
        response = upload(http, emulator, body, content_type="application/octet-stream")
    assert response.status_code == 200


def test_tgz_upload_by_name(emulator: Emulator, http: requests.Session):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, data in series_files(new_study(), 2, 2):
            info = tarfile.TarInfo(f"series/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    response = upload(http, emulator, out.getvalue(), content_type="application/x-gtar")
    assert response.status_code == 200
    assert emulator.prearchive()[0].scans == {"2": ("002_0001.dcm", "002_0002.dcm")}


def test_archives_inside_the_zip_are_opened_from_1_8_10(emulator: Emulator, http: requests.Session):
    study = new_study()
    inner = zip_bytes(series_files(study, 2, 2))
    response = upload(
        http, emulator, zip_bytes([*series_files(study, 1, 1), ("more/inner.zip", inner)])
    )
    assert response.status_code == 200
    assert emulator.prearchive()[0].scans == {
        "1": ("001_0001.dcm",),
        "2": ("002_0001.dcm", "002_0002.dcm"),
    }


def test_unknown_handler_is_404(emulator: Emulator, http: requests.Session):
    body = zip_bytes(series_files(new_study(), 1, 1))
    response = upload(http, emulator, body, **{"import-handler": "DICOM-zipp"})
    assert (response.status_code, h3(response)) == (
        404,
        "Unknown importer implementation specified: DICOM-zipp",
    )


def test_default_handler_is_dicom_zip_from_1_8_10(emulator: Emulator, http: requests.Session):
    body = zip_bytes(series_files(new_study(), 1, 1))
    response = upload(http, emulator, body, **{"import-handler": None})
    assert response.status_code == 200


def test_only_post_is_allowed(emulator: Emulator, http: requests.Session):
    assert http.get(emulator.url + IMPORT).status_code == 405


def test_multipart_upload_with_form_fields(emulator: Emulator, http: requests.Session):
    body = zip_bytes(series_files(new_study(), 1, 2))
    response = http.post(
        emulator.url + IMPORT,
        params={"PROJECT_ID": "P1", "EXPT_LABEL": "E1"},
        data={"import-handler": "DICOM-zip", "SUBJECT_ID": "S9"},
        files={"whatever": ("dir\\session.zip", body, "application/octet-stream")},
    )
    assert response.status_code == 200
    session = emulator.prearchive()[0]
    assert (session.subject, session.folder, session.file_count) == ("S9", "E1", 2)


@pytest.mark.parametrize(
    ("files", "data", "message"),
    [
        (
            {"a": ("a.zip", b"x"), "b": ("b.zip", b"y")},
            {},
            "Importer is limited to one uploaded resource at a time.",
        ),
        (
            {"a": ("", b"x")},
            {},
            "multi-part form posts must contain the file name of the uploaded file.",
        ),
        (
            {"a": ("a.zip", b"x")},
            {"reference": "/x"},
            "multi-part form posts may not be used to upload files via reference.",
        ),
    ],
)
def test_multipart_refusals(
    emulator: Emulator,
    http: requests.Session,
    files: dict[str, tuple[str, bytes]],
    data: dict[str, str],
    message: str,
):
    response = http.post(emulator.url + IMPORT, params=ZIP_PARAMS, files=files, data=data)
    assert (response.status_code, h3(response)) == (400, message)


def test_multipart_with_inbody_is_a_server_error(emulator: Emulator, http: requests.Session):
    response = http.post(
        emulator.url + IMPORT, params={**ZIP_PARAMS, "inbody": "true"}, files={"a": ("a.zip", b"x")}
    )
    assert response.status_code == 500


def test_gradual_dicom_takes_one_object(emulator: Emulator, http: requests.Session):
    study = new_study()
    response = http.post(
        emulator.url + IMPORT,
        params={"PROJECT_ID": "P1", "EXPT_LABEL": "G1"},
        data=dicom_bytes(study),
        headers={"Content-Type": "application/dicom"},
    )
    assert response.status_code == 200
    assert emulator.prearchive()[0].scans == {"1": ("upload.dcm",)}

    refused = http.post(
        emulator.url + IMPORT,
        params={"import-handler": "gradual-DICOM"},
        data=b"text",
        headers={"Content-Type": "application/dicom"},
    )
    assert h3(refused) == "unable to read DICOM object upload.dcm"


# -- 1.8.10: synchronous commit from the importer -------------------------------------------------


def test_dicom_zip_commit_and_archive_in_one_request(emulator: Emulator, http: requests.Session):
    body = zip_bytes(series_files(new_study(), 1, 2))
    response = upload(http, emulator, body, action="commit", AA="true")

    assert uris(response) == ["/data/archive/projects/P1/subjects/S01/experiments/S01_MR1"]
    assert emulator.prearchive() == []
    assert emulator.archive()[0].file_count == 2


def test_dest_archive_uri_implies_commit_and_labels(emulator: Emulator, http: requests.Session):
    body = zip_bytes(series_files(new_study(), 1, 1))
    response = upload(
        http,
        emulator,
        body,
        PROJECT_ID=None,
        SUBJECT_ID=None,
        EXPT_LABEL=None,
        dest="/archive/projects/P1/subjects/SX/experiments/EX",
    )
    assert uris(response) == ["/data/archive/projects/P1/subjects/SX/experiments/EX"]


def test_existing_session_without_overwrite_fails_the_synchronous_archive(
    emulator: Emulator, http: requests.Session
):
    study = new_study()
    upload(http, emulator, zip_bytes(series_files(study, 1, 1)), action="commit", AA="true")
    again = upload(http, emulator, zip_bytes(series_files(study, 2, 1)), action="commit", AA="true")
    assert (again.status_code, h3(again)) == (400, "unable to archive for the Prearchive session")

    merged = upload(
        http,
        emulator,
        zip_bytes(series_files(study, 3, 1)),
        action="commit",
        AA="true",
        overwrite="append",
    )
    assert merged.status_code == 200
    # The refused upload's session (CONFLICT) was reopened by the third one: both went in.
    assert sorted(emulator.archive()[0].scans) == ["1", "2", "3"]


def test_bad_dest_is_refused(emulator: Emulator, http: requests.Session):
    response = upload(http, emulator, zip_bytes(series_files(new_study(), 1, 1)), dest="/nowhere")
    assert (response.status_code, h3(response)) == (400, "Parameter dest format error")
