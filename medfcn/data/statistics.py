"""Per-label statistics of a segmented scan (``medfcn segment --statistics``): each label's volume and the scan's
intensities inside it, as TotalSegmentator's ``--statistics`` gives them, without segmenting again.

For each foreground label of the model: ``voxels``, ``volume_ml`` (voxels x the voxel's volume in mm3 / 1000) and
the scan's intensity (the values medfcn reads: NIfTI scl_slope/scl_inter applied) inside it: ``mean``, ``std``
(the sample standard deviation, n - 1 in the denominator, as ITK's ``LabelStatisticsImageFilter`` computes its
sigma), ``min``, ``p5``, ``p25``, ``p50``, ``p75``, ``p95`` (NumPy's linear percentiles) and ``max``. A label with no
voxel has volume 0 and no intensities (``None``; empty cells in the CSV).

``OUT/statistics.csv`` has one row per case and label, in the manifest's order (:func:`write_statistics_csv`).

>>> import numpy as np
>>> labels = np.zeros((4, 4, 4), np.uint8); labels[:2] = 1
>>> s = label_statistics(labels, np.arange(64, dtype=np.float32).reshape(4, 4, 4), (1.0, 1.0, 2.0), {"brain": 1})
>>> s["brain"]["voxels"], s["brain"]["volume_ml"], s["brain"]["mean"]
(32, 0.064, 15.5)
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["STATISTICS_NAME", "COLUMNS", "label_statistics", "statistics_csv", "write_statistics_csv"]

STATISTICS_NAME = "statistics.csv"
PERCENTILES = (5, 25, 50, 75, 95)
FIELDS = ("voxels", "volume_ml", "mean", "std", "min", *(f"p{p}" for p in PERCENTILES), "max")
COLUMNS = ("case", "label", "label_id", *FIELDS)


def label_statistics(
    labels: np.ndarray, voxels: np.ndarray, spacing: Sequence[float], label_names: Mapping[str, int]
) -> dict[str, dict[str, float | int | None]]:
    """``{label name: {field: value}}`` for every foreground label of ``label_names`` (``{name: id}``, a model
    card's labels; id 0 is background and left out), from ``labels`` and the scan's ``voxels`` (both X, Y, Z, the
    same shape) on a grid of ``spacing`` mm. Raises ValueError when the shapes differ."""
    if labels.shape != voxels.shape:
        raise ValueError(f"labels {labels.shape} and voxels {voxels.shape} differ in shape")
    voxel_ml = float(np.prod([float(s) for s in spacing])) / 1000.0
    out: dict[str, dict[str, float | int | None]] = {}
    for name, index in sorted(label_names.items(), key=lambda item: item[1]):
        if int(index) == 0:
            continue
        inside = np.asarray(voxels[labels == int(index)], dtype=np.float64)
        row: dict[str, float | int | None] = {"label_id": int(index), "voxels": int(inside.size)}
        row["volume_ml"] = round(inside.size * voxel_ml, 6)
        if inside.size:
            row["mean"] = float(inside.mean())
            row["std"] = float(inside.std(ddof=1)) if inside.size > 1 else 0.0
            row["min"] = float(inside.min())
            for p, value in zip(PERCENTILES, np.percentile(inside, PERCENTILES), strict=True):
                row[f"p{p}"] = float(value)
            row["max"] = float(inside.max())
        else:
            row.update({f: None for f in FIELDS[2:]})
        out[str(name)] = row
    return out


def statistics_csv(cases: Iterable[tuple[str, Mapping[str, Mapping]]]) -> str:
    """The CSV text of ``(case, {label: statistics})`` pairs, one row per case and label (:data:`COLUMNS`)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS)
    for case, per_label in cases:
        for label, row in per_label.items():
            values = [row.get(f) for f in ("label_id", *FIELDS)]
            writer.writerow([case, label, *("" if v is None else _number(v) for v in values)])
    return text.getvalue()


def write_statistics_csv(path: str | Path, cases: Iterable[tuple[str, Mapping[str, Mapping]]]) -> Path:
    """Write :func:`statistics_csv` to ``path`` atomically. Raises :class:`medfcn.errors.OutputError`."""
    from medfcn.data.writer import atomic_write_text

    return atomic_write_text(path, statistics_csv(cases))


def _number(value: float | int) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6g}"
