"""A review of a prediction against a reference, all its numbers in one call: what the napari Review dock shows.

The numbers are those of the report (:mod:`medfcn.evaluation.scoring`, :mod:`medfcn.evaluation.metrics`) and its
error rules (:mod:`medfcn.evaluation.components`: error blobs largest first, the worst slice), on arrays in any
axis order with their spacing; GUI-free, so that a script or a test gets exactly what the dock shows.

>>> ref = np.zeros((6, 6, 6), np.uint8); ref[1:4, 1:4, 1:4] = 1
>>> pred = ref.copy(); pred[1, 1, 1] = 0
>>> r = review(pred, ref, (1.0, 1.0, 1.0), axis=0)  # Dice 2 * 26 / (26 + 27)
>>> round(r.metrics[1].dice, 4), [e.kind for e in r.errors], r.worst
(0.9811, ['missed'], [1])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medfcn.evaluation.components import ErrorComponent, error_components, worst_slices
from medfcn.evaluation.metrics import dice_per_slice, overlap_map
from medfcn.evaluation.scoring import score_arrays

__all__ = ["Review", "review"]


@dataclass(frozen=True)
class Review:
    """The numbers of a review, on the arrays' own axes."""

    metrics: dict  # {label: medfcn.evaluation.metrics.LabelMetrics}
    overlap: np.ndarray  # uint8 codes of medfcn.evaluation.metrics.Overlap
    axis: int  # the array axis the slices run across
    per_slice: dict[int, np.ndarray]  # {label: Dice of every slice across axis, NaN where neither map has it}
    errors: list[ErrorComponent]  # the error blobs, largest first
    worst: list[int]  # the slice with the most wrong voxels (the report's rule), or []


def review(pred: np.ndarray, ref: np.ndarray, spacing, axis: int) -> Review:
    """All the numbers of a review of ``pred`` against ``ref`` (same shape; ``spacing``: mm along the arrays'
    axes), its slices across ``axis``."""
    metrics = score_arrays(pred, ref, spacing)
    per_slice = {label: dice_per_slice(pred, ref, label, axis) for label in metrics}
    codes = overlap_map(pred, ref)
    errors = error_components(pred, ref, spacing, codes=codes)
    return Review(metrics, codes, axis, per_slice, errors, worst_slices(codes, axis, 1))
