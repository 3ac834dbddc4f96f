"""Issue 16, end to end: sessions whose headers carry distinctive names, IDs, descriptions,
dates and UIDs go through the real daemon process and the commands, and none of those values
appears in anything that leaves the daemon (tests/leakscan.py lists what is looked for).

Delivered, delivered with a series left out (XNAT's series import filter), rejected for
derived series (by ImageType and by a description pattern), for mixed studies, for a duplicate
instance, held and then failed as incomplete, refused by XNAT after a 503 and a 500 (answers
that quote the study's and an instance's UID), and failed XNAT's verification; then `check`
(text, --json, --server; with the PHI rule and routing templates over the headers) and
`status` (text and --json, while the daemon runs and after). Scanned: every file the daemon
wrote beside the folders (STATUS.txt and STATUS.html beside incoming/ among them), every
status.json it wrote while running and anything else in the state directory but the ledger
(the metrics textfile among them), the status page's four addresses while the daemon ran,
every e-mail (aiosmtpd) and webhook post it sent, the daemon's log at level debug (stderr;
the journal gets the same lines), and the commands' stdout and stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import requests

from xnat_drop.adapters.ledger import FILE_NAME
from xnat_standin import Emulator, Fault

from conftest import Drop, run_daemon, start_daemon, stop_daemon
from leakscan import LeakSeries, assert_no_header_values, output_files, write_leak_session
from notify_helpers import (
    Mailbox,
    free_port,
    hook_receiver,
    notify_table,
    private_file,
    smtp_server,
)

ROUTING = '[routing]\norder = ["layout"]\n[log]\nlevel = "debug"\n'
PAGE = ("/", "/status.json", "/metrics", "/healthz")
DELIVERED = ("P1", "LS01", "LS01_MR1")
DERIVED = ("P1", "LS02", "LS02_MR1")
MIXED = ("P1", "LS03", "LS03_MR1")
DUPLICATE = ("P1", "LS04", "LS04_MR1")
FILTERED = ("P2", "LS05", "LS05_MR1")
INCOMPLETE = ("P1", "LS06", "LS06_MR1")
REFUSED = ("P1", "LS07", "LS07_MR1")
MISMATCH = ("P3", "LS08", "LS08_MR1")


def dropped(drop: Drop, relpath: tuple[str, ...], series: list[LeakSeries]) -> Path:
    """Write a leak session elsewhere and move it into incoming/ whole."""
    staging = drop.root.parent / "staging" / "/".join(relpath)
    write_leak_session(staging, series)
    target = drop.incoming.joinpath(*relpath)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(target)
    return target


def rules(root: Path, relpath: tuple[str, ...]) -> list[str]:
    folder = root.joinpath(*relpath)
    data = json.loads(folder.with_name(folder.name + ".report.json").read_text())
    return sorted({v["rule"] for v in data["violations"]})


def command(*args: str) -> tuple[str, str]:
    """Run `xnat-drop ARGS`; (a name for the scan, its stdout and stderr)."""
    result = subprocess.run(
        [sys.executable, "-m", "xnat_drop", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode in (0, 1, 3), result.stderr
    name = " ".join(a for a in args if a.startswith("-") or a in ("check", "status"))
    return f"xnat-drop {name}", result.stdout + result.stderr


def daemon(drop: Drop) -> tuple[str, str]:
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    assert " DEBUG " in result.stderr  # the log at its most talkative
    return "xnat-drop run --once", result.stdout + result.stderr


def seen_everywhere(drop: Drop, box: Mailbox, hook_file: Path, port: int) -> str:
    """The tables that turn on every other output: STATUS.html, the page, the metrics
    textfile, e-mail and a webhook (every event, told at once)."""
    textfile = drop.state / "xnat-drop.prom"
    return (
        f'[status]\nhtml = true\n[page]\nlisten = "127.0.0.1:{port}"\n'
        f'[metrics]\ntextfile = "{textfile}"\n'
    ) + notify_table(
        email_to=["lab@example.org"],
        smtp_host="127.0.0.1",
        smtp_port=box.port,
        smtp_security="none",
        webhook="json",
        webhook_url_file=str(hook_file),
        outage_after_seconds=0,
        retrying_after_seconds=1,
    )


def page(port: int) -> list[tuple[str, str]]:
    """The status page's four addresses as a browser (or Prometheus) gets them."""
    found = []
    for path in PAGE:
        answer = requests.get(f"http://127.0.0.1:{port}{path}", timeout=5)
        found.append((f"the page's {path} ({answer.status_code})", answer.text))
    return found


