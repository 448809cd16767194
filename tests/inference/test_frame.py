"""Into the model's frame and back, checked against SimpleITK resampling and MONAI's own inverse transforms."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from medfcn.data.scan import Scan
from medfcn.errors import ModelError
from medfcn.inference.frame import (
    Normalisation,
    frame_to_scan_coordinates,
    normalise_intensity,
    probabilities_to_labels,
    to_model_frame,
)
from tests.support.scans import affine_from_codes, head_labels, head_volume, lps_geometry, oblique_affine

AFFINES = {
    "RAS": affine_from_codes("RAS"),
    "LPS": affine_from_codes("LPS"),
    "LSA": affine_from_codes("LSA"),
    "oblique": oblique_affine(),
}
MODEL_SPACING = (1.5, 1.5, 1.5)


def scan_on(affine: np.ndarray, array: np.ndarray | None = None) -> Scan:
    spacing, origin, direction = lps_geometry(affine)
    return Scan(head_volume() if array is None else array, spacing, origin, direction)


def sitk_grid(affine: np.ndarray, shape) -> sitk.Image:
    """An empty SimpleITK image on the grid of a RAS affine."""
    spacing, origin, direction = lps_geometry(affine)
    img = sitk.Image([int(v) for v in shape], sitk.sitkFloat32)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(tuple(direction.flatten().tolist()))
    return img


def to_xyz(img: sitk.Image) -> np.ndarray:
    return np.transpose(sitk.GetArrayFromImage(img), (2, 1, 0))


def one_hot(labels: np.ndarray, n: int = 3) -> np.ndarray:
    return np.stack([labels == c for c in range(n)]).astype(np.float32)


@pytest.mark.parametrize("name", list(AFFINES))
def test_frame_is_ras_at_model_spacing_and_matches_sitk_resampling(name):
    scan = scan_on(AFFINES[name])
    frame = to_model_frame(scan, MODEL_SPACING)
    assert nib.aff2axcodes(frame.affine) == ("R", "A", "S")
    np.testing.assert_allclose(np.linalg.norm(frame.affine[:3, :3], axis=0), MODEL_SPACING, atol=1e-6)
    assert frame.volume.dtype == np.float32 and frame.scan_shape == scan.shape
    np.testing.assert_allclose(frame.scan_affine, scan.affine)
    if name != "oblique":  # reorientation is a pure axis permutation / flip: the frame is axis-aligned
        np.testing.assert_allclose(frame.affine[:3, :3], np.diag(MODEL_SPACING), atol=1e-6)
    # Independent: SimpleITK samples the scan (linear) at the frame's voxel centres.
    reference = sitk.Resample(
        scan.to_sitk(), sitk_grid(frame.affine, frame.volume.shape), sitk.Transform(), sitk.sitkLinear, -1.0
    )
    expected = to_xyz(reference)
    inside = expected >= 0  # MONAI pads at the border, SimpleITK with -1
    assert inside.mean() > 0.9
    np.testing.assert_allclose(frame.volume[inside], expected[inside], atol=1e-2)


@pytest.mark.parametrize("name", list(AFFINES))
def test_labels_through_the_frame_and_back_land_on_the_original_voxels(name):
    labels = head_labels()
    scan = scan_on(AFFINES[name])
    # At the scan's own spacing (in the frame's axis order) the round trip is exact.
    probe = to_model_frame(scan, (1.0, 1.0, 1.0))
    axes = np.argmax(np.abs(np.linalg.inv(scan.affine[:3, :3]) @ probe.affine[:3, :3]), axis=0)
    own = tuple(np.asarray(scan.spacing)[axes].tolist())
    frame = to_model_frame(scan, own, mode="nearest", array=labels)
    np.testing.assert_array_equal(probabilities_to_labels(one_hot(frame.volume), frame), labels)
    # At the model's spacing, only boundary voxels may move, and fewer than with MONAI's own inverse.
    frame = to_model_frame(scan, MODEL_SPACING, mode="nearest", array=labels)
    back = probabilities_to_labels(one_hot(frame.volume), frame)
    assert back.dtype == np.uint8 and back.shape == labels.shape
    for c, least in ((1, 0.94), (2, 0.85)):  # 2: a blob ~4 voxels in radius, resampled at 1.5 mm
        dice = 2 * np.sum((back == c) & (labels == c)) / (np.sum(back == c) + np.sum(labels == c))
        assert dice > least, (c, dice)
    from monai.data import MetaTensor
    from monai.transforms import Compose, Orientation, Spacing

    monai = Compose(
        [
            Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
            Spacing(pixdim=MODEL_SPACING, mode="nearest", padding_mode="border"),
        ]
    )
    forward = monai(MetaTensor(torch.from_numpy(labels.astype(np.float32))[None], affine=torch.as_tensor(scan.affine)))
    np.testing.assert_array_equal(forward[0].numpy(), frame.volume)
    inverse = monai.inverse(forward)[0].numpy()
    assert (back == labels).mean() >= (inverse == labels).mean() - 1e-3
    assert (back == inverse).mean() > 0.99


@pytest.mark.parametrize("name", list(AFFINES))
def test_probabilities_back_to_scan_match_sitk_linear_resampling(name):
    scan = scan_on(AFFINES[name])
    frame = to_model_frame(scan, MODEL_SPACING, mode="nearest", array=head_labels())
    rng = np.random.default_rng(1)
    probs = one_hot(frame.volume) * 0.8 + rng.uniform(0, 0.2, (3, *frame.volume.shape)).astype(np.float32)
    grid = sitk_grid(frame.affine, frame.volume.shape)
    resampled = []
    for p in probs:  # SimpleITK: linear interpolation of each class at the scan's voxel centres
        img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(p, (2, 1, 0))))
        img.CopyInformation(grid)
        out = sitk.Resample(img, scan.to_sitk(), sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        resampled.append(to_xyz(out))
    resampled = np.stack(resampled)
    expected = np.argmax(resampled, 0)
    top2 = np.sort(resampled, 0)
    clear = (top2[-1] - top2[-2]) > 1e-4  # leave out near-ties and voxels outside the frame (clamped here)
    inside = resampled.sum(0) > 0.99
    ours = probabilities_to_labels(probs, frame)
    assert (clear & inside).mean() > 0.9  # scan voxels past the last frame centre: within half a frame voxel
    np.testing.assert_array_equal(ours[clear & inside], expected[clear & inside])
    # uint8 probabilities (x 255), a tensor, and any slab size give the same labels
    as_uint8 = torch.from_numpy(np.round(probs / probs.max() * 255).astype(np.uint8))
    assert (probabilities_to_labels(as_uint8, frame, slab=5) == ours).mean() > 0.999
    np.testing.assert_array_equal(probabilities_to_labels(torch.from_numpy(probs), frame, slab=1), ours)


def test_progress_reaches_one_in_order():
    scan = scan_on(AFFINES["LSA"])
    frame = to_model_frame(scan, MODEL_SPACING, mode="nearest", array=head_labels())
    seen: list[float] = []
    probabilities_to_labels(one_hot(frame.volume), frame, slab=7, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) == -(-scan.shape[2] // 7)


def test_frame_to_scan_coordinates_maps_voxel_centres():
    scan = scan_on(AFFINES["oblique"])
    frame = to_model_frame(scan, MODEL_SPACING)
    m = frame_to_scan_coordinates(frame)
    ijk = np.array([3, 5, 7, 1.0])
    np.testing.assert_allclose(frame.affine @ (m @ ijk), scan.affine @ ijk, atol=1e-9)


def test_other_orientation_codes():
    frame = to_model_frame(scan_on(AFFINES["RAS"]), MODEL_SPACING, orientation="LPI")
    assert nib.aff2axcodes(frame.affine) == ("L", "P", "I")


def test_normalise_percentile_matches_monai():
    from monai.transforms import ScaleIntensityRangePercentiles

    vol = head_volume()
    ours = normalise_intensity(vol, "percentile")
    monai = ScaleIntensityRangePercentiles(lower=0.5, upper=99.5, b_min=0.0, b_max=1.0, clip=True)(vol)
    np.testing.assert_allclose(ours, np.asarray(monai), atol=1e-5)
    assert ours.dtype == np.float32 and ours.min() == 0.0 and ours.max() == 1.0


def test_normalise_zscore_by_hand():
    vol = head_volume()
    head = vol[vol > vol.mean()]
    np.testing.assert_allclose(
        normalise_intensity(vol, Normalisation.ZSCORE), (vol - head.mean()) / head.std(), rtol=1e-4, atol=1e-4
    )


def test_normalise_constant_and_unknown():
    assert not normalise_intensity(np.full((4, 5, 6), 7.0), "zscore").any()
    assert not normalise_intensity(np.full((4, 5, 6), 7.0), "percentile").any()
    with pytest.raises(ModelError, match="normalisation 'minmax' is not one of: percentile, zscore"):
        normalise_intensity(np.zeros((2, 2, 2)), "minmax")
