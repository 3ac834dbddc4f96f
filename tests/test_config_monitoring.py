"""The [status], [page], [metrics] and [notify] tables: cross-key checks and derived values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from xnat_drop.core.config import Config, parse
from xnat_drop.core.errors import ConfigError

BASE = Path("/etc/xnat-drop")


def parsed(**tables: dict[str, Any]) -> Config:
    data: dict[str, Any] = {"paths": {"root": "/srv/drop"}, "xnat": {"url": "https://x.org"}}
    data.update(tables)
    return parse(data, base=BASE, env={})


def problems(**tables: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parsed(**tables)
    return list(caught.value.problems)


def test_by_default_only_the_status_file_is_on() -> None:
    config = parsed()
    assert config.status.share == "one" and not config.status.html
    assert not config.page.enabled
    assert config.metrics.textfile is None
    assert not config.notify.enabled


@pytest.mark.parametrize(
    ("listen", "host", "port", "loopback"),
    [
        ("127.0.0.1:8870", "127.0.0.1", 8870, True),
        ("localhost:80", "localhost", 80, True),
        ("[::1]:8870", "::1", 8870, True),
        ("0.0.0.0:9000", "0.0.0.0", 9000, False),
        ("lab-server.example.org:8870", "lab-server.example.org", 8870, False),
    ],
)
def test_the_page_listens_on_host_and_port(
    listen: str, host: str, port: int, loopback: bool
) -> None:
    page = parsed(page={"listen": listen}).page
    assert (page.host, page.port, page.loopback, page.enabled) == (host, port, loopback, True)


@pytest.mark.parametrize("listen", ["8870", ":8870", "127.0.0.1:", "127.0.0.1:0", "h:70000"])
def test_a_listen_value_without_host_and_port_is_refused(listen: str) -> None:
    assert problems(page={"listen": listen}) == [
        f'page.listen: expected "host:port" such as "127.0.0.1:8870", got {listen!r}'
    ]


def test_the_textfile_must_be_one_node_exporter_reads() -> None:
    assert parsed(metrics={"textfile": "m/x.prom"}).metrics.textfile == BASE / "m/x.prom"
    assert problems(metrics={"textfile": "/tmp/x.txt"}) == [
        "metrics.textfile: node_exporter reads only files ending in .prom, got /tmp/x.txt"
    ]


def test_recipients_per_project_and_per_owner() -> None:
    notify = parsed(
        notify={
            "smtp_host": "mail.example.org",
            "projects": ["NEURO=a@x.org, b@x.org", "CARDIO=c@x.org"],
            "owners": ["alice=alice@x.org", "1002=bob@x.org"],
        }
    ).notify
    assert notify.email and notify.enabled
    assert notify.project_addresses("NEURO") == ("a@x.org", "b@x.org")
    assert notify.project_addresses("OTHER") == ()
    assert notify.owners == (("alice", "alice@x.org"), ("1002", "bob@x.org"))
    assert notify.port == 587


def test_every_notify_problem_is_named_at_once() -> None:
    found = problems(
        notify={
            "email_to": ["not-an-address"],
            "projects": ["NEURO"],
            "owners": ["alice"],
            "digest_time": "7:30",
            "events": ["failed", "exploded"],
            "smtp_port": 70000,
        }
    )
    assert found == [
        "notify.email_to: 'not-an-address' is not an e-mail address",
        "notify.projects: expected \"PROJECT=address,address\", got 'NEURO'",
        "notify.owners: expected \"user=address\", got 'alice'",
        'notify.digest_time: expected "HH:MM" such as "07:30", got \'7:30\'',
        "notify.events: 'exploded' is not one of 'failed', 'outage', 'credentials', "
        "'stuck', 'retrying'",
        "notify.smtp_port: must be a TCP port (1 to 65535), got 70000",
        "notify.smtp_host: addresses are set (email_to, projects or owners) but no server",
    ]


def test_plain_smtp_only_to_a_relay_on_this_machine() -> None:
    relay = {"smtp_host": "localhost", "smtp_security": "none", "email_to": ["a@b.c"]}
    local = parsed(notify=relay)
    assert local.notify.port == 25
    found = problems(notify={"smtp_host": "mail.x.org", "smtp_security": "none"})
    assert len(found) == 1 and found[0].startswith('notify.smtp_security: "none" sends mail')


def test_a_webhook_alone_turns_notifications_on() -> None:
    notify = parsed(notify={"webhook": "slack"}).notify
    assert notify.enabled and not notify.email