def watched(
    drop: Drop,
    finished: Callable[[], bool],
    moment: Callable[[dict[str, Any]], bool],
    port: int,
) -> list[tuple[str, str]]:
    """Run the daemon until `finished`; keep every status.json it writes on the way, and run
    `xnat-drop status` (text and --json) and read the status page at the first snapshot for
    which `moment` is true."""
    outputs = []
    snapshots: dict[str, None] = {}
    proc = start_daemon(drop)
    try:
        deadline = time.monotonic() + 60
        while not finished():
            assert time.monotonic() < deadline and proc.poll() is None, "the daemon is stuck"
            try:
                text = (drop.state / "status.json").read_text()
                snapshot = json.loads(text)
            except (OSError, ValueError):
                text, snapshot = "", None
            if snapshot is not None and text not in snapshots:
                snapshots[text] = None
                if moment(snapshot) and not outputs:
                    config = ("--config", str(drop.config))
                    outputs += [command("status", *config), command("status", *config, "--json")]
                    outputs += page(port)
            time.sleep(0.05)
    finally:
        code, stderr = stop_daemon(proc)
    assert code == 0, stderr
    assert " DEBUG " in stderr  # the log at its most talkative
    assert outputs, "the moment to run `xnat-drop status` never came"
    return [
        *((f"{name} (while the daemon ran)", text) for name, text in outputs),
        *(("status.json while the daemon ran", text) for text in snapshots),
        ("xnat-drop run", stderr),
    ]


def filed(*places: Path) -> Callable[[], bool]:
    return lambda: all(p.with_name(p.name + ".report.json").exists() for p in places)


def test_no_header_value_leaves_the_daemon(drop: Drop, emulator: Emulator, tmp_path: Path) -> None:
    with smtp_server() as box, hook_receiver() as hook:
        hook_file = private_file(tmp_path / "webhook-url", hook.url + "\n")
        port = free_port()
        extra = ROUTING + seen_everywhere(drop, box, hook_file, port)
        outputs = leak_run(drop, emulator, extra, port)
        # What was told: each failed session (six), the outage, the long retry.
        mails = box.wait_for(6, what="a mail per failed session")
        posts = hook.wait_for(6)
    outputs += [(f"the mail {m['Subject']}", m.as_string()) for m in mails]
    outputs += [(f"the webhook post {p.body.get('event')}", json.dumps(p.body)) for p in posts]
    written = output_files(drop.root)
    assert {"STATUS.txt", "STATUS.html"} <= {p.name for p in written}
    assert (drop.state / "xnat-drop.prom").exists()
    assert_no_header_values([*outputs, *written])


