"""The systemd packaging: the unit, its drop-in example, sysusers.d and tmpfiles.d files.

Checked with systemd's own tools, offline (no running systemd needed): `systemd-analyze verify`
must be silent, `systemd-analyze security --offline=yes` must rate the unit <= 1.5 with every
remaining exposure justified in the unit, and sysusers/tmpfiles must create the user and
/etc/xnat-drop in a scratch root. The unit's program, /opt/xnat-drop/bin/xnat-drop, does not
exist on a development machine: verify is run on the file as it is (that complaint is the only
one allowed) and on a copy whose two Exec lines point at a real executable (nothing allowed).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
SYSTEMD = REPO / "systemd"
UNIT = SYSTEMD / "xnat-drop.service"
DROP_IN = SYSTEMD / "xnat-drop.service.d" / "local.conf.example"
SYSUSERS = SYSTEMD / "xnat-drop.sysusers.conf"
TMPFILES = SYSTEMD / "xnat-drop.tmpfiles.conf"
EXAMPLE_CONFIG = REPO / "etc" / "xnat-drop.toml"

PROGRAM = "/opt/xnat-drop/bin/xnat-drop"
CONFIG = "/etc/xnat-drop/config.toml"
SECRET = "/etc/xnat-drop/xnat-secret"
MAX_EXPOSURE = 1.5

# The one complaint verify may make about the file as it is, on a machine without the program.
MISSING_PROGRAM = (
    f"xnat-drop.service: Command {PROGRAM} is not executable: No such file or directory"
)

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian: apt install systemd)",
)


def directives(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment in a unit file, in order, repeats kept."""
    out: list[tuple[str, str, str]] = []
    section = ""
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not an assignment: {line!r}"
        out.append((section, key.strip(), value.strip()))
    return out


def values(text: str, section: str, key: str) -> list[str]:
    return [v for s, k, v in directives(text) if s == section and k == key]


def one(text: str, section: str, key: str) -> str:
    found = values(text, section, key)
    assert len(found) == 1, f"[{section}] {key}= set {len(found)} times: {found}"
    return found[0]


def seconds(span: str) -> float:
    """A systemd time span such as "60s", "1min 30s" or "90" (seconds) in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span):
        total += float(number) * units[unit]
    return total


def table_rows(path: Path) -> list[list[str]]:
    """The whitespace-separated fields of each non-comment line (quoted fields kept whole)."""
    rows = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            rows.append(re.findall(r'"[^"]*"|\S+', line))
    return rows


def tool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run a systemd tool; its output is plain text (no colours, no pager)."""
    return subprocess.run(
        list(map(str, args)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "cat"},
    )


