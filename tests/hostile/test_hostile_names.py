"""Names are data, never code: any byte sequence in a folder name, on the real daemon.

Each test here failed on the code before issue 11 (93eee20): the first crashed the daemon
at its first scan, the second forged sd_notify lines, the third crashed it once and then left
the session in .work/ for good.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

from xnat_standin import Emulator, Fault

from conftest import PROJECT, daemon_env
from hostile_lab import Daemon, LabTree, cli, needs_root, no_traceback, run_once

pytestmark = needs_root

CLEAN = (PROJECT, "S01", "S01_MR1")


def _status(tree: LabTree) -> dict[str, object]:
    return json.loads((tree.state / "status.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def test_a_latin1_folder_name_neither_stops_nor_stalls_the_service(
    lab: LabTree, emulator: Emulator
) -> None:
    """`M\\xfcller_MR1` from an old Windows export, still settling when first seen."""
    latin1 = os.fsdecode(b"M\xfcller_MR1")
    lab.write_config(settle=2.0)
    with Daemon(lab) as daemon:
        daemon.wait_log("watching")
        settling = lab.lab_drop((PROJECT, "S02", latin1))
        daemon.wait_log(r"M\\xfcller_MR1: new")

        # While it settles: the status file is valid UTF-8 JSON and names it escaped.
        def listed() -> bool:
            settling = _status(lab).get("settling") or []
            return any("M\\xfcller_MR1" in s["session"] for s in settling)  # type: ignore[union-attr, index]

        daemon.until(listed, "the Latin-1 name, escaped, in status.json")
        lab.lab_drop(CLEAN)
        daemon.until(lambda: lab.done.joinpath(*CLEAN).is_dir(), "the clean session delivered")
        # The odd one is judged too: its label is not one XNAT takes, so it is refused with a
        # report under its own (byte-exact) name, and the daemon is still running.
        failed = lab.failed / PROJECT / "S02" / latin1
        daemon.until(failed.is_dir, "the Latin-1 session filed")
        report = failed.with_name(latin1 + ".report.txt").read_bytes().decode("utf-8")
        assert "M\\xfcller_MR1" in report and "[bad-label]" in report
        assert daemon.proc.poll() is None
        assert not settling.exists()
        code = daemon.stop()
    assert code == 0
    no_traceback(daemon.log)


def test_control_characters_in_a_name_never_reach_sd_notify_or_the_log(
    lab: LabTree, emulator: Emulator
) -> None:
    name = "S01_MR1\nSTOPPING=1\nWATCHDOG_USEC=1\x1b[2J"
    sock_path = lab.base / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    os.chown(sock_path, 64100, 64100)
    datagrams: list[bytes] = []
    done = threading.Event()

    def read() -> None:
        sock.settimeout(0.1)
        while not done.is_set():
            try:
                datagrams.append(sock.recv(65536))
            except TimeoutError:
                continue
            except OSError:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    env = daemon_env(NOTIFY_SOCKET=str(sock_path))
    # The session label comes from a template, so the folder is uploaded (slowly: the name is
    # in systemd's status line while it is) although its name is no XNAT label.
    routing = '[routing]\norder = ["template", "layout"]\nsession_template = "{PatientID}_MR1"'
    lab.write_config(routing)
    emulator.inject(Fault(method="POST", path="/data/services/import", delay=2.0))
    try:
        with Daemon(lab, env=env) as daemon:
            daemon.wait_log("watching")
            lab.lab_drop((PROJECT, "S01", name))
            filed = lab.done / PROJECT / "S01" / name
            daemon.until(filed.is_dir, "the session delivered")
            time.sleep(0.5)  # a few more STATUS updates
            before_stop = list(datagrams)
            code = daemon.stop()
    finally:
        done.set()
        reader.join(timeout=2)
        sock.close()
    assert code == 0
    lines = [line for d in before_stop for line in d.decode("utf-8").split("\n")]
    assert "STOPPING=1" not in lines and not any(x.startswith("WATCHDOG_USEC") for x in lines)
    assert any("S01_MR1\\nSTOPPING=1\\nWATCHDOG_USEC=1\\x1b[2J" in x for x in lines), lines
    # The log shows the name escaped, on one line; no escape sequence reaches the terminal.
    assert "\x1b" not in daemon.log and "\\x1b[2J" in daemon.log
    assert not any(line == "STOPPING=1" for line in daemon.lines)
    no_traceback(daemon.log)


def test_a_250_character_name_gets_a_report_under_a_shortened_name(
    lab: LabTree, emulator: Emulator
) -> None:
    name = "S01_" + "x" * 246
    assert len(name) == 250
    lab.lab_drop((PROJECT, "S01", name))
    code, log = run_once(lab)
    assert code == 0, log
    [report] = (lab.failed / PROJECT / "S01").glob("*.report.txt")
    folder = report.with_name(report.name.removesuffix(".report.txt"))
    assert folder.is_dir() and folder.name != name and folder.name.startswith("S01_xxx")
    text = report.read_text()
    assert "shortened" in text and "[bad-label]" in text
    assert not any(lab.work.glob("[!.]*"))  # nothing left behind in the work folder
    # Sent back with --force: taken and judged again, decided once more, nothing stuck.
    retry = cli(lab, "retry", "--force", str(folder))
    assert retry.returncode == 0, retry.stderr
    assert lab.incoming.joinpath(PROJECT, "S01").is_dir()
    code, log = run_once(lab)
    assert code == 0, log
    assert len(list((lab.failed / PROJECT / "S01").glob("*.report.txt"))) == 1
    no_traceback(log)
