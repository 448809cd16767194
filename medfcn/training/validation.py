"""How a training run is validated: which cases are held out (:func:`split_cases`) and the Dice it chooses epochs by
(:func:`frame_dice`), computed through the inference path's own stages."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from medfcn.training.dataset import TrainingVolume
from medfcn.training.options import IGNORE

if TYPE_CHECKING:
    import torch

    from medfcn.model.card import ModelCard
    from medfcn.training.options import TrainConfig

__all__ = ["NO_VALIDATION", "frame_dice", "split_cases"]

NO_VALIDATION = "none held out: the last epoch is kept (Dice on the annotated training voxels, not used to choose)"


def frame_dice(
    network: torch.nn.Module,
    items: list[TrainingVolume],
    card: ModelCard,
    device: torch.device,
    ignore: int = IGNORE,
    cancel: Callable[[], bool] | None = None,
) -> float:
    """Mean foreground Dice over the annotated voxels (label not ``ignore``) of ``items`` (normalised frame volumes)
    through the inference path's own stages: multi-axis probabilities and post-processing
    (:meth:`~medfcn.inference.pipeline.Segmenter.probabilities`,
    :meth:`~medfcn.inference.pipeline.Segmenter.postprocess`), the arg-max taken on the model's frame. ``cancel``
    is polled between batches (:class:`~medfcn.errors.CancelledError`)."""
    from medfcn.evaluation.metrics import dice
    from medfcn.inference.pipeline import Segmenter
    from medfcn.inference.postprocess import argmax_classes
    from medfcn.inference.settings import InferenceSettings
    from medfcn.model.checkpoint import Model

    segmenter = Segmenter(Model(network=network, card=card), InferenceSettings(device=str(device), batch_size=32))
    scores = []
    for item in items:
        pred = argmax_classes(segmenter.postprocess(segmenter.probabilities(item.image, cancel=cancel)))
        annotated = item.label != ignore
        pred, label = pred[annotated], item.label[annotated]
        scores += [dice(pred == lab, label == lab) for lab in range(1, len(card.labels))]
    return float(np.mean(scores)) if scores else float("nan")


def split_cases(cases: list[TrainingVolume], config: TrainConfig) -> tuple[list, list, str]:
    """Training items, validation items and how validation is done (recorded in the card). With one subject,
    validation is on fixed transformed copies of it (and the original); when fine-tuning with no held-out case,
    there is none (:data:`NO_VALIDATION`: the last epoch is kept, the Dice on the training cases only reported)."""
    from medfcn.training.augment import Augmenter

    n_val = min(config.val_cases, len(cases) - 1) if len(cases) > 1 else 0
    if n_val:
        return cases[n_val:], cases[:n_val], "held-out cases"
    if config.finetune:
        return cases, cases, NO_VALIDATION
    val_rng = np.random.default_rng([config.seed, 99991])
    base, augment = cases[0], Augmenter(spacing=config.spacing)
    copies = [
        TrainingVolume(f"{base.case} copy {i + 1}", *augment(base.image, base.label, val_rng))
        for i in range(config.val_copies)
    ]
    return cases, [base, *copies], f"original + {config.val_copies} augmented copies"
