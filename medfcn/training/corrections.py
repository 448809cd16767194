"""Corrections to training runs: what the napari Train dock calls (and tests and scripts can call the same way).

A user segments a scan, corrects some slices of the prediction and fine-tunes. :func:`correction_label` turns the
corrected label map into a partial label map: in ``edited`` mode the slices (along one axis) where the correction
differs from the prediction are annotated whole and every other voxel becomes the ignore value; in ``whole`` mode
the whole map counts as checked. :func:`prepare_correction_run` writes the scan and that label into a folder and
returns the :class:`~medfcn.training.options.TrainConfig` of a fine-tuning run on them, to be run with
:func:`medfcn.training.train.iter_train` (in a child process: :func:`medfcn.training.process.train_correction`);
:func:`medfcn.training.output.save_trained_model` copies the result where the user wants it.

>>> pred = np.zeros((4, 3, 5), np.uint8); fixed = pred.copy(); fixed[1:3, 1, 2] = 1; fixed[0, 0, 4] = 1
>>> label, slices = correction_label(pred, fixed, CorrectionMode.EDITED, axis=2)
>>> slices, int((label != IGNORE).sum()), int(label[1, 1, 2])
([2, 4], 24, 1)
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from medfcn.choices import parse_choice
from medfcn.data.scan import Scan
from medfcn.errors import MedfcnError, UsageError
from medfcn.training.options import IGNORE, LABEL_VALUES, TrainConfig

__all__ = [
    "CorrectionMode",
    "StartModel",
    "correction_label",
    "painted_label",
    "prepare_correction_run",
    "corrected_cases_run",
]

log = logging.getLogger(__name__)

STEPS_PER_EPOCH = 25  # short epochs: a model is saved (and Cancel keeps it) every ~10-20 s on a laptop CPU


class CorrectionMode(StrEnum):
    """Which voxels of a corrected label map count as annotated."""

    EDITED = "edited slices only"  # slices that differ from the prediction; the rest is not annotated
    WHOLE = "whole layer checked"  # every voxel
    PAINTED = "painted slices only"  # slices that hold a label (a new structure on a fresh layer); the rest not


@dataclass(frozen=True)
class StartModel:
    """Where training starts: a model file (``path``; ``None`` for a new model), or a new model with
    ``label_names`` (background first); a file with other ``label_names`` than its own: a new structure learned on
    that model's encoder (a new task, :meth:`TrainConfig.new_task`)."""

    path: Path | None = None
    label_names: tuple[str, ...] = ()
    continues: bool = False  # ``path`` is an earlier round of the same run (the Train dock's live mode): trained on
    # at that round's learning rate and distillation weight (a new structure's rounds all learn at a new model's rate)


def painted_label(
    corrected: np.ndarray,
    planes: dict[int, list[int]],
    *,
    prediction: np.ndarray | None = None,
    ignore: int = IGNORE,
    name: str = "the label layer",
) -> tuple[np.ndarray, dict[int, list[int]]]:
    """The partial label map of the slices a user painted: ``planes`` (``{axis: [slice, ...]}``, recorded as they
    were painted, in any view) annotated whole from ``corrected``, every other voxel ``ignore``. With the
    ``prediction`` the corrections started from, a painted slice that no longer differs from it (a stroke undone)
    is left out, and a voxel changed outside the painted slices is refused: training never guesses which slices
    were checked. Returns ``(label, the planes kept)``. Raises :class:`MedfcnError` naming ``name``.

    >>> pred = np.zeros((4, 3, 5), np.uint8); fixed = pred.copy(); fixed[1, :, :] = 1; fixed[3, 2, 4] = 1
    >>> label, kept = painted_label(fixed, {0: [1, 2], 1: [2]}, prediction=pred)
    >>> kept, int((label != IGNORE).sum()), int(label[1, 0, 0])  # slice 2 of axis 0 unchanged: left out
    ({0: [1], 1: [2]}, 30, 1)
    """
    corrected = np.asarray(corrected)
    _check_values(corrected, ignore, name)
    annotated = np.zeros(corrected.shape, bool)
    kept: dict[int, list[int]] = {}
    changed = None if prediction is None else np.asarray(prediction) != corrected
    for axis, slices in sorted(planes.items()):
        for k in sorted(set(int(s) for s in slices)):
            if not 0 <= k < corrected.shape[axis]:
                continue
            index = [slice(None)] * corrected.ndim
            index[axis] = k
            if changed is not None and not changed[tuple(index)].any():
                continue
            annotated[tuple(index)] = True
            kept.setdefault(axis, []).append(k)
    if changed is not None and np.any(changed & ~annotated):
        outside = int(np.count_nonzero(changed & ~annotated))
        raise MedfcnError(
            f"{name}: {outside:,} changed voxels lie outside the slices painted in this viewer (edited another way, "
            f"or before medfcn watched the layer), so which slices were checked is not known: paint the corrections "
            f"slice by slice, or choose '{CorrectionMode.WHOLE.value}'"
        )
    if not kept:
        raise MedfcnError(f"{name}: no slice painted differs from the prediction: paint the corrections first")
    label = np.where(annotated, corrected, ignore).astype(np.uint8)
    return label, kept


