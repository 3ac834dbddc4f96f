"""What a SOP Class UID says an object is: non-image data a session carries, or derived. Pure.

One table, `SOP_CLASSES`, read by the derived-series rule (rules.py) and the incomplete-series
rule (completeness.py). Sources: DICOM PS3.4 Annex B.5 "Standard SOP Classes" (table B.5-1),
checked against pydicom's UID dictionary; Siemens' private CSA Non-Image Storage class
1.3.12.2.1107.5.9.1 (dicom-notes.md §1; dcm2niix, SPM's spm_dicom_convert, GDCM's MediaStorage).

- **non-image**: what a scanner exports beside the images of a session and XNAT archives as a
  scan of it: structured reports (dose reports, Siemens' PhoenixZIPReport as Enhanced SR),
  encapsulated documents (the protocol as PDF), MR spectroscopy, raw data, waveforms
  (physiological recordings), and Siemens' CSA Non-Image objects (PhoenixZIPReport, spectra,
  physiological logs, the diffusion tensor export). Uploaded.
- **derived**: objects computed from acquired images: secondary captures, segmentations and
  registrations, parametric and value maps, presentation states, 3D models. The
  derived-series rule.

The table wins over every other derived marker. ImageType (0008,0008) and FrameType
(0008,9007) tokens, SeriesDescription patterns and PALETTE COLOR describe *pixel data*; a
non-image object has none for them to describe (an SR has no ImageType at all), and where a
vendor fills ImageType anyway (Siemens' CSA Non-Image objects carry one) its values follow no
standard for such objects. Judging those objects by image markers would reject whole sessions
for the protocol or dose report the scanner always exports: a false rejection costs a lab
member a re-drop, an extra non-image scan in XNAT costs nothing. A SOP class in neither list is
an image, judged by its markers.
"""

from __future__ import annotations

from typing import Literal

SopKind = Literal["non-image", "derived"]
NON_IMAGE: SopKind = "non-image"
DERIVED: SopKind = "derived"

_SC = "Secondary Capture (a screenshot or rendered image)"
_SR = "a Structured Report (a document, not an image)"
_DOSE = "a radiation dose report (a Structured Report)"
_MODEL = "a 3D model (a surface computed from images, not acquired)"

