"""Calibrate a model's decision on labelled scans: how readily a voxel is called foreground.

A network trained with Dice and cross-entropy on few subjects is often biased at the boundary: its probability
of 0.5 does not fall where the reference's edge is (the bundled model called 2-3 % too many voxels brain, on
its training scan as on held-out heads). Calibration keeps the weights and chooses one number, the background
weight ``w`` of the model card's ``class_weights`` (foreground labels keep 1): a voxel is labelled foreground
when ``p_fg > w * p_background``, i.e. for two labels when ``p_fg > w / (1 + w)``. Each scan is segmented once;
every candidate threshold is then scored (mean Dice over scans and foreground labels, on each scan's own grid)
from the same probabilities, and the best one is written into a copy of the model file.

>>> [round(background_weight(t), 3) for t in (0.5, 0.6, 0.75)]
[1.0, 1.5, 3.0]
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medfcn.errors import MedfcnError, UsageError

if TYPE_CHECKING:
    from medfcn.data.pairs import LabelledPair

__all__ = ["Calibration", "background_weight", "calibrate", "THRESHOLDS"]

log = logging.getLogger(__name__)

THRESHOLDS: tuple[float, ...] = tuple(round(0.3 + 0.025 * i, 3) for i in range(21))  # 0.30 ... 0.80


def background_weight(threshold: float) -> float:
    """The background weight that moves a two-label decision from p > 0.5 to p > ``threshold``."""
    if not 0 < threshold < 1:
        raise UsageError(f"a threshold must lie between 0 and 1, got {threshold}")
    return threshold / (1 - threshold)


@dataclass
class Calibration:
    """What :func:`calibrate` chose and why: mean Dice and volume ratio (prediction / reference) per threshold."""

    threshold: float
    weights: tuple[float, ...]
    table: dict[float, tuple[float, float]]  # threshold -> (mean Dice, mean volume ratio)
    cases: list[str]
    output: Path | None = None

    def lines(self) -> list[str]:
        """The table as text, the chosen row marked."""
        rows = [
            f"threshold {t:.3f}: Dice {d:.4f}, volume x{v:.3f}" + ("  <- chosen" if t == self.threshold else "")
            for t, (d, v) in sorted(self.table.items())
        ]
        return [f"calibrated on {len(self.cases)} scan(s): {', '.join(self.cases)}", *rows]


def _score(segmenter, probs: np.ndarray, frame, reference: np.ndarray, threshold: float) -> list[tuple]:
    """(Dice, volume ratio) per foreground label of ``reference`` for one threshold, on the scan's grid: the
    background's probability weighted as the threshold asks, then the pipeline's own stages 4 and 5
    (:meth:`~medfcn.inference.pipeline.Segmenter.postprocess`, :meth:`~medfcn.inference.pipeline.Segmenter.to_scan`)."""
    from medfcn.evaluation.metrics import dice

    p = probs.astype(np.float32)
    p[0] *= background_weight(threshold)
    labels = segmenter.to_scan(segmenter.postprocess(p), frame)
    out = []
    for label in range(1, probs.shape[0]):
        pred, ref = labels == label, reference == label
        n_ref = np.count_nonzero(ref)
        if n_ref:
            out.append((dice(pred, ref), np.count_nonzero(pred) / n_ref))
    return out


def calibrate(
    model: str | Path | None,
    pairs: list[LabelledPair],
    output: str | Path,
    *,
    thresholds: tuple[float, ...] = THRESHOLDS,
    device: str = "auto",
) -> Calibration:
    """Choose the threshold with the best mean Dice on the labelled ``pairs`` and write
    ``model`` (``None``: the bundled model) with it to ``output``, a new file.

    Raises :class:`UsageError` when ``output`` is the model file itself, :class:`MedfcnError` for a label map
    that does not lie on its image's grid or holds no foreground.
    """
    from medfcn.data.pairs import read_pair
    from medfcn.inference.pipeline import Segmenter
    from medfcn.inference.settings import InferenceSettings
    from medfcn.model.checkpoint import load_model, save_model
    from medfcn.training.output import check_output

    source = load_model(model)
    output = Path(output)
    if source.path is not None and output.resolve() == Path(source.path).resolve():
        raise UsageError(f"{output} is the model being calibrated: write the calibrated model to a new file")
    check_output(output, pairs)  # before any scan is segmented
    card = dataclasses.replace(source.card, class_weights=())  # score from the uncalibrated probabilities
    # the Segmenter folds a copy of the network
    segmenter = Segmenter(dataclasses.replace(source, card=card), InferenceSettings(device=device))
    scores: dict[float, list[tuple[float, float]]] = {t: [] for t in thresholds}
    for pair in pairs:
        image, reference = read_pair(pair)
        frame = segmenter.to_frame(image)
        probs = segmenter.probabilities(segmenter.normalise(frame))
        ref = np.rint(reference.array).astype(np.int64)
        if not (ref > 0).any():
            raise MedfcnError(f"{pair.label}: the label map holds no foreground to calibrate on")
        for t in thresholds:
            scores[t].extend(_score(segmenter, probs, frame, ref, t))
        log.info("calibration: scored %s", pair.case)
    table = {t: (float(np.mean([d for d, _ in s])), float(np.mean([v for _, v in s]))) for t, s in scores.items()}
    best = max(table, key=lambda t: (round(table[t][0], 6), -abs(t - 0.5)))
    weights = (background_weight(best),) + (1.0,) * (len(card.labels) - 1)
    record = {
        "threshold": best,
        "data": [{"case": p.case, "image": str(p.image), "label": str(p.label)} for p in pairs],
        "dice_at_0.5": round(table[0.5][0], 4) if 0.5 in table else None,
        "dice": round(table[best][0], 4),
    }
    new_card = dataclasses.replace(
        source.card, class_weights=weights, training={**source.card.training, "calibration": record}
    )
    save_model(output, source.network, new_card)
    return Calibration(best, weights, table, [p.case for p in pairs], output)
