"""The DICOM receiver's server as the Emulator starts and stops it, and what
``GET /xapi/dicomscp`` lists meanwhile. pynetdicom is the optional ``cstore`` extra, so
``dicomscp`` is imported only when a receiver is started."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .filterconfig import SeriesFilters
from .scpstate import ScpState
from .store import Store
from .versions import XnatVersion

if TYPE_CHECKING:
    from .dicomscp import DicomScp


class ScpRunner:
    """Serves ``state``'s receivers on ``port`` (None: no receiver; 0: a free one, then kept,
    so that a restart serves on the same port)."""

    def __init__(
        self,
        store: Store,
        filters: SeriesFilters,
        version: XnatVersion,
        state: ScpState,
        host: str,
        port: int | None,
    ) -> None:
        self.store = store
        self.filters = filters
        self.version = version
        self.state = state
        self.host = host
        self._port = port
        self._scp: DicomScp | None = None

    def start(self) -> None:
        if self._port is None:
            return
        try:
            from .dicomscp import DicomScp  # noqa: PLC0415
        except ImportError as error:
            raise RuntimeError(
                "the DICOM receiver needs pynetdicom: pip install 'xnat-drop[cstore]'"
            ) from error

        scp = DicomScp(
            store=self.store,
            filters=self.filters,
            version=self.version,
            state=self.state,
            receivers=self.state.receivers,
            host=self.host,
        )
        self._port = scp.start(self._port)
        self._scp = scp

    def stop(self) -> None:
        if self._scp is not None:
            self._scp.stop()
            self._scp = None

    @property
    def port(self) -> int:
        if self._scp is None or not self._port:
            raise RuntimeError("no DICOM receiver is running (Emulator(dicom_port=0))")
        return self._port

    def receivers_json(self) -> list[dict[str, Any]]:
        """``GET /xapi/dicomscp``: none while no receiver runs."""
        if self._scp is None:
            return []
        return [receiver.as_json(self.port) for receiver in self.state.receivers()]
