"""DICOM files, read with pydicom (and a fast reader for the common encoding)."""
