"""The XNAT stand-in's series import filters, over real HTTP (xnat-api-round2.md §2).

The config endpoints (shapes, 404/403/204, status against the ``enabled`` key), the site
preferences, and the silent drop in the DICOM-zip and gradual-DICOM handlers: blacklists,
whitelists, the site AND the project filter, the empty answer when nothing is left, filters
XNAT cannot build, and how values are rendered for the patterns.
"""

from __future__ import annotations

import io
import json
import re
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests

from xnat_standin import Emulator
from xnat_standin.dicomvalues import render

from emulator_helpers import (
    PASSWORD,
    USER,
    Study,
    client,
    dicom_bytes,
    h3,
    new_study,
    upload,
    uris,
    zip_bytes,
)

PROJECT_CONFIG = "/data/projects/P1/config/seriesImportFilter/config"
SITE_CONFIG = "/data/config/seriesImportFilter/config"
PREFERENCES = (
    "enableSitewideSeriesImportFilter",
    "sitewideSeriesImportFilterMode",
    "sitewideSeriesImportFilter",
)
COLUMNS = [
    "tool",
    "path",
    "project",
    "user",
    "create_date",
    "reason",
    "contents",
    "unversioned",
    "version",
    "status",
]
GRADUAL = {"import-handler": "gradual-DICOM"}


def dicom_with(
    study: Study,
    series: int,
    instance: int = 1,
    *,
    description: str | None = None,
    remove: Iterable[str] = (),
    with_sop_class: bool = True,
    **attributes: Any,
) -> bytes:
    """A small MR object with its SeriesDescription and other attributes set (or removed)."""
    dataset = pydicom.dcmread(
        io.BytesIO(dicom_bytes(study, series, instance, with_sop_class=with_sop_class))
    )
    if description is not None:
        dataset.SeriesDescription = description
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    for keyword in remove:
        delattr(dataset, keyword)
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def series(study: Study, number: int, count: int = 2, **fields: Any) -> list[tuple[str, bytes]]:
    return [
        (f"{number:03d}_{n:04d}.dcm", dicom_with(study, number, n, **fields))
        for n in range(1, count + 1)
    ]


def stored(emulator: Emulator) -> dict[str, tuple[str, ...]]:
    """Every stored scan of the prearchive, all sessions together."""
    return {scan: files for s in emulator.prearchive() for scan, files in s.scans.items()}


def gradual(http: requests.Session, emulator: Emulator, data: bytes, **params: str):
    return upload(http, emulator, data, content_type="application/dicom", **GRADUAL, **params)


def get(http: requests.Session, emulator: Emulator, path: str, **params: str):
    return http.get(emulator.url + path, params={"format": "json", **params}, timeout=30)


def only_row(response: requests.Response) -> dict[str, str]:
    assert response.status_code == 200, response.text
    (row,) = response.json()["ResultSet"]["Result"]
    return row


# -- the config endpoints -------------------------------------------------------------------


def test_project_filter_is_one_row_of_strings_with_the_contents_as_a_json_string(
    emulator: Emulator, http: requests.Session
):
    emulator.set_series_filter("P1", list_text="localizer\\nscout")

    row = only_row(get(http, emulator, PROJECT_CONFIG))

    assert list(row) == COLUMNS
    assert all(isinstance(value, str) for value in row.values())
    assert row["tool"] == "seriesImportFilter" and row["path"] == "config"
    assert (row["project"], row["user"], row["status"]) == ("P1", "admin", "enabled")
    assert (row["unversioned"], row["version"]) == ("false", "1")
    assert json.loads(row["contents"]) == {
        "mode": "blacklist",
        "enabled": "true",
        "projectId": "P1",
        "list": "localizer\\nscout",
    }
    assert re.fullmatch(
        r"[A-Z][a-z]{2} [A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d UTC \d{4}", row["create_date"]
    )

    emulator.set_series_filter("P1", mode="whitelist", list_text="t1")
    assert only_row(get(http, emulator, PROJECT_CONFIG))["version"] == "2"


def test_no_filter_is_a_404_or_with_accept_not_found_a_204(
    emulator: Emulator, http: requests.Session
):
    missing = get(http, emulator, PROJECT_CONFIG)
    assert missing.status_code == 404
    assert h3(missing) == (
        f"Couldn't find config for user {USER} and project P1 "
        "on tool [seriesImportFilter] path [config]"
    )
    accepted = get(http, emulator, PROJECT_CONFIG, **{"accept-not-found": "true"})
    assert (accepted.status_code, accepted.content) == (204, b"")

    emulator.set_series_filter("P1")
    emulator.clear_series_filter("P1")
    assert get(http, emulator, PROJECT_CONFIG).status_code == 404
    site = get(http, emulator, SITE_CONFIG)
    assert site.status_code == 404
    assert "and project null on tool [seriesImportFilter]" in h3(site)


