"""config.py and `xnat-drop check-config`: the example stays valid, every problem is reported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from xnat_drop.adapters import configfile
from xnat_drop.core.config import parse
from xnat_drop.core.errors import ConfigError
from xnat_drop.core.model import Policy
from xnat_drop.core.options import OPTIONS

EXAMPLE = Path(__file__).parent.parent / "etc" / "xnat-drop.toml"
MINIMAL = {"paths": {"root": "/srv/drop"}, "xnat": {"url": "https://xnat.example.org"}}


def problems_of(data: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(data, base=Path("/etc/xnat-drop"), env={})
    return list(caught.value.problems)


def test_example_config_loads_with_the_documented_defaults() -> None:
    cfg = configfile.load(EXAMPLE, env={})
    assert cfg.paths.incoming == Path("/srv/xnat-drop/incoming")
    assert cfg.paths.work == Path("/srv/xnat-drop/.work")
    assert cfg.xnat.url == "https://xnat.example.org"
    assert cfg.xnat.verify_tls is True and cfg.xnat.ca_bundle is None
    assert cfg.routing.layout == ("project", "subject", "session")
    assert cfg.watch.observer == "inotify" and cfg.watch.settle == 60
    assert cfg.rules.policy("nifti") is Policy.REJECT
    # the example shows the defaults: the minimal config must give the same values
    minimal = parse(MINIMAL, base=EXAMPLE.parent, env={})
    assert (minimal.watch, minimal.retry, minimal.rules, minimal.routing) == (
        cfg.watch,
        cfg.retry,
        cfg.rules,
        cfg.routing,
    )


def test_example_documents_every_key() -> None:
    """Each key the parser knows appears in the example (set or commented)."""
    text = EXAMPLE.read_text()
    keys = [option.name for option in OPTIONS]
    for key in keys:
        assert f"{key} = " in text, key


def test_every_problem_is_reported_at_once_with_its_key_path() -> None:
    problems = problems_of(
        {
            "paths": {"root": "/srv/drop", "incomming": "/x"},
            "watch": {"settle_seconds": "sixty", "observer": "fanotify"},
            "xnat": {"url": "ftp://xnat"},
            "rules": {"nifti": "ignore"},
            "retry": {"first_delay_seconds": True},
            "extra": 1,
        }
    )
    assert len(problems) == 7, problems
    joined = "\n".join(problems)
    for fragment in (
        "paths.incomming: unknown key (did you mean 'incoming'?)",
        "watch.settle_seconds: expected a number of seconds",
        "watch.observer: must be one of 'inotify', 'polling'",
        "xnat.url: must be an https:// URL",
        "rules.nifti: must be one of 'reject', 'exclude'",
        "retry.first_delay_seconds: expected a number of seconds, got True",
        "extra: unknown key",
    ):
        assert fragment in joined


def test_required_keys() -> None:
    problems = problems_of({})
    assert any(p.startswith("paths.root:") for p in problems)
    assert any(p.startswith("xnat.url: required") for p in problems)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://xnat.example.org", "clear text"),
        ("https://bob:pw@xnat.example.org", "must not contain credentials"),
        ("https://xnat.example.org/?a=1", "query"),
    ],
)
def test_unsafe_urls_are_refused(url: str, fragment: str) -> None:
    problems = problems_of({**MINIMAL, "xnat": {"url": url}})
    assert any(fragment in p for p in problems), problems


def test_plain_http_on_loopback_is_fine() -> None:
    cfg = parse({**MINIMAL, "xnat": {"url": "http://127.0.0.1:8080/"}}, base=Path("/"), env={})
    assert cfg.xnat.url == "http://127.0.0.1:8080"


@pytest.mark.parametrize(
    ("routing", "fragment"),
    [
        ({"layout": "project/session", "order": ["layout"]}, "routing.subject: no source can give"),
        ({"layout": "project/visit/session"}, "must be levels from"),
        (
            {"layout": "subject/session", "order": ["layout", "default"]},
            "routing.project: no source",
        ),
        ({"order": ["layout", "magic"]}, "routing.order: must list sources from"),
        (
            {"subject_template": "{Patient ID}"},
            "routing.subject_template: {Patient ID} is not a DICOM",
        ),
        ({"session_template": "fixed"}, "routing.session_template: has no {DicomKeyword}"),
    ],
)
def test_routing_problems(routing: dict[str, object], fragment: str) -> None:
    problems = problems_of({**MINIMAL, "routing": routing})
    assert any(fragment in p for p in problems), problems


def test_routing_sources_and_templates() -> None:
    routing = {
        "layout": "project/*/session",
        "order": ["template", "dicom", "default"],
        "subject_template": "{PatientID}",
        "session_template": "{PatientID}_{StudyDate}",
        "sanitize_labels": True,
    }
    cfg = parse({**MINIMAL, "routing": routing}, base=Path("/"), env={})
    assert cfg.routing.layout == ("project", "*", "session")
    assert cfg.routing.template("session") == "{PatientID}_{StudyDate}"
    assert cfg.routing.sanitize_labels
    keywords = cfg.dicom_keywords
    assert "PatientID" in keywords and "StudyDate" in keywords and "PatientComments" in keywords


@pytest.mark.parametrize(
    ("rules", "fragment"),
    [
        ({"mixed-studies": "exclude"}, "rules.mixed-studies: this rule always rejects"),
        ({"phi": "exclude"}, "rules.phi: must be one of 'off', 'reject'"),
        ({"derived_description_patterns": ["(unclosed"]}, "is not a valid regular expression"),
        ({"phi_tags": ["Patient Name"]}, "rules.phi_tags: 'Patient Name' is not a DICOM keyword"),
    ],
)
def test_rules_problems(rules: dict[str, object], fragment: str) -> None:
    problems = problems_of({**MINIMAL, "rules": rules})
    assert any(fragment in p for p in problems), problems


def test_phi_check_reads_its_tags() -> None:
    cfg = parse(
        {**MINIMAL, "rules": {"phi": "reject", "phi_tags": ["PatientName"]}}, base=Path("/"), env={}
    )
    assert cfg.rules.phi and "PatientName" in cfg.dicom_keywords


def test_folders_must_not_overlap_incoming() -> None:
    problems = problems_of(
        {**MINIMAL, "paths": {"root": "/srv/drop", "done": "/srv/drop/incoming/done"}}
    )
    assert any(p.startswith("paths.done: must not overlap incoming") for p in problems), problems


def test_relative_paths_are_taken_from_the_config_folder() -> None:
    cfg = parse({**MINIMAL, "paths": {"root": "drop"}}, base=Path("/etc/xnat-drop"), env={})
    assert cfg.paths.failed == Path("/etc/xnat-drop/drop/failed")


def test_state_directory_from_systemd() -> None:
    cfg = parse(MINIMAL, base=Path("/"), env={"STATE_DIRECTORY": "/var/lib/xnat-drop-test"})
    assert cfg.paths.state == Path("/var/lib/xnat-drop-test")


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xnat_drop", "check-config", "--offline", "--config", str(path)],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )


def write(tmp_path: Path, body: str, secret_mode: int = 0o600) -> Path:
    (tmp_path / "drop").mkdir(exist_ok=True)
    secret = tmp_path / "secret"
    secret.write_text("alice:pw\n")
    secret.chmod(secret_mode)
    config = tmp_path / "c.toml"
    config.write_text(
        f'[paths]\nroot = "{tmp_path}/drop"\n'
        f'[xnat]\nurl = "https://x.example"\nsecret_file = "{secret}"\n{body}'
    )
    return config


def test_check_config_exit_codes(tmp_path: Path) -> None:
    good = check_config(write(tmp_path, ""))
    assert good.returncode == 0, good.stderr
    assert "OK" in good.stdout and "alice" in good.stdout and "pw" not in good.stdout

    bad = check_config(write(tmp_path, "[watch]\nsettle = 3\n"))
    assert bad.returncode == 78
    assert "watch.settle: unknown key (did you mean 'settle_seconds'?)" in bad.stderr

    syntax = check_config(write(tmp_path, "[watch\n"))
    assert syntax.returncode == 78 and "TOML syntax error" in syntax.stderr

    missing = check_config(tmp_path / "nope.toml")
    assert missing.returncode == 78 and "cannot read" in missing.stderr

    config = write(tmp_path, "")
    (tmp_path / "drop").rmdir()
    unmounted = check_config(config)
    assert unmounted.returncode == 78 and "is the share mounted?" in unmounted.stderr


def test_check_config_refuses_a_readable_secret(tmp_path: Path) -> None:
    result = check_config(write(tmp_path, "", secret_mode=0o644))
    assert result.returncode == 78
    assert "readable by group or others" in result.stderr and "chmod 600" in result.stderr
    assert "alice:pw" not in result.stderr


def test_a_systemd_credential_may_be_group_readable_but_a_secret_file_may_not(
    tmp_path: Path,
) -> None:
    """systemd >= 254 hands the service its credential with an ACL: mode 0440."""
    from xnat_drop.adapters import credentials

    creds_dir = tmp_path / "credentials"
    creds_dir.mkdir()
    secret = creds_dir / credentials.CREDENTIAL_NAME
    secret.write_text("alias-1234:token\n")
    secret.chmod(0o440)
    found = credentials.load(None, {"CREDENTIALS_DIRECTORY": str(creds_dir)})
    assert (found.user, found.secret) == ("alias-1234", "token")
    secret.chmod(0o444)  # readable by others: refused even there
    with pytest.raises(ConfigError, match="readable by group or others"):
        credentials.load(None, {"CREDENTIALS_DIRECTORY": str(creds_dir)})
    plain = tmp_path / "secret"
    plain.write_text("alice:pw\n")
    plain.chmod(0o440)
    with pytest.raises(ConfigError, match="chmod 600"):
        credentials.load(plain, {})


def test_a_time_zone_the_tz_database_does_not_know_is_exit_78(tmp_path: Path) -> None:
    known = check_config(write(tmp_path, '[report]\ntime_zone = "Europe/Berlin"\n'))
    assert known.returncode == 0, known.stderr
    typo = check_config(write(tmp_path, '[report]\ntime_zone = "Europe/Berln"\n'))
    assert typo.returncode == 78
    assert "report.time_zone: 'Europe/Berln' is not a time zone name" in typo.stderr
