"""What the metrics and the page's /healthz say, as values: the ledger's running totals, a
sample of the live state, and whether the daemon is healthy. Pure: the service builds a Sample
from the report `status --json` prints and the ledger's Totals; adapters/prometheus.py renders
it. Labels are XNAT project labels, rule ids and the states below only: no folder name and no
DICOM value ever becomes a label (their number would be unbounded, and they are the lab's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from xnat_drop.core.text import from_iso, local

# Upper bounds (seconds) of the upload-duration histogram: a small session takes seconds, a
# large one over a slow link hours. The ledger keeps one count per bucket (adapters/ledger/
# totals.py), so changing these makes it count again from its rows, once.
DURATION_BUCKETS: tuple[float, ...] = (
    1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400,
)  # fmt: skip
INF = "+Inf"

# Where a session is, as the metric xnat_drop_sessions{state} counts it (service/board.py
# chooses): still settling in incoming/, cannot be taken there, claimed and waiting its turn
# (or to be inspected), taken a step further now, waiting to be retried, waiting for XNAT
# (unreachable or refusing the credentials), being filed in done/ or failed/.
SESSION_STATES: tuple[str, ...] = (
    "settling", "blocked", "claimed", "uploading", "retrying", "waiting_xnat", "filing",
)  # fmt: skip


def bucket_key(seconds: float) -> str:
    """The histogram bucket one duration falls in, by its upper bound: "60", or "+Inf"."""
    for bound in DURATION_BUCKETS:
        if seconds <= bound:
            return f"{bound:g}"
    return INF


@dataclass(frozen=True, slots=True)
class Totals:
    """What the ledger says happened, ever: counts by XNAT project ("" for a session that
    failed before XNAT confirmed its project) and by rule id, bytes sent, upload durations
    (one count per DURATION_BUCKETS bound, then above them all: not cumulative), the time of
    the last delivery (None: never)."""

    delivered: tuple[tuple[str, int], ...] = ()
    failed: tuple[tuple[str, int], ...] = ()
    failed_by_rule: tuple[tuple[str, int], ...] = ()
    sent_bytes: int = 0
    durations: tuple[int, ...] = field(default=(0,) * (len(DURATION_BUCKETS) + 1))
    duration_sum: float = 0.0
    last_delivery: float | None = None

    @property
    def duration_count(self) -> int:
        return sum(self.durations)


@dataclass(frozen=True, slots=True)
class Sample:
    """Everything the metrics show at one moment: the totals, and the live state."""

    version: str
    totals: Totals
    sessions: tuple[tuple[str, int], ...]  # (state, count) for every SESSION_STATES
    oldest_waiting_age: float  # seconds; 0 when nothing is claimed
    xnat_up: bool
    credentials_ok: bool


def sample(report: dict[str, Any], totals: Totals, now: float) -> Sample:
    """The metrics of one report (what `status --json` prints) at wall-clock `now`."""
    snap = report.get("snapshot") or {}
    counts = snap.get("sessions") or {}
    oldest = from_iso(snap.get("oldest_waiting_since") or "")
    xnat = snap.get("xnat") or {}
    state = xnat.get("state", "")
    return Sample(
        version=str(snap.get("version", "")),
        totals=totals,
        sessions=tuple((s, int(counts.get(s, 0))) for s in SESSION_STATES),
        oldest_waiting_age=0.0 if oldest is None else max(0.0, now - oldest),
        xnat_up=state == "ok",
        # Taken at the last check (an outage since then says nothing against them).
        credentials_ok=state != "credentials refused" and bool(xnat.get("last_answer")),
    )


def unhealthy(report: dict[str, Any], zone: tzinfo) -> str | None:
    """Why the daemon is not healthy (one sentence for /healthz), or None when it is: the loop
    reports (the caller judges how recently), works, and XNAT takes the credentials."""
    snap = report.get("snapshot")
    if not snap:
        return "the daemon has not reported yet"
    storage = snap.get("storage")
    if storage:
        return f"work paused: {storage.get('detail', 'the state directory cannot be used')}"
    xnat = snap.get("xnat") or {}
    state = xnat.get("state", "unknown")
    if state == "ok":
        return None
    if state == "not yet contacted":
        return "XNAT not yet contacted"
    since = from_iso(xnat.get("since") or "")
    when = f" since {local(since, zone)}" if since is not None else ""
    detail = f": {xnat['detail']}" if xnat.get("detail") else ""
    if state == "credentials refused":
        return f"XNAT refused the credentials{when}{detail}"
    return f"XNAT {state}{when}{detail}"
