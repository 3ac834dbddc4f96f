"""xnat.XnatClient against the stand-in over real loopback HTTP: HTTP turned into typed errors."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from xnat_drop.adapters.credentials import Credentials
from xnat_drop.adapters.fs.zipstream import BundleEntry, ZipStream
from xnat_drop.adapters.xnat.answers import error_message
from xnat_drop.adapters.xnat.client import XnatClient
from xnat_drop.adapters.xnat.connection import USER_AGENT
from xnat_drop.core.errors import (
    XnatAuthError,
    XnatRejectedError,
    XnatServerError,
    XnatTransientError,
)
from xnat_drop.core.model import Target
from xnat_drop.core.xnatconfig import XnatConfig
from xnat_standin import Emulator, Fault
from xnat_standin.demo.samples import SeriesSpec, write_session

from conftest import PASSWORD, PROJECT, USER

TARGET = Target(PROJECT, "S01", "S01_MR1")


def client_for(
    url: str, user: str = USER, password: str = PASSWORD, read_timeout: float = 10
) -> XnatClient:
    cfg = XnatConfig(url, None, True, None, connect_timeout=2, read_timeout=read_timeout)
    return XnatClient(cfg, Credentials(user, password, "test"))


@pytest.fixture
def entries(tmp_path: Path) -> list[BundleEntry]:
    files = write_session(
        tmp_path / "s", [SeriesSpec(1, "T1", images=3), SeriesSpec(2, "BOLD", images=2)]
    )
    return [BundleEntry(f, str(f.relative_to(tmp_path / "s")), f.stat().st_size) for f in files]


def body(entries: list[BundleEntry]) -> ZipStream:
    return ZipStream(entries)


def test_upload_lands_in_the_prearchive_with_explicit_labels(
    emulator: Emulator, entries: list[BundleEntry]
) -> None:
    client = client_for(emulator.url)
    assert client.server_version() == "1.8.10"
    assert client.project_exists(PROJECT)
    uris = client.upload(lambda: body(entries), TARGET)
    [session] = emulator.prearchive()
    assert uris == (f"/data{session.uri}",)
    assert (session.project, session.subject, session.name) == (PROJECT, "S01", "S01_MR1")
    assert session.file_count == 5 and session.prevent_auto_commit
    [post] = [r for r in emulator.requests() if r.method == "POST"]
    assert post.query["import-handler"] == "DICOM-zip"
    assert post.query["prevent_auto_commit"] == "true"
    assert (post.query["PROJECT_ID"], post.query["SUBJECT_ID"], post.query["EXPT_LABEL"]) == (
        PROJECT,
        "S01",
        "S01_MR1",
    )
    assert post.user_agent == USER_AGENT and "Mozilla" not in post.user_agent
    assert post.body_bytes == len(body(entries))  # sent with its exact Content-Length


def test_logs_in_once_and_reuses_the_session_cookie(
    emulator: Emulator, entries: list[BundleEntry]
) -> None:
    client = client_for(emulator.url)
    for _ in range(3):
        assert client.project_exists(PROJECT)
    client.upload(lambda: body(entries), TARGET)
    logins = [r for r in emulator.requests() if r.path == "/data/JSESSION"]
    assert len(logins) == 1


def test_unknown_project_is_reported_not_guessed(emulator: Emulator) -> None:
    assert not client_for(emulator.url).project_exists("NOPE")


def test_wrong_password_is_an_auth_error_after_a_single_try(
    emulator: Emulator, entries: list[BundleEntry]
) -> None:
    client = client_for(emulator.url, password="wrong")
    with pytest.raises(XnatAuthError, match="401"):
        client.upload(lambda: body(entries), TARGET)
    attempts = [r for r in emulator.requests() if r.status == 401]
    assert len(attempts) == 1  # never hammer: XNAT locks the account after 20 failures
    assert emulator.prearchive() == []


def test_expired_session_logs_in_again_once(emulator: Emulator, entries: list[BundleEntry]) -> None:
    client = client_for(emulator.url)
    assert client.project_exists(PROJECT)
    emulator.expire_sessions()
    uris = client.upload(lambda: body(entries), TARGET)
    assert len(uris) == 1
    logins = [r for r in emulator.requests() if r.path == "/data/JSESSION"]
    assert len(logins) == 2


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_server_trouble_is_transient(
    emulator: Emulator, entries: list[BundleEntry], status: int
) -> None:
    emulator.inject(
        Fault(method="POST", path="/data/services/import", status=status, retry_after=7)
    )
    with pytest.raises(XnatTransientError) as caught:
        client_for(emulator.url).upload(lambda: body(entries), TARGET)
    assert str(status) in str(caught.value)
    assert caught.value.retry_after == 7


def test_500_is_a_server_error_not_an_outage(
    emulator: Emulator, entries: list[BundleEntry]
) -> None:
    emulator.inject(Fault(method="POST", path="/data/services/import", status=500))
    with pytest.raises(XnatServerError, match="500"):
        client_for(emulator.url).upload(lambda: body(entries), TARGET)


def test_403_is_an_auth_error(emulator: Emulator, entries: list[BundleEntry]) -> None:
    emulator.inject(Fault(method="POST", path="/data/services/import", status=403))
    with pytest.raises(XnatAuthError, match="403"):
        client_for(emulator.url).upload(lambda: body(entries), TARGET)


def test_connection_refused_is_transient() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(XnatTransientError, match="cannot reach XNAT"):
        client_for(f"http://127.0.0.1:{port}").project_exists(PROJECT)


def test_dropped_connection_mid_body_is_transient(
    emulator: Emulator, entries: list[BundleEntry]
) -> None:
    emulator.inject(Fault(method="POST", path="/data/services/import", drop_after_bytes=2000))
    with pytest.raises(XnatTransientError):
        client_for(emulator.url).upload(lambda: body(entries), TARGET)


def test_read_timeout_is_transient(emulator: Emulator, entries: list[BundleEntry]) -> None:
    emulator.inject(Fault(method="POST", path="/data/services/import", delay=3.0))
    with pytest.raises(XnatTransientError):
        client_for(emulator.url, read_timeout=1).upload(lambda: body(entries), TARGET)


def test_xnat_refusal_quotes_xnat(emulator: Emulator, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not dicom\n")
    entries = [BundleEntry(text, "notes.txt", text.stat().st_size)]
    with pytest.raises(XnatRejectedError) as caught:
        client_for(emulator.url).upload(lambda: body(entries), TARGET)
    assert caught.value.status == 400
    assert "unable to read DICOM object notes.txt" in str(caught.value)


def test_error_message_takes_the_status_page_h3() -> None:
    page = "<html><head><title>Status page</title></head>"
    page += "<body><h3>Unable to\n identify upload format.</h3>"
    assert error_message(page) == "Unable to identify upload format."
    assert error_message("<p>plain <b>text</b></p>") == "plain text"
