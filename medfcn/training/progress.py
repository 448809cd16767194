"""What a training run tells its caller: :class:`TrainProgress` while it runs, :class:`TrainSummary` when it ends.

Both are frozen and picklable: the napari Train dock receives them from a child process
(:mod:`medfcn.training.process`), the CLI from :func:`medfcn.training.train.train`.

>>> s = TrainSummary(Path("m.safetensors"), True, 0.91, True, 3, (), 1.5, True, False)
>>> s.describe()
'last epoch kept, Dice on annotated voxels 0.9100 after 3 epoch(s), 1.5 min; model written to m.safetensors'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["TrainProgress", "TrainSummary"]


@dataclass(frozen=True)
class TrainProgress:
    """Where a run is, yielded by :func:`~medfcn.training.train.iter_train` after every step (``epoch_done``
    false: ``loss`` and ``dice`` of that step's batch, Dice on its annotated voxels) and after every epoch
    (``epoch_done``: the epoch's mean loss and the validation Dice). ``fraction`` of the run done (steps or time
    budget, whichever is further)."""

    epoch: int
    step: int
    steps: int
    loss: float
    dice: float
    minutes: float
    fraction: float
    epoch_done: bool = False


@dataclass(frozen=True)
class TrainSummary:
    """How a run ended. ``written``: ``output`` holds a model of this run (false when it was cancelled before its
    first epoch ended); ``best_validation_dice``: the Dice of the kept epoch (on the annotated training voxels when
    ``kept_last``: fine-tuning with no held-out case keeps its last epoch); ``history``: one record per finished
    epoch (epoch, loss, val_dice, minutes); ``notes``: what preparing the data did that the user should know, one
    line each (painted slices snapped onto the model's frame: :mod:`medfcn.training.frame_labels`)."""

    output: Path
    written: bool
    best_validation_dice: float
    kept_last: bool
    epochs: int
    history: tuple[dict[str, Any], ...]
    minutes: float
    stopped_by_time: bool
    cancelled: bool
    notes: tuple[str, ...] = ()

    @property
    def dice_kind(self) -> str:
        """What :attr:`best_validation_dice` measures, in words."""
        return "last epoch kept, Dice on annotated voxels" if self.kept_last else "best validation Dice"

    def describe(self) -> str:
        """The one line the CLI prints at the end of a run."""
        return (
            f"{self.dice_kind} {self.best_validation_dice:.4f} after {self.epochs} epoch(s), {self.minutes:.1f} min; "
            f"model written to {self.output}"
        )