# UID -> (kind, words for a report). A key ending in "." names a family by prefix; the exact
# UID wins over a prefix, and a longer prefix over a shorter one (sop_class).
SOP_CLASSES: dict[str, tuple[SopKind, str]] = {
    # -- PS3.4 B.5: derived, kept out by the derived-series rule
    "1.2.840.10008.5.1.4.1.1.7": (DERIVED, _SC),
    "1.2.840.10008.5.1.4.1.1.7.1": (DERIVED, _SC),  # multi-frame single bit
    "1.2.840.10008.5.1.4.1.1.7.2": (DERIVED, _SC),  # multi-frame grayscale byte
    "1.2.840.10008.5.1.4.1.1.7.3": (DERIVED, _SC),  # multi-frame grayscale word
    "1.2.840.10008.5.1.4.1.1.7.4": (DERIVED, _SC),  # multi-frame true colour
    "1.2.840.10008.5.1.4.1.1.11.": (
        DERIVED,
        "a Presentation State (display settings, not an image)",
    ),
    "1.2.840.10008.5.1.4.1.1.30": (DERIVED, "a Parametric Map (values computed from images)"),
    "1.2.840.10008.5.1.4.1.1.66.1": (DERIVED, "Spatial Registration (computed, not acquired)"),
    "1.2.840.10008.5.1.4.1.1.66.2": (DERIVED, "Spatial Fiducials (computed, not acquired)"),
    "1.2.840.10008.5.1.4.1.1.66.3": (
        DERIVED,
        "Deformable Spatial Registration (computed, not acquired)",
    ),
    "1.2.840.10008.5.1.4.1.1.66.4": (DERIVED, "Segmentation (computed, not acquired)"),
    "1.2.840.10008.5.1.4.1.1.66.5": (DERIVED, "Surface Segmentation (computed, not acquired)"),
    "1.2.840.10008.5.1.4.1.1.66.6": (DERIVED, "Tractography Results (computed, not acquired)"),
    # Later members of the family (label map and height map segmentations, ...).
    "1.2.840.10008.5.1.4.1.1.66.": (DERIVED, "a segmentation or registration (computed)"),
    "1.2.840.10008.5.1.4.1.1.67": (
        DERIVED,
        "a Real World Value Mapping (computed for images, not acquired)",
    ),
    "1.2.840.10008.5.1.4.1.1.104.3": (DERIVED, f"an Encapsulated STL, {_MODEL}"),
    "1.2.840.10008.5.1.4.1.1.104.4": (DERIVED, f"an Encapsulated OBJ, {_MODEL}"),
    "1.2.840.10008.5.1.4.1.1.104.5": (DERIVED, "an Encapsulated MTL (the material of a 3D model)"),
    # -- PS3.4 B.5: non-image objects, uploaded as scans of the session
    "1.2.840.10008.5.1.4.1.1.4.2": (NON_IMAGE, "MR Spectroscopy (spectra, not an image)"),
    "1.2.840.10008.5.1.4.1.1.9.": (NON_IMAGE, "a waveform (ECG, respiration, other signals)"),
    "1.2.840.10008.5.1.4.1.1.66": (NON_IMAGE, "Raw Data (the scanner's raw data)"),
    "1.2.840.10008.5.1.4.1.1.88.": (NON_IMAGE, _SR),
    "1.2.840.10008.5.1.4.1.1.88.11": (NON_IMAGE, "a Basic Text SR (a document)"),
    "1.2.840.10008.5.1.4.1.1.88.22": (NON_IMAGE, "an Enhanced SR (a document)"),
    "1.2.840.10008.5.1.4.1.1.88.33": (NON_IMAGE, "a Comprehensive SR (a document)"),
    "1.2.840.10008.5.1.4.1.1.88.67": (NON_IMAGE, _DOSE),  # X-Ray Radiation Dose SR
    "1.2.840.10008.5.1.4.1.1.88.68": (NON_IMAGE, _DOSE),  # Radiopharmaceutical
    "1.2.840.10008.5.1.4.1.1.88.73": (NON_IMAGE, _DOSE),  # Patient Radiation Dose SR
    "1.2.840.10008.5.1.4.1.1.88.76": (NON_IMAGE, _DOSE),  # Enhanced X-Ray Radiation Dose SR
    "1.2.840.10008.5.1.4.1.1.104.": (NON_IMAGE, "an Encapsulated Document (not an image)"),
    "1.2.840.10008.5.1.4.1.1.104.1": (NON_IMAGE, "an Encapsulated PDF (a document)"),
    "1.2.840.10008.5.1.4.1.1.104.2": (NON_IMAGE, "an Encapsulated CDA (a document)"),
    # -- vendors' private classes
    "1.3.12.2.1107.5.9.1": (
        NON_IMAGE,
        "a Siemens CSA Non-Image object (protocol, spectra or physiological log)",
    ),
}
_PREFIXES = sorted((k for k in SOP_CLASSES if k.endswith(".")), key=len, reverse=True)


def sop_class(uid: str) -> tuple[SopKind, str] | None:
    """(kind, words) for a SOP Class UID from SOP_CLASSES, or None for an image class (or an
    unknown one): the exact UID first, else its longest listed family."""
    if uid.endswith("."):  # no UID ends so: not a family's key either
        return None
    found = SOP_CLASSES.get(uid)
    if found is not None:
        return found
    return next((SOP_CLASSES[p] for p in _PREFIXES if uid.startswith(p)), None)


def is_non_image(uid: str) -> bool:
    """True when the SOP class is one of the non-image objects a session carries."""
    found = sop_class(uid)
    return found is not None and found[0] == NON_IMAGE
