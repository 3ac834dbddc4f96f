"""XNAT's series import filter, end to end: the real daemon against the stand-in, whose filter
code is its own (daemon/xnat_standin), over loopback HTTP.

XNAT drops what its filter matches silently; without the daemon knowing, a dropped series is a
count mismatch and the session fails. With `rules.series-import-filter` the daemon leaves out
what XNAT would drop, names it, and verifies the rest; or rejects; or tolerates a filter it
cannot predict.
"""

from __future__ import annotations

import time
from pathlib import Path

from test_check import check, verdicts
from test_delivery import drop_study, report_of, requests_to, rules_in
from xnat_standin import Emulator
from xnat_standin.demo.samples import SeriesSpec, write_session

from conftest import PROJECT, Drop, daemon_env, run_daemon, start_daemon, stop_daemon, wait_until

REL = (PROJECT, "S01", "S01_MR1")
SCANS = [
    SeriesSpec(1, "localizer", images=3),
    SeriesSpec(2, "T1_MPRAGE", images=4),
    SeriesSpec(3, "AAHScout", images=2),
]
IMPORT = "/data/services/import"


def violations(data: dict[str, object], rule: str) -> list[dict[str, object]]:
    return [v for v in data["violations"] if v["rule"] == rule]  # type: ignore[attr-defined]


def held_scans(emulator: Emulator) -> dict[str, int]:
    [session] = emulator.prearchive()
    return {scan: len(files) for scan, files in session.scans.items()}


def test_a_project_blacklist_drops_the_localizer_and_the_session_is_delivered(
    drop: Drop, emulator: Emulator
) -> None:
    emulator.set_series_filter(PROJECT, mode="blacklist", list_text="localizer\nscout")
    drop.write_config(emulator.url)
    drop_study(drop, scans=SCANS)
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    text, data = report_of(drop.done)
    # XNAT holds exactly what it keeps, and the daemon verified exactly that.
    assert held_scans(emulator) == {"2": 4}
    dropped = violations(data, "series-import-filter")
    assert [v["policy"] for v in dropped] == ["exclude", "exclude"]
    assert sorted(len(v["files"]) for v in dropped) == [2, 3]  # type: ignore[arg-type]
    assert "“localizer”" in text and "“scout”" in text and "blacklist" in text
    assert "XNAT's series import filter" in text
    assert data["xnat"]["verified"] == [  # type: ignore[index]
        {
            "series": "the series of 4 files under 02_T1_MPRAGE/ (first: 02_T1_MPRAGE/IM0001.dcm)",
            "sent": 4,
            "held": 4,
        }
    ]
    assert len(data["uploaded"]) == 4  # type: ignore[arg-type]


def test_without_the_filter_a_dropped_series_is_a_count_mismatch(
    drop: Drop, emulator: Emulator
) -> None:
    # What happened before the daemon read XNAT's filter, kept as an option ("off").
    emulator.set_series_filter(PROJECT, mode="blacklist", list_text="localizer")
    drop.write_config(emulator.url, extra='[rules]\nseries-import-filter = "off"\n')
    drop_study(drop, scans=SCANS)
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    _, data = report_of(drop.failed)
    assert rules_in(data) == ["count-mismatch"]


def test_a_whitelist_keeps_only_what_it_names(drop: Drop, emulator: Emulator) -> None:
    emulator.set_series_filter(PROJECT, mode="whitelist", list_text="MPRAGE")
    drop.write_config(emulator.url)
    drop_study(drop, scans=SCANS)
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    text, data = report_of(drop.done)
    assert held_scans(emulator) == {"2": 4}
    assert "whitelist" in text
    assert len(violations(data, "series-import-filter")) == 2


def test_the_site_and_the_project_filter_both_apply(drop: Drop, emulator: Emulator) -> None:
    emulator.set_series_filter(None, mode="blacklist", list_text="scout")
    emulator.set_series_filter(PROJECT, mode="blacklist", list_text="localizer")
    drop.write_config(emulator.url)
    drop_study(drop, scans=SCANS)
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    text, _ = report_of(drop.done)
    assert held_scans(emulator) == {"2": 4}
    assert "the site" in text and f"project {PROJECT}" in text


