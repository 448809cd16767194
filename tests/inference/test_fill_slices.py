"""Per-slice hole filling (``fill_slices``): hand-worked cases and scipy's 2-D fill slice by slice."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medfcn.inference.postprocess import apply_to_probabilities, clean_mask, fill_holes, fill_slice_holes
from medfcn.model.card import ModelCard, PostStep


def cup() -> np.ndarray:
    """A cup open at the top (high z): every axial slice of its wall is a ring around a hole that is open in 3-D."""
    m = np.zeros((9, 9, 9), bool)
    m[1:8, 1:8, 1:8] = True
    m[3:6, 3:6, 3:8] = False  # the inside, open through z = 7
    return m


def test_a_hole_open_in_3d_is_filled_in_its_slices_only():
    m = cup()
    assert fill_holes(m).sum() == m.sum()  # open to the outside in 3-D: nothing to fill
    axial = fill_slice_holes(m, 2)
    assert axial.sum() == m.sum() + 3 * 3 * 5  # each of the 5 ring slices z = 3..7 gets its 3 x 3 centre
    assert axial[3:6, 3:6, 3:8].all() and axial.sum() == 7**3
    # along x (or y) the slices through the cup show a U, open at the top: nothing enclosed
    assert fill_slice_holes(m, 0).sum() == m.sum()
    assert fill_slice_holes(m, 1).sum() == m.sum()
    assert clean_mask(m, ["fill_slices"]).sum() == 7**3
    assert clean_mask(m, ["fill_holes"]).sum() == m.sum()


def test_holes_touch_by_corners_only_are_enclosed():
    # a diagonal gap in a slice: background connects through edges within the slice, so a hole reaching the
    # border only through a corner is still a hole (scipy's default 2-D structure)
    s = np.zeros((1, 5, 5), bool)
    s[0, 1:4, 1:4] = True
    s[0, 2, 2] = False
    s[0, 0, 0] = False
    assert fill_slice_holes(s, 0)[0, 2, 2]


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_matches_scipy_slice_by_slice(axis):
    rng = np.random.default_rng(axis)
    m = ndimage.binary_opening(rng.random((17, 19, 21)) > 0.35)
    expected = np.moveaxis(np.stack([ndimage.binary_fill_holes(s) for s in np.moveaxis(m, axis, 0)]), 0, axis)
    assert np.array_equal(fill_slice_holes(m, axis), expected)


def test_card_and_probabilities():
    card = ModelCard(postprocess=["largest_component", "fill_slices"])
    assert card.postprocess == ("largest_component", "fill_slices")
    assert PostStep("fill_slices") is PostStep.FILL_SLICES
    m = cup()
    probs = np.zeros((2, *m.shape), np.uint16)
    probs[1][m] = 500
    probs[0][~m] = 500
    apply_to_probabilities(probs, card.postprocess)
    labels = probs.argmax(0)
    assert labels.sum() == 7**3 and labels[4, 4, 5] == 1


def test_fill_slices_inside_the_box_equals_the_whole_array():
    rng = np.random.default_rng(1)
    m = np.zeros((30, 32, 34), bool)
    m[5:25, 6:28, 4:30] = ndimage.binary_opening(rng.random((20, 22, 26)) > 0.3)
    expected = m.copy()
    for axis in range(3):
        expected = fill_slice_holes(expected, axis)
    assert np.array_equal(clean_mask(m, ["fill_slices"]), fill_holes(expected))
