"""medfcn.pipeline: what a batch asks of ``Segmenter.segment`` besides its labels."""

from __future__ import annotations

import weakref

import numpy as np

from medfcn.pipeline import Segmenter
from medfcn.scan import Scan


def _scan() -> Scan:
    rng = np.random.default_rng(0)
    return Scan((rng.random((40, 44, 30)) * 1000).astype(np.int16), (1.2, 1.0, 1.5), (3.0, -2.0, 1.0), np.eye(3))


def test_release_voxels_frees_the_scans_voxels_once_framed_and_keeps_labels_and_grid() -> None:
    segmenter = Segmenter(None, device="cpu")
    expected = segmenter.segment(_scan())
    scan = _scan()
    grid = scan.grid
    voxels = weakref.ref(scan.array)
    freed_during_inference: list[bool] = []
    labels = segmenter.segment(
        scan, release_voxels=True, progress=lambda f: freed_during_inference.append(voxels() is None)
    )
    assert freed_during_inference and all(freed_during_inference)  # gone before the engine ran
    assert np.array_equal(labels, expected)
    assert scan.grid == grid and scan.array.dtype == np.int16  # the writers' grid is intact
    assert scan.array.strides == (0, 0, 0)  # a stand-in: no memory of the scan's size


def test_without_release_voxels_the_scan_is_left_alone() -> None:
    scan = _scan()
    before = scan.array
    Segmenter(None, device="cpu").segment(scan)
    assert scan.array is before