def test_the_reject_policy_sends_nothing_and_lists_the_series(
    drop: Drop, emulator: Emulator
) -> None:
    emulator.set_series_filter(PROJECT, mode="blacklist", list_text="localizer")
    drop.write_config(emulator.url, extra='[rules]\nseries-import-filter = "reject"\n')
    drop_study(drop, scans=SCANS)
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    text, data = report_of(drop.failed)
    assert rules_in(data) == ["series-import-filter"]
    assert "localizer" in text and "administrator" in text
    assert requests_to(emulator, "POST", IMPORT) == []
    assert emulator.prearchive() == []


def test_every_series_dropped_is_explained_and_nothing_is_sent(
    drop: Drop, emulator: Emulator
) -> None:
    emulator.set_series_filter(PROJECT, mode="blacklist", list_text=".")
    drop.write_config(emulator.url)
    drop_study(drop, scans=SCANS)
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    text, data = report_of(drop.failed)
    rejections = [v for v in violations(data, "series-import-filter") if v["policy"] == "reject"]
    assert len(rejections) == 1
    assert "drops every series" in str(rejections[0]["message"])
    assert "xnat-empty-answer" not in rules_in(data)
    assert requests_to(emulator, "POST", IMPORT) == []
    assert "What to do" in text


def test_an_unpredictable_filter_is_tolerated_and_the_receipt_says_so(
    drop: Drop, emulator: Emulator
) -> None:
    # `\Z` reads differently in Java and Python at a final line terminator: the daemon does not
    # guess. It sends everything, and accepts the series XNAT then dropped.
    emulator.set_series_filter(PROJECT, mode="blacklist", list_text="localizer\\Z")
    drop.write_config(emulator.url)
    drop_study(drop, scans=SCANS)
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    text, data = report_of(drop.done)
    assert held_scans(emulator) == {"2": 4, "3": 2}
    assert violations(data, "series-import-filter") == []
    notes = data["xnat"]["notes"]  # type: ignore[index]
    assert any("cannot be predicted" in n for n in notes)
    dropped = (
        "XNAT dropped the series of 3 files under 01_localizer/ (first: 01_localizer/IM0001.dcm): "
        "its series import filter may drop"
    )
    assert any(dropped in n for n in notes), notes
    assert "cannot be predicted" in text


def test_a_filter_changed_between_check_and_import_is_named_in_the_mismatch(
    drop: Drop, emulator: Emulator
) -> None:
    drop.write_config(emulator.url)
    drop_study(drop, scans=SCANS)
    env = daemon_env(XNAT_DROP_PAUSEPOINT="after-filter=3")
    proc = start_daemon(drop, env=env)
    try:
        # The project's filter read (after the site's), then changed during the 3 s pause
        # before the upload: the import finds another filter than the check did.
        wait_until(
            lambda: any(
                f"/projects/{PROJECT}/config/seriesImportFilter" in r.path
                for r in emulator.requests()
            ),
            "the daemon read the project's filter",
            proc,
        )
        time.sleep(0.5)  # its answer is on the way back, well inside the pause
        emulator.set_series_filter(PROJECT, mode="blacklist", list_text="localizer")
        folder = drop.failed.joinpath(*REL)
        wait_until(folder.is_dir, "the session failed", proc, timeout=60)
    finally:
        stop_daemon(proc)
    text, data = report_of(drop.failed)
    assert rules_in(data) == ["count-mismatch"]
    assert "changed between the check and the import" in text
    assert "then: none" in text and "“localizer”" in text


def test_a_resumed_delivery_sends_what_was_planned_whatever_the_filter_is_now(
    drop: Drop, emulator: Emulator
) -> None:
    emulator.set_series_filter(PROJECT, mode="blacklist", list_text="localizer")
    drop.write_config(emulator.url)
    drop_study(drop, scans=SCANS)
    killed = run_daemon(drop, env=daemon_env(XNAT_DROP_FAILPOINT="after-upload"))
    assert killed.returncode == -9, killed.stderr
    emulator.clear_series_filter(PROJECT)  # changed after the upload: the plan stands
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    _, data = report_of(drop.done)
    assert held_scans(emulator) == {"2": 4, "3": 2}
    assert len(violations(data, "series-import-filter")) == 1
    assert data["xnat"]["verified"] == [  # type: ignore[index]
        {
            "series": "the series of 4 files under 02_T1_MPRAGE/ (first: 02_T1_MPRAGE/IM0001.dcm)",
            "sent": 4,
            "held": 4,
        },
        {
            "series": "the series of 2 files under 03_AAHScout/ (first: 03_AAHScout/IM0001.dcm)",
            "sent": 2,
            "held": 2,
        },
    ]


