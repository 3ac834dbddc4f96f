"""C-STORE as the lab runs it: the daemon as its own user sends files lab members wrote, and
only the bytes it judged leave, even when a lab member writes to a file in mid-send through a
handle opened before the claim. Against the stand-in's DICOM receiver, over loopback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("pynetdicom", reason="the cstore extra (pynetdicom) is missing")

from xnat_standin import Emulator

from conftest import PASSWORD, PROJECT, USER, daemon_env, digest
from hostile_lab import Daemon, LabTree, needs_root, no_traceback

pytestmark = needs_root

CLEAN = (PROJECT, "S01", "S01_MR1")


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    """The stand-in with its DICOM receiver on a free loopback port (for `lab`, too)."""
    with Emulator(
        root=tmp_path / "xnat", users={USER: PASSWORD}, projects=[PROJECT], dicom_port=0
    ) as emu:
        yield emu


def use_cstore(lab: LabTree, emulator: Emulator) -> None:
    lab.write_config(
        f'[cstore]\nhost = "127.0.0.1"\nport = {emulator.dicom_port}\nsession_wait_seconds = 3\n',
        xnat='transport = "cstore"',
    )


def test_a_lab_members_session_goes_by_c_store_from_the_service_user(
    lab: LabTree, emulator: Emulator
) -> None:
    use_cstore(lab, emulator)
    folder = lab.lab_drop(CLEAN)
    before = digest(folder)
    with Daemon(lab, "--once") as daemon:
        assert daemon.wait(60) == 0, daemon.log
    assert digest(lab.done.joinpath(*CLEAN)) == before, daemon.log
    assert len(emulator.dicom_stores()) == 5
    [session] = emulator.prearchive()
    assert (session.file_count, session.status) == (5, "READY")
    no_traceback(daemon.log)


def test_a_same_size_rewrite_in_mid_send_never_leaves_and_nothing_stays_in_xnat(
    lab: LabTree, emulator: Emulator
) -> None:
    use_cstore(lab, emulator)
    folder = lab.lab_drop(CLEAN)
    target = folder / "02_T1_MPRAGE" / "IM0003.dcm"  # the last object sent
    data = target.read_bytes()
    offset = data.index(b"ORIGINAL\\PRIMARY")
    st = target.stat()
    handle = os.open(target, os.O_RDWR)  # opened before the claim, kept after it
    try:
        env = daemon_env(XNAT_DROP_PAUSEPOINT="mid-cstore=3")
        with Daemon(lab, "--once", env=env) as daemon:
            daemon.wait_log("pausepoint mid-cstore")
            assert 0 < len(emulator.dicom_stores()) < 5
            os.pwrite(handle, b"DERIVED ", offset)  # same size: value 1 is now DERIVED
            os.utime(handle, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old mtime
            code = daemon.wait(60)
    finally:
        os.close(handle)
    assert code == 0, daemon.log
    filed = lab.failed.joinpath(*CLEAN)
    assert filed.is_dir(), daemon.log
    report = json.loads(filed.with_name(filed.name + ".report.json").read_text())
    assert [v["rule"] for v in report["violations"]] == ["derived-series"]
    assert len(emulator.dicom_stores()) < 5  # the rewritten object never went out
    assert emulator.prearchive() == [], daemon.log  # nor stays the half that did
    no_traceback(daemon.log)
