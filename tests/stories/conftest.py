"""Fixtures of the hostile-input stories."""

from __future__ import annotations

import pytest


@pytest.fixture
def seg_case(tmp_path):
    """``(series folder, scan, labels, {format: file})``: a real 24 x 24 x 10 DICOM series, two labels on it, and
    their NIfTI, SEG (highdicom) and RTSTRUCT written by medfcn into ``ref/``."""
    from medfcn.data.reader import read_scan
    from tests.support.dicom import make_series, synthetic_labels, write_all

    series = make_series("lps_shuffled", tmp_path / "in" / "series")
    scan = read_scan(series)
    labels = synthetic_labels(scan)
    return series, scan, labels, write_all(scan, labels, tmp_path / "ref")