def test_the_filter_is_read_once_per_few_minutes_and_again_after_a_reload(
    drop: Drop, emulator: Emulator
) -> None:
    emulator.set_series_filter(PROJECT, mode="blacklist", list_text="localizer")
    drop.write_config(emulator.url)
    proc = start_daemon(drop)
    try:
        for n, session in enumerate(("S01_MR1", "S01_MR2")):
            rel = (PROJECT, "S01", session)
            drop_study(drop, rel, SCANS, study=f"1.2.826.0.1.3680043.8.498.200{n}")
            wait_until(drop.done.joinpath(*rel).is_dir, f"{session} delivered", proc, timeout=60)
        reads = [r for r in emulator.requests() if r.path.endswith("seriesImportFilter/config")]
        assert len(reads) == 2  # the site's and the project's, once each
    finally:
        stop_daemon(proc)


def test_check_server_runs_every_server_side_check_of_a_delivery(
    drop: Drop, emulator: Emulator, tmp_path: Path
) -> None:
    emulator.set_series_filter(PROJECT, mode="blacklist", list_text="localizer")
    drop.write_config(emulator.url)
    drop_study(drop, scans=SCANS)
    assert run_daemon(drop).returncode == 0
    delivered = drop.done.joinpath(*REL)
    fresh = tmp_path / "lib" / PROJECT / "S02" / "S02_MR1"
    write_session(fresh, SCANS, patient_id="S02", study_uid="1.2.826.0.1.3680043.8.498.3001")
    before = len(emulator.requests())
    found = verdicts(check(drop.config, delivered, fresh, server=True))
    # Already in XNAT: refused as a delivery would be, and nothing to upload.
    again = found[str(delivered)]
    assert not again["accepted"] and again["upload_files"] == 0
    assert "session-exists" in [v["rule"] for v in again["violations"]]
    # New: what XNAT's filter drops is left out, per series, as the delivery would.
    new = found[str(fresh)]
    assert new["accepted"] and new["upload_files"] == 6
    series = {s["series"]: s for s in new["server"]["series"]}
    assert (
        series["the series of 3 files under 01_localizer/ (first: 01_localizer/IM0001.dcm)"][
            "xnat_drops"
        ]
        == 3
    )
    assert (
        series["the series of 4 files under 02_T1_MPRAGE/ (first: 02_T1_MPRAGE/IM0001.dcm)"][
            "xnat_drops"
        ]
        == 0
    )
    assert "“localizer”" in new["server"]["series_import_filter"]
    assert [v["rule"] for v in new["violations"]] == ["series-import-filter"]
    # Only looked.
    asked = emulator.requests()[before:]
    assert {r.method for r in asked} <= {"GET", "POST"}
    assert not [r for r in asked if "/services/import" in r.path]


def test_a_site_filter_closed_to_non_admins_is_read_from_the_site_preferences(
    drop: Drop, emulator: Emulator
) -> None:
    emulator.set_series_filter(None, mode="blacklist", list_text="localizer")
    emulator.set_site_config_admin_only(True)
    drop.write_config(emulator.url)
    drop_study(drop, scans=SCANS)
    result = run_daemon(drop)
    assert result.returncode == 0, result.stderr
    _, data = report_of(drop.done)
    assert held_scans(emulator) == {"2": 4, "3": 2}
    [dropped] = violations(data, "series-import-filter")
    assert "the site's blacklist" in str(dropped["message"])
    assert any(r.path.startswith("/xapi/siteConfig/values/") for r in emulator.requests())


def test_a_project_filter_xnat_will_not_show_pauses_and_sends_nothing(
    drop: Drop, emulator: Emulator
) -> None:
    emulator.set_series_filter(PROJECT, mode="blacklist", list_text="localizer")
    emulator.set_project_readers(PROJECT, ["someone-else"])
    drop.write_config(emulator.url)
    drop_study(drop, scans=SCANS)
    result = run_daemon(drop, timeout=20)
    assert result.returncode != 0  # left waiting, not failed
    assert "403" in result.stderr
    assert not drop.failed.joinpath(*REL).exists()
    assert requests_to(emulator, "POST", IMPORT) == []
