"""Scoring a predicted label map against its reference in memory: no paths, no files.

:func:`score_arrays` scores two label maps on one grid (the Review dock calls it on its layers' arrays);
:func:`score_scans` scores two scans, first reordering a prediction stored in another index order on the same
voxels (axes permuted or flipped, e.g. a DICOM series read in reverse) exactly;
:func:`medfcn.evaluation.evaluate.evaluate` calls it for every pair of files.

>>> import numpy as np
>>> ref = np.zeros((8, 8, 4), np.uint8); ref[2:6, 2:6, 1:3] = 1
>>> round(score_arrays(ref, ref, (1.0, 1.0, 2.0))[1].dice, 4)
1.0
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medfcn.data.scan import Scan
from medfcn.errors import MedfcnError
from medfcn.evaluation.metrics import LabelMetrics, compute_metrics

__all__ = ["Scores", "score_arrays", "score_scans", "aligned_to"]

log = logging.getLogger(__name__)


def score_arrays(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], *, tolerance_mm: float = 1.0, case: str = ""
) -> dict[int, LabelMetrics]:
    """``{label: metrics}`` of two label maps of one shape; ``spacing``: mm along the arrays' axes.

    Raises:
        MedfcnError: the shapes differ, or a map holds non-integer values; the message starts with ``case``.
    """
    try:
        return compute_metrics(pred, ref, spacing, tolerance_mm=tolerance_mm)
    except ValueError as e:
        raise MedfcnError(f"{case}: {e}" if case else str(e)) from None


@dataclass(frozen=True)
class Scores:
    """What :func:`score_scans` found: the metrics per label and the prediction on the reference's grid."""

    metrics: dict[int, LabelMetrics]
    pred: np.ndarray  # (X, Y, Z) on the reference's grid


def aligned_to(pred: Scan, ref: Scan) -> np.ndarray | None:
    """``pred``'s voxels on ``ref``'s grid when both grids hold the same voxel centres in another index order
    (axes permuted or flipped); ``None`` when they are different grids. No interpolation."""
    mp = pred.direction * np.asarray(pred.spacing)[None, :]
    mr = ref.direction * np.asarray(ref.spacing)[None, :]
    step = np.linalg.solve(mp, mr)  # column a: pred index change per ref index step along axis a
    start = np.linalg.solve(mp, np.subtract(ref.origin, pred.origin))  # pred index of ref voxel (0, 0, 0)
    r = np.round(step)
    if not (np.allclose(step, r, atol=1e-3) and np.allclose(start, np.round(start), atol=1e-2)):
        return None
    if not (np.abs(r).sum(0) == 1).all() or not (np.abs(r).sum(1) == 1).all():
        return None
    perm = [int(np.argmax(np.abs(r[:, a]))) for a in range(3)]
    array = np.transpose(pred.array, perm)
    for a, p in enumerate(perm):
        sign, n = r[p, a], pred.shape[p]
        if n != ref.shape[a] or round(start[p]) != (0 if sign > 0 else n - 1):
            return None
        if sign < 0:
            array = np.flip(array, a)
    return array


def _grid_error(case: str, pred: Scan, ref: Scan) -> str:
    diffs = ref.grid.differences(pred.grid)
    return f"{case}: the prediction's grid differs from the reference's: {'; '.join(diffs)} (prediction != reference)"


def score_scans(pred: Scan, ref: Scan, *, case: str = "", tolerance_mm: float = 1.0) -> Scores:
    """Score one prediction against its reference, in memory.

    ``pred`` may store the reference's voxels in another index order (reordered exactly).

    Raises:
        MedfcnError: the grids differ, or a map holds non-integer values; the message starts with ``case``.
    """
    pred_array = pred.array
    if ref.grid.differences(pred.grid):
        pred_array = aligned_to(pred, ref)
        if pred_array is None:
            raise MedfcnError(_grid_error(case, pred, ref))
        log.info("%s: the prediction stores the reference's voxels in another index order; reordered", case)
    return Scores(score_arrays(pred_array, ref.array, ref.spacing, tolerance_mm=tolerance_mm, case=case), pred_array)
