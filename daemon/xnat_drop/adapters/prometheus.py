"""Prometheus (prometheus_client, the one module that imports it): a Sample (core/metrics.py)
in the text exposition format, for the page's /metrics and for node_exporter's textfile
collector.

Each rendering builds a collector over one immutable sample in a registry of its own: nothing
global, nothing counted in this process. The counters are the ledger's totals, so they are
the same after a restart as before it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from xnat_drop.adapters.fs.beneath import Dir
from xnat_drop.core.metrics import DURATION_BUCKETS, INF, Sample

CONTENT_TYPE = CONTENT_TYPE_LATEST  # of what `render` returns
TEXTFILE_MODE = 0o644  # node_exporter runs as another user (the unit's UMask= is 0007)


def render(sample: Sample) -> bytes:
    """The sample in Prometheus' text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SampleCollector(sample))
    return generate_latest(registry)


def write_textfile(path: Path, text: bytes) -> None:
    """Replace `path` atomically with `text`, readable by node_exporter: written beside it under
    a name that does not end in .prom (the collector skips it), then renamed over it.

    prometheus_client's write_to_textfile would leave the mode to the umask, and the unit's
    0007 makes the file unreadable to node_exporter's user. Raises OSError.
    """
    # The folder is the operator's (it may be a link, as node_exporter's often is); the file
    # itself is never written through a link.
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    with Dir(fd, path.parent) as folder:
        folder.write_atomic(path.name, text, TEXTFILE_MODE, exact=True, sync=False)


class _SampleCollector(Collector):
    """The metrics of one sample (see core/metrics.py for what each means)."""

    def __init__(self, sample: Sample) -> None:
        self._sample = sample

    def collect(self) -> Iterator[Metric]:
        sample, totals = self._sample, self._sample.totals
        sessions = GaugeMetricFamily(
            "xnat_drop_sessions",
            "Sessions the daemon knows of now, by state: settling (in incoming/, still "
            "changing), blocked (cannot be taken: see xnat-drop status), claimed (waiting "
            "their turn), uploading (being worked on), retrying, waiting_xnat (XNAT "
            "unreachable or refusing the credentials), filing",
            labels=["state"],
        )
        for state, count in sample.sessions:
            sessions.add_metric([state], count)
        yield sessions
        for name, text, rows in (
            (
                "xnat_drop_delivered",
                "Sessions delivered to XNAT, by XNAT project",
                totals.delivered,
            ),
            (
                "xnat_drop_failed",
                'Sessions moved to failed/, by XNAT project ("" when it failed before XNAT '
                "confirmed the project: a broken rule, an unknown project)",
                totals.failed,
            ),
        ):
            counter = CounterMetricFamily(name, text, labels=["project"])
            for project, count in rows:
                counter.add_metric([project], count)
            yield counter
        rules = CounterMetricFamily(
            "xnat_drop_failed_by_rule",
            "Sessions moved to failed/, by the rule that failed them (one session may count "
            "under several rules)",
            labels=["rule"],
        )
        for rule, count in totals.failed_by_rule:
            rules.add_metric([rule], count)
        yield rules
        yield CounterMetricFamily(
            "xnat_drop_sent_bytes",
            "Bytes sent to XNAT for delivered sessions (the DICOM zip and session resources, "
            "as each receipt counts them)",
            value=totals.sent_bytes,
        )
        buckets, running = [], 0
        bounds = [repr(float(b)) for b in DURATION_BUCKETS] + [INF]  # "le": 1.0 ... +Inf
        for bound, count in zip(bounds, totals.durations, strict=True):
            running += count
            buckets.append((bound, float(running)))
        yield HistogramMetricFamily(
            "xnat_drop_upload_duration_seconds",
            "Time from the start of a delivered session's upload to its verification in XNAT",
            buckets=buckets,
            sum_value=totals.duration_sum,
        )
        yield GaugeMetricFamily(
            "xnat_drop_oldest_waiting_age_seconds",
            "Age of the oldest claimed session not yet filed, since it was first seen in "
            "incoming/ (0 when none waits)",
            value=sample.oldest_waiting_age,
        )
        if totals.last_delivery is not None:  # absent until the first delivery
            yield GaugeMetricFamily(
                "xnat_drop_last_delivery_timestamp_seconds",
                "When the last session was delivered (seconds since the epoch)",
                value=totals.last_delivery,
            )
        yield GaugeMetricFamily(
            "xnat_drop_xnat_up",
            "1 while XNAT answers and takes the credentials, else 0 (unreachable, refusing, "
            "not yet contacted)",
            value=int(sample.xnat_up),
        )
        yield GaugeMetricFamily(
            "xnat_drop_credentials_ok",
            "1 when XNAT took the credentials at its last check, 0 when it refused them or "
            "was never reached",
            value=int(sample.credentials_ok),
        )
        yield InfoMetricFamily(
            "xnat_drop", "The daemon's version", value={"version": sample.version}
        )
