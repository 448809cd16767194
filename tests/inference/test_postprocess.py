"""Post-processing, checked by hand-built cases and against scipy's own labelling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medfcn.errors import ModelError
from medfcn.inference.postprocess import apply_to_probabilities, argmax_classes, clean_mask, fill_holes


def test_largest_component_and_fill_holes_by_hand():
    m = np.zeros((12, 12, 12), bool)
    m[1:7, 1:7, 1:7] = True  # 216 voxels
    m[3:5, 3:5, 3:5] = False  # an enclosed hole of 8
    m[9:11, 9:11, 9:11] = True  # a second component of 8
    out = clean_mask(m, ["largest_component"])
    assert out.sum() == 216 - 8 and not out[9:11, 9:11, 9:11].any()
    assert clean_mask(m, ["largest_component", "fill_holes"]).sum() == 216
    assert np.array_equal(clean_mask(m, ["fill_holes"]), ndimage.binary_fill_holes(m))
    assert not clean_mask(np.zeros((4, 4, 4), bool), ["largest_component", "fill_holes"]).any()
    with pytest.raises(ModelError, match="largest_component, fill_holes"):
        clean_mask(m, ["dilate"])


@pytest.mark.parametrize("seed", range(5))
def test_fill_holes_equals_scipys_on_random_masks(seed):
    """scipy.ndimage.binary_fill_holes (iterated dilation from the border), an independent implementation, is the
    reference, in 3-D and 2-D: blobs with holes, pockets reaching the border only diagonally, an empty mask."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(4, 25, 3))
    m = ndimage.gaussian_filter(rng.random(shape), 1.0 + seed * 0.3) > 0.5 - seed * 0.01
    assert np.array_equal(fill_holes(m), ndimage.binary_fill_holes(m))
    assert np.array_equal(fill_holes(m.T), ndimage.binary_fill_holes(m.T)), "any memory layout"
    assert np.array_equal(fill_holes(m[0]), ndimage.binary_fill_holes(m[0])), "2-D"
    d = np.ones((5, 5, 5), bool)
    d[2, 2, 2] = d[1, 1, 1] = d[0, 0, 0] = False  # reaches the corner only through edges and vertices: a hole
    assert np.array_equal(fill_holes(d), ndimage.binary_fill_holes(d)) and fill_holes(d)[2, 2, 2]
    assert not fill_holes(np.zeros(shape, bool)).any()


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_argmax_classes_equals_numpys_first_on_ties(dtype):
    rng = np.random.default_rng(1)
    probs = rng.integers(0, 4, (5, 6, 7, 8)).astype(dtype)  # many ties among 4 values
    assert np.array_equal(argmax_classes(probs), probs.argmax(0))
    assert argmax_classes(probs).dtype == np.uint8


@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_probabilities_edited_so_their_argmax_is_the_cleaned_map(dtype):
    rng = np.random.default_rng(0)
    labels = np.zeros((10, 10, 10), np.int64)
    labels[1:6, 1:6, 1:6] = 1
    labels[3, 3, 3] = 0  # hole in label 1
    labels[8, 8, 8] = 1  # speck of label 1
    labels[7:9, 1:3, 1:3] = 2
    top = 1.0 if dtype == np.float32 else 500
    probs = (rng.random((3, 10, 10, 10)) * 0.3 * top).astype(dtype)
    for c in range(3):
        probs[c][labels == c] = top
    apply_to_probabilities(probs, ["largest_component", "fill_holes"])
    expected = labels.copy()
    expected[3, 3, 3] = 1
    expected[8, 8, 8] = 0
    assert np.array_equal(probs.argmax(0), expected)
