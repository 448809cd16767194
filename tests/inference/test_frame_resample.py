"""The separable resampling paths of :mod:`medfcn.inference.frame` against MONAI's ``Spacing`` and scipy's
interpolation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter, map_coordinates

from medfcn.data.scan import Scan
from medfcn.inference.frame import ModelFrame, frame_to_scan_coordinates, probabilities_to_labels, to_model_frame
from tests.support.scans import affine_from_codes, head_volume, lps_geometry, oblique_affine

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


@pytest.mark.parametrize("n_classes", [2, 3])  # two classes take the difference path: p1 - p0 interpolated
@pytest.mark.parametrize("name", AFFINES)
def test_labels_back_equal_the_argmax_of_scipy_trilinear_interpolation(name: str, n_classes: int) -> None:
    scan = _scan(AFFINES[name])
    frame = to_model_frame(scan, (1.5, 1.5, 1.5))
    rng = np.random.default_rng(1)
    noise = gaussian_filter(rng.standard_normal((n_classes, *frame.volume.shape)), 1.5) * 8
    probs = torch.softmax(torch.from_numpy(noise), 0)
    labels = probabilities_to_labels(probs.numpy().astype(np.float32), frame, slab=5)
    m = frame_to_scan_coordinates(frame)
    idx = np.indices(scan.shape).reshape(3, -1).astype(np.float64)
    coords = m[:3, :3] @ idx + m[:3, 3:]
    coords = np.clip(coords, 0, np.array(frame.volume.shape)[:, None] - 1)
    expected = np.stack([map_coordinates(p, coords, order=1) for p in probs.numpy()]).reshape(n_classes, *scan.shape)
    top2 = np.sort(expected, axis=0)[-2:]
    clear = (top2[1] - top2[0]) > 1e-5  # not a tie
    np.testing.assert_array_equal(labels[clear], expected.argmax(0)[clear])
    assert clear.mean() > 0.99
    assert set(np.unique(labels)) == set(range(n_classes))


def test_two_class_labels_back_from_uint16_sums_as_the_pipeline_stores_them() -> None:
    """The pipeline's probabilities: uint16 sums over slice axes of p x 255. Ties (p1 == p0) go to class 0."""
    scan = _scan(AFFINES["LSA"])
    frame = to_model_frame(scan, (1.5, 1.5, 1.5))
    rng = np.random.default_rng(3)
    p1 = np.round(
        torch.sigmoid(torch.from_numpy(gaussian_filter(rng.standard_normal(frame.volume.shape), 2) * 10)).numpy() * 765
    )
    probs = np.stack([765 - p1, p1]).astype(np.uint16)
    probs[:, :4] = 300  # an exact tie over a block of the frame
    labels = probabilities_to_labels(probs, frame)
    m = frame_to_scan_coordinates(frame)
    coords = np.clip(
        m[:3, :3] @ np.indices(scan.shape).reshape(3, -1) + m[:3, 3:], 0, np.array(frame.volume.shape)[:, None] - 1
    )
    diff = map_coordinates(probs[1].astype(np.float64) - probs[0], coords, order=1).reshape(scan.shape)
    clear = np.abs(diff) > 1e-3
    np.testing.assert_array_equal(labels[clear], (diff > 0)[clear])
    assert (labels[diff == 0] == 0).all() and (diff == 0).any()


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


@pytest.mark.parametrize("name", ["RAS", "oblique"])
def test_labels_come_back_in_the_memory_order_of_the_writers(name: str) -> None:
    """Fortran order: ``labels.T`` is C-contiguous, what SimpleITK's GetImageFromArray takes without a copy."""
    scan = _scan(AFFINES[name])
    frame = to_model_frame(scan, (1.5, 1.5, 1.5))
    probs = np.zeros((2, *frame.volume.shape), np.uint16)
    probs[1, 5:-5, 5:-5, 5:-5] = 600
    labels = probabilities_to_labels(probs, frame)
    assert labels.shape == scan.shape and labels.flags.f_contiguous
    assert np.transpose(labels, (2, 1, 0)).flags.c_contiguous
    assert 0 < labels.mean() < 1
