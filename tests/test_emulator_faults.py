"""Fault injection, the /_emulator/ control API and the command line of the XNAT stand-in."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import requests

from xnat_standin import Emulator, Fault

from emulator_helpers import (
    IMPORT,
    PASSWORD,
    USER,
    h3,
    new_study,
    series_files,
    upload,
    zip_bytes,
)


def test_status_fault_answers_once_without_processing(emulator: Emulator, http: requests.Session):
    emulator.inject(Fault(method="POST", path=IMPORT, status=503, retry_after=7))
    body = zip_bytes(series_files(new_study(), 1, 2))

    refused = upload(http, emulator, body)
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "7"
    assert emulator.prearchive() == []

    assert upload(http, emulator, body).status_code == 200
    assert [r.status for r in emulator.requests()] == [503, 200]


def test_fault_matching_by_method_and_prefix_and_forever(
    emulator: Emulator, http: requests.Session
):
    emulator.inject(Fault(method="GET", path="/data/projects", status=502, times=0, body="gateway"))

    for _ in range(3):
        response = http.get(emulator.url + "/data/projects/P1?format=json")
        assert (response.status_code, response.text) == (502, "gateway")
    assert http.get(emulator.url + "/data/prearchive?format=json").status_code == 200
    emulator.clear_faults()
    assert http.get(emulator.url + "/data/projects/P1?format=json").status_code == 200


def test_fault_answers_with_its_content_type_and_location(
    emulator: Emulator, http: requests.Session
):
    page = "<html><body>Please sign in</body></html>"
    emulator.inject(
        Fault(method="GET", path="/data/projects", status=200, body=page, content_type="text/html")
    )
    emulator.inject(
        Fault(method="POST", path=IMPORT, status=302, location="https://sso.example.org/login")
    )
    emulator.inject(Fault(method="GET", path="/data/JSESSION", content_type="text/html"))

    login_page = http.get(emulator.url + "/data/projects/P1?format=json")
    assert (login_page.status_code, login_page.text) == (200, page)
    assert login_page.headers["Content-Type"] == "text/html"
    moved = http.post(
        emulator.url + IMPORT,
        params={"PROJECT_ID": "P1", "import-handler": "DICOM-zip"},
        data=zip_bytes(series_files(new_study(), 1, 1)),
        headers={"Content-Type": "application/zip"},
        allow_redirects=False,
        timeout=10,
    )
    assert moved.status_code == 302
    assert moved.headers["Location"] == "https://sso.example.org/login"
    assert emulator.prearchive() == []
    # Without a status the request is processed as usual; only the label changes.
    relabelled = http.get(emulator.url + "/data/JSESSION")
    assert relabelled.headers["Content-Type"] == "text/html"
    assert re.fullmatch(r"[0-9A-F]{32}", relabelled.text)
    assert (
        http.get(emulator.url + "/data/JSESSION").headers["Content-Type"].startswith("text/plain")
    )


@pytest.mark.parametrize("name", ["content_type", "location"])
def test_fault_header_values_stay_on_their_line(emulator: Emulator, name: str):
    with pytest.raises(ValueError, match=f"{name} must be one line of text"):
        emulator.inject(Fault(status=200, **{name: "text/html\r\nSet-Cookie: JSESSIONID=x"}))
    bad = requests.post(
        emulator.url + "/_emulator/faults", json={"status": 302, name: "a\nb"}, timeout=10
    )
    assert bad.status_code == 400
    assert emulator.faults.pending() == []


def test_delay_after_processing_trips_a_client_timeout_but_the_work_is_done(
    emulator: Emulator, http: requests.Session
):
    emulator.inject(Fault(method="POST", path=IMPORT, delay=1.0))
    body = zip_bytes(series_files(new_study(), 1, 2))

    with pytest.raises(requests.exceptions.ReadTimeout):
        http.post(
            emulator.url + IMPORT,
            params={"PROJECT_ID": "P1", "import-handler": "DICOM-zip"},
            data=body,
            headers={"Content-Type": "application/zip"},
            timeout=0.4,
        )
    # The client gave up; the import goes on (on a loaded machine it may not have finished yet).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = emulator.prearchive()
        if found and found[0].file_count == 2:
            break
        time.sleep(0.05)
    assert [s.file_count for s in emulator.prearchive()] == [2]


def test_drop_mid_body_resets_and_keeps_what_was_imported(
    emulator: Emulator, http: requests.Session
):
    files = series_files(new_study(), 1, 4)
    body = zip_bytes(files, zipfile.ZIP_STORED)
    cut = body.index(files[2][1]) + 100  # inside the third entry's data
    emulator.inject(Fault(method="POST", path=IMPORT, drop_after_bytes=cut))

    with pytest.raises(requests.exceptions.ConnectionError):
        upload(http, emulator, body)

    (session,) = emulator.prearchive()
    assert session.scans == {"1": ("001_0001.dcm", "001_0002.dcm")}
    assert session.status == "RECEIVING"
    (record,) = emulator.requests()
    assert (record.status, record.body_bytes) == (None, cut)
    # The server stays healthy: a retry of the same study goes to the same session.
    assert upload(http, emulator, body).status_code == 200
    assert emulator.prearchive()[0].file_count == 4


def test_drop_after_a_complete_body_leaves_no_answer(emulator: Emulator, http: requests.Session):
    emulator.inject(Fault(method="POST", path=IMPORT, drop_after_bytes=10**9))
    with pytest.raises(requests.exceptions.ConnectionError):
        upload(http, emulator, zip_bytes(series_files(new_study(), 1, 1)))
    assert emulator.prearchive()[0].file_count == 1


def test_read_delay_slows_the_upload(emulator: Emulator, http: requests.Session):
    body = zip_bytes(
        series_files(
            new_study(),
            1,
            4,
        ),
    )
    emulator.inject(Fault(method="POST", path=IMPORT, read_delay=0.4 * (1 << 20) / len(body)))
    started = time.monotonic()
    assert upload(http, emulator, body).status_code == 200
    assert time.monotonic() - started >= 0.35


def test_control_api_over_http(emulator: Emulator, http: requests.Session):
    control = emulator.url + "/_emulator"
    added = requests.post(
        control + "/faults", json={"method": "GET", "path": "/data/auth", "status": 429}, timeout=10
    )
    assert added.status_code == 200
    assert http.get(emulator.url + "/data/auth").status_code == 429
    requests.post(
        control + "/faults", json={"path": "/data/auth", "status": 500, "times": 0}, timeout=10
    )
    assert requests.delete(control + "/faults", timeout=10).json() == {"faults": []}
    assert http.get(emulator.url + "/data/auth").status_code == 200

    bad = requests.post(control + "/faults", json={"stauts": 500}, timeout=10)
    assert bad.status_code == 400
    assert "stauts" in bad.json()["error"]

    requests.post(control + "/projects", json={"id": "P2", "prearchive_code": 4}, timeout=10)
    assert http.get(emulator.url + "/data/projects/P2/prearchive_code").text == "4"

    session_id = http.get(emulator.url + "/data/JSESSION").text
    requests.post(control + "/expire-sessions", timeout=10)
    expired = requests.get(
        emulator.url + "/data/auth", cookies={"JSESSIONID": session_id}, timeout=10
    )
    assert expired.status_code == 401

    upload(http, emulator, zip_bytes(series_files(new_study(), 3, 1)))
    state = requests.get(control + "/state", timeout=10).json()
    assert [p["id"] for p in state["projects"]] == ["P1", "P2"]
    assert state["prearchive"][0]["scans"] == {"3": ["003_0001.dcm"]}
    assert state["archive"] == []
    assert state["requests"][-1]["path"] == IMPORT
    assert all(not r["path"].startswith("/_emulator") for r in state["requests"])


def test_a_stopped_emulator_refuses_connections_and_restarts_on_its_port(
    emulator: Emulator, http: requests.Session
):
    upload(http, emulator, zip_bytes(series_files(new_study(), 1, 1)))
    url = emulator.url
    emulator.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        http.get(url + "/data/auth", timeout=2)
    emulator.start()
    assert emulator.url == url
    assert http.get(url + "/data/auth").status_code == 200
    assert len(emulator.prearchive()) == 1


def test_command_line_serves_until_terminated(tmp_path: Path):
    command = [
        sys.executable,
        "-m",
        "xnat_standin",
        "--port",
        "0",
        "--project",
        "P1",
        "--project",
        "P2",
        "--user",
        f"{USER}:{PASSWORD}",
        "--root",
        str(tmp_path),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            match = re.fullmatch(
                r"XNAT stand-in listening on (http://127\.0\.0\.1:\d+) \(projects: P1, P2; "
                f"user: {USER}\\)\n",
                line,
            )
            assert match, line
            response = requests.get(
                match.group(1) + "/data/projects/P2?format=json", auth=(USER, PASSWORD), timeout=10
            )
            assert response.status_code == 200
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()


def test_status_page_shape(emulator: Emulator, http: requests.Session):
    response = http.get(emulator.url + "/data/projects/NOPE?format=json")
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.text.startswith("<html>\n<head>\n   <title>Status page</title>")
    assert h3(response) == "Unable to find the specified experiment."
