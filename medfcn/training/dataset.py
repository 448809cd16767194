"""Training volumes: labelled pairs brought once into a model's frame, and batches of slices drawn from them.

A :class:`TrainingVolume` is a case's normalised image and its label map on the model's grid (RAS, the card's
spacing), made through the inference pipeline's own first two stages so that training sees exactly what
``medfcn segment`` feeds the network. Batches are slices along one of the model's slice axes, stacked with their
neighbours exactly as at inference (:func:`medfcn.inference.engine.slice_stack`), with foreground oversampling.

Partial labels: a label map may mark voxels "not annotated" with an ignore value (``ignore``, ``options.IGNORE`` by
default). It travels through the frame (nearest neighbour, every painted slice snapped to the frame slice nearest to
it: :mod:`medfcn.training.frame_labels`) and the augmentation as a value of its own (nearest neighbour), batches are
drawn only from slices that hold annotated voxels (along every slice axis: an annotated axial slice crosses every
coronal and sagittal slice), and the loss (:mod:`medfcn.training.loss`) counts only annotated voxels."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from medfcn.data.pairs import LabelledPair, read_pair
from medfcn.errors import MedfcnError
from medfcn.training.frame_labels import labels_on_frame, whole_slices
from medfcn.training.options import IGNORE, check_ignore

if TYPE_CHECKING:
    from medfcn.model.card import ModelCard

__all__ = ["TrainingVolume", "prepare_volume", "cache_volumes", "sample_batch", "annotated_foreground"]

log = logging.getLogger(__name__)


@dataclass
class TrainingVolume:
    """One case on the model's frame: ``image`` (X, Y, Z) float32 normalised, ``label`` (X, Y, Z) uint8 class ids
    (or the ignore value where not annotated). ``tissue`` is filled in by training when it synthesises contrasts
    (:func:`medfcn.training.synth.tissue_map`)."""

    case: str
    image: np.ndarray
    label: np.ndarray
    tissue: np.ndarray | None = None
    annotation: dict = field(default_factory=dict)  # of the label file: see annotation_summary
    note: str = ""  # what bringing the label map onto the frame did to its painted slices, when anything


def annotated_foreground(label: np.ndarray, ignore: int = IGNORE) -> np.ndarray:
    """Boolean (X, Y, Z): voxels annotated with a class other than background."""
    return (label > 0) & (label != ignore)


def annotation_summary(label: np.ndarray, ignore: int = IGNORE) -> dict[str, object]:
    """How much of a label map (on its own grid) is annotated: voxels, annotated voxels, and per array axis the
    slices annotated whole (every voxel not ``ignore``).

    >>> lab = np.full((2, 3, 4), IGNORE, np.uint8); lab[:, :, 1] = 0
    >>> annotation_summary(lab)
    {'voxels': 24, 'annotated_voxels': 6, 'annotated_slices': [0, 0, 1]}
    """
    annotated = label != ignore
    whole = [int(whole_slices(annotated, k).sum()) for k in range(3)]
    return {"voxels": int(label.size), "annotated_voxels": int(annotated.sum()), "annotated_slices": whole}


def prepare_volume(pair: LabelledPair, card: ModelCard, ignore: int = IGNORE) -> TrainingVolume:
    """``pair`` read, checked and brought onto the frame of the model ``card`` describes; voxels labelled ``ignore``
    are not annotated. Raises :class:`MedfcnError` (naming the label file) for label values that are neither class
    ids of the card nor ``ignore``, for an ignore value that is a class id (``check_ignore``,
    the rule :class:`~medfcn.training.options.TrainConfig` applies too), and for a map with no annotated voxel."""
    from medfcn.inference.pipeline import frame_for_model, normalise_for_model

    n_classes = len(card.labels)
    check_ignore(ignore, str(pair.label), n_classes)
    image, label = read_pair(pair)
    values = np.unique(label.array)
    bad = [v for v in values.tolist() if (v < 0 or v >= n_classes or v != round(v)) and v != ignore][:5]
    if bad:
        raise MedfcnError(
            f"{pair.label}: label values {bad} are not class ids of {n_classes} classes "
            f"(integers 0..{n_classes - 1}; --label-names names them; {ignore} marks voxels not annotated)"
        )
    if values.size == 1 and values[0] == ignore:
        raise MedfcnError(f"{pair.label}: no voxel is annotated (every voxel is {ignore}, the ignore label)")
    frame = frame_for_model(image, card)
    lab = labels_on_frame(image, label.array, frame, card, ignore)
    summary = annotation_summary(label.array, ignore) | ({"moved_to_frame": lab.moved} if lab.moved else {})
    note = lab.note(pair.case)
    if note:
        log.warning("%s", note)
    return TrainingVolume(pair.case, normalise_for_model(frame, card), lab.label, None, summary, note)


def cache_volumes(pairs: list[LabelledPair], card: ModelCard, ignore: int = IGNORE) -> list[TrainingVolume]:
    """The pairs loaded once onto the model's frame, through a MONAI ``CacheDataset`` (see :func:`prepare_volume`).
    Raises :class:`MedfcnError` when no label map annotates any foreground."""
    from medfcn._monai import import_monai

    import_monai()  # the one way medfcn imports MONAI
    if not pairs:
        return []
    from monai.data import CacheDataset
    from monai.transforms import Lambda

    try:
        dataset = CacheDataset(pairs, transform=Lambda(lambda p: prepare_volume(p, card, ignore)), progress=False)
    except RuntimeError as exc:  # MONAI wraps a transform's error in "applying transform ...": show the cause
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, MedfcnError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None
    volumes = [dataset[i] for i in range(len(dataset))]
    empty = [v.case for v in volumes if not np.any(annotated_foreground(v.label, ignore))]
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
    ignore: int = IGNORE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 2 * context + 1, H, W) inputs and (B, 1, H, W) labels: slices along ``axis`` that hold annotated voxels
    (label not ``ignore``), ``fg_fraction`` of them drawn among those holding annotated foreground."""
    from medfcn.inference.engine import slice_stack

    other = tuple(a for a in range(3) if a != axis)
    fg = np.flatnonzero(annotated_foreground(label, ignore).any(axis=other))
    annotated = np.flatnonzero((label != ignore).any(axis=other))
    n_fg = int(round(batch_size * fg_fraction)) if fg.size else 0
    if annotated.size in (0, label.shape[axis]):  # all slices annotated (as before partial labels), or none left
        rest = rng.integers(0, label.shape[axis], batch_size - n_fg)
    else:
        rest = rng.choice(annotated, batch_size - n_fg)
    idx = np.concatenate([rng.choice(fg, n_fg), rest]).astype(np.int64)
    vol = torch.from_numpy(image)
    x = torch.cat([slice_stack(vol, int(i), int(i) + 1, axis=axis, context=context) for i in idx])
    y = torch.from_numpy(np.stack([np.take(label, int(i), axis=axis) for i in idx]))[:, None].long()
    return x, y
