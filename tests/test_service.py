"""Service.tick driven by a hand-moved clock: settling and retry timing without sleeping.

The clock is injected (as everywhere in the core); XNAT is the real stand-in over HTTP.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from xnat_drop.adapters import configfile
from xnat_drop.adapters import credentials as creds
from xnat_drop.adapters.xnat.client import XnatClient, connect
from xnat_drop.service.loop import Clock, Service
from xnat_standin import Emulator, Fault
from xnat_standin.demo.samples import SeriesSpec, write_nifti, write_session

from conftest import PROJECT, Drop

REL = (PROJECT, "S01", "S01_MR1")
SETTLE = 10.0


class ManualClock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def service(drop: Drop, emulator: Emulator, clock: ManualClock) -> Iterator[Service]:
    drop.write_config(emulator.url, settle=SETTLE)
    env = dict(os.environ)
    cfg = configfile.load(drop.config, env)

    def connect() -> XnatClient:
        return XnatClient(cfg.xnat, creds.load(cfg.xnat.secret_file, env))

    svc = Service(
        cfg,
        connect=connect,
        clock=Clock(monotonic=clock, wall=clock),
        rng=random.Random(7),
        env=env,
    )
    svc.start()
    yield svc
    svc.close()


def imports(emulator: Emulator) -> list[int | None]:
    return [r.status for r in emulator.requests() if r.path == "/data/services/import"]


def test_claimed_only_after_settle_seconds_without_change(
    drop: Drop, service: Service, clock: ManualClock, emulator: Emulator
) -> None:
    folder = drop.incoming.joinpath(*REL)
    write_session(folder, [SeriesSpec(1, "T1", images=2)], study_uid="1.2.3.4")
    service.tick()
    assert REL in service.seen

    clock.now += SETTLE - 1
    service.waker.wake()
    service.tick()
    assert folder.exists() and not service.jobs  # not yet: 9 s of quiet only

    write_session(folder, [SeriesSpec(2, "T2", images=1)], study_uid="1.2.3.4")  # one more file
    clock.now += 2  # 11 s after the first look, but it just changed
    service.waker.wake()
    service.tick()
    assert folder.exists() and not service.jobs

    clock.now += SETTLE - 0.5
    service.tick()
    assert folder.exists()
    clock.now += 0.5
    while service.tick() == 0.0:  # claim, then deliver
        pass
    assert drop.done.joinpath(*REL).is_dir()
    assert emulator.prearchive()[0].file_count == 3


def start_service(drop: Drop, clock: ManualClock) -> Service:
    """A service started from the drop's configuration as it is now; the caller closes it."""
    env = dict(os.environ)
    cfg = configfile.load(drop.config, env)
    svc = Service(
        cfg,
        connect=lambda: connect(cfg.xnat, env),
        clock=Clock(clock, clock),
        rng=random.Random(3),
        env=env,
    )
    svc.start()  # closes what it opened if it fails
    return svc


@pytest.fixture
def make_service(drop: Drop, clock: ManualClock) -> Iterator[Callable[[], Service]]:
    """`start_service` for a test, closed after it."""
    made: list[Service] = []

    def make() -> Service:
        made.append(start_service(drop, clock))
        return made[-1]

    yield make
    for svc in made:
        svc.close()


def run_until_idle(service: Service) -> None:
    while service.tick() == 0.0:
        pass


