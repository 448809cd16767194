"""The scan-file name rules, with no dependency beyond the standard library.

What counts as a scan file by its name, the case name a file gets, and the names of the files medfcn writes beside
its label maps that are not label maps (a masked image, a review's corrected folder). :mod:`medfcn.data.reader`,
:mod:`medfcn.data.discovery` and the napari plugin's reader hook (which napari calls for every path a user opens, so it
must import fast: no torch, no MONAI) all take the rules from here.

>>> strip_suffix("t1.nii.gz"), is_scan_name("CT.NRRD"), is_scan_name("notes.txt")
('t1', True, False)
"""

from __future__ import annotations

__all__ = ["SCAN_SUFFIXES", "DICOM_SUFFIX", "MASKED_SUFFIX", "CORRECTED_FOLDER", "strip_suffix", "is_scan_name"]

SCAN_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
"""File suffixes of single-file scans (lower case; names are matched case-insensitively)."""

DICOM_SUFFIX = ".dcm"
"""The suffix a DICOM file often (not always) has; DICOM files are also recognised by their preamble."""

MASKED_SUFFIX = ".masked.nii.gz"
"""``OUT/<case>.masked.nii.gz``: a batch's masked image (``medfcn segment --masked-image``), a scan, not labels."""

CORRECTED_FOLDER = "corrected"
"""``OUT/corrected/``: where the review queue saves corrected label maps, never over a batch's outputs."""


def strip_suffix(name: str) -> str:
    """``t1.nii.gz`` -> ``t1``; names without a scan suffix are returned unchanged."""
    low = name.lower()
    for suffix in SCAN_SUFFIXES:
        if low.endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_scan_name(name: str) -> bool:
    """Whether a file name has a scan suffix (case-insensitive); hidden files (``.x.nii``) are not scans."""
    return name.lower().endswith(SCAN_SUFFIXES) and not name.startswith(".")
