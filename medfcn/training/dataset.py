"""Training volumes: labelled pairs brought once into a model's frame, and batches of slices drawn from them.

A :class:`TrainingVolume` is a case's normalised image and its label map on the model's grid (RAS, the card's
spacing), made through the inference pipeline's own first two stages so that training sees exactly what
``medfcn segment`` feeds the network. Batches are slices along one of the model's slice axes, stacked with their
neighbours exactly as at inference (:func:`medfcn.inference.engine.slice_stack`), with foreground oversampling.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from medfcn.data.pairs import LabelledPair, read_pair
from medfcn.errors import MedfcnError

if TYPE_CHECKING:
    from medfcn.model.card import ModelCard

__all__ = ["TrainingVolume", "prepare_volume", "cache_volumes", "sample_batch"]

log = logging.getLogger(__name__)


@dataclass
class TrainingVolume:
    """One case on the model's frame: ``image`` (X, Y, Z) float32 normalised, ``label`` (X, Y, Z) uint8 class ids.
    ``tissue`` is filled in by training when it synthesises contrasts (:func:`medfcn.training.synth.tissue_map`)."""

    case: str
    image: np.ndarray
    label: np.ndarray
    tissue: np.ndarray | None = None


def prepare_volume(pair: LabelledPair, card: ModelCard) -> TrainingVolume:
    """``pair`` read, checked and brought onto the frame of the model ``card`` describes. Raises
    :class:`MedfcnError` for label values that are not class ids of the card."""
    from medfcn.inference.pipeline import frame_for_model, normalise_for_model

    n_classes = len(card.labels)
    image, label = read_pair(pair)
    values = np.unique(label.array)
    if values.min() < 0 or values.max() >= n_classes or not np.array_equal(values, np.round(values)):
        bad = [v for v in values.tolist() if v < 0 or v >= n_classes or v != round(v)][:5]
        raise MedfcnError(
            f"{pair.label}: label values {bad} are not class ids of {n_classes} classes "
            f"(integers 0..{n_classes - 1}; --label-names names them)"
        )
    frame = frame_for_model(image, card)
    lab = frame_for_model(image, card, array=label.array, mode="nearest").volume
    return TrainingVolume(pair.case, normalise_for_model(frame, card), np.rint(lab).astype(np.uint8))


def cache_volumes(pairs: list[LabelledPair], card: ModelCard) -> list[TrainingVolume]:
    """The pairs loaded once onto the model's frame, through a MONAI ``CacheDataset``. Raises
    :class:`MedfcnError` when every label map is empty."""
    from medfcn._monai import import_monai

    import_monai()  # the one way medfcn imports MONAI
    from monai.data import CacheDataset
    from monai.transforms import Lambda

    try:
        dataset = CacheDataset(pairs, transform=Lambda(lambda p: prepare_volume(p, card)), progress=False)
    except RuntimeError as exc:  # MONAI wraps a transform's error in "applying transform ...": show the cause
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, MedfcnError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None
    volumes = [dataset[i] for i in range(len(dataset))]
    empty = [v.case for v in volumes if not np.any(v.label)]
    if len(empty) == len(volumes):
        raise MedfcnError(
            f"every label map holds only background (0) ({', '.join(empty[:5])}): there is nothing to learn"
        )
    for case in empty:
        log.warning("case %s: its label map holds only background (0)", case)
    return volumes


def sample_batch(
    image: np.ndarray,
    label: np.ndarray,
    axis: int,
    batch_size: int,
    context: int,
    fg_fraction: float,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 2 * context + 1, H, W) inputs and (B, 1, H, W) labels: slices along ``axis``, foreground-oversampled."""
    from medfcn.inference.engine import slice_stack

    depth = image.shape[axis]
    other = tuple(a for a in range(3) if a != axis)
    fg = np.flatnonzero(label.any(axis=other)) if label.any() else np.arange(0)
    n_fg = int(round(batch_size * fg_fraction)) if fg.size else 0
    idx = np.concatenate([rng.choice(fg, n_fg), rng.integers(0, depth, batch_size - n_fg)]).astype(np.int64)
    vol = torch.from_numpy(image)
    x = torch.cat([slice_stack(vol, int(i), int(i) + 1, axis=axis, context=context) for i in idx])
    y = torch.from_numpy(np.stack([np.take(label, int(i), axis=axis) for i in idx]))[:, None].long()
    return x, y