def analyze(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return tool("systemd-analyze", *args)


def lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


def installable_copy(tmp_path: Path, drop_in: str | None = None) -> Path:
    """The unit in tmp_path, its two Exec lines running a real executable instead of PROGRAM.

    With `drop_in`, also tmp_path/xnat-drop.service.d/local.conf holding that text: systemd-analyze
    reads drop-ins from beside the unit file, as systemd does from /etc/systemd/system.
    """
    program = tmp_path / "bin" / "xnat-drop"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    text = UNIT.read_text()
    copied = re.sub(
        rf"^(ExecStart(?:Pre)?=){re.escape(PROGRAM)} ", rf"\g<1>{program} ", text, flags=re.M
    )
    assert copied.count(str(program)) == 2, "expected ExecStartPre= and ExecStart= to run PROGRAM"
    unit = tmp_path / "xnat-drop.service"
    unit.write_text(copied)
    if drop_in is not None:
        folder = tmp_path / "xnat-drop.service.d"
        folder.mkdir()
        (folder / "local.conf").write_text(drop_in)
    return unit


def with_options(drop_in: str, *keys: str) -> str:
    """The drop-in example with the commented-out `#Key=value` lines for `keys` switched on
    (all of them when no key is named)."""

    def switch(match: re.Match[str]) -> str:
        return match.group(1) if not keys or match.group(2) in keys else match.group(0)

    return re.sub(r"^#(([A-Z][A-Za-z]+)=.*)$", switch, drop_in, flags=re.M)


def exposure(unit: Path) -> tuple[float, list[str]]:
    """systemd-analyze's overall exposure for `unit`, and the settings that still add to it."""
    result = analyze("security", "--offline=yes", "--no-pager", unit)
    assert result.returncode == 0, result.stdout + result.stderr
    overall = re.search(r"Overall exposure level for xnat-drop\.service: (\d+\.\d+)", result.stdout)
    assert overall, result.stdout
    # A row that still costs something ends with its exposure; a satisfied row has none.
    exposed = re.findall(r"^\S+\s+(\S+=\S*)\s.*\s(\d+\.\d+)\s*$", result.stdout, flags=re.M)
    return float(overall.group(1)), [name for name, _ in exposed]


# --- what the unit promises (no tools needed) ---


def test_the_unit_speaks_the_daemon_protocol() -> None:
    unit = UNIT.read_text()
    assert one(unit, "Service", "Type") == "notify"
    assert one(unit, "Service", "NotifyAccess") == "main"
    watchdog = seconds(one(unit, "Service", "WatchdogSec"))
    assert 10 <= watchdog <= 600, "the daemon pings at half of it, also during uploads"
    assert one(unit, "Service", "Restart") == "on-failure"
    assert "78" in one(unit, "Service", "RestartPreventExitStatus").split()
    pre = f"{PROGRAM} check-config --offline --config {CONFIG}"  # run asks XNAT itself
    assert one(unit, "Service", "ExecStartPre") == pre
    assert one(unit, "Service", "ExecStart") == f"{PROGRAM} run --config {CONFIG}"
    assert one(unit, "Service", "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(unit, "Service", "KillMode") == "mixed"
    assert seconds(one(unit, "Service", "TimeoutStopSec")) > 60, "stop_timeout_seconds is 60"
    # RestartPreventExitStatus= does not cover ExecStartPre=: a bounded number of retries.
    assert int(one(unit, "Unit", "StartLimitBurst")) > 0
    assert seconds(one(unit, "Unit", "StartLimitIntervalSec")) > 5 * seconds(
        one(unit, "Service", "RestartSec")
    )


def test_the_unit_runs_as_its_own_user_with_the_secret_as_a_credential() -> None:
    unit = UNIT.read_text()
    assert one(unit, "Service", "User") == "xnat-drop"
    assert one(unit, "Service", "Group") == "xnat-drop"
    assert one(unit, "Service", "LoadCredential") == f"xnat-secret:{SECRET}"
    assert one(unit, "Service", "StateDirectory") == "xnat-drop"
    assert one(unit, "Service", "StateDirectoryMode") == "0750"
    assert one(unit, "Service", "UMask") == "0007"
    # The secret never travels in the environment or on a command line.
    for key in ("Environment", "ExecStart", "ExecStartPre", "ExecReload"):
        for value in values(unit, "Service", key):
            assert "secret" not in value.lower(), f"{key}={value}"


def test_the_drop_tree_is_named_once_in_the_drop_in_and_matches_the_example_config() -> None:
    unit, drop_in = UNIT.read_text(), DROP_IN.read_text()
    assert values(unit, "Service", "ReadWritePaths") == [], "the unit names no site path"
    root = tomllib.loads(EXAMPLE_CONFIG.read_text())["paths"]["root"]
    assert one(drop_in, "Service", "ReadWritePaths") == root
    assert one(drop_in, "Unit", "RequiresMountsFor") == root
    # Everything else in the example is commented out: it changes nothing until a site opts in.
    active = {(s, k) for s, k, _ in directives(drop_in)}
    assert active == {("Service", "ReadWritePaths"), ("Unit", "RequiresMountsFor")}


def test_sysusers_and_tmpfiles_agree_with_the_unit() -> None:
    unit = UNIT.read_text()
    users = [row for row in table_rows(SYSUSERS) if row[0] == "u"]
    assert len(users) == 1
    _, name, uid, gecos, home, shell = users[0]
    assert (name, uid, home, shell) == ("xnat-drop", "-", "/var/lib/xnat-drop", "/usr/sbin/nologin")
    assert name == one(unit, "Service", "User")
    assert home == "/var/lib/" + one(unit, "Service", "StateDirectory")
    assert ":" not in gecos, "':' would split the passwd line"
    rules = {row[1]: row for row in table_rows(TMPFILES)}
    assert rules["/etc/xnat-drop"][:5] == ["d", "/etc/xnat-drop", "0750", "root", "xnat-drop"]
    assert rules[CONFIG][:5] == ["z", CONFIG, "0640", "root", "xnat-drop"]
    assert rules[SECRET][:5] == ["f", SECRET, "0600", "root", "root"]
    assert one(unit, "Service", "LoadCredential").endswith(":" + SECRET)


# --- systemd-analyze verify ---


@needs_analyze
def test_verify_reports_nothing_but_the_program_missing_on_this_machine() -> None:
    result = analyze("verify", UNIT)
    if Path(PROGRAM).exists():
        assert (result.returncode, lines(result)) == (0, [])
    else:
        assert lines(result), "verify should notice that the program is missing"
        assert set(lines(result)) == {MISSING_PROGRAM}, "\n".join(lines(result))


@needs_analyze
@pytest.mark.parametrize(
    "options",
    [None, (), ("SupplementaryGroups",), "all"],
    ids=["unit-alone", "with-drop-in", "with-group", "with-every-option"],
)
def test_verify_is_silent_once_the_program_is_installed(
    tmp_path: Path, options: tuple[str, ...] | str | None
) -> None:
    if options is None:
        drop_in = None
    elif options == "all":
        drop_in = with_options(DROP_IN.read_text())
    else:
        drop_in = with_options(DROP_IN.read_text(), *options) if options else DROP_IN.read_text()
    result = analyze("verify", installable_copy(tmp_path, drop_in))
    assert (result.returncode, lines(result)) == (0, [])


@needs_analyze
def test_verify_does_read_the_drop_in_folder(tmp_path: Path) -> None:
    # The control for the test above: a mistake in a drop-in does show up.
    unit = installable_copy(tmp_path, DROP_IN.read_text() + "\n[Service]\nReadWritePath=/srv\n")
    result = analyze("verify", unit)
    assert any("Unknown key" in line and "ReadWritePath" in line for line in lines(result)), lines(
        result
    )


# --- systemd-analyze security ---


@needs_analyze
def test_security_exposure_is_at_most_1_5_and_every_remaining_point_is_justified() -> None:
    overall, exposed = exposure(UNIT)
    assert overall <= MAX_EXPOSURE, f"exposure {overall} > {MAX_EXPOSURE}: {exposed}"
    threshold = analyze("security", "--offline=yes", f"--threshold={int(MAX_EXPOSURE * 10)}", UNIT)
    assert threshold.returncode == 0, threshold.stdout
    text = UNIT.read_text()
    justified = text[text.index("# Remaining exposure") :]
    missing = [name for name in exposed if name not in justified]
    assert not missing, f"exposures without a reason in the unit's comments: {missing}"


@needs_analyze
def test_security_as_deployed_stays_within_the_limit_and_the_ip_list_lowers_it(
    tmp_path: Path,
) -> None:
    drop_in = DROP_IN.read_text()
    deployed, _ = exposure(
        installable_copy(tmp_path / "group", with_options(drop_in, "SupplementaryGroups"))
    )
    assert deployed <= MAX_EXPOSURE
    ip_keys = ("SupplementaryGroups", "IPAddressDeny", "IPAddressAllow")
    allow_listed, exposed = exposure(
        installable_copy(tmp_path / "ip", with_options(drop_in, *ip_keys))
    )
    assert allow_listed < deployed
    assert "PrivateNetwork=" in exposed, "XNAT needs the network: this one stays"


@needs_analyze
def test_the_status_page_and_metrics_as_the_drop_in_shows_them_add_no_exposure(
    tmp_path: Path,
) -> None:
    drop_in = DROP_IN.read_text()
    # The example says how: the page and the textfile in the config, the textfile's folder here.
    assert '#   listen = "127.0.0.1:' in drop_in and "#   textfile = " in drop_in
    switched = with_options(drop_in, "SupplementaryGroups", "ReadWritePaths")
    assert len(values(switched, "Service", "ReadWritePaths")) == 2, "the drop tree and the textfile"
    plain, _ = exposure(
        installable_copy(tmp_path / "plain", with_options(drop_in, "SupplementaryGroups"))
    )
    with_metrics, _ = exposure(installable_copy(tmp_path / "metrics", switched))
    assert with_metrics == plain
    result = analyze("verify", installable_copy(tmp_path / "verify", switched))
    assert (result.returncode, lines(result)) == (0, [])
    # The page listens on an IP socket; the unit must keep allowing those, and loopback.
    assert "AF_INET" in one(UNIT.read_text(), "Service", "RestrictAddressFamilies").split()
    allowed = values(with_options(drop_in), "Service", "IPAddressAllow")
    assert "localhost" in allowed, "the IP allow-list example must keep loopback for the page"


# --- sysusers.d and tmpfiles.d, applied to a scratch root ---


@pytest.mark.skipif(
    shutil.which("systemd-sysusers") is None or shutil.which("systemd-tmpfiles") is None,
    reason="systemd-sysusers / systemd-tmpfiles are not installed",
)
def test_sysusers_then_tmpfiles_create_the_user_and_the_config_folder(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    users = tool("systemd-sysusers", f"--root={root}", SYSUSERS)
    assert users.returncode == 0, users.stderr
    passwd = (root / "etc" / "passwd").read_text().splitlines()
    (entry,) = [line.split(":") for line in passwd if line.startswith("xnat-drop:")]
    assert entry[5:] == ["/var/lib/xnat-drop", "/usr/sbin/nologin"]
    uid = int(entry[2])
    (group,) = [
        line.split(":")
        for line in (root / "etc" / "group").read_text().splitlines()
        if line.startswith("xnat-drop:")
    ]
    gid = int(group[2])

    folder = root / "etc" / "xnat-drop"
    folder.mkdir()
    (folder / "config.toml").write_text("")
    (folder / "config.toml").chmod(0o666)  # tmpfiles must take "others" away
    files = tool("systemd-tmpfiles", f"--root={root}", "--create", TMPFILES)
    problems = [line for line in files.stderr.splitlines() if line.strip()]
    if os.geteuid() == 0:
        assert (files.returncode, problems) == (0, [])
        assert (folder.stat().st_uid, folder.stat().st_gid) == (0, gid)
        assert ((folder / "config.toml").stat().st_gid, (folder / "xnat-secret").stat().st_gid) == (
            gid,
            0,
        )
    else:  # only root may hand files to root and xnat-drop; the rest is checked all the same
        assert all("fchownat()" in p and "Operation not permitted" in p for p in problems), problems
    assert uid > 0
    assert oct(folder.stat().st_mode & 0o7777) == oct(0o750)
    assert oct((folder / "config.toml").stat().st_mode & 0o7777) == oct(0o640)
    secret = folder / "xnat-secret"
    assert (oct(secret.stat().st_mode & 0o7777), secret.read_text()) == (oct(0o600), "")


# --- the script the README points to ---


@needs_analyze
def test_check_unit_script_passes() -> None:
    result = subprocess.run(
        [str(REPO / "scripts" / "check-unit")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Overall exposure level for xnat-drop.service" in result.stdout


def test_the_service_has_memory_and_task_limits_above_what_it_needs() -> None:
    """A crafted file or a flood must meet a limit, not the OOM killer of the whole host."""
    values = {key: value for section, key, value in directives(UNIT.read_text())}
    units = {"K": 2**10, "M": 2**20, "G": 2**30}

    def size(text: str) -> int:
        return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)

    # bench/e2e_bench.py: 220 MiB with two workers; eight workers at most, 55 MiB each, plus
    # the 64 MiB header cap per worker, and 100 MiB for a 50,000-file session's plan.
    needed = 100 * 2**20 + 8 * (55 + 64) * 2**20
    assert size(values["MemoryHigh"]) >= needed
    assert size(values["MemoryMax"]) > size(values["MemoryHigh"])
    assert 32 <= int(values["TasksMax"]) <= 256