def leak_run(drop: Drop, emulator: Emulator, extra: str, port: int) -> list[tuple[str, str] | Path]:
    """Every session of the test through the daemon, then the commands; what they said."""
    outputs: list[tuple[str, str] | Path] = []
    emulator.add_project("P2")
    emulator.add_project("P3")
    emulator.set_series_filter("P2", mode="blacklist", list_text="scout")
    emulator.set_series_filter("P3", mode="blacklist", list_text="localizer")
    drop.write_config(emulator.url, extra=extra, watch="max_settle_seconds = 4")

    # -- one run: delivered, excluded, rejected by the rules, held then failed --------------
    dropped(drop, DELIVERED, [LeakSeries("anat", 3), LeakSeries("func", 2, "bold")])
    dropped(
        drop,
        DERIVED,
        [
            LeakSeries("anat", 2),
            LeakSeries("reformat", 2, "T1_MPR_cor"),  # a default description pattern
            LeakSeries("maps", 2, "map", ("DERIVED", "SECONDARY", "FLOOPTOK")),
            LeakSeries("moco", 2, "bold_moco", ("ORIGINAL", "PRIMARY", "MOCO", "FLOOPTOK")),
        ],
    )
    dropped(drop, MIXED, [LeakSeries("A", 3), LeakSeries("B", 2, study=1)])
    dropped(drop, DUPLICATE, [LeakSeries("anat", 3, same_instance=True)])
    dropped(drop, FILTERED, [LeakSeries("anat", 2), LeakSeries("loc", 2, "scout")])
    dropped(drop, INCOMPLETE, [LeakSeries("bold", 3, "bold", announced=6)])
    held = filed(
        drop.done.joinpath(*DELIVERED),
        drop.done.joinpath(*FILTERED),
        *(drop.failed.joinpath(*r) for r in (DERIVED, MIXED, DUPLICATE, INCOMPLETE)),
    )
    outputs += watched(  # `status` while the incomplete session is held
        drop,
        held,
        lambda snap: any("of 6 images" in e["state"] for e in snap["settling"]),
        port,
    )
    assert drop.done.joinpath(*DELIVERED).is_dir()
    assert rules(drop.done, FILTERED) == ["series-import-filter"]
    assert rules(drop.failed, DERIVED) == ["derived-series"]
    assert rules(drop.failed, MIXED) == ["mixed-studies"]
    assert rules(drop.failed, DUPLICATE) == ["duplicate-instance"]
    assert rules(drop.failed, INCOMPLETE) == ["incomplete-series"]

    # -- XNAT unavailable, then refusing, each answer quoting the study's UID ----------------
    folder = dropped(drop, REFUSED, [LeakSeries("anat", 2)])
    first = pydicom.dcmread(folder / "anat" / "IM0001.dcm")
    quoted = f"study {first.StudyInstanceUID}, instance {first.SOPInstanceUID}"
    import_path = "/data/services/import"
    page = "<html><body><h3>{}</h3></body></html>"
    for status, words, times in ((503, "Busy with", 3), (500, "Failed on", 1), (400, "No", 1)):
        emulator.inject(Fault("POST", import_path, status, page.format(f"{words} {quoted}"), times))
    outputs += watched(  # `status` while XNAT is unavailable or the attempt failed
        drop,
        filed(drop.failed.joinpath(*REFUSED)),
        lambda snap: snap["xnat"]["state"] != "ok" or any(w["last_error"] for w in snap["work"]),
        port,
    )
    assert rules(drop.failed, REFUSED) == ["xnat-rejected"]

    # -- XNAT drops a series the daemon was told not to predict: verification fails --------
    drop.write_config(emulator.url, extra=extra + '[rules]\nseries-import-filter = "off"\n')
    dropped(drop, MISMATCH, [LeakSeries("anat", 2), LeakSeries("loc", 2, "localizer")])
    outputs.append(daemon(drop))
    assert rules(drop.failed, MISMATCH) == ["count-mismatch"]

    # -- the commands -----------------------------------------------------------------------
    folders = [
        str(root.joinpath(*relpath))
        for root, relpath in (
            (drop.done, DELIVERED),
            (drop.done, FILTERED),
            (drop.failed, DERIVED),
            (drop.failed, MIXED),
            (drop.failed, DUPLICATE),
            (drop.failed, INCOMPLETE),
            (drop.failed, MISMATCH),
        )
    ]
    config = ("--config", str(drop.config))
    drop.write_config(emulator.url, extra=extra)
    for options in ((), ("--json",), ("--server",), ("--server", "--json")):
        outputs.append(command("check", *config, *options, *folders))
    outputs.append(command("status", *config))
    outputs.append(command("status", *config, "--json"))
    # The PHI rule, and labels from templates over the headers that cannot be labels: a name
    # XNAT refuses, and descriptions the series disagree on (folders of several series only:
    # one series would give a valid label, which may be shown).
    drop.write_config(
        emulator.url,
        extra='[routing]\norder = ["template", "layout"]\nsubject_template = "{PatientName}"\n'
        'session_template = "{SeriesDescription}"\n[rules]\nphi = "reject"\n',
    )
    several = [folders[i] for i in (0, 1, 2, 6)]
    for options in ((), ("--json",)):
        name, text = command("check", *config, *options, *several)
        # Per folder: the subject refused, the session disagreed on (and the PHI rule).
        assert "phi" in text and text.count("bad-label") == 2 * len(several)
        outputs.append((f"{name} (PHI, templates)", text))

    # -- every file the daemon wrote --------------------------------------------------------
    written = output_files(drop.root) + output_files(
        drop.state, skip=(FILE_NAME, f"{FILE_NAME}-wal", f"{FILE_NAME}-shm")
    )
    assert any(p.name.endswith(".report.txt") for p in written)
    assert (drop.state / "status.json") in written
    return [*outputs, *written]
