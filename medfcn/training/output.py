"""Where a trained model may be written, and how: one run at a time (:func:`writing`: a second run writing the same
model is refused), refused before any training when it would lose data (:func:`check_output`), the training state
saved atomically (:func:`save_state`), a trained model copied where the user wants it (:func:`save_trained_model`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medfcn.data.pairs import LabelledPair
from medfcn.errors import OutputError

__all__ = ["check_output", "save_state", "save_trained_model", "state_path", "writing"]

log = logging.getLogger(__name__)


def state_path(output: Path) -> Path:
    """The training state of the run writing ``output`` (what ``--resume`` reads): its ``.state.pt`` sibling."""
    return output.with_name(output.name + ".state.pt")


def hidden_best(output: Path) -> Path:
    """Where a run writing over an existing model at ``output`` keeps its best model until it ends."""
    return output.with_name(f".{output.name}.training.safetensors")


@contextmanager
def writing(output: Path) -> Iterator[None]:
    """Hold ``output``'s lock (``.NAME.lock`` beside it, :mod:`medfcn.data.lock`) for the ``with`` block: the model
    at ``output``, its hidden best and its ``.state.pt`` are one run's (two runs writing one model had each said
    "model written", leaving one run's model beside the other's state). Creates ``output``'s folder. Raises
    :class:`OutputError` when another run holds it or the folder cannot be written."""
    from medfcn.data.lock import holding
    from medfcn.data.writer import check_writable

    check_writable(output.parent, "the model")
    busy = (
        f"{output}: another medfcn train is writing this model ({{holder}}); wait for it to end or write another file"
    )
    with holding(output.with_name(f".{output.name}.lock"), busy):
        yield


def check_output(output: Path, pairs: list[LabelledPair], init: str = "") -> Path:
    """Refuse, before any training, a model path that would lose data; returns where each epoch's best model is
    written. A new OUTPUT is written after every epoch that beats the last; an existing model at OUTPUT is kept
    until the run ends (each epoch's best goes to a hidden sibling, renamed over OUTPUT at the end), so that a
    killed run never leaves a worse model in its place. Raises :class:`OutputError` when OUTPUT is a folder, one
    of the training images or label maps, the ``--init`` model, or an existing file that is not a medfcn model.
    Called under :func:`writing`'s lock."""
    from medfcn.data.writer import check_writable
    from medfcn.errors import ModelError
    from medfcn.model.checkpoint import load_model

    if output.is_dir():
        raise OutputError(f"{output}: is a folder; give the model file to write, e.g. {output / 'model.safetensors'}")
    resolved = output.resolve()
    if any(pair.holds(output) for pair in pairs):
        raise OutputError(f"{output}: is one of the training scans or label maps; write the model to a new file")
    if init and Path(init).exists() and Path(init).resolve() == resolved:
        raise OutputError(f"{output}: is the --init model training starts from; write the new model to a new file")
    check_writable(output.parent, "the model")
    if not output.exists():
        return output
    try:
        load_model(output)
    except ModelError:
        raise OutputError(
            f"{output}: exists and is not a medfcn model; medfcn will not overwrite it: choose a new file"
        ) from None
    best = hidden_best(output)
    log.warning("%s exists: it is replaced when this run ends (until then the best model is %s)", output, best)
    return best


def save_state(path: Path, state: dict[str, Any]) -> Path:
    """Write the training state (what ``--resume`` reads) through :func:`medfcn.data.writer.atomic_write`: a run
    killed while saving keeps the previous state whole. Raises :class:`OutputError`."""
    import torch

    from medfcn.data.writer import atomic_write

    return atomic_write(path, lambda tmp: torch.save(state, tmp))


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
