"""The ledger's part in the wrong-depth check: what a judged session held, as keys, on a real
SQLite file; a ledger from before the check gains its table on opening."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from xnat_drop.adapters.ledger import Ledger
from xnat_drop.adapters.ledger import rows as ledgerrows
from xnat_drop.core.depth import series_key, study_key

STUDY = "1.2.826.0.1.3680043.8.498.4242"
SERIES = "1.2.826.0.1.3680043.8.498.4243"


def test_shapes_are_found_by_parent_and_age_and_never_hold_a_uid(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(path)
    keys = {"studies": frozenset({study_key(STUDY)}), "series": frozenset({series_key(SERIES)})}
    for claim, parent, name, at in (
        ("c1", "P1/SUBJ15_MR1", "01_localizer", 100.0),
        ("c2", "P1/SUBJ15_MR1", "02_t1", 200.0),
        ("c3", "P1/SUBJ16", "SUBJ16_MR1", 200.0),
        ("c4", "P1/SUBJ15_MR1", "00_old", 10.0),
    ):
        ledger.claimed(claim, f"{parent}/{name}", at)
        ledger.record_shape(claim, at, parent=parent, name=name, **keys)
    ledger.update("c1", 150.0, outcome="done", state="done")
    found = ledger.shapes_beside("P1/SUBJ15_MR1", since=50.0, limit=10)
    assert [(e.claim_id, e.name, e.outcome) for e in found] == [
        ("c2", "02_t1", ""),
        ("c1", "01_localizer", "done"),
    ]
    assert found[1].updated_at == 150.0 and found[1].studies == keys["studies"]
    assert len(ledger.shapes_beside("P1/SUBJ15_MR1", since=0.0, limit=2)) == 2
    ledger.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())  # the file and its WAL
    assert STUDY.encode() not in stored and SERIES.encode() not in stored
    assert study_key(STUDY).encode() in stored


def test_a_ledger_from_before_gains_the_table(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(ledgerrows.SCHEMA.split("CREATE TABLE IF NOT EXISTS shapes")[0])
    old.close()
    assert "shapes" not in _tables(path)
    ledger = Ledger(path)
    ledger.record_shape("c1", 1.0, parent="P1/S", name="E", studies=frozenset(), series=frozenset())
    assert [e.name for e in ledger.shapes_beside("P1/S", 0.0, 5)] == ["E"]
    ledger.close()
    assert "shapes" in _tables(path)


def _tables(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        db.close()
