"""A local XNAT stand-in over real HTTP, faithful to xnat-api.md, with fault injection.

Used by the daemon's tests and by ``xnat-drop demo`` / ``xnat-drop emulator``::

    with Emulator(tmp_path / "xnat", users={"alice": "s3cret"}, projects=["P1"]) as emu:
        ...  # talk to emu.url; inspect emu.prearchive(), emu.archive(), emu.requests()
"""

from __future__ import annotations

from .app import Emulator
from .faults import Fault
from .records import ArchivedSession, PrearchiveSession, RequestRecord

__all__ = ["ArchivedSession", "Emulator", "Fault", "PrearchiveSession", "RequestRecord"]
