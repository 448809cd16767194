"""Overlap and surface metrics of a predicted label map against a reference, per label, in mm and mL.

One module (over 400 lines) because the metrics share one set of conventions, stated once below: how a mask's
surface is found, how distances are measured, and what each metric is for empty structures; split, the table of
empty cases would have to be kept true in several places.

Conventions:

- Masks are ``pred == label`` and ``ref == label``; any integer ids (``1, 4, 17``, negative ones too).
- The *surface* of a mask is its voxels with at least one 6-neighbour outside it (outside the image counts as
  outside): ``mask & ~binary_erosion(mask)``, as MONAI's ``get_mask_edges`` finds it.
- Surface distances are Euclidean, in mm (``spacing`` along the array axes), from each surface voxel of one mask
  to the nearest surface voxel of the other.
- HD95 is the larger of the two directed 95th percentiles (linear interpolation): the convention of MONAI's
  ``compute_hausdorff_distance(percentile=95)`` and of DeepMind's surface-distance (which weighs surface elements
  by area where MONAI and medfcn count voxels); ASSD is the mean of both sets of distances together, as MONAI's
  ``compute_average_surface_distance(symmetric=True)``; surface Dice counts the surface voxels of both masks
  within ``tolerance_mm`` of the other surface, as MONAI's ``compute_surface_dice`` (voxel counts, no subvoxel
  areas).
- Empty masks (the BraTS convention; MONAI gives NaN here, which a ``nanmean`` silently drops, or inf):

  ==================  =====================  ====================================  ==============
  case                Dice, IoU              HD95, ASSD                            surface Dice
  ==================  =====================  ====================================  ==============
  both empty          1                      0                                     1
  reference empty     0 (spurious)           :func:`worst_distance_mm` (diagonal)  0
  prediction empty    0 (missed)             :func:`worst_distance_mm` (diagonal)  0
  ==================  =====================  ====================================  ==============

  Every value is finite, so a missed or spurious structure weighs on every mean instead of dropping out of it.

Distance transforms run on the bounding box of the two masks only (the surface is found with a 1-voxel margin),
so small structures in large scans are cheap: a 512 x 512 x 300 pair with three organs takes under 2 s on two CPU
cores (``benchmarks/bench_metrics.py``).

>>> import numpy as np
>>> ref = np.zeros((20, 20, 10), np.uint8); ref[5:15, 5:15, 2:8] = 4
>>> pred = np.zeros_like(ref); pred[6:15, 5:15, 2:8] = 4
>>> m = compute_metrics(pred, ref, spacing=(1.0, 1.0, 2.0))[4]
>>> round(m.dice, 4), m.hd95_mm, round(m.vol_ref_ml, 3)
(0.9474, 1.0, 1.2)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import IntEnum

import numpy as np
from scipy import ndimage

__all__ = [
    "LabelMetrics",
    "compute_metrics",
    "dice",
    "iou",
    "hd95",
    "assd",
    "surface_dice",
    "volume_ml",
    "label_volumes_ml",
    "surface_distances",
    "worst_distance_mm",
    "dice_per_slice",
    "overlap_map",
    "Overlap",
    "METRIC_NAMES",
]

_MAX_FIND_OBJECTS_LABEL = 1 << 20  # above this, bounding boxes are found label by label

METRIC_NAMES = ("dice", "iou", "hd95_mm", "assd_mm", "surface_dice", "vol_ref_ml", "vol_pred_ml", "vol_diff_ml")
"""The fields of :class:`LabelMetrics`, in order; higher is better for the first two and for surface Dice."""


@dataclass
class LabelMetrics:
    """The metrics of one label. Distances in mm, volumes in mL; ``vol_diff_ml`` is ``vol_pred_ml - vol_ref_ml``."""

    dice: float
    iou: float
    hd95_mm: float
    assd_mm: float
    surface_dice: float
    vol_ref_ml: float
    vol_pred_ml: float
    vol_diff_ml: float = field(init=False)

    def __post_init__(self) -> None:
        self.vol_diff_ml = self.vol_pred_ml - self.vol_ref_ml

    @property
    def status(self) -> str:
        """``"ok"`` (in both), ``"missed"`` (reference only), ``"spurious"`` (prediction only) or ``"absent"``."""
        ref, pred = self.vol_ref_ml > 0, self.vol_pred_ml > 0
        return {(True, True): "ok", (True, False): "missed", (False, True): "spurious"}.get((ref, pred), "absent")

    @classmethod
    def both_empty(cls) -> LabelMetrics:
        """The metrics of a label neither map holds (see the empty-case rules in the module docstring)."""
        return cls(dice=1.0, iou=1.0, hd95_mm=0.0, assd_mm=0.0, surface_dice=1.0, vol_ref_ml=0.0, vol_pred_ml=0.0)

    def as_dict(self) -> dict[str, float]:
        """``{name: value}`` for every name in :data:`METRIC_NAMES`."""
        return asdict(self)


# --- inputs --------------------------------------------------------------------------------------------------


def _as_labels(array: np.ndarray, name: str) -> np.ndarray:
    """An integer view of a label map; float maps must hold integers (e.g. NIfTI stored as float32)."""
    array = np.asarray(array)
    if array.dtype == bool or np.issubdtype(array.dtype, np.integer):
        return array
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or not np.array_equal(array, np.round(array)):
            raise ValueError(f"{name}: a label map must hold integer ids, got non-integer values")
        return array.astype(np.int64)
    raise ValueError(f"{name}: a label map must hold integer ids, got dtype {array.dtype}")


def _check_pair(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> tuple[float, ...]:
    if pred.shape != ref.shape:
        raise ValueError(f"pred and ref have different shapes: {pred.shape} != {ref.shape}")
    sp = tuple(float(s) for s in spacing)
    if len(sp) != pred.ndim or not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing must be {pred.ndim} positive numbers (mm along the array axes), got {spacing}")
    return sp


def worst_distance_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """The distance reported when one mask is empty: the diagonal of the grid, ``|shape * spacing|`` in mm.

    No surface distance on the grid can reach it, so a missing structure scores worse than any real one
    (BraTS reports 373.13 mm, the diagonal of its 240 x 240 x 155 grid at 1 mm).
    """
    return float(np.linalg.norm(np.asarray(shape, float) * np.asarray(spacing, float)))


# --- surfaces and distances ----------------------------------------------------------------------------------


def _surface(mask: np.ndarray) -> np.ndarray:
    """The voxels of ``mask`` with a 6-neighbour outside it (the image border counts as outside)."""
    padded = np.pad(mask, 1)
    interior = mask.copy()
    core = tuple(slice(1, -1) for _ in range(mask.ndim))
    for axis in range(mask.ndim):
        lo = list(core)
        hi = list(core)
        lo[axis], hi[axis] = slice(0, -2), slice(2, None)
        interior &= padded[tuple(lo)]
        interior &= padded[tuple(hi)]
    return mask & ~interior


def _box(mask_or_boxes) -> tuple[slice, ...] | None:
    idx = np.nonzero(mask_or_boxes)
    if idx[0].size == 0:
        return None
    return tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)


def _union_box(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    if a is None or b is None:
        return a if b is None else b
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True))


def _directed(from_surface: np.ndarray, to_surface: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Distances (mm) from each voxel of ``from_surface`` to the nearest voxel of ``to_surface``, on their box."""
    box = _union_box(_box(from_surface), _box(to_surface))
    field_mm = ndimage.distance_transform_edt(~to_surface[box], sampling=spacing)
    return field_mm[from_surface[box]]


