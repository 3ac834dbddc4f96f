"""Session resources end to end: the real daemon against the stand-in (its own resource code,
with XNAT's traps) over loopback HTTP. Physio, behavioural files and logs in resources/<label>/
reach XNAT byte for byte, verified by MD5, and survive kill -9, cut connections and retries."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_delivery import drop_study, report_of, requests_to, rules_in
from xnat_standin import Emulator, Fault
from xnat_standin.demo.samples import SeriesSpec

from conftest import (
    PASSWORD,
    PROJECT,
    USER,
    Drop,
    daemon_env,
    run_daemon,
    start_daemon,
    wait_until,
)

REL = (PROJECT, "S01", "S01_MR1")
SCANS = [SeriesSpec(1, "T1_MPRAGE", images=3), SeriesSpec(2, "bold", images=4)]
RESOURCES = {
    "physio/run1_ecg.tsv": b"time\tecg\n" + b"0.001\t512\n" * 4000,
    "physio/run1_resp.tsv": b"time\tresp\n" + b"0.01\t77\n" * 900,
    "behav/run1_events.csv": b"onset,duration,trial_type\n1.0,2.0,face\n",
    "behav/run 2/events+extra.csv": b"onset\n3.0\n",  # a space and a plus survive XNAT's URLs
    "logs/notes.pdf": b"%PDF-1.4\n" + os.urandom(30_000) + b"\n%%EOF\n",
    "logs/empty.log": b"",
}
ARCHIVED = f"/data/archive/projects/{PROJECT}/subjects/S01/experiments/S01_MR1"
FILES_URL = f"{ARCHIVED}/resources"


def drop_with_resources(drop: Drop, resources: dict[str, bytes] = RESOURCES) -> Path:
    """A session with its images and, beside them, resources/<label>/... as a lab copies it."""
    folder = drop_study(drop, scans=SCANS)
    for name, data in resources.items():
        path = folder / "resources" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return folder


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def held(emulator: Emulator) -> dict[str, bytes]:
    return {
        f"{label}/{name}": data
        for label, files in emulator.session_resources(REL[-1]).items()
        for name, data in files.items()
    }


def put_requests(emulator: Emulator) -> list[str]:
    return [
        r.path for r in emulator.requests() if r.method in ("PUT", "POST") and "/files/" in r.path
    ]


def test_physio_behav_and_logs_arrive_byte_for_byte_and_the_receipt_lists_md5s(
    drop: Drop, emulator: Emulator
) -> None:
    drop.write_config(emulator.url, xnat='destination = "archive"\n')
    drop_with_resources(drop)
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    assert held(emulator) == RESOURCES
    text, data = report_of(drop.done)
    resources = {r["label"]: r for r in data["xnat"]["resources"]}  # type: ignore[index]
    assert sorted(resources) == ["behav", "logs", "physio"]
    assert all(r["verified_by"] == "MD5" for r in resources.values())
    listed = {f"{r['label']}/{f['name']}": f["md5"] for r in resources.values() for f in r["files"]}
    assert listed == {name: md5(body) for name, body in RESOURCES.items()}
    assert "physio: 2 files" in text and "behav: 2 files" in text and "verified by MD5" in text
    # one request per file: nothing written twice
    assert len(put_requests(emulator)) == len(RESOURCES)


def test_the_prearchive_on_1_8_10_takes_resources_verified_by_size(
    drop: Drop, emulator: Emulator
) -> None:
    drop.write_config(emulator.url)
    drop_with_resources(drop)
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    assert held(emulator) == RESOURCES
    _, data = report_of(drop.done)
    how = {r["verified_by"] for r in data["xnat"]["resources"]}  # type: ignore[index]
    assert len(how) == 1 and how.pop().startswith("size (the prearchive")


def test_the_prearchive_on_1_8_3_is_refused_before_anything_is_sent(
    drop: Drop, tmp_path: Path
) -> None:
    with Emulator(
        root=tmp_path / "old", users={USER: PASSWORD}, projects=[PROJECT], version="1.8.3"
    ) as old:
        drop.write_config(old.url)
        drop_with_resources(drop)
        result = run_daemon(drop)
        assert result.returncode == 0, result.stderr
        text, data = report_of(drop.failed)
        assert rules_in(data) == ["resources-unsupported"]
        assert "1.8.4" in text and "Nothing was sent" in text
        assert requests_to(old, "POST", "/data/services/import") == []


def test_checksums_off_verifies_by_size_and_says_so(drop: Drop, emulator: Emulator) -> None:
    emulator.set_checksums(False)
    drop.write_config(emulator.url, xnat='destination = "archive"\n')
    drop_with_resources(drop)
    assert run_daemon(drop).returncode == 0
    _, data = report_of(drop.done)
    how = {r["verified_by"] for r in data["xnat"]["resources"]}  # type: ignore[index]
    assert how == {"size (XNAT's checksums setting is off)"}


def test_a_different_file_already_in_xnat_is_a_conflict_and_the_images_stay(
    drop: Drop, emulator: Emulator
) -> None:
    drop.write_config(emulator.url, xnat='destination = "archive"\n')
    drop_with_resources(drop)
    # Someone uploads another version by hand, after the images were archived.
    proc = start_daemon(drop, "--once", env=daemon_env(XNAT_DROP_PAUSEPOINT="before-resources=2"))
    try:
        wait_until(lambda: bool(emulator.archive()), "the images archived", proc)
        emulator.put_resource_file(REL[-1], "behav", "run1_events.csv", b"someone else's\n")
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    text, data = report_of(drop.failed)
    assert rules_in(data) == ["resource-conflict"]
    assert "The images are in XNAT" in text and "behav/run1_events.csv" in text
    assert held(emulator)["behav/run1_events.csv"] == b"someone else's\n"
    assert len(emulator.archive()) == 1


@pytest.mark.parametrize(
    "failpoint", ["before-resources", "between-resource-files", "after-resources"]
)
def test_kill_9_in_the_resources_step_resumes_with_exactly_one_copy_of_each_file(
    drop: Drop, emulator: Emulator, failpoint: str
) -> None:
    drop.write_config(emulator.url, xnat='destination = "archive"\n')
    drop_with_resources(drop)
    killed = run_daemon(drop, env=daemon_env(XNAT_DROP_FAILPOINT=failpoint))
    assert killed.returncode == -9, killed.stderr
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    assert held(emulator) == RESOURCES
    assert len(emulator.archive()) == 1
    assert requests_to(emulator, "POST", "/data/services/import") == [200]
    written = put_requests(emulator)
    assert len(written) == len(set(written)) == len(RESOURCES), written


def test_a_cut_inside_a_file_is_sent_again_with_overwrite(drop: Drop, emulator: Emulator) -> None:
    drop.write_config(emulator.url, xnat='destination = "archive"\n')
    drop_with_resources(drop)
    emulator.inject(
        Fault(method="PUT", path=f"{FILES_URL}/logs/files/notes.pdf", drop_after_bytes=20_000)
    )
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    assert held(emulator) == RESOURCES
    again = [r.path for r in emulator.requests() if r.query.get("overwrite") == "true"]
    assert again == [f"{FILES_URL}/logs/files/notes.pdf"]


def test_retry_after_a_conflict_resumes_at_the_resources_and_never_resends_images(
    drop: Drop, emulator: Emulator
) -> None:
    drop.write_config(emulator.url, xnat='destination = "archive"\n')
    drop_with_resources(drop)
    emulator.inject(Fault(method="PUT", path=FILES_URL, status=500, times=0))
    first = run_daemon(drop, "--timeout", "25", timeout=40)
    assert drop.failed.joinpath(*REL).is_dir(), first.stderr
    _, data = report_of(drop.failed)
    assert "images are in XNAT" in str(data["violations"])
    emulator.clear_faults()
    retry = subprocess.run(
        [
            sys.executable,
            "-m",
            "xnat_drop",
            "retry",
            "--config",
            str(drop.config),
            str(drop.failed.joinpath(*REL)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert retry.returncode == 0, retry.stderr
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    assert drop.done.joinpath(*REL).is_dir()
    assert held(emulator) == RESOURCES
    assert requests_to(emulator, "POST", "/data/services/import") == [200]  # images once


def test_an_empty_digest_while_checksums_are_on_is_a_mismatch_not_a_pass(
    drop: Drop, emulator: Emulator
) -> None:
    # Written while the site kept no checksums; verified once it does: XNAT's empty digest
    # must not pass for a verified MD5.
    emulator.set_checksums(False)
    drop.write_config(emulator.url, xnat='destination = "archive"\n')
    drop_with_resources(drop)
    proc = start_daemon(drop, "--once", env=daemon_env(XNAT_DROP_PAUSEPOINT="after-resources=2"))
    try:
        wait_until(lambda: len(put_requests(emulator)) == len(RESOURCES), "the files sent", proc)
        emulator.set_checksums(True)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    _, data = report_of(drop.failed)
    assert rules_in(data) == ["resource-mismatch"], stderr
    [message] = [str(v["message"]) for v in data["violations"]]  # type: ignore[attr-defined]
    assert "keeps no checksum" in message and "images are in XNAT" in message
    # Moved back as it is, the file is sent again (overwrite) and now verified by its MD5.
    folder = drop.failed.joinpath(*REL)
    for report in folder.parent.glob(f"{folder.name}.report.*"):
        report.unlink()
    folder.rename(drop.incoming.joinpath(*REL))
    assert run_daemon(drop).returncode == 0
    _, data = report_of(drop.done)
    assert {r["verified_by"] for r in data["xnat"]["resources"]} == {"MD5"}  # type: ignore[index]
    assert requests_to(emulator, "POST", "/data/services/import") == [200]