def _check_values(corrected: np.ndarray, ignore: int, name: str) -> None:
    """Refuse label values that are not class ids a uint8 map can hold, or that are the ignore value."""
    if corrected.size and (
        corrected.min() < LABEL_VALUES.start or corrected.max() >= LABEL_VALUES.stop or np.any(corrected == ignore)
    ):
        raise MedfcnError(
            f"{name}: label values must be class ids from {LABEL_VALUES.start} to {LABEL_VALUES.stop - 1} other than "
            f"{ignore} ({ignore} means not annotated)"
        )


def edited_slices(prediction: np.ndarray, corrected: np.ndarray, axis: int) -> list[int]:
    """Indices along ``axis`` of the slices where ``corrected`` differs from ``prediction``."""
    other = tuple(a for a in range(prediction.ndim) if a != axis)
    return np.flatnonzero((prediction != corrected).any(axis=other)).tolist()


def correction_label(
    prediction: np.ndarray | None,
    corrected: np.ndarray,
    mode: str,
    *,
    axis: int | None = None,
    ignore: int = IGNORE,
    name: str = "the label layer",
) -> tuple[np.ndarray, list[int]]:
    """The partial label map (uint8, ``corrected``'s shape) and the slices annotated whole along ``axis``.

    ``edited``: the slices along ``axis`` where ``corrected`` differs from ``prediction`` (the one that changed
    the fewest slices when ``axis`` is None), the rest ``ignore``; ``painted``: the same against an empty layer
    (the slices that hold a label, e.g. a new structure painted on a few slices and filled between them: each
    such slice is annotated whole, its unpainted voxels as background; a slice checked and left empty cannot be
    told from one not looked at, so it is not annotated); ``whole``: ``corrected`` as it is. Raises
    :class:`MedfcnError` (naming ``name``) when there is no prediction or no edit in ``edited`` mode, a label value
    that does not fit uint8 or equals ``ignore``, or shapes that differ."""
    mode = parse_choice(CorrectionMode, mode, "correction mode", UsageError)
    corrected = np.asarray(corrected)
    _check_values(corrected, ignore, name)
    if mode is CorrectionMode.WHOLE:
        return corrected.astype(np.uint8), list(range(corrected.shape[2 if axis is None else axis]))
    if mode is CorrectionMode.PAINTED:
        prediction = np.zeros_like(corrected)  # a slice is annotated where it differs from an empty layer
    if prediction is None:
        raise MedfcnError(
            f"{name}: was not made by the Segment dock, so its edits are unknown; segment the scan first, or choose "
            f"'{CorrectionMode.WHOLE.value}'"
        )
    if prediction.shape != corrected.shape:
        raise MedfcnError(f"{name}: its shape {corrected.shape} is not that of its prediction {prediction.shape}")
    axes = [axis] if axis is not None else list(range(corrected.ndim))
    slices = min((edited_slices(prediction, corrected, a) for a in axes), key=len)
    if not slices:
        raise MedfcnError(
            f"{name}: no slice holds a label: paint the structure on a few slices first"
            if mode is CorrectionMode.PAINTED
            else f"{name}: no slice differs from the prediction: paint the corrections first"
        )
    if axis is None:
        axis = next(a for a in axes if edited_slices(prediction, corrected, a) == slices)
    label = np.full(corrected.shape, ignore, np.uint8)
    index = [slice(None)] * corrected.ndim
    index[axis] = slices
    label[tuple(index)] = corrected[tuple(index)]
    return label, slices


