"""The pydicom settings a header is read under, applied around inspection's own reads only.

pydicom's settings are process-wide (`pydicom.config`), and other code in the process (a lab's
script, the XNAT stand-in in the tests) reads DICOM with them too, so importing this package
changes none of them. What inspection needs is set for the time of each of its pydicom reads
and put back afterwards:

- `lenient_reading`: header problems are judged by inspection's own rules, so pydicom must
  neither warn about odd values nor raise for them (`reading_validation_mode` IGNORE,
  whatever the process has set). Reads in several threads at once share one window: the first
  to begin saves the mode and sets IGNORE, the last to end puts the saved mode back.
- `is_as_shipped`: dicomscan reproduces pydicom's conversions at its shipped settings and
  hooks; a reader asks once whether the process still has them (else pydicom reads every file).

Nothing here runs at import time. Worker processes (workers.py) need nothing more: each read
opens its own window there too.
"""

from __future__ import annotations

import threading
from types import TracebackType

import pydicom.config
import pydicom.hooks


class _LenientReading:
    """`with lenient_reading:` reads with pydicom's reading validation off (see above).

    The counter and the lock mirror pydicom's settings, which are one per process: they are
    the only state here, and they are back to zero whenever no read is under way. A mode set
    by someone else while a read is under way is overwritten when the last read ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reads = 0  # reads under way in this process
        self._saved: int | None = None  # the mode found when the first of them began

    def __enter__(self) -> None:
        settings = pydicom.config.settings
        with self._lock:
            if not self._reads:
                # The stored value, not the property: None means "pydicom's default", which
                # depends on other settings and must stay None.
                self._saved = settings._reading_validation_mode
                settings.reading_validation_mode = pydicom.config.IGNORE
            self._reads += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with self._lock:
            self._reads -= 1
            if not self._reads:
                pydicom.config.settings._reading_validation_mode = self._saved
                self._saved = None


lenient_reading = _LenientReading()


def is_as_shipped() -> bool:
    """True while pydicom converts values with its default settings and hooks, which are
    what dicomscan's conversions reproduce. The reading validation mode is not among them:
    every pydicom read of inspection happens under `lenient_reading`."""
    config = pydicom.config
    hooks = pydicom.hooks.hooks
    return (
        not config.datetime_conversion
        and not config.use_none_as_empty_text_VR_value
        and not config.use_IS_numpy
        and not config.use_DS_numpy
        and not config.use_DS_decimal
        and config.data_element_callback is None
        and hooks.raw_element_vr is pydicom.hooks.raw_element_vr
        and hooks.raw_element_value is pydicom.hooks.raw_element_value
    )
