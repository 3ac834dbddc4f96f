"""xnat-drop: deliver dropped scanner sessions to XNAT, raw DICOM only."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("xnat-drop")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
