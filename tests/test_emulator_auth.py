"""The XNAT stand-in's authentication, over real HTTP (xnat-api.md §2, §6.3)."""

from __future__ import annotations

import http.client
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from xnat_standin import Emulator

from emulator_helpers import PASSWORD, USER, client

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[Emulator]:
    with Emulator(
        tmp_path / "xnat",
        users={USER: PASSWORD},
        projects=["P1"],
        session_timeout=0.5,
        max_failed_logins=3,
    ) as server:
        yield server


def get(emu: Emulator, path: str, **kwargs: object) -> requests.Response:
    headers = {"User-Agent": "xnat-drop-tests/1", **kwargs.pop("headers", {})}  # type: ignore[dict-item]
    return requests.get(
        emu.url + path, headers=headers, allow_redirects=False, timeout=10, **kwargs
    )  # type: ignore[arg-type]


def test_no_credentials_challenges_scripts_and_redirects_browsers(emu: Emulator):
    script = get(emu, "/data/projects/P1")
    browser = get(emu, "/data/projects/P1", headers={"User-Agent": BROWSER})

    assert script.status_code == 401
    assert script.headers["WWW-Authenticate"] == 'Basic realm="XNAT"'
    assert browser.status_code == 302
    assert browser.headers["Location"].endswith("/app/template/Login.vm")


def test_wrong_password_is_a_servlet_401(emu: Emulator):
    response = get(emu, "/data/projects/P1", auth=(USER, "wrong"))

    assert response.status_code == 401
    assert "HTTP Status 401" in response.text
    assert "Login attempt failed. Please try again." in response.text
    assert "WWW-Authenticate" not in response.headers


def test_basic_auth_opens_a_session_whose_cookie_then_suffices(emu: Emulator):
    first = get(emu, "/data/JSESSION", auth=(USER, PASSWORD))
    session_id = first.text

    assert first.headers["Content-Type"].startswith("text/plain")
    assert re.fullmatch(r"[0-9A-F]{32}", session_id)
    assert first.cookies["JSESSIONID"] == session_id
    by_cookie = get(emu, "/data/auth", cookies={"JSESSIONID": session_id})
    assert (by_cookie.status_code, by_cookie.text) == (200, f"User '{USER}' is logged in")
    assert "Set-Cookie" not in by_cookie.headers  # reused, not a new session


def test_each_basic_request_without_the_cookie_makes_a_new_session(emu: Emulator):
    one = get(emu, "/data/projects/P1?format=json", auth=(USER, PASSWORD))
    two = get(emu, "/data/projects/P1?format=json", auth=(USER, PASSWORD))
    assert one.cookies["JSESSIONID"] != two.cookies["JSESSIONID"]


def test_sessions_expire_when_idle_or_on_demand(emu: Emulator):
    session_id = get(emu, "/data/JSESSION", auth=(USER, PASSWORD)).text
    time.sleep(0.7)
    assert get(emu, "/data/auth", cookies={"JSESSIONID": session_id}).status_code == 401

    session_id = get(emu, "/data/JSESSION", auth=(USER, PASSWORD)).text
    emu.expire_sessions()
    assert get(emu, "/data/auth", cookies={"JSESSIONID": session_id}).status_code == 401


def test_delete_jsession_logs_out(emu: Emulator):
    with client() as http:
        session_id = http.get(emu.url + "/data/JSESSION").text
        assert http.delete(emu.url + "/data/JSESSION").status_code == 200
    assert get(emu, "/data/auth", cookies={"JSESSIONID": session_id}).status_code == 401


def test_services_auth_form_login(emu: Emulator):
    ok = requests.post(
        emu.url + "/data/services/auth", data={"username": USER, "password": PASSWORD}, timeout=10
    )
    bad = requests.post(
        emu.url + "/data/services/auth", data={"username": USER, "password": "nope"}, timeout=10
    )

    assert ok.status_code == 200
    assert get(emu, "/data/auth", cookies={"JSESSIONID": ok.text}).status_code == 200
    assert bad.status_code == 401
    assert "<h3>Authentication failed.</h3>" in bad.text


def test_repeated_failures_lock_the_account(emu: Emulator):
    for _ in range(3):
        assert get(emu, "/data/auth", auth=(USER, "wrong")).status_code == 401
    assert get(emu, "/data/auth", auth=(USER, PASSWORD)).status_code == 401  # locked

    emu.unlock_user(USER)
    assert get(emu, "/data/auth", auth=(USER, PASSWORD)).status_code == 200


def test_success_resets_the_failure_count(emu: Emulator):
    for _ in range(2):
        get(emu, "/data/auth", auth=(USER, "wrong"))
    assert get(emu, "/data/auth", auth=(USER, PASSWORD)).status_code == 200
    for _ in range(2):
        get(emu, "/data/auth", auth=(USER, "wrong"))
    assert get(emu, "/data/auth", auth=(USER, PASSWORD)).status_code == 200


def test_alias_token_issue_use_and_invalidate(emu: Emulator):
    with client() as http:
        token = http.get(emu.url + "/data/services/tokens/issue").json()
    assert re.fullmatch(r"[0-9a-f-]{36}", token["alias"])
    assert re.fullmatch(r"[A-Za-z0-9]{64}", token["secret"])
    assert token["xdatUserId"] == USER
    assert token["estimatedExpirationTime"] > token["created"]

    as_token = get(emu, "/data/auth", auth=(token["alias"], token["secret"]))
    assert (as_token.status_code, as_token.text) == (200, f"User '{USER}' is logged in")
    validate = get(
        emu,
        f"/data/services/tokens/validate/{token['alias']}/{token['secret']}",
        auth=(USER, PASSWORD),
    )
    assert validate.json() == {"valid": USER}

    invalidated = get(
        emu, f"/data/services/tokens/invalidate/{token['alias']}", auth=(USER, PASSWORD)
    )
    assert invalidated.json() == {"result": "OK"}
    assert get(emu, "/data/auth", auth=(token["alias"], token["secret"])).status_code == 401


def test_build_info_is_open(emu: Emulator):
    response = get(emu, "/xapi/siteConfig/buildInfo")
    assert response.status_code == 200
    assert response.json()["version"] == "1.8.10"
    assert get(emu, "/xapi/anything/else").status_code == 401


def test_keep_alive_serves_several_requests_on_one_connection(emu: Emulator):
    connection = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=10)
    headers = {"Authorization": requests.auth._basic_auth_str(USER, PASSWORD)}
    try:
        for _ in range(3):
            connection.request("GET", "/data/projects/P1?format=json", headers=headers)
            response = connection.getresponse()
            assert response.status == 200
            assert response.read()
            assert response.getheader("Connection") is None
    finally:
        connection.close()
    assert [record.status for record in emu.requests()] == [200, 200, 200]
