"""The channels against real receivers: SMTP (aiosmtpd: plain, STARTTLS, SMTPS, a login), the
webhook (http.server), the secrets' sources, and the outbox with its sender thread."""

from __future__ import annotations

import random
import time
from dataclasses import replace
from pathlib import Path

import pytest

from xnat_drop.adapters.ledger import FILE_NAME, Ledger
from xnat_drop.adapters.notify import ChannelError, secrets, smtp, webhook
from xnat_drop.core.errors import ConfigError
from xnat_drop.core.mailing import Letter
from xnat_drop.core.monitoring import NotifyConfig
from xnat_drop.service.sender import Channels, Sender

from notify_helpers import (
    HOST,
    LabCa,
    free_port,
    hook_receiver,
    make_ca,
    private_file,
    smtp_server,
)

PASSWORD = "p4ss-w0rd!"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LabCa:
    return make_ca(tmp_path_factory.mktemp("ca"))


def server(port: int, security: smtp.SmtpSecurity = "none", **more: object) -> smtp.MailServer:
    return smtp.MailServer(HOST, port, security, "xnat-drop@lab.example.org", **more)  # type: ignore[arg-type]


def message(srv: smtp.MailServer, to: str = "admin@example.org") -> smtp.EmailMessage:
    return smtp.compose(srv, to, "[xnat-drop] hello", "body\n", "<abc@lab.example.org>", 0.0)


# -- e-mail ------------------------------------------------------------------------------------


def test_a_message_is_sent_with_its_headers() -> None:
    with smtp_server() as box:
        srv = server(box.port)
        with smtp.Session(srv) as session:
            session.send(message(srv))
        [got] = box.received()
    assert got["From"] == "xnat-drop@lab.example.org" and got["To"] == "admin@example.org"
    assert got["Message-ID"] == "<abc@lab.example.org>"
    assert got["Auto-Submitted"] == "auto-generated"
    assert got.get_content() == "body\n"


def test_starttls_verified_against_the_ca_bundle_and_a_login(ca: LabCa) -> None:
    with smtp_server(starttls=ca.server_context(), login=True) as box:
        srv = server(box.port, "starttls", ca_bundle=ca.ca, user="mailer", password=PASSWORD)
        with smtp.Session(srv) as session:
            session.send(message(srv))
        assert len(box.received()) == 1 and box.logins == [("mailer", PASSWORD)]

        wrong = server(box.port, "starttls", ca_bundle=ca.ca, user="mailer", password="nope")
        with pytest.raises(ChannelError, match="refused the login of 'mailer'") as caught:
            smtp.Session(wrong).__enter__()
        assert "nope" not in str(caught.value) and not caught.value.permanent

        untrusted = server(box.port, "starttls", user="mailer", password=PASSWORD)
        with pytest.raises(ChannelError, match=r"not trusted.*smtp_ca_bundle"):
            smtp.Session(untrusted).__enter__()


def test_smtps_verified_against_the_ca_bundle(ca: LabCa) -> None:
    with smtp_server(smtps=ca.server_context()) as box:
        srv = server(box.port, "ssl", ca_bundle=ca.ca)
        with smtp.Session(srv) as session:
            session.send(message(srv))
        assert len(box.received()) == 1


def test_a_refused_message_is_refused_for_good_a_server_away_is_not() -> None:
    with smtp_server() as box:
        box.refuse = "550 5.1.1 no such user"
        srv = server(box.port)
        with smtp.Session(srv) as session, pytest.raises(ChannelError) as caught:
            session.send(message(srv))
        assert caught.value.permanent and "550" in str(caught.value)
    with pytest.raises(ChannelError, match=r"cannot reach 127\.0\.0\.1") as away:
        smtp.Session(server(free_port())).__enter__()
    assert not away.value.permanent


# -- the webhook -------------------------------------------------------------------------------


def test_the_webhook_posts_json_with_an_idempotency_key() -> None:
    with hook_receiver() as hook:
        webhook.post(webhook.Webhook(hook.url), b'{"text": "hi"}', "k-1")
        [posted] = hook.received()
        assert posted.body == {"text": "hi"} and posted.headers["Idempotency-Key"] == "k-1"
        hook.status = 500
        with pytest.raises(ChannelError) as caught:
            webhook.post(webhook.Webhook(hook.url), b"{}", "k-2")
    assert (
        str(caught.value)
        == f"the webhook at {HOST}:{hook.url.split(':')[2].split('/')[0]} answered HTTP 500"
    )
    assert "s3cr3t" not in str(caught.value)  # the URL's path is the secret: never shown


def test_the_webhook_follows_no_redirect() -> None:
    with hook_receiver() as hook:
        hook.status = 307
        with pytest.raises(ChannelError, match="answered HTTP 307"):
            webhook.post(webhook.Webhook(hook.url), b"{}", "k")
        assert len(hook.received()) == 1


# -- the secrets -------------------------------------------------------------------------------

MAIL = NotifyConfig(email_to=("a@example.org",), smtp_host="localhost", smtp_user="mailer")


def _config(**keys: object) -> NotifyConfig:
    return replace(MAIL, **keys)  # type: ignore[arg-type]


