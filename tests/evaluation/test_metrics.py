"""medfcn.evaluation.metrics against MONAI and SimpleITK, the empty-case rules, per-slice Dice and the overlap map."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.metrics import (
    DiceMetric,
    compute_average_surface_distance,
    compute_hausdorff_distance,
    compute_surface_dice,
)
from scipy import ndimage

from medfcn.evaluation.metrics import (
    LabelMetrics,
    Overlap,
    assd,
    compute_metrics,
    dice,
    dice_per_slice,
    hd95,
    iou,
    overlap_map,
    surface_dice,
    surface_distances,
    volume_ml,
    worst_distance_mm,
)

SPACING = (0.7, 1.1, 2.5)


def _ellipsoid(shape, centre, radii, spacing) -> np.ndarray:
    axes = [np.arange(n) * s for n, s in zip(shape, spacing, strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    return ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + (
        (z - centre[2]) / radii[2]
    ) ** 2 <= 1


def _realistic_pair(seed: int, shape=(45, 38, 21), spacing=SPACING) -> tuple[np.ndarray, np.ndarray]:
    """Two organs as ellipsoids (labels 3 and 17); the prediction shifted, resized and with a stray blob."""
    rng = np.random.default_rng(seed)
    ref, pred = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    for label, centre, radii in ((3, (14, 20, 25), (9, 12, 14)), (17, (22, 22, 22), (5, 6, 9))):
        ref[_ellipsoid(shape, centre, radii, spacing)] = label
        c = np.add(centre, rng.normal(0, 1.0, 3))
        pred[_ellipsoid(shape, c, np.multiply(radii, rng.uniform(0.85, 1.15, 3)), spacing)] = label
    pred[38:42, 30:34, 2:4] = 3  # a spurious blob far away: a long tail of surface distances
    return pred, ref


def _random_pair(seed: int, shape=(33, 37, 19)) -> tuple[np.ndarray, np.ndarray]:
    """Speckled multi-label maps (ids 1, 2, 5), hard for every surface metric."""
    rng = np.random.default_rng(seed)
    ids = np.array([0, 1, 2, 5], np.int16)
    ref = ids[rng.choice(4, shape, p=[0.55, 0.2, 0.15, 0.1])]
    pred = ref.copy()
    flip = rng.random(shape) < 0.25
    pred[flip] = ids[rng.integers(0, 4, int(flip.sum()))]
    return pred, ref


def _onehot(a: np.ndarray, label: int) -> torch.Tensor:
    return torch.as_tensor((a == label)[None, None].astype(np.float32))


def _monai(pred: np.ndarray, ref: np.ndarray, label: int, spacing, tol: float) -> dict[str, float]:
    p, r = _onehot(pred, label), _onehot(ref, label)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "dice": float(DiceMetric(include_background=True, reduction="none")(p, r)[0, 0]),
            "hd95_mm": float(
                compute_hausdorff_distance(p, r, include_background=True, percentile=95, spacing=spacing)[0, 0]
            ),
            "assd_mm": float(
                compute_average_surface_distance(p, r, include_background=True, symmetric=True, spacing=spacing)[0, 0]
            ),
            "surface_dice": float(compute_surface_dice(p, r, [tol], include_background=True, spacing=spacing)[0, 0]),
        }


def _sitk(a: np.ndarray, spacing) -> sitk.Image:
    img = sitk.GetImageFromArray(np.ascontiguousarray(a.T))
    img.SetSpacing(tuple(float(s) for s in spacing))
    return img


def _assert_agree(pred, ref, spacing, tol):
    got = compute_metrics(pred, ref, spacing, tolerance_mm=tol)
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(_sitk(ref, spacing), _sitk(pred, spacing))
    shapes = sitk.LabelShapeStatisticsImageFilter()
    shapes.Execute(_sitk(ref, spacing))
    assert sorted(got) == sorted(int(v) for v in np.union1d(np.unique(pred), np.unique(ref)) if v != 0)
    for label, m in got.items():
        want = _monai(pred, ref, label, spacing, tol)
        assert m.dice == pytest.approx(want["dice"], abs=1e-6)
        assert m.dice == pytest.approx(overlap.GetDiceCoefficient(label), abs=1e-6)
        assert m.iou == pytest.approx(overlap.GetJaccardCoefficient(label), abs=1e-6)
        assert m.hd95_mm == pytest.approx(want["hd95_mm"], rel=1e-5, abs=1e-5)
        assert m.assd_mm == pytest.approx(want["assd_mm"], rel=1e-5, abs=1e-5)
        assert m.surface_dice == pytest.approx(want["surface_dice"], abs=1e-6)
        assert m.vol_ref_ml == pytest.approx(shapes.GetPhysicalSize(label) / 1000, rel=1e-9)
        assert m.vol_diff_ml == pytest.approx(m.vol_pred_ml - m.vol_ref_ml)
    return got


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_realistic_masks_agree_with_monai_and_simpleitk(seed):
    pred, ref = _realistic_pair(seed)
    got = _assert_agree(pred, ref, SPACING, tol=1.5)
    assert set(got) == {3, 17}
    assert 0.6 < got[3].dice < 1 and got[3].hd95_mm > 0


@pytest.mark.parametrize("seed", [0, 1])
def test_random_multilabel_masks_agree_with_monai_and_simpleitk(seed):
    pred, ref = _random_pair(seed)
    _assert_agree(pred, ref, (1.3, 0.6, 3.0), tol=1.0)


def test_small_structures_in_a_large_grid_match_a_full_grid_computation():
    """The bounding-box shortcut changes nothing: distances against EDTs over the whole grid (scipy)."""
    shape, sp = (90, 80, 40), (0.8, 0.8, 2.0)
    ref, pred = np.zeros(shape, bool), np.zeros(shape, bool)
    ref[10:20, 12:25, 5:9] = True
    pred[12:21, 10:22, 6:10] = True
    pred[70:73, 60:62, 30:33] = True  # far from the rest: the box spans most of the grid for this one
    sur = {k: m & ~ndimage.binary_erosion(m) for k, m in (("p", pred), ("r", ref))}
    d_pr = ndimage.distance_transform_edt(~sur["r"], sampling=sp)[sur["p"]]
    d_rp = ndimage.distance_transform_edt(~sur["p"], sampling=sp)[sur["r"]]
    got_pr, got_rp = surface_distances(pred, ref, sp)
    np.testing.assert_allclose(np.sort(got_pr), np.sort(d_pr))
    np.testing.assert_allclose(np.sort(got_rp), np.sort(d_rp))
    want = max(np.percentile(d_pr, 95), np.percentile(d_rp, 95))
    assert hd95(pred, ref, sp) == pytest.approx(want)
    assert assd(pred, ref, sp) == pytest.approx(np.concatenate([d_pr, d_rp]).mean())


def test_hand_worked_shift_by_one_voxel():
    ref = np.zeros((20, 20, 10), np.uint8)
    ref[5:15, 5:15, 2:8] = 4
    pred = np.zeros_like(ref)
    pred[6:15, 5:15, 2:8] = 4  # one layer of 10 x 6 voxels missing along x (1 mm)
    m = compute_metrics(pred, ref, spacing=(1.0, 1.0, 2.0))[4]
    assert m.dice == pytest.approx(2 * 540 / (540 + 600))
    assert m.iou == pytest.approx(540 / 600)
    assert m.hd95_mm == 1.0  # the missing face is 1 mm from the predicted one
    assert m.vol_ref_ml == pytest.approx(600 * 2.0 / 1000) and m.vol_pred_ml == pytest.approx(540 * 2.0 / 1000)
    assert m.status == "ok"


def test_surface_touching_the_image_border_counts_and_tolerance_is_inclusive():
    ref = np.ones((6, 6, 6), bool)  # fills the image: every border voxel is surface
    pred = ref.copy()
    pred[0] = False  # the x = 0 face moves 1 voxel (2 mm) inwards
    sp = (2.0, 1.0, 1.0)
    want = _monai(pred.astype(np.uint8), ref.astype(np.uint8), 1, sp, 2.0)
    assert surface_dice(pred, ref, sp, tolerance_mm=2.0) == pytest.approx(want["surface_dice"]) == 1.0
    assert surface_dice(pred, ref, sp, tolerance_mm=1.99) < 1.0
    assert hd95(pred, ref, sp) == pytest.approx(want["hd95_mm"])


def test_any_label_ids_including_large_and_negative_and_float_maps():
    pred, ref = _realistic_pair(5)
    big = {3: 70000, 17: -4}
    pred_b, ref_b = (np.vectorize(lambda v: big.get(int(v), 0))(a).astype(np.int32) for a in (pred, ref))
    want = compute_metrics(pred, ref, SPACING)
    got = compute_metrics(pred_b, ref_b, SPACING)
    assert sorted(got) == [-4, 70000]
    for old, new in big.items():
        assert got[new].as_dict() == pytest.approx(want[old].as_dict())
    as_float = compute_metrics(pred.astype(np.float32), ref.astype(np.float64), SPACING)
    assert as_float[3].as_dict() == pytest.approx(want[3].as_dict())


# --- the empty-case rules ----------------------------------------------------------------------------------


def test_both_empty_scores_perfect_and_finite():
    pred, ref = _realistic_pair(0)
    m = compute_metrics(pred, ref, SPACING, labels=[3, 9])[9]  # 9 is in neither map
    assert (m.dice, m.iou, m.hd95_mm, m.assd_mm, m.surface_dice) == (1.0, 1.0, 0.0, 0.0, 1.0)
    assert m.status == "absent" and m.as_dict() == LabelMetrics.both_empty().as_dict()
    empty = np.zeros((5, 5, 5), bool)
    assert (dice(empty, empty), iou(empty, empty), hd95(empty, empty, (1, 1, 1))) == (1.0, 1.0, 0.0)
    assert (assd(empty, empty, (1, 1, 1)), surface_dice(empty, empty, (1, 1, 1))) == (0.0, 1.0)


@pytest.mark.parametrize("missing", ["pred", "ref"])
def test_one_side_empty_scores_zero_and_the_worst_distance(missing):
    pred, ref = _realistic_pair(0)
    if missing == "pred":
        pred = np.where(pred == 17, 0, pred)
    else:
        ref = np.where(ref == 17, 0, ref)
    m = compute_metrics(pred, ref, SPACING)[17]  # found in the other map: never dropped
    diagonal = math.dist((0, 0, 0), np.multiply(pred.shape, SPACING))
    assert worst_distance_mm(pred.shape, SPACING) == pytest.approx(diagonal)
    assert (m.dice, m.iou, m.surface_dice) == (0.0, 0.0, 0.0)
    assert m.hd95_mm == m.assd_mm == pytest.approx(diagonal)
    assert m.status == ("missed" if missing == "pred" else "spurious")
    p, r = pred == 17, ref == 17
    assert hd95(p, r, SPACING) == assd(p, r, SPACING) == pytest.approx(diagonal)
    assert (dice(p, r), surface_dice(p, r, SPACING)) == (0.0, 0.0)
    # MONAI has no finite answer here: its value would drop out of a nanmean; ours stays in every mean
    assert not math.isfinite(_monai(pred, ref, 17, SPACING, 1.0)["hd95_mm"])
    assert all(math.isfinite(v) for v in m.as_dict().values())


def test_volume_and_inputs_are_checked():
    a = np.zeros((4, 4, 4), np.uint8)
    a[1:3, 1:3, 1:3] = 1
    assert volume_ml(a == 1, (2.0, 2.0, 2.5)) == pytest.approx(8 * 10 / 1000)
    with pytest.raises(ValueError, match="different shapes"):
        compute_metrics(a, a[:3], (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        compute_metrics(a, a, (1, 0, 1))
    with pytest.raises(ValueError, match="integer"):
        compute_metrics(a * 0.5, a, (1, 1, 1))
    with pytest.raises(ValueError, match="tolerance"):
        compute_metrics(a, a, (1, 1, 1), tolerance_mm=-1)


# --- per-slice Dice and the overlap map -----------------------------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_dice_per_slice_matches_simpleitk_slice_by_slice(axis):
    pred, ref = _realistic_pair(3)
    got = dice_per_slice(pred, ref, 3, axis)
    assert got.shape == (pred.shape[axis],)
    for i in range(pred.shape[axis]):
        p, r = np.take(pred, i, axis) == 3, np.take(ref, i, axis) == 3
        if not (p.any() or r.any()):
            assert math.isnan(got[i])
            continue
        f = sitk.LabelOverlapMeasuresImageFilter()
        f.Execute(sitk.GetImageFromArray(r.astype(np.uint8)), sitk.GetImageFromArray(p.astype(np.uint8)))
        want = f.GetDiceCoefficient(1) if r.any() and p.any() else 0.0  # SimpleITK needs the label on both sides
        assert got[i] == pytest.approx(want, abs=1e-9)
    with pytest.raises(ValueError, match="axis"):
        dice_per_slice(pred, ref, 3, axis=3)


def test_overlap_map_codes():
    ref = np.array([[0, 1, 1, 2, 2, 0]])
    pred = np.array([[0, 1, 0, 1, 2, 2]])
    np.testing.assert_array_equal(overlap_map(pred, ref), [[0, 1, 3, 3, 1, 2]])  # 1 for a 2: missed 2
    np.testing.assert_array_equal(overlap_map(pred, ref, label=1), [[0, 1, 3, 2, 0, 0]])
    np.testing.assert_array_equal(overlap_map(pred, ref, label=2), [[0, 0, 0, 3, 1, 2]])
    assert overlap_map(pred, ref).dtype == np.uint8 and Overlap.FN == 3