def test_a_30_minute_outage_waits_probes_sparingly_and_resumes(
    drop: Drop,
    emulator: Emulator,
    clock: ManualClock,
    make_service: Callable[[], Service],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """XNAT answers 503 to everything for 30 simulated minutes while sessions queue up."""
    caplog.set_level(logging.INFO, logger="xnat_drop")
    first, cap = 30.0, 300.0
    drop.write_config(emulator.url, settle=SETTLE, rescan=60, retry=(first, cap, 5))
    service = make_service()
    emulator.inject(Fault(path="/", status=503, times=0))
    outage_start = clock.now
    sessions = [(PROJECT, f"S0{i}", f"S0{i}_MR1") for i in range(1, 4)]
    for rel in sessions:
        write_session(drop.incoming.joinpath(*rel), [SeriesSpec(1, "T1", images=2)])
    bad = (PROJECT, "S09", "S09_MR1")  # breaks a rule: goes to failed/ even while XNAT is down
    write_session(drop.incoming.joinpath(*bad), [SeriesSpec(1, "T1", images=1)])
    write_nifti(drop.incoming.joinpath(*bad) / "x.nii")

    contacts: list[float] = []  # simulated times at which the daemon reached XNAT
    seen = len(emulator.requests())
    while clock.now < outage_start + 1800:
        run_until_idle(service)
        if len(emulator.requests()) > seen:
            contacts += [clock.now] * (len(emulator.requests()) - seen)
            seen = len(emulator.requests())
        clock.now += 1.0
        service.waker.wake()
    assert drop.failed.joinpath(*bad).is_dir()
    assert [job.claim.relpath for job in service.jobs] == sessions  # all waiting, none failed
    assert not any(
        r.path == "/data/services/import" for r in emulator.requests()
    )  # no upload tried
    # The first contact finds the outage; after that, one probe per backoff interval:
    # equal jitter keeps the n-th interval at least half of min(cap, first * 2**(n-1)).
    gaps = [b - a for a, b in itertools.pairwise(contacts)]
    assert 5 <= len(gaps) <= 15, contacts
    for n, gap in enumerate(gaps, start=1):
        assert gap >= min(cap, first * 2 ** (n - 1)) / 2 - 1, (n, gaps)

    emulator.clear_faults()
    clock.now += cap
    service.waker.wake()
    run_until_idle(service)
    for rel in sessions:
        assert drop.done.joinpath(*rel).is_dir(), rel
    assert len(emulator.prearchive()) == 3
    messages = [r.getMessage() for r in caplog.records]
    assert sum("XNAT unavailable" in m for m in messages) == 1
    assert sum("XNAT reachable again" in m for m in messages) == 1


def test_sleep_hint_points_at_the_next_settle_time(
    drop: Drop, service: Service, clock: ManualClock
) -> None:
    drop.write_config(service.config.xnat.url, settle=SETTLE, rescan=60)
    quiet = Service(configfile.load(drop.config, {}), connect=service.connect, clock=service.clock)
    try:
        quiet.start()
        write_session(drop.incoming.joinpath(*REL), [SeriesSpec(1, "T1", images=1)])
        quiet.tick()
        clock.now += 3
        # STATUS.txt was written at the start: the new session goes in once the status files'
        # interval (5 s) has passed, and the loop wakes for that, once.
        assert quiet.tick() == pytest.approx(2.0)
        assert "P1/S01/S01_MR1" not in (drop.root / "STATUS.txt").read_text()
        clock.now += 2
        assert quiet.tick() == pytest.approx(SETTLE - 5)  # no busy polling while it settles
        assert "P1/S01/S01_MR1" in (drop.root / "STATUS.txt").read_text()
    finally:
        quiet.close()


def test_work_folder_claims_survive_a_restart(
    drop: Drop, emulator: Emulator, clock: ManualClock, tmp_path: Path
) -> None:
    emulator.inject(Fault(method="GET", path="/data/projects", status=503, times=0))
    drop.write_config(emulator.url, settle=SETTLE)
    env = dict(os.environ)
    cfg = configfile.load(drop.config, env)

    def connect() -> XnatClient:
        return XnatClient(cfg.xnat, creds.load(cfg.xnat.secret_file, env))

    first = Service(cfg, connect=connect, clock=Clock(clock, clock), env=env)
    first.start()
    write_session(drop.incoming.joinpath(*REL), [SeriesSpec(1, "T1", images=1)])
    first.tick()
    clock.now += SETTLE
    while first.tick() == 0.0:
        pass
    assert len(first.jobs) == 1 and not drop.incoming.joinpath(*REL).exists()

    emulator.clear_faults()
    second = Service(cfg, connect=connect, clock=Clock(clock, clock), env=env)
    try:
        second.start()
        assert second.jobs == []  # the first daemon still holds its claim
        first.close()  # stops (or dies): its claim lock goes with it
        second.waker.wake()
        clock.now += 5
        while second.tick() == 0.0:  # adopts the claim, then delivers it
            pass
    finally:
        first.close()
        second.close()
    assert drop.done.joinpath(*REL).is_dir()
    assert [s.file_count for s in emulator.prearchive()] == [1]


def test_a_folder_that_never_settles_raises_one_alarm(
    drop: Drop,
    emulator: Emulator,
    clock: ManualClock,
    make_service: Callable[[], Service],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="xnat_drop")
    drop.config.write_text(
        drop.config.read_text().replace("[watch]\n", "[watch]\nmax_settle_seconds = 60\n")
    )
    service = make_service()
    folder = drop.incoming.joinpath(*REL)
    write_session(folder, [SeriesSpec(1, "T1", images=1)])
    (folder / "01_T1" / "IM0002.dcm.part").write_bytes(b"stalled copy")
    for _ in range(20):  # 200 simulated seconds of a copy that never finishes
        clock.now += 10
        service.waker.wake()
        run_until_idle(service)
    alarms = [r.getMessage() for r in caplog.records if "still not taken" in r.getMessage()]
    assert len(alarms) == 1 and "copy in progress" in alarms[0]
    assert folder.is_dir() and not service.jobs
    state = service.snapshot()["settling"][0]["state"]
    assert state.startswith("NOT READY for over 60 s")


def test_a_file_vanishing_during_inspection_sends_the_session_back_to_settling(
    drop: Drop,
    emulator: Emulator,
    clock: ManualClock,
    make_service: Callable[[], Service],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The race (a file deleted between the walk and its read) replayed: the walk's listing is
    taken, then the file goes, as another process on the share might do."""
    from xnat_drop.adapters.dicom import inspection as inspect_module
    from xnat_drop.adapters.fs.tree import walk

    caplog.set_level(logging.INFO, logger="xnat_drop")
    service = make_service()
    write_session(
        drop.incoming.joinpath(*REL), [SeriesSpec(1, "T1", images=3)], study_uid="1.2.3.9"
    )
    service.tick()
    clock.now += SETTLE
    service.waker.wake()
    real_walk = walk

    def stale_walk(root: Path) -> Iterator[Any]:
        listing = list(real_walk(root))
        (root / listing[-1].relpath).unlink()  # gone after it was listed
        return iter(listing)

    monkeypatch.setattr(inspect_module, "walk", stale_walk)
    run_until_idle(service)
    monkeypatch.undo()
    assert any("changed while being read" in r.getMessage() for r in caplog.records)
    [job] = service.jobs
    assert job.verdict is None and not any(drop.failed.iterdir())
    clock.now += SETTLE
    service.waker.wake()
    run_until_idle(service)
    assert drop.done.joinpath(*REL).is_dir()
    assert emulator.prearchive()[0].file_count == 2  # what is left, judged again from scratch
