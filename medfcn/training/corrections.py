"""Corrections to training runs: what the napari Train dock calls (and tests and scripts can call the same way).

A user segments a scan, corrects some slices of the prediction and fine-tunes. :func:`correction_label` turns the
corrected label map into a partial label map: in ``edited`` mode the slices (along one axis) where the correction
differs from the prediction are annotated whole and every other voxel becomes the ignore value; in ``whole`` mode
the whole map counts as checked. :func:`prepare_correction_run` writes the scan and that label into a folder and
returns the :class:`~medfcn.training.options.TrainConfig` of a fine-tuning run on them, to be run with
:func:`medfcn.training.train.iter_train`; :func:`save_trained_model` copies the result where the user wants it.

>>> pred = np.zeros((4, 3, 5), np.uint8); fixed = pred.copy(); fixed[1:3, 1, 2] = 1; fixed[0, 0, 4] = 1
>>> label, slices = correction_label(pred, fixed, CorrectionMode.EDITED, axis=2)
>>> slices, int((label != 255).sum()), int(label[1, 1, 2])
([2, 4], 24, 1)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from medfcn.choices import parse_choice
from medfcn.data.scan import Scan
from medfcn.errors import MedfcnError, OutputError, UsageError
from medfcn.training.dataset import IGNORE
from medfcn.training.options import FINETUNE_LR, TrainConfig

__all__ = [
    "CorrectionMode",
    "StartModel",
    "correction_label",
    "prepare_correction_run",
    "iter_train_process",
    "save_trained_model",
]

log = logging.getLogger(__name__)

STEPS_PER_EPOCH = 25  # short epochs: a model is saved (and Cancel keeps it) every ~10-20 s on a laptop CPU


class CorrectionMode(StrEnum):
    """Which voxels of a corrected label map count as annotated."""

    EDITED = "edited slices only"  # slices that differ from the prediction; the rest is not annotated
    WHOLE = "whole layer checked"  # every voxel


@dataclass(frozen=True)
class StartModel:
    """Where training starts: a model file (``path``; ``None`` for a new model), or a new model with
    ``label_names`` (background first)."""

    path: Path | None = None
    label_names: tuple[str, ...] = ()


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
    the fewest slices when ``axis`` is None), the rest ``ignore``; ``whole``: ``corrected`` as it is. Raises
    :class:`MedfcnError` (naming ``name``) when there is no prediction or no edit in ``edited`` mode, a label value
    that does not fit uint8 or equals ``ignore``, or shapes that differ."""
    mode = parse_choice(CorrectionMode, mode, "correction mode", UsageError)
    corrected = np.asarray(corrected)
    if corrected.size and (corrected.min() < 0 or corrected.max() > 255 or np.any(corrected == ignore)):
        raise MedfcnError(f"{name}: label values must be class ids from 0 to 254 ({ignore} means not annotated)")
    if mode is CorrectionMode.WHOLE:
        return corrected.astype(np.uint8), list(range(corrected.shape[2 if axis is None else axis]))
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
        raise MedfcnError(f"{name}: no slice differs from the prediction: paint the corrections first")
    if axis is None:
        axis = next(a for a in axes if edited_slices(prediction, corrected, a) == slices)
    label = np.full(corrected.shape, ignore, np.uint8)
    index = [slice(None)] * corrected.ndim
    index[axis] = slices
    label[tuple(index)] = corrected[tuple(index)]
    return label, slices


def _case_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "scan"


