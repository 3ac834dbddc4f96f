"""The read-only HTTP status page: `/` (HTML that refreshes itself), `/status.json` (what
`xnat-drop status --json` prints), `/metrics` (Prometheus) and `/healthz`, served from what the
loop hands over (service/monitor.py builds it). Off by default; loopback by default."""

from __future__ import annotations

from xnat_drop.adapters.page.server import PageServer, Snapshot, policy

__all__ = ["PageServer", "Snapshot", "policy"]