def test_projects_are_looked_up_by_id_and_read_access_is_checked(
    emulator: Emulator, http: requests.Session
):
    emulator.add_project("P2", aliases=["ALIAS2"])
    emulator.set_series_filter("P2")
    emulator.add_user("bob", "pw")

    for name in ("NOPE", "ALIAS2"):
        answer = get(http, emulator, f"/data/projects/{name}/config/seriesImportFilter/config")
        assert answer.status_code == 404
        assert h3(answer) == f"The requested project {name} does not exist."

    emulator.set_project_readers("P2", ["bob"])
    refused = get(http, emulator, "/data/projects/P2/config/seriesImportFilter/config")
    assert refused.status_code == 403
    assert h3(refused) == f"User {USER} can not access project P2"
    with client("bob", "pw") as bob:
        assert only_row(get(bob, emulator, "/data/projects/P2/config/seriesImportFilter/config"))

    emulator.set_project_readers("P2", None)
    assert only_row(get(http, emulator, "/data/projects/P2/config/seriesImportFilter/config"))


def test_the_row_status_decides_not_the_enabled_key(emulator: Emulator, http: requests.Session):
    study = new_study()
    contents = '{"mode":"blacklist","enabled":"true","list":"localizer"}'
    emulator.set_series_filter("P1", contents=contents, status="disabled")

    row = only_row(get(http, emulator, PROJECT_CONFIG))
    assert (row["status"], row["contents"]) == ("disabled", contents)
    raw = get(http, emulator, PROJECT_CONFIG, contents="true")
    assert raw.status_code == 404
    assert h3(raw) == (
        f"Config not found for user {USER} and project P1 on tool [seriesImportFilter] "
        "path [config]"
    )
    quiet = get(http, emulator, PROJECT_CONFIG, contents="true", **{"accept-not-found": "true"})
    assert quiet.status_code == 204
    kept = upload(http, emulator, zip_bytes(series(study, 1, description="Localizer")))
    assert kept.status_code == 200 and stored(emulator) == {"1": ("001_0001.dcm", "001_0002.dcm")}

    emulator.set_series_filter(
        "P1", contents='{"mode":"blacklist","enabled":"false","list":"localizer"}'
    )
    dropped = upload(http, emulator, zip_bytes(series(study, 2, description="localizer 2")))
    assert dropped.status_code == 200 and "2" not in stored(emulator)


def test_contents_true_answers_the_raw_contents_and_meta_leaves_them_out(
    emulator: Emulator, http: requests.Session
):
    emulator.set_series_filter("P1", mode="whitelist", list_text="t1")

    raw = get(http, emulator, PROJECT_CONFIG, contents="yes")  # anything but false or 0

    assert raw.status_code == 200
    assert raw.headers["Content-Type"].startswith("text/plain")
    assert json.loads(raw.text)["mode"] == "whitelist"
    assert only_row(get(http, emulator, PROJECT_CONFIG, meta="true"))["contents"] == ""
    assert only_row(get(http, emulator, PROJECT_CONFIG, contents="0"))["contents"] == raw.text


def test_the_site_filter_and_the_admin_only_switch(emulator: Emulator, http: requests.Session):
    emulator.set_series_filter(None, list_text="scout")
    emulator.add_user("admin", "admin")

    row = only_row(get(http, emulator, SITE_CONFIG))
    assert (row["project"], row["status"]) == ("", "enabled")
    assert json.loads(row["contents"]) == {"mode": "blacklist", "enabled": "true", "list": "scout"}
    tools = get(http, emulator, "/data/config")
    assert tools.json()["ResultSet"]["Result"] == [{"tool": "seriesImportFilter"}]

    emulator.set_site_config_admin_only()
    assert get(http, emulator, SITE_CONFIG).status_code == 403
    assert get(http, emulator, PROJECT_CONFIG).status_code == 404  # project scope unaffected
    with client("admin", "admin") as admin:
        assert only_row(get(admin, emulator, SITE_CONFIG))["status"] == "enabled"
    emulator.set_site_config_admin_only(False)
    assert get(http, emulator, SITE_CONFIG).status_code == 200


