"""What fine-tuning changed: the tuned model against the model it started from, on the whole scan it was tuned on.

The Train dock's loss and "Dice on the annotated voxels" describe the few painted slices; a reader asks whether the
model got better on the scan. :func:`scan_change` segments the whole scan with both models and counts the voxels
whose label differs, the volume each model labels alone, and where along each axis the changes lie, so the dock can
say "the tuned model changes 1,234 voxels (0.9 mL) of the whole scan against the start model". :func:`scan_preview`
is the tuned model's segmentation alone, for the live preview of the Train dock's live mode.

>>> a = np.zeros((4, 5, 6), np.uint8); b = a.copy(); b[1, 2, 3:5] = 1; b[3, 0, 0] = 1; a[0, 0, 0] = 1
>>> c = label_change(a, b, (1.0, 1.0, 2.0))
>>> c.voxels, c.added_ml, c.removed_ml, c.per_axis[0]
(4, 0.006, 0.002, (1, 2, 0, 1))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ScanChange", "label_change", "scan_change", "Preview", "scan_preview"]


@dataclass(frozen=True)
class ScanChange:
    """How two label maps of one scan differ: ``voxels`` whose label differs, the volume (mL) labelled (not
    background) by the second map alone (``added_ml``) and by the first alone (``removed_ml``), and for each array
    axis the number of differing voxels in every slice across it (``per_axis``)."""

    voxels: int
    added_ml: float
    removed_ml: float
    changed_ml: float
    per_axis: tuple[tuple[int, ...], ...]


def label_change(before: np.ndarray, after: np.ndarray, spacing) -> ScanChange:
    """The :class:`ScanChange` from ``before`` to ``after`` (one shape; ``spacing`` in mm along its axes)."""
    differ = np.asarray(before) != np.asarray(after)
    voxel_ml = float(np.prod(np.asarray(spacing, float))) / 1000.0
    added = np.count_nonzero((after != 0) & (before == 0))
    removed = np.count_nonzero((before != 0) & (after == 0))
    per_axis = tuple(
        tuple(int(v) for v in np.count_nonzero(differ, axis=tuple(o for o in range(differ.ndim) if o != a)))
        for a in range(differ.ndim)
    )
    n = int(np.count_nonzero(differ))
    ml = [round(float(v * voxel_ml), 6) for v in (added, removed, n)]
    return ScanChange(n, *ml, per_axis)


def scan_change(image: str | Path, start: str | Path, tuned: str | Path, device: str = "cpu") -> ScanChange:
    """Segment the scan file ``image`` with the model files ``start`` and ``tuned`` and compare them
    (:func:`label_change`, on the scan's own axes). Raises :class:`~medfcn.errors.MedfcnError`."""
    from medfcn.data.reader import read_scan
    from medfcn.inference.pipeline import Segmenter
    from medfcn.inference.settings import InferenceSettings

    scan = read_scan(Path(image))
    settings = InferenceSettings(device=device)
    before = Segmenter(Path(start), settings).segment(scan)
    after = Segmenter(Path(tuned), settings).segment(scan)
    return label_change(before, after, scan.spacing)


@dataclass(frozen=True)
class Preview:
    """The labels (uint8, on the scan's own axes) that the model file ``model`` segments on a training scan."""

    labels: np.ndarray
    model: str


def scan_preview(image: str | Path, model: str | Path, device: str = "cpu") -> Preview:
    """Segment the scan file ``image`` with the model file ``model``. Raises :class:`~medfcn.errors.MedfcnError`."""
    from medfcn.data.reader import read_scan
    from medfcn.inference.pipeline import Segmenter
    from medfcn.inference.settings import InferenceSettings

    labels = Segmenter(Path(model), InferenceSettings(device=device)).segment(read_scan(Path(image)))
    return Preview(np.asarray(labels, np.uint8), str(model))