def prepare_correction_run(
    folder: Path,
    scan: Scan,
    label: np.ndarray,
    start: StartModel,
    *,
    minutes: float,
    output: Path,
    ignore: int = IGNORE,
    seed: int = 0,
) -> TrainConfig:
    """Write ``scan`` and its partial ``label`` (on the scan's grid) into ``folder``/images and /labels and return
    the configuration of a run on them: fine-tuning ``start.path`` (its card and network kept, the soft target of
    its own predictions on unannotated voxels, replay of its data when at hand), or a new model with
    ``start.label_names``; ``minutes`` of training, the model written to ``output``. Raises
    :class:`MedfcnError` (a label on another grid, label values that are not classes of the start model)."""
    import SimpleITK as sitk

    from medfcn.model.card import MAX_CLASSES

    if tuple(label.shape) != scan.shape:
        raise MedfcnError(f"the label map {label.shape} is not on the grid of the scan {scan.case} {scan.shape}")
    if not minutes > 0:
        raise UsageError(f"the time budget must be a positive number of minutes, got {minutes}")
    case = _case_name(scan.case)
    paths = {}
    for kind, array in (("images", scan.array), ("labels", label)):
        (folder / kind).mkdir(parents=True, exist_ok=True)
        paths[kind] = folder / kind / f"{case}.nii.gz"
        sitk.WriteImage(scan.to_sitk(np.asarray(array)), str(paths[kind]))
    common = dict(
        images=str(paths["images"]),
        labels=str(paths["labels"]),
        output=str(output),
        max_minutes=float(minutes),
        epochs=10_000,  # the time budget ends the run
        steps_per_epoch=STEPS_PER_EPOCH,
        val_cases=0,
        ignore_label=ignore,
        seed=seed,
        command=f"napari Train dock: {case}, {minutes:g} min",
    )
    if start.path is not None:
        from medfcn.training.finetune import load_start_model

        card = load_start_model(start.path).card
        net = card.network
        return TrainConfig(
            **common,
            init=str(start.path),
            label_names=(),
            architecture=card.architecture,
            variant=net.get("variant", "fcn8s"),
            upsampling=net.get("upsampling", "resize_conv"),
            width=int(net.get("width", 16)),
            context=(int(net.get("in_channels", 3)) - 1) // 2,
            lr=FINETUNE_LR,
        )
    names = tuple(n.strip() for n in start.label_names if n.strip())
    if len(names) < 2 or len(set(names)) != len(names) or len(names) > min(MAX_CLASSES, ignore):
        raise UsageError(f"a new model needs at least two distinct label names, background first; got {names}")
    return TrainConfig(**common, label_names=names, name=f"medfcn-{case}", val_copies=1)


def _train_child(config: TrainConfig, queue, cancel) -> None:
    """The child process of :func:`iter_train_process`: the run's progress, then ("done", summary) or
    ("error", exception) on ``queue``."""
    import os

    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))  # a core stays free for the viewer
    from medfcn.training.train import iter_train

    try:
        run = iter_train(config, cancel=cancel.is_set)
        while True:
            try:
                queue.put(("progress", next(run)))
            except StopIteration as stop:
                queue.put(("done", stop.value))
                return
    except MedfcnError as exc:
        queue.put(("error", type(exc)(str(exc))))
    except BaseException as exc:  # anything else, said in one line in the parent
        queue.put(("error", MedfcnError(f"training failed: {type(exc).__name__}: {exc}")))


def iter_train_process(config: TrainConfig, cancel: Callable[[], bool] | None = None):
    """:func:`~medfcn.training.train.iter_train` in a child process (spawned), as a generator of its
    :class:`~medfcn.training.train.TrainProgress` that returns its summary; ``cancel()`` is polled every 0.1 s
    and passed on. For an interactive caller (the napari Train dock): a thread that trains in the viewer's own
    process holds the GIL in stretches (imports, C code) and stalled the viewer's event loop for 0.5-2.5 s on a
    busy 2-core machine; a process costs a few seconds to start (torch and MONAI imported again) and stalls
    nothing. Raises what the run raised (:class:`MedfcnError`), or MedfcnError if the process dies."""
    import multiprocessing
    import queue as queues
    import threading

    context = multiprocessing.get_context("spawn")
    messages, stop = context.Queue(), context.Event()
    process = context.Process(target=_train_child, args=(config, messages, stop), daemon=True)
    process.start()
    try:
        while True:
            if cancel is not None and cancel():
                stop.set()
            try:
                kind, value = messages.get(timeout=0.1)
            except queues.Empty:
                if not process.is_alive():
                    status = process.exitcode
                    raise MedfcnError(f"the training process ended unexpectedly (exit status {status})") from None
                continue
            if kind == "progress":
                yield value
            elif kind == "done":
                return value
            else:
                raise value
    finally:  # the child has sent its last message (or the caller left): it ends by itself, joined aside
        stop.set()
        threading.Thread(target=_reap, args=(process,), daemon=True).start()


def _reap(process, timeout: float = 60.0) -> None:
    """Wait for a child process that was told to stop; end it if it does not."""
    process.join(timeout)
    if process.is_alive():
        process.terminate()
        process.join()


def save_trained_model(source: Path, target: Path, in_use: list[Path | None]) -> Path:
    """Copy the trained model ``source`` to ``target`` (atomically: a failed copy leaves ``target`` as it was).
    Raises :class:`OutputError` when ``target`` is a model in use (``in_use``: the start model, the model of the
    Segment dock, the bundled one) or the trained model itself, or a folder."""
    import shutil

    from medfcn.data.writer import atomic_write
    from medfcn.model.checkpoint import DEFAULT_MODEL_PATH

    target = Path(target).expanduser()
    if target.is_dir():
        raise OutputError(f"{target}: is a folder; give the model file to write, e.g. {target / 'model.safetensors'}")
    used = [Path(p).resolve() for p in (*in_use, DEFAULT_MODEL_PATH, source) if p is not None]
    if target.resolve() in used:
        raise OutputError(f"{target}: is a model in use (the start model or the one segmenting); save to a new file")
    return atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))