def test_the_site_preferences_follow_the_site_filter(emulator: Emulator, http: requests.Session):
    values = "/xapi/siteConfig/values/" + ",".join((*PREFERENCES, "checksumsUnknown"))

    assert get(http, emulator, values).json() == dict(
        zip(PREFERENCES, (False, "blacklist", ""), strict=True)
    )
    emulator.set_series_filter(None, mode="whitelist", list_text="t1\\nt2")
    assert get(http, emulator, values).json() == dict(
        zip(PREFERENCES, (True, "whitelist", "t1\\nt2"), strict=True)
    )
    emulator.set_series_filter(None, mode="whitelist", list_text="t1", status="disabled")
    assert get(http, emulator, values).json()[PREFERENCES[0]] is False

    one = http.get(emulator.url + "/xapi/siteConfig/sitewideSeriesImportFilterMode", timeout=30)
    assert (one.status_code, one.text) == (200, "whitelist")
    flag = http.get(emulator.url + "/xapi/siteConfig/enableSitewideSeriesImportFilter", timeout=30)
    assert flag.json() is False
    unknown = http.get(emulator.url + "/xapi/siteConfig/noSuchThing", timeout=30)
    assert unknown.status_code == 404
    anonymous = requests.get(emulator.url + values, timeout=30)
    assert anonymous.status_code == 401


def test_the_control_routes_set_and_clear_filters(emulator: Emulator, http: requests.Session):
    control = emulator.url + "/_emulator/series-filters"

    answer = requests.post(control, json={"project": "P1", "list": "scout"}, timeout=30)
    assert answer.status_code == 200
    assert [f["project"] for f in answer.json()["series_filters"]] == ["P1"]
    assert json.loads(only_row(get(http, emulator, PROJECT_CONFIG))["contents"])["list"] == "scout"
    assert requests.post(control, json={"project": "P9"}, timeout=30).status_code == 400
    assert requests.post(control, json={"status": "on"}, timeout=30).status_code == 400

    requests.post(control, json={"project": None, "contents": "{}"}, timeout=30)
    state = requests.get(emulator.url + "/_emulator/state", timeout=30).json()
    assert [(f["project"], f["contents"]) for f in state["series_filters"]] == [
        (None, "{}"),
        ("P1", '{"mode":"blacklist","enabled":"true","projectId":"P1","list":"scout"}'),
    ]
    requests.delete(control, json={"project": "P1"}, timeout=30)
    assert get(http, emulator, PROJECT_CONFIG).status_code == 404


# -- the silent drop ------------------------------------------------------------------------


def test_a_project_blacklist_drops_the_localizer_from_a_zip(
    emulator: Emulator, http: requests.Session
):
    emulator.set_series_filter("P1", list_text="localizer")
    study = new_study()
    body = zip_bytes(
        series(study, 1, 3, description="LOCALIZER 3-plane")
        + series(study, 2, description="t1_mprage")
    )

    response = upload(http, emulator, body)

    assert response.status_code == 200
    (session,) = emulator.prearchive()
    assert uris(response) == ["/data" + session.uri]
    assert session.scans == {"2": ("002_0001.dcm", "002_0002.dcm")}
    scans = emulator.root / "prearchive/P1" / session.timestamp / "S01_MR1/SCANS"
    assert sorted(p.name for p in scans.iterdir()) == ["2"]


def test_a_project_blacklist_drops_the_localizer_in_gradual_dicom(
    emulator: Emulator, http: requests.Session
):
    emulator.set_series_filter("P1", list_text="localizer")
    study = new_study()

    dropped = gradual(http, emulator, dicom_with(study, 1, description="localizer"))
    kept = gradual(http, emulator, dicom_with(study, 2, description="t2_tse"))

    assert (dropped.status_code, dropped.text) == (200, "")
    assert kept.status_code == 200 and len(uris(kept)) == 1
    assert stored(emulator) == {"2": ("upload.dcm",)}


def test_a_whitelist_keeps_only_the_series_it_names(emulator: Emulator, http: requests.Session):
    emulator.set_series_filter("P1", mode="whitelist", list_text="^t1\\n^FLAIR$")
    study = new_study()
    body = zip_bytes(
        series(study, 1, description="T1_mprage")
        + series(study, 2, description="flair")
        + series(study, 3, description="flair_fs")
        + series(study, 4, description="dwi")
        + series(study, 5, remove=["SeriesDescription"])
    )

    assert upload(http, emulator, body).status_code == 200
    assert sorted(stored(emulator)) == ["1", "2"]


