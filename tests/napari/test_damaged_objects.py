"""Damaged DICOM SEGs opened in a real viewer (run under ``xvfb-run -a``): refused in one line naming the file, as
napari reports a reader's error, never a raw library error (issue 32: short PixelData, BitsAllocated 16,
NumberOfFrames 10^6, Rows x Columns 65535^2 gave ValueError, AttributeError or MemoryError)."""

from __future__ import annotations

import pydicom
import pytest

from medfcn.batch.outputs import OutputFormat
from medfcn.data.reader import read_scan
from medfcn.errors import MedfcnError
from tests.support.dicom import make_series, synthetic_labels, write_all
from tests.support.napari import gui


def _short(ds):
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]


def _bits(ds):
    ds.BitsAllocated = 16


def _frames(ds):
    ds.NumberOfFrames = 1_000_000


def _huge(ds):
    ds.Rows = ds.Columns = 65535


@gui
@pytest.mark.parametrize("damage", [_short, _bits, _frames, _huge], ids=["short", "bits16", "frames", "rows"])
def test_a_damaged_seg_opened_alone_is_refused_in_one_line(viewer, tmp_path, damage):
    series = make_series("lps_shuffled", tmp_path / "series")
    scan = read_scan(series)
    seg = write_all(scan, synthetic_labels(scan), tmp_path / "out", (OutputFormat.DICOM_SEG,))[OutputFormat.DICOM_SEG]
    ds = pydicom.dcmread(seg)
    damage(ds)
    alone = tmp_path / "alone" / seg.name
    alone.parent.mkdir()
    ds.save_as(alone, enforce_file_format=False)
    with pytest.raises(Exception) as info:
        viewer.open(str(alone), plugin="medfcn")
    error = info.value
    while getattr(error, "__cause__", None) is not None:
        error = error.__cause__
    assert isinstance(error, MedfcnError), repr(error)
    assert str(alone) in str(error) and "\n" not in str(error)
    assert not viewer.layers
