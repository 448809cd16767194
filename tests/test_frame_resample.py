"""The separable resampling paths of :mod:`medfcn.frame` against MONAI's ``Spacing`` and scipy's interpolation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import affine_from_codes, head_volume, lps_geometry, oblique_affine
from scipy.ndimage import gaussian_filter, map_coordinates

from medfcn.frame import ModelFrame, frame_to_scan_coordinates, probabilities_to_labels, to_model_frame
from medfcn.scan import Scan

AFFINES = {
    "RAS": affine_from_codes("RAS"),
    "LPS": affine_from_codes("LPS"),
    "LSA": affine_from_codes("LSA"),
    "oblique": oblique_affine(),
}


def _scan(affine: np.ndarray, dtype=np.int16) -> Scan:
    spacing, origin, direction = lps_geometry(affine)
    return Scan(head_volume().astype(dtype), spacing, origin, direction)


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
@pytest.mark.parametrize("name", AFFINES)
def test_frame_equals_monai_orientation_and_spacing(name: str, dtype) -> None:
    from monai.data import MetaTensor
    from monai.transforms import Orientation, Spacing

    scan = _scan(AFFINES[name], dtype)
    ours = to_model_frame(scan, (1.5, 1.5, 1.5))
    x = MetaTensor(torch.from_numpy(scan.array.astype(np.float32))[None], affine=torch.as_tensor(scan.affine))
    x = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(x)
    x = Spacing(pixdim=(1.5, 1.5, 1.5), mode="bilinear", padding_mode="border")(x)
    np.testing.assert_allclose(ours.affine, x.affine.numpy(), atol=1e-9)
    np.testing.assert_allclose(ours.volume, x[0].numpy(), atol=1e-3)  # values up to ~1000


@pytest.mark.parametrize("name", AFFINES)
def test_labels_back_equal_the_argmax_of_scipy_trilinear_interpolation(name: str) -> None:
    scan = _scan(AFFINES[name])
    frame = to_model_frame(scan, (1.5, 1.5, 1.5))
    rng = np.random.default_rng(1)
    probs = torch.softmax(torch.from_numpy(gaussian_filter(rng.standard_normal((3, *frame.volume.shape)), 1.5) * 8), 0)
    labels = probabilities_to_labels(probs.numpy().astype(np.float32), frame, slab=5)
    m = frame_to_scan_coordinates(frame)
    idx = np.indices(scan.shape).reshape(3, -1).astype(np.float64)
    coords = m[:3, :3] @ idx + m[:3, 3:]
    coords = np.clip(coords, 0, np.array(frame.volume.shape)[:, None] - 1)
    expected = np.stack([map_coordinates(p, coords, order=1) for p in probs.numpy()]).reshape(3, *scan.shape)
    top2 = np.sort(expected, axis=0)[-2:]
    clear = (top2[1] - top2[0]) > 1e-5  # not a tie
    np.testing.assert_array_equal(labels[clear], expected.argmax(0)[clear])
    assert clear.mean() > 0.99


def test_a_rotated_frame_takes_the_general_path() -> None:
    """A frame whose axes are not parallel to the scan's (built by hand): grid_sample, same answer as scipy."""
    scan = _scan(AFFINES["LPS"])
    affine = oblique_affine(spacing=(1.5, 1.5, 1.5), origin=tuple(scan.affine[:3, 3] - 2.0))
    frame = ModelFrame(np.zeros((30, 30, 30), np.float32), affine, scan.affine, scan.shape)
    rng = np.random.default_rng(2)
    probs = torch.softmax(torch.from_numpy(gaussian_filter(rng.standard_normal((2, 30, 30, 30)), 1.5) * 8), 0).numpy()
    labels = probabilities_to_labels(probs.astype(np.float32), frame)
    m = frame_to_scan_coordinates(frame)
    coords = m[:3, :3] @ np.indices(scan.shape).reshape(3, -1) + m[:3, 3:]
    coords = np.clip(coords, 0, 29)
    expected = np.stack([map_coordinates(p, coords, order=1) for p in probs]).reshape(2, *scan.shape)
    clear = np.abs(expected[1] - expected[0]) > 1e-5
    np.testing.assert_array_equal(labels[clear], expected.argmax(0)[clear])