def test_the_site_filter_and_the_project_filter_must_both_keep_an_object(
    emulator: Emulator, http: requests.Session
):
    emulator.set_series_filter(None, list_text="scout")
    emulator.set_series_filter("P1", list_text="localizer")
    study = new_study()
    body = zip_bytes(
        series(study, 1, description="scout")
        + series(study, 2, description="localizer")
        + series(study, 3, description="t1")
    )

    assert upload(http, emulator, body).status_code == 200
    assert sorted(stored(emulator)) == ["3"]

    # Unassigned (no project resolved): only the site filter applies.
    other = new_study()
    body = zip_bytes(
        series(other, 4, description="scout") + series(other, 5, description="localizer")
    )
    assert upload(http, emulator, body, PROJECT_ID=None).status_code == 200
    (unassigned,) = [s for s in emulator.prearchive() if s.project == "Unassigned"]
    assert sorted(unassigned.scans) == ["5"]


def test_an_upload_with_every_object_dropped_answers_the_empty_body(
    emulator: Emulator, http: requests.Session
):
    emulator.set_series_filter("P1", list_text="localizer")
    study = new_study()
    body = zip_bytes(
        series(study, 1, description="localizer") + series(study, 2, description="Localizer")
    )

    response = upload(http, emulator, body)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/uri-list")
    assert response.content == b""
    assert emulator.prearchive() == []
    one = gradual(http, emulator, dicom_with(study, 1, description="localizer"))
    assert (one.status_code, one.content, emulator.prearchive()) == (200, b"", [])

    # 1.8.10's DICOM-zip with action=commit: nothing to build, the same empty answer.
    committed = upload(http, emulator, body, action="commit", AA="true")
    assert (committed.status_code, committed.content, emulator.archive()) == (200, b"", [])


def test_a_dropped_object_skips_the_sop_checks(emulator: Emulator, http: requests.Session):
    study = new_study()
    without_class = dicom_with(study, 1, description="localizer", with_sop_class=False)

    refused = gradual(http, emulator, without_class)
    assert refused.status_code == 400
    assert h3(refused) == "object upload.dcm contains no SOP Class UID"

    emulator.set_series_filter("P1", list_text="localizer")
    dropped = gradual(http, emulator, without_class)
    assert (dropped.status_code, dropped.content) == (200, b"")


def test_a_nested_contents_key_is_unwrapped(emulator: Emulator, http: requests.Session):
    inner = json.dumps({"mode": "whitelist", "list": "t1"})
    emulator.set_series_filter("P1", contents=json.dumps({"contents": inner, "mode": "blacklist"}))
    study = new_study()
    body = zip_bytes(series(study, 1, description="t1") + series(study, 2, description="t2"))

    assert upload(http, emulator, body).status_code == 200
    assert sorted(stored(emulator)) == ["1"]


def test_the_fast_benchmark_mode_filters_too(tmp_path: Path):
    with (
        Emulator(tmp_path / "x", users={USER: PASSWORD}, projects=["P1"], fast=True) as emulator,
        client() as http,
    ):
        emulator.set_series_filter("P1", list_text="localizer")
        study = new_study()
        body = zip_bytes(series(study, 1, description="localizer") + series(study, 2))
        assert upload(http, emulator, body).status_code == 200
        assert sorted(stored(emulator)) == ["2"]


# -- filters XNAT cannot build ----------------------------------------------------------------

SITE_BREAKS = [
    # (contents, status, HTTP status, <h3>): NPE and Jackson failures escape the Importer (500),
    # an IllegalArgumentException is its 400; a disabled filter is built all the same.
    ('{"list": "localizer"}', "enabled", 500, ""),
    ('{"mode": "blacklist"}', "disabled", 500, ""),
    ('{"mode": "blacklist", "list": "local(izer"}', "enabled", 500, ""),
    ('{"mode": "blacklist", "list": "a{b"}', "enabled", 500, ""),
    (
        '{"mode": "blacklist", "list": "[Image Type]\\nX"}',
        "enabled",
        400,
        "Invalid DICOM tag: blank or invalid characters submitted. Submitted tag: Image Type",
    ),
    (
        '{"mode": "blacklist", "list": "[NoSuchKeyword]\\nX"}',
        "enabled",
        400,
        "Invalid DICOM tag: unknown tag name. Submitted tag: NoSuchKeyword",
    ),
    (
        '{"mode": "blacklist", "list": "[(0008,103E]\\nX"}',
        "enabled",
        400,
        "Invalid DICOM tag: must either have no or matching parentheses. Submitted tag: (0008,103E",
    ),
    (
        '{"mode": "blacklist", "list": ["localizer"]}',
        "enabled",
        500,
        "Something went wrong unmarshalling the series import filter configuration.",
    ),
    (
        '{"mode": "modalityMap", "MR": "true"}',
        "enabled",
        500,
        "The XNAT stand-in does not emulate modalityMap filters",
    ),
]
DEFAULT_500 = "The server encountered an unexpected condition which prevented it from fulfilling"