def _case_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "scan"


def corrected_cases_run(pairs: Path, start: StartModel, *, minutes: float, output: Path, name: str = "") -> TrainConfig:
    """The configuration of one fine-tuning run of ``start.path`` on the corrected cases listed in ``pairs`` (the
    Review queue's ``OUT/corrected/pairs.csv``: the user's own files, read where they lie, nothing copied) for
    ``minutes``, the model written to ``output`` and named ``name`` (``{start}`` in it: the start model's name).
    Raises :class:`MedfcnError` (no start model, one that cannot be fine-tuned, a list that is not one)."""
    from medfcn.data.pairs import find_pairs
    from medfcn.training.finetune import load_start_model

    if start.path is None:
        raise MedfcnError("the corrected cases fine-tune a model: choose the model the batch was run with")
    n = len(find_pairs("", "", str(pairs)))  # a list that cannot be read is refused before anything starts
    start_name = load_start_model(start.path).card.name
    return TrainConfig.for_corrections(
        "",
        "",
        str(output),
        pairs=str(pairs),
        minutes=float(minutes),
        init=str(start.path),
        steps_per_epoch=STEPS_PER_EPOCH,
        name=name.replace("{start}", start_name),
        command=f"napari Review queue: {n} corrected cases ({pairs}), {minutes:g} min",
    )


def prepare_correction_run(
    folder: Path,
    scan: Scan,
    label: np.ndarray,
    start: StartModel,
    *,
    minutes: float,
    output: Path,
    seed: int = 0,
    name: str = "",
) -> TrainConfig:
    """Write ``scan`` and its partial ``label`` (on the scan's grid) into ``folder``/images and /labels, readable by
    the user alone (they are a patient's scan), and return
    the configuration of a run on them: fine-tuning ``start.path`` (its card and network kept, the soft target of
    its own predictions on unannotated voxels, replay of its data when at hand), or a new model with
    ``start.label_names``; ``minutes`` of training, the model written to ``output`` and named ``name``
    (``{start}`` in it: the start model's name; default ``medfcn-<case>`` for a new model, the start model's own
    for a fine-tuned one when empty). Raises :class:`MedfcnError` (a label on another grid, label values that are
    not classes of the start model)."""
    import SimpleITK as sitk

    if tuple(label.shape) != scan.shape:
        raise MedfcnError(f"the label map {label.shape} is not on the grid of the scan {scan.case} {scan.shape}")
    case = _case_name(scan.case)
    names = tuple(n.strip() for n in start.label_names if n.strip()) or None
    # a new structure may have several parts (two putamina, metastases): no largest component unless asked
    postprocess = ("fill_holes",) if names is not None and start.path is not None else None
    start_name, carried = "medfcn", {}
    if start.path is not None:
        from medfcn.training.finetune import load_start_model

        # a start model that cannot be fine-tuned is refused before anything is written
        card = load_start_model(start.path).card
        start_name = card.name
        if start.continues:
            settings = (card.training or {}).get("settings") or {}
            carried = {k: settings[k] for k in ("lr", "distill") if settings.get(k) is not None}
    config = TrainConfig.for_corrections(  # checked before the scan is written anywhere
        str(folder / "images" / f"{case}.nii.gz"),
        str(folder / "labels" / f"{case}.nii.gz"),
        str(output),
        minutes=float(minutes),
        init=str(start.path) if start.path is not None else "",
        label_names=names,
        steps_per_epoch=STEPS_PER_EPOCH,
        seed=seed,
        name=name.replace("{start}", start_name) if name else ("" if start.path else f"medfcn-{case}"),
        command=f"napari Train dock: {case}, {minutes:g} min",
        postprocess=postprocess,
        **carried,
    )
    for path, array in ((config.images, scan.array), (config.labels, label)):
        Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        Path(path).touch(mode=0o600)  # created private, before a voxel is written
        os.chmod(path, 0o600)
        sitk.WriteImage(scan.to_sitk(np.asarray(array)), path)
        os.chmod(path, 0o600)  # in case the writer replaced the file
    return config
