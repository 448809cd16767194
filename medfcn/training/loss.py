"""The training loss on partial labels: Dice + cross-entropy over annotated voxels only, and a soft target elsewhere.

A label map may mark voxels "not annotated" with an ignore value (``options.IGNORE`` by default). MONAI's
``DiceCELoss`` has no ignore index, so :class:`PartialDiceCELoss` computes the same loss (``batch=True``, softmax,
background included, ``smooth_nr = smooth_dr = 1e-5``) with every sum restricted to annotated voxels: with no
ignored voxel it equals MONAI's ``DiceCELoss(to_onehot_y=True, softmax=True, batch=True)``, and an ignored voxel
changes nothing whatever the network says there.

Fine-tuning adds :func:`soft_target_loss`: on the voxels that are *not* annotated, the cross-entropy between the
start model's own probabilities (the teacher's soft target) and the network's, so that what the model knew
outside the corrected slices is kept (knowledge distillation, Hinton et al. 2015, at temperature 1).

>>> import torch
>>> logits = torch.zeros(1, 2, 1, 2)  # two voxels, both at p = 0.5
>>> labels = torch.tensor([[[[1, IGNORE]]]])  # one annotated (class 1), one not
>>> # CE ln 2 = 0.6931; Dice loss of class 0: 1 - 0 / 0.5 = 1, of class 1: 1 - 2 * 0.5 / (0.5 + 1) = 1/3; mean 2/3
>>> round(PartialDiceCELoss(ignore=IGNORE)(logits, labels).item(), 4)
1.3598
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medfcn.training.options import IGNORE

__all__ = ["PartialDiceCELoss", "soft_target_loss", "annotated_dice"]

SMOOTH = 1e-5  # MONAI's DiceLoss default smooth_nr and smooth_dr


class PartialDiceCELoss(torch.nn.Module):
    """Dice + cross-entropy of logits (B, C, H, W) against labels (B, 1, H, W) or (B, H, W), over the voxels whose
    label is not ``ignore``. Dice is taken per class over the whole batch (``batch=True``) and averaged over the
    classes, background included; cross-entropy is the mean over annotated voxels. A batch with no annotated voxel
    gives 0 (with a gradient of zeros)."""

    def __init__(self, ignore: int = IGNORE) -> None:
        super().__init__()
        self.ignore = int(ignore)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels[:, 0] if labels.dim() == logits.dim() else labels
        labels = labels.long()
        mask = labels != self.ignore
        if not mask.any():
            return logits.sum() * 0.0
        n_classes = logits.shape[1]
        ce = F.cross_entropy(logits.float(), labels, ignore_index=self.ignore)
        probs = torch.softmax(logits.float(), dim=1) * mask[:, None]
        onehot = F.one_hot(torch.where(mask, labels, 0), n_classes).movedim(-1, 1) * mask[:, None]
        dims = (0, 2, 3)
        intersection = (probs * onehot).sum(dims)
        denominator = probs.sum(dims) + onehot.sum(dims)
        dice = 1.0 - (2.0 * intersection + SMOOTH) / (denominator + SMOOTH)
        return dice.mean() + ce


def soft_target_loss(logits: torch.Tensor, teacher: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the network's logits (B, C, H, W) against the teacher's probabilities (B, C, H, W), averaged
    over voxels with ``weights`` (B, H, W) in [0, 1] (1: the voxel counts, 0: it does not); 0 when no voxel counts."""
    total = weights.sum()
    if total <= 0:
        return logits.sum() * 0.0
    log_p = torch.log_softmax(logits.float(), dim=1)
    return -((teacher.float() * log_p).sum(1) * weights).sum() / total


def annotated_dice(logits: torch.Tensor, labels: torch.Tensor, ignore: int = IGNORE) -> float:
    """Mean foreground Dice of the arg-max of ``logits`` (B, C, H, W) against ``labels`` over annotated voxels
    (NaN when no foreground class is present in either): the live figure training reports."""
    labels = labels[:, 0] if labels.dim() == logits.dim() else labels
    mask = labels != ignore
    pred = logits.argmax(1)
    scores = []
    for c in range(1, logits.shape[1]):
        p, t = (pred == c) & mask, (labels == c) & mask
        denominator = int(p.sum() + t.sum())
        if denominator:
            scores.append(2.0 * int((p & t).sum()) / denominator)
    return float(sum(scores) / len(scores)) if scores else float("nan")