@pytest.mark.parametrize(("contents", "status", "code", "message"), SITE_BREAKS)
def test_a_site_filter_xnat_cannot_build_fails_every_import(
    emulator: Emulator, http: requests.Session, contents: str, status: str, code: int, message: str
):
    emulator.set_series_filter(None, contents=contents, status=status)
    study = new_study()

    for answer in (
        upload(http, emulator, zip_bytes(series(study, 2, description="t1"))),
        gradual(http, emulator, dicom_with(study, 3, description="t2")),
        upload(http, emulator, zip_bytes(series(study, 4)), PROJECT_ID=None),
    ):
        assert answer.status_code == code
        assert h3(answer).startswith(message or DEFAULT_500)
    assert emulator.prearchive() == []


def test_a_project_filter_xnat_cannot_build_fails_each_object_of_that_project(
    emulator: Emulator, http: requests.Session
):
    emulator.add_project("P2")
    emulator.set_series_filter("P1", contents='{"list": "localizer"}', status="disabled")
    study = new_study()

    zipped = upload(http, emulator, zip_bytes(series(study, 1) + series(study, 2)))
    assert zipped.status_code == 400
    assert h3(zipped) == "unable to read DICOM object 001_0001.dcm"
    one = gradual(http, emulator, dicom_with(study, 3))
    assert (one.status_code, h3(one)) == (400, "unable to read DICOM object upload.dcm")
    skipped = upload(
        http,
        emulator,
        zip_bytes(series(study, 4) + series(study, 5)),
        **{"Ignore-Unparsable": "true"},
    )
    assert (skipped.status_code, h3(skipped)) == (400, "unable to read DICOM object 005_0002.dcm")
    assert emulator.prearchive() == []

    other = upload(http, emulator, zip_bytes(series(new_study(), 6)), PROJECT_ID="P2")
    assert other.status_code == 200 and sorted(stored(emulator)) == ["6"]


def test_an_unknown_mode_fails_an_enabled_filter_when_it_is_evaluated(
    emulator: Emulator, http: requests.Session
):
    emulator.set_series_filter("P1", contents='{"mode": "Blacklist", "list": "localizer"}')
    study = new_study()

    refused = upload(http, emulator, zip_bytes(series(study, 1, description="t1")))
    assert (refused.status_code, h3(refused)) == (400, "unable to read DICOM object 001_0001.dcm")

    emulator.set_series_filter(
        "P1", contents='{"mode": "Blacklist", "list": "localizer"}', status="disabled"
    )
    assert upload(http, emulator, zip_bytes(series(study, 2))).status_code == 200
    assert sorted(stored(emulator)) == ["2"]


def test_a_sequence_cannot_be_tested(emulator: Emulator, http: requests.Session):
    emulator.set_series_filter("P1", list_text="[ReferencedImageSequence]\nEXISTS")
    item = pydicom.Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3"
    study = new_study()

    answer = gradual(
        http, emulator, dicom_with(study, 1, ReferencedImageSequence=pydicom.Sequence([item]))
    )

    assert (answer.status_code, h3(answer)) == (400, "unable to read DICOM object upload.dcm")
    assert emulator.prearchive() == []


# -- values and the list syntax ---------------------------------------------------------------


def test_a_multi_valued_value_is_tested_whole_with_its_separators(
    emulator: Emulator, http: requests.Session
):
    emulator.set_series_filter("P1", list_text="[ImageType]\n^PRIMARY\nORIGINAL\\\\PRIMARY$")
    study = new_study()
    body = zip_bytes(
        series(study, 1, ImageType=["ORIGINAL", "PRIMARY"])
        + series(study, 2, ImageType=["DERIVED", "PRIMARY", "MPR"])
        + series(study, 3, ImageType=["PRIMARY", "ORIGINAL"])
    )

    assert upload(http, emulator, body).status_code == 200
    assert sorted(stored(emulator)) == ["2"]  # 1: the whole value; 3: ^PRIMARY