def test_the_systemd_credential_comes_first(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    private_file(creds / "smtp-password", f"{PASSWORD}\n").chmod(0o440)  # systemd's ACL mode
    own = private_file(tmp_path / "password", "other\n")
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    found = secrets.load(_config(smtp_password_file=own), env)
    assert found.smtp_password == PASSWORD and found.smtp_source == str(creds / "smtp-password")
    assert PASSWORD not in repr(found)


def test_a_channel_without_its_secret_cannot_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        secrets.load(_config(webhook="slack"), {})
    assert [p.split(":")[0] for p in caught.value.problems] == [
        "notify.smtp_password_file",
        "notify.webhook_url_file",
    ]
    loose = tmp_path / "password"
    loose.write_text(PASSWORD)
    loose.chmod(0o644)
    with pytest.raises(ConfigError, match=r"readable by group or others.*chmod 600"):
        secrets.load(_config(smtp_password_file=loose), {})
    assert secrets.load(_config(smtp_user=""), {}).smtp_password == ""  # no login, no secret


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://hooks.example.org/T0/B0/xyz", ""),
        ("http://127.0.0.1:8080/hook", ""),
        ("http://hooks.example.org/T0/B0/xyz", "plain http to hooks.example.org"),
        ("hooks.example.org/xyz", r"does not hold an http\(s\) URL"),
    ],
)
def test_the_webhook_url_must_be_https_off_this_machine(
    tmp_path: Path, url: str, problem: str
) -> None:
    path = private_file(tmp_path / "url", url + "\n")
    config = NotifyConfig(webhook="json", webhook_url_file=path)
    if not problem:
        found = secrets.load(config, {})
        assert found.webhook_url == url and found.webhook_host in url
        return
    with pytest.raises(ConfigError, match=problem) as caught:
        secrets.load(config, {})
    assert "xyz" not in str(caught.value)


# -- the outbox and its sender -----------------------------------------------------------------


def letter(key: str, to: str = "admin@example.org", at: float | None = None) -> Letter:
    return Letter(
        key, "failed", "email", to, f"[xnat-drop] {key}", f"body of {key}\n", (), at or time.time()
    )


def sender(tmp_path: Path, port: int, **more: object) -> Sender:
    channels = Channels(server(port), first_delay=0.2, max_delay=0.5, **more)  # type: ignore[arg-type]
    return Sender(tmp_path / FILE_NAME, channels, time.time, random.Random(1))


def test_the_sender_sends_each_letter_once_and_marks_it(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / FILE_NAME)
    with smtp_server() as box:
        assert ledger.enqueue([letter("a"), letter("b")], {}) == 2
        thread = sender(tmp_path, box.port)
        thread.start()
        box.wait_for(2)
        assert ledger.enqueue([letter("a")], {}) == 0  # the same key: never again
        thread.wake()
        time.sleep(0.5)
        thread.stop(5)
    assert sorted(box.subjects()) == ["[xnat-drop] a", "[xnat-drop] b"]
    ids = {m["Message-ID"] for m in box.received()}
    assert len(ids) == 2 and all(i.endswith("@lab.example.org>") for i in ids)
    assert thread.health()["state"] == "ok" and thread.health()["pending"] == 0
    ledger.close()


def test_a_server_away_is_failing_and_what_waits_is_sent_once_it_is_back(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / FILE_NAME)
    port = free_port()
    ledger.enqueue([letter("a")], {})
    thread = sender(tmp_path, port)
    thread.start()
    deadline = time.monotonic() + 10
    while thread.health()["state"] != "failing":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    health = thread.health()
    assert health["pending"] == 1 and "cannot reach 127.0.0.1" in health["last_error"]
    with smtp_server(port) as box:
        box.wait_for(1)
        time.sleep(0.3)
        thread.stop(5)
    assert thread.health()["state"] == "ok" and len(box.received()) == 1
    ledger.close()


def test_a_storm_to_one_recipient_goes_as_one_digest(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / FILE_NAME)
    old = time.time() - 60  # a backlog: waited longer than the window already
    ledger.enqueue([letter(f"s{i:02}", at=old + i) for i in range(12)], {})
    ledger.enqueue([letter("other", to="p1@example.org", at=old)], {})
    with smtp_server() as box:
        thread = sender(tmp_path, box.port, storm_limit=5, storm_window=30.0)
        thread.start()
        box.wait_for(2)
        time.sleep(0.5)
        thread.stop(5)
    by_to = {str(m["To"]): m for m in box.received()}
    assert sorted(by_to) == ["admin@example.org", "p1@example.org"]
    digest = by_to["admin@example.org"]
    assert digest["Subject"] == "[xnat-drop] 12 notifications (digest)"
    assert all(f"body of s{i:02}" in digest.get_content() for i in range(12))
    assert by_to["p1@example.org"]["Subject"] == "[xnat-drop] other"
    ledger.close()


def test_a_hung_server_never_holds_up_a_stop(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / FILE_NAME)
    ledger.enqueue([letter("a")], {})
    with _silent_listener() as port:
        channels = Channels(smtp.MailServer(HOST, port, "none", "x@lab.example.org", timeout=20))
        thread = Sender(tmp_path / FILE_NAME, channels, time.time, random.Random(1))
        thread.start()
        time.sleep(0.5)
        started = time.monotonic()
        thread.stop(1.0)
        assert time.monotonic() - started < 2.0
    ledger.close()


class _silent_listener:  # noqa: N801 - used as a context manager
    """A TCP port that accepts connections and never says a word (a hung mail server)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind((HOST, 0))
        self.sock.listen(5)
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