def surface_distances(
    pred_mask: np.ndarray, ref_mask: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from the surface voxels of ``pred_mask`` to ``ref_mask``'s surface, and back.

    Args:
        pred_mask, ref_mask: boolean masks of the same shape (any number of dimensions).
        spacing: mm between voxel centres along each array axis.

    Returns:
        ``(pred_to_ref, ref_to_pred)``, 1-D float arrays; empty when the corresponding mask is empty, and
        ``inf`` values when only the other mask is empty.

    Raises:
        ValueError: shapes differ or the spacing does not fit.
    """
    pred_mask, ref_mask = np.asarray(pred_mask, bool), np.asarray(ref_mask, bool)
    sp = _check_pair(pred_mask, ref_mask, spacing)
    box = _union_box(_box(pred_mask), _box(ref_mask))
    if box is None:
        return np.zeros(0), np.zeros(0)
    sp_pred, sp_ref = _surface(pred_mask[box]), _surface(ref_mask[box])
    if not sp_pred.any() or not sp_ref.any():
        n_pred, n_ref = int(sp_pred.sum()), int(sp_ref.sum())
        return np.full(n_pred, np.inf), np.full(n_ref, np.inf)
    return _directed(sp_pred, sp_ref, sp), _directed(sp_ref, sp_pred, sp)


# --- per-metric functions on binary masks ---------------------------------------------------------------------


def _counts(pred_mask: np.ndarray, ref_mask: np.ndarray) -> tuple[int, int, int]:
    pred_mask, ref_mask = np.asarray(pred_mask, bool), np.asarray(ref_mask, bool)
    if pred_mask.shape != ref_mask.shape:
        raise ValueError(f"pred and ref have different shapes: {pred_mask.shape} != {ref_mask.shape}")
    n_pred, n_ref = int(np.count_nonzero(pred_mask)), int(np.count_nonzero(ref_mask))
    return n_pred, n_ref, int(np.count_nonzero(pred_mask & ref_mask))


def _dice(n_pred: int, n_ref: int, inter: int) -> float:
    return 1.0 if n_pred + n_ref == 0 else 2.0 * inter / (n_pred + n_ref)


def _iou(n_pred: int, n_ref: int, inter: int) -> float:
    return 1.0 if n_pred + n_ref == 0 else inter / (n_pred + n_ref - inter)


def dice(pred_mask: np.ndarray, ref_mask: np.ndarray) -> float:
    """Dice ``2|P & R| / (|P| + |R|)`` of two boolean masks; 1 when both are empty."""
    return _dice(*_counts(pred_mask, ref_mask))


def iou(pred_mask: np.ndarray, ref_mask: np.ndarray) -> float:
    """Intersection over union (Jaccard) of two boolean masks; 1 when both are empty."""
    return _iou(*_counts(pred_mask, ref_mask))


def _hd95(d_pr: np.ndarray, d_rp: np.ndarray) -> float:
    return float(max(np.percentile(d_pr, 95), np.percentile(d_rp, 95)))


def _assd(d_pr: np.ndarray, d_rp: np.ndarray) -> float:
    return float((d_pr.sum() + d_rp.sum()) / (d_pr.size + d_rp.size))


def _surface_dice(d_pr: np.ndarray, d_rp: np.ndarray, tolerance_mm: float) -> float:
    good = np.count_nonzero(d_pr <= tolerance_mm) + np.count_nonzero(d_rp <= tolerance_mm)
    return float(good / (d_pr.size + d_rp.size))


def _mask_metrics(pred_mask, ref_mask, spacing, tolerance_mm: float = 1.0) -> LabelMetrics:
    pred_mask, ref_mask = np.asarray(pred_mask, bool), np.asarray(ref_mask, bool)
    sp = _check_pair(pred_mask, ref_mask, spacing)
    return _label_metrics(pred_mask, ref_mask, sp, tolerance_mm, worst_distance_mm(pred_mask.shape, sp))


def hd95(pred_mask: np.ndarray, ref_mask: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile symmetric Hausdorff distance (mm): max of the two directed 95th percentiles.

    0 when both masks are empty; :func:`worst_distance_mm` when only one is.
    """
    return _mask_metrics(pred_mask, ref_mask, spacing).hd95_mm


def assd(pred_mask: np.ndarray, ref_mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Average symmetric surface distance (mm): the mean of both directed distance sets together.

    0 when both masks are empty; :func:`worst_distance_mm` when only one is.
    """
    return _mask_metrics(pred_mask, ref_mask, spacing).assd_mm


def surface_dice(
    pred_mask: np.ndarray, ref_mask: np.ndarray, spacing: Sequence[float], tolerance_mm: float = 1.0
) -> float:
    """Surface Dice (normalised surface distance): the fraction of both surfaces within ``tolerance_mm``.

    1 when both masks are empty, 0 when only one is.
    """
    return _mask_metrics(pred_mask, ref_mask, spacing, tolerance_mm).surface_dice


def volume_ml(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Volume of a boolean mask in mL (voxel count x voxel volume in mm^3 / 1000)."""
    return int(np.count_nonzero(mask)) * float(np.prod(spacing)) / 1000.0


def label_volumes_ml(labels: np.ndarray, spacing: Sequence[float]) -> dict[int, float]:
    """``{label id: volume in mL}`` of every nonzero label of a label map (non-negative integer ids), in id order.

    >>> label_volumes_ml(np.array([[[0, 1, 1], [2, 1, 0]]]), (2.0, 1.0, 0.5))
    {1: 0.003, 2: 0.001}
    """
    counts = np.bincount(np.asarray(labels).ravel().astype(np.int64, copy=False))
    voxel_ml = float(np.prod(np.asarray(spacing, float))) / 1000.0
    return {int(v): int(counts[v]) * voxel_ml for v in np.flatnonzero(counts) if v != 0}


# --- all metrics of a label map ------------------------------------------------------------------------------


def _label_boxes(labels: np.ndarray) -> dict[int, tuple[slice, ...]]:
    """The bounding box of every nonzero label id in one pass when the ids allow it."""
    if labels.size == 0:
        return {}
    lo, hi = int(labels.min()), int(labels.max())
    if labels.dtype == bool:
        box = _box(labels)
        return {} if box is None else {1: box}
    if lo >= 0 and hi <= _MAX_FIND_OBJECTS_LABEL:
        found = ndimage.find_objects(labels if labels.dtype.itemsize <= 4 else labels.astype(np.int32))
        return {i + 1: box for i, box in enumerate(found) if box is not None}
    return {int(v): _box(labels == v) for v in np.unique(labels) if v != 0}  # type: ignore[misc]


def _label_metrics(pred_mask, ref_mask, spacing, tolerance_mm: float, worst_mm: float) -> LabelMetrics:
    n_pred, n_ref, inter = _counts(pred_mask, ref_mask)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    overlap = dict(
        dice=_dice(n_pred, n_ref, inter),
        iou=_iou(n_pred, n_ref, inter),
        vol_ref_ml=n_ref * voxel_ml,
        vol_pred_ml=n_pred * voxel_ml,
    )
    if n_pred == 0 and n_ref == 0:
        return LabelMetrics(hd95_mm=0.0, assd_mm=0.0, surface_dice=1.0, **overlap)
    if n_pred == 0 or n_ref == 0:
        return LabelMetrics(hd95_mm=worst_mm, assd_mm=worst_mm, surface_dice=0.0, **overlap)
    d_pr, d_rp = surface_distances(pred_mask, ref_mask, spacing)
    return LabelMetrics(
        hd95_mm=_hd95(d_pr, d_rp),
        assd_mm=_assd(d_pr, d_rp),
        surface_dice=_surface_dice(d_pr, d_rp, tolerance_mm),
        **overlap,
    )


def compute_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    labels: Sequence[int] | None = None,
    tolerance_mm: float = 1.0,
) -> dict[int, LabelMetrics]:
    """All metrics of every label of a predicted label map against the reference.

    Args:
        pred, ref: label maps of the same shape, e.g. ``(X, Y, Z)``; integer ids (float maps holding integers
            are accepted), 0 is background.
        spacing: mm between voxel centres along each array axis, e.g. ``Scan.spacing``.
        labels: the ids to score (default: every nonzero id found in either map, sorted). An id absent from
            both maps scores as "both empty" (Dice 1, distances 0).
        tolerance_mm: the tolerance of the surface Dice, in mm.

    Returns:
        ``{label: LabelMetrics}`` in the order of ``labels``.

    Raises:
        ValueError: shapes differ, the spacing does not fit, a map holds non-integer values, or the tolerance
            is negative.
    """
    pred, ref = _as_labels(pred, "pred"), _as_labels(ref, "ref")
    sp = _check_pair(pred, ref, spacing)
    if not (math.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise ValueError(f"tolerance_mm must be a finite number >= 0, got {tolerance_mm}")
    boxes_pred, boxes_ref = _label_boxes(pred), _label_boxes(ref)
    if labels is None:
        labels = sorted(set(boxes_pred) | set(boxes_ref))
    worst_mm = worst_distance_mm(pred.shape, sp)
    out: dict[int, LabelMetrics] = {}
    for label in labels:
        label = int(label)
        box = _union_box(boxes_pred.get(label), boxes_ref.get(label))
        if box is None:  # neither map holds it (or an explicitly requested 0 / unknown id: count it anyway)
            box = tuple(slice(0, n) for n in pred.shape) if label == 0 else None
        if box is None:
            pred_mask = ref_mask = np.zeros((0,) * pred.ndim, bool)
        else:
            pred_mask, ref_mask = pred[box] == label, ref[box] == label
        out[label] = _label_metrics(pred_mask, ref_mask, sp, tolerance_mm, worst_mm)
    return out


# --- views for review: per-slice Dice and an overlap map -------------------------------------------------------


class Overlap(IntEnum):
    """The codes of :func:`overlap_map`."""

    NONE = 0
    TP = 1  # in both (with the same label)
    FP = 2  # predicted, not in the reference
    FN = 3  # in the reference, missed (or given another label)


def dice_per_slice(pred: np.ndarray, ref: np.ndarray, label: int, axis: int = 2) -> np.ndarray:
    """Dice of ``label`` in every slice across ``axis``: shape ``(pred.shape[axis],)``, float64.

    A slice where neither map holds ``label`` is NaN (nothing to score there), unlike the whole-volume rule.

    Raises:
        ValueError: shapes differ or ``axis`` is out of range.
    """
    pred, ref = _as_labels(pred, "pred"), _as_labels(ref, "ref")
    if pred.shape != ref.shape:
        raise ValueError(f"pred and ref have different shapes: {pred.shape} != {ref.shape}")
    if not -pred.ndim <= axis < pred.ndim:
        raise ValueError(f"axis {axis} is out of range for a {pred.ndim}-D map")
    others = tuple(a for a in range(pred.ndim) if a != axis % pred.ndim)
    p, r = pred == label, ref == label
    n_pred, n_ref = np.count_nonzero(p, axis=others), np.count_nonzero(r, axis=others)
    inter = np.count_nonzero(p & r, axis=others)
    total = (n_pred + n_ref).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2.0 * inter / total, np.nan)


def overlap_map(pred: np.ndarray, ref: np.ndarray, label: int | None = None) -> np.ndarray:
    """Where a prediction agrees with the reference, voxel by voxel: uint8 codes of :class:`Overlap`.

    With ``label``: TP where both maps hold it, FP where only ``pred`` does, FN where only ``ref`` does.
    With ``label=None`` (all labels): TP where both hold the same nonzero label, FP where ``pred`` labels
    reference background, FN where a reference voxel is missed or given another label.

    Raises:
        ValueError: shapes differ.
    """
    pred, ref = _as_labels(pred, "pred"), _as_labels(ref, "ref")
    if pred.shape != ref.shape:
        raise ValueError(f"pred and ref have different shapes: {pred.shape} != {ref.shape}")
    if label is None:
        p, r, same = pred != 0, ref != 0, pred == ref
        tp, fp, fn = r & same, p & ~r, r & ~same
    else:
        p, r = pred == label, ref == label
        tp, fp, fn = p & r, p & ~r, r & ~p
    out = np.zeros(pred.shape, np.uint8)
    out[tp], out[fp], out[fn] = Overlap.TP, Overlap.FP, Overlap.FN
    return out
