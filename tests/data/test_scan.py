"""The Scan and Grid types: geometry conventions checked against SimpleITK and nibabel."""

from __future__ import annotations

import doctest

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

import medfcn.data.discovery
import medfcn.data.scan
import medfcn.inference.frame
from medfcn.data.scan import Grid, Scan
from tests.support.scans import affine_from_codes, head_volume, lps_geometry, oblique_affine


def make_scan(affine=None, array=None) -> Scan:
    spacing, origin, direction = lps_geometry(oblique_affine() if affine is None else affine)
    return Scan(head_volume() if array is None else array, spacing, origin, direction, case="x")


def test_affine_by_hand():
    scan = Scan(np.zeros((4, 5, 6)), (1.0, 2.0, 3.0), (10.0, 20.0, 30.0), np.eye(3))
    # LPS identity directions: i points left (RAS -x), j posterior (RAS -y), k superior.
    np.testing.assert_allclose(scan.affine, [[-1, 0, 0, -10], [0, -2, 0, -20], [0, 0, 3, 30], [0, 0, 0, 1]])
    assert nib.aff2axcodes(scan.affine) == ("L", "P", "S")
    assert scan.shape == (4, 5, 6) and scan.grid.size == (4, 5, 6)


@pytest.mark.parametrize("affine", [affine_from_codes("LSA"), oblique_affine()], ids=["LSA", "oblique"])
def test_voxel_positions_agree_with_sitk(affine):
    scan = make_scan(affine)
    image = scan.to_sitk()
    for ijk in [(0, 0, 0), (5, 7, 11), (32, 36, 33)]:
        lps = np.asarray(image.TransformIndexToPhysicalPoint(ijk))
        ras = scan.affine @ np.array([*ijk, 1.0])
        np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-9)
        assert image[ijk] == pytest.approx(float(scan.array[ijk]))
    np.testing.assert_allclose(scan.affine, affine, atol=1e-9)


def test_sitk_round_trip_and_labels_on_the_grid():
    scan = make_scan()
    back = Scan.from_sitk(scan.to_sitk(), case="y")
    np.testing.assert_array_equal(back.array, scan.array)
    assert back.grid.differences(scan.grid) == [] and back.case == "y"
    labels = (scan.array > 500).astype(np.uint8)
    img = scan.to_sitk(labels)
    assert img.GetPixelID() == sitk.sitkUInt8 and img.GetSize() == scan.shape
    with pytest.raises(ValueError, match="does not fit"):
        scan.to_sitk(labels[:-1])


def test_with_array_keeps_geometry_and_identity():
    scan = make_scan()
    scan.series_uid, scan.warnings = "1.2.3", ["something"]
    labels = scan.with_array(np.zeros(scan.shape, np.uint8))
    assert labels.grid == scan.grid and labels.case == "x" and labels.series_uid == "1.2.3"
    assert labels.warnings == [] and labels.array.dtype == np.uint8
    with pytest.raises(ValueError, match="does not fit"):
        scan.with_array(np.zeros((2, 2, 2)))


def test_grid_differences_names_what_differs():
    g = make_scan().grid
    assert g.differences(g) == []
    other = Grid((33, 37, 35), tuple(np.add(g.spacing, 0.1)), tuple(np.add(g.origin, 1)), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    found = g.differences(other)
    assert [d.split()[0] for d in found] == ["size", "spacing", "origin", "direction"]
    close = Grid(g.size, tuple(np.add(g.spacing, 1e-6)), tuple(np.add(g.origin, 1e-5)), g.direction)
    assert g.differences(close) == []
    np.testing.assert_allclose(g.affine, make_scan().affine)


def test_module_examples_run():
    for module in (medfcn.data.scan, medfcn.inference.frame, medfcn.data.discovery):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, module.__name__