def test_exists_and_not_exists_test_presence(emulator: Emulator, http: requests.Session):
    emulator.set_series_filter(
        "P1", list_text="[BurnedInAnnotation]\nEXISTS\n[(0020,4000)]\n!EXISTS"
    )
    study = new_study()
    body = zip_bytes(
        series(study, 1, BurnedInAnnotation="", ImageComments="note")
        + series(study, 2, BurnedInAnnotation="NO", ImageComments="note")
        + series(study, 3)  # no ImageComments
        + series(study, 4, ImageComments="note")
        + series(study, 5, ImageComments="")  # present though empty
    )

    assert upload(http, emulator, body).status_code == 200
    assert sorted(stored(emulator)) == ["4", "5"]


def test_an_escaped_newline_splits_the_list_and_then_only_it(
    emulator: Emulator, http: requests.Session
):
    emulator.set_series_filter("P1", list_text="  # comment\\n\\nlocalizer  \\nscout\nsurvey")
    study = new_study()
    body = zip_bytes(
        series(study, 1, description="localizer")
        + series(study, 2, description="scout")
        + series(study, 3, description="survey")
        + series(study, 4, description="# comment")
    )

    assert upload(http, emulator, body).status_code == 200
    # "scout\nsurvey" is one pattern: a real newline does not split when backslash-n is there.
    assert sorted(stored(emulator)) == ["2", "3", "4"]

    emulator.set_series_filter("P1", list_text="scout\n  survey ")
    assert upload(http, emulator, zip_bytes(series(study, 5, description="survey"))).text == ""


def test_values_are_trimmed_and_cut_at_300_characters(emulator: Emulator, http: requests.Session):
    emulator.set_series_filter(
        "P1", list_text="[ImageComments]\n^x{296}TAIL\n^y{297}\\.\\.\\.$\n^trim me$"
    )
    study = new_study()
    body = zip_bytes(
        series(study, 1, ImageComments="x" * 296 + "TAIL")  # 300: whole, matched
        + series(study, 2, ImageComments="x" * 296 + "TAIL!")  # 301: cut before TAIL
        + series(study, 3, ImageComments="y" * 400)  # cut: 297 y and "..."
        + series(study, 4, ImageComments="  trim me ")
        + series(study, 5, ImageComments="x" * 295 + "TAIL")
    )

    assert upload(http, emulator, body).status_code == 200
    assert sorted(stored(emulator)) == ["2", "5"]


def test_patterns_ignore_ascii_case_only_and_search_anywhere(
    emulator: Emulator, http: requests.Session
):
    emulator.set_series_filter("P1", list_text="LOCAL\\n_fa$\\nÉ")
    study = new_study()
    body = zip_bytes(
        series(study, 1, description="3 plane localizer")
        + series(study, 2, description="dwi_FA")
        + series(study, 3, description="dwi_FA_map")
        + series(study, 4, description="é", SpecificCharacterSet="ISO_IR 192")
    )

    assert upload(http, emulator, body).status_code == 200
    assert sorted(stored(emulator)) == ["3", "4"]


def test_binary_values_render_as_dcm4che2_writes_them():
    def pack(code: str, *values: float) -> bytes:
        return struct.pack("<" + code * len(values), *values)

    assert render("US", pack("H", 512, 3), little=True, encodings=None) == "512\\3"
    assert render("SS", pack("h", -2), little=True, encodings=None) == "-2"
    assert render("UL", pack("I", 4294967295), little=True, encodings=None) == "4294967295"
    assert render("FL", pack("f", 0.1, 1e-5, 2.0), little=True, encodings=None) == (
        "0.1\\1.0E-5\\2.0"
    )
    assert render("FD", pack("d", 1.5), little=True, encodings=None) == ""  # dcm4che2's loop
    assert render("FD", pack("d", 1.5, 1e7), little=True, encodings=None) == "1.5"
    assert render("AT", bytes.fromhex("08003e10"), little=True, encodings=None) == "0008103E"
    assert render("OB", b"\x01\xab", little=True, encodings=None) == "01\\AB"
    assert render("UN", b"a\\\x00", little=True, encodings=None) == "a\\\\\\00"
    many = render("US", pack("H", *([65535] * 60)), little=True, encodings=None)
    assert many.endswith("\\...") and len(many) <= 300
