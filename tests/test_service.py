"""Service.tick driven by a hand-moved clock: settling and retry timing without sleeping.

The clock is injected (as everywhere in the core); XNAT is the real stand-in over HTTP.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from xnat_drop import config as config_mod
from xnat_drop import credentials as creds
from xnat_drop.demo.samples import SeriesSpec, write_nifti, write_session
from xnat_drop.emulator import Emulator, Fault
from xnat_drop.service import Clock, Service
from xnat_drop.xnat import XnatClient

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
def service(drop: Drop, emulator: Emulator, clock: ManualClock) -> Service:
    drop.write_config(emulator.url, settle=SETTLE)
    env = dict(os.environ)
    cfg = config_mod.load(drop.config, env)

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
    return svc


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
    service.wake.set()
    service.tick()
    assert folder.exists() and not service.jobs  # not yet: 9 s of quiet only

    write_session(folder, [SeriesSpec(2, "T2", images=1)], study_uid="1.2.3.4")  # one more file
    clock.now += 2  # 11 s after the first look, but it just changed
    service.wake.set()
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


def test_retry_waits_for_the_backoff_and_other_work_goes_on(
    drop: Drop, service: Service, clock: ManualClock, emulator: Emulator
) -> None:
    emulator.inject(Fault(method="POST", path="/data/services/import", status=503, times=0))
    write_session(drop.incoming.joinpath(*REL), [SeriesSpec(1, "T1", images=2)])
    service.tick()
    clock.now += SETTLE
    while service.tick() == 0.0:
        pass
    assert imports(emulator) == [503]
    [job] = service.jobs
    delay = job.next_at - clock.now
    assert 0.1 <= delay <= 0.2  # first_delay_seconds = 0.2, equal jitter: half fixed
    clock.now += delay / 2
    assert service.tick() > 0 and imports(emulator) == [503]  # not before its time

    # While XNAT is down, a session that breaks the rules still goes to failed/.
    bad = (PROJECT, "S02", "S02_MR1")
    write_session(drop.incoming.joinpath(*bad), [SeriesSpec(1, "T1", images=1)])
    write_nifti(drop.incoming.joinpath(*bad) / "x.nii")
    for _ in range(2):
        clock.now += SETTLE
        service.wake.set()
        while service.tick() == 0.0:
            pass
    assert drop.failed.joinpath(*bad).is_dir()
    assert set(imports(emulator)) == {503}  # only retries of the first session
    assert job.transient_failures == len(imports(emulator))

    emulator.clear_faults()
    clock.now = job.next_at
    while service.tick() == 0.0:
        pass
    assert imports(emulator)[-1] == 200
    assert drop.done.joinpath(*REL).is_dir()


def test_sleep_hint_points_at_the_next_settle_time(
    drop: Drop, service: Service, clock: ManualClock
) -> None:
    drop.write_config(service.config.xnat.url, settle=SETTLE, rescan=60)
    quiet = Service(config_mod.load(drop.config, {}), connect=service.connect, clock=service.clock)
    quiet.start()
    write_session(drop.incoming.joinpath(*REL), [SeriesSpec(1, "T1", images=1)])
    quiet.tick()
    clock.now += 3
    assert quiet.tick() == pytest.approx(SETTLE - 3)  # no busy polling while it settles


def test_work_folder_claims_survive_a_restart(
    drop: Drop, emulator: Emulator, clock: ManualClock, tmp_path: Path
) -> None:
    emulator.inject(Fault(method="GET", path="/data/projects", status=503, times=0))
    drop.write_config(emulator.url, settle=SETTLE)
    env = dict(os.environ)
    cfg = config_mod.load(drop.config, env)

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
    second.start()
    assert [j.claim.relpath for j in second.jobs] == [REL]
    while second.tick() == 0.0:
        pass
    assert drop.done.joinpath(*REL).is_dir()
