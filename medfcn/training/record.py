"""What a trained model file says of itself: the card of the model a run trains, and the record of how it was made.

:func:`build_card` is where a configuration is resolved (:meth:`~medfcn.training.options.TrainConfig.resolve`: the
label names, network and learning rate left ``None`` come from the ``--init`` model or the defaults), once, and the
card built from it: a new model's from the options, a fine-tuned model's from its start model's card
(:func:`medfcn.training.finetune.start_card`). :func:`training_record` is what the card records of a run, with
no path of the machine it ran on (:func:`publishable`), and :func:`record_expectations_in` what the trained model
expects of the scans it will see (for quality verdicts).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medfcn import __version__
from medfcn.data.pairs import LabelledPair, data_sha256
from medfcn.errors import MedfcnError

if TYPE_CHECKING:
    from medfcn.model.card import ModelCard
    from medfcn.training.options import TrainConfig

__all__ = ["build_card", "training_record", "publishable", "record_expectations_in", "MAX_EXPECTATION_CASES"]

log = logging.getLogger(__name__)


def build_card(config: TrainConfig, init: ModelCard | None = None) -> tuple[TrainConfig, ModelCard]:
    """The configuration resolved against ``init`` (the ``--init`` model's card; ``None`` for a new model) and the
    card of the model to train: ``init``'s with the resolved network (equal, or a finer variant:
    :func:`medfcn.training.finetune.load_init` checks), or a new card from the options. Raises
    :class:`~medfcn.errors.UsageError` (label names that differ from the start model's)."""
    from medfcn.model.card import ModelCard
    from medfcn.model.config import FCNConfig
    from medfcn.training.finetune import start_card

    config = config.resolve(init)
    architecture, network = config.network.resolve(init)
    labels = config.label_names
    if init is not None and config.new_task(init):  # a new task: the start model's frame, new labels
        card = start_card(init, network | {"num_classes": len(labels)})
        return config, replace(
            card,
            name=config.name,
            description=config.description,
            labels={name: i for i, name in enumerate(labels)},
            label_codes=dict(config.label_codes),
            postprocess=tuple(config.postprocess),
            class_weights=(),
            expectations={},  # the start model's are of its own labels: this run measures the new structure's
        )
    if init is not None:  # the start model's card; its name too, unless the run names the new model
        card = start_card(init, network | {"num_classes": len(labels)})
        renamed = config.name != type(config).name
        return config, replace(card, name=config.name) if renamed else card
    if architecture == "fcn":
        network = FCNConfig(**network, num_classes=len(labels)).to_dict()
    else:
        network = network | {"num_classes": len(labels)}
    card = ModelCard(
        network=network,
        architecture=architecture,
        name=config.name,
        description=config.description,
        labels={name: i for i, name in enumerate(labels)},
        label_codes=dict(config.label_codes),
        modality=config.modality,
        spacing=(config.spacing,) * 3,
        slice_axes=tuple(config.axes),
        postprocess=tuple(config.postprocess),
    )
    return config, card


def training_record(
    config: TrainConfig,
    pairs: list[LabelledPair],
    *,
    epochs: int,
    minutes: float,
    device: str,
    annotation: dict[str, dict[str, Any]],
    init_sha256: str = "",
    replayed: list[LabelledPair] = (),
    start_labels: dict[str, int] | None = None,
) -> dict[str, Any]:
    """What the card records of a run: the command, the data (its hash; per case the voxels and whole slices
    annotated, ``annotation`` by case), the ignore label, the start model's SHA-256, the replayed data, epochs and
    minutes; for a new task (other labels than ``start_labels``, the start model's) what was kept and made anew."""
    settings = {k: v for k, v in asdict(config).items() if k not in ("command", "resume", "network")}
    settings |= {k: v for k, v in asdict(config.network).items()}  # flat, as cards have always recorded them
    record: dict[str, Any] = {
        "command": config.command,
        "data": [p.summary() | annotation.get(p.case, {}) for p in pairs],
        "data_sha256": data_sha256(pairs),
        "ignore_label": config.ignore_label,
        "seed": config.seed,
        "epochs": epochs,
        "minutes": round(minutes, 1),
        "device": device,
        "settings": settings,
        "medfcn_version": __version__,
    }
    if init_sha256:
        settings["init_sha256"] = init_sha256
        record["init"] = {"path": config.init, "sha256": init_sha256}
        if start_labels is not None and tuple(start_labels) != tuple(config.label_names or ()):
            record["init"]["new_task"] = {
                "start_labels": dict(start_labels),
                "kept": "encoder (stem, levels) and its batch-norm statistics",
                "new": "classifier (score, skip scores, upsampling, head)",
            }
        record["replayed"] = [p.summary() for p in replayed]
    return publishable(record)


_TEXT_KEYS = ("name", "description", "modality")  # free text, never a path, whatever it starts with
_TEXT_OPTIONS = tuple(f"--{k}" for k in _TEXT_KEYS)


def publishable(record: Mapping[str, Any], roots: Sequence[str | Path] | None = None) -> dict[str, Any]:
    """A card's training ``record`` that says nothing of the machine it was made on: every absolute path in it (in
    the command's arguments too, ``--opt=PATH`` included) becomes relative to the first of ``roots`` that holds it
    (default: the repository, the folder above the ``medfcn`` package, then the working folder; the folders
    :func:`medfcn.training.finetune.replay_pairs` looks under), else its file name. Everything else is kept, and so
    is free text (a name, description or modality, also as ``--description TEXT`` in the command).

    >>> record = publishable({"command": "medfcn train -o /home/me/runs/m.safetensors --init=/opt/x/a.safetensors",
    ...                      "init": {"path": "/opt/x/a.safetensors", "sha256": "ab"}, "epochs": 3}, roots=["/home/me"])
    >>> record["command"], record["init"], record["epochs"]
    ('medfcn train -o runs/m.safetensors --init=a.safetensors', {'path': 'a.safetensors', 'sha256': 'ab'}, 3)
    """
    import shlex

    if roots is None:
        import medfcn

        roots = [Path(medfcn.__file__).resolve().parents[1], Path.cwd()]
    folders = [Path(r).absolute() for r in roots]

    def path(text: str) -> str:
        if "=" in text and text.startswith("-"):
            option, _, value = text.partition("=")
            return f"{option}={path(value)}"
        if not os.path.isabs(text):
            return text
        p = Path(os.path.normpath(text))
        for root in folders:
            if p == root or root in p.parents:
                return p.relative_to(root).as_posix() or "."
        return p.name

    def words(tokens: list[str]) -> list[str]:
        out = []
        for i, token in enumerate(tokens):
            text = i and tokens[i - 1] in _TEXT_OPTIONS or token.partition("=")[0] in _TEXT_OPTIONS
            out.append(token if text else path(token))
        return out

    def walk(value: Any, key: str = "") -> Any:
        if isinstance(value, Mapping):
            return {k: walk(v, str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v) for v in value]
        if isinstance(value, str) and key == "command":
            try:
                return shlex.join(words(shlex.split(value)))
            except ValueError:  # unbalanced quotes: words as they are
                return " ".join(words(value.split()))
        return path(value) if isinstance(value, str) and key not in _TEXT_KEYS else value

    return walk(record)


MAX_EXPECTATION_CASES = 12  # training cases a run segments to record its expectations (evenly spaced)


def record_expectations_in(
    path: Path, pairs: list[LabelledPair], ignore_label: int, cancel: Callable[[], bool] | None = None
) -> bool:
    """Give the model file ``path`` its card's ``expectations`` (:mod:`medfcn.model.expectations`), measured by
    segmenting up to :data:`MAX_EXPECTATION_CASES` of its training ``pairs`` with it
    (:func:`medfcn.inference.quality.record_expectations`); label volumes come from the label maps, from those that
    hold no ``ignore_label`` voxel (partial annotations say nothing of a structure's size). The weights are kept bit
    for bit (:func:`~medfcn.model.checkpoint.replace_card`). A model trained from one whose card already holds
    expectations keeps them (a few corrected cases would narrow them). Returns whether the card was rewritten;
    ``False`` when cancelled or when no case could be read (logged; the model stays as trained)."""
    import numpy as np

    from medfcn.data.reader import read_scan
    from medfcn.inference.pipeline import Segmenter
    from medfcn.inference.quality import record_expectations
    from medfcn.inference.settings import InferenceSettings
    from medfcn.model.checkpoint import load_model, replace_card

    model = load_model(path)
    if model.card.expectations:
        log.info("%s: keeps the expectations of the model it was trained from", path)
        return False
    chosen = [pairs[int(i)] for i in np.unique(np.linspace(0, len(pairs) - 1, MAX_EXPECTATION_CASES).round())]
    segmenter = Segmenter(model, InferenceSettings(device="cpu"))
    results = []
    for pair in chosen:
        if cancel is not None and cancel():
            return False
        try:
            found = segmenter.segment_and_check(read_scan(pair.image))
            label = read_scan(pair.label)
        except MedfcnError as e:
            log.warning("%s: not used for the model's expectations: %s", pair.case, e)
            continue
        volume = {} if (label.array == ignore_label).any() else _volumes_ml(label, model.card.labels)
        results.append((found.evidence, volume))
    if not results:
        return False
    names = ", ".join(p.case for p in chosen)
    expectations = record_expectations(
        results, f"medfcn train: its own segmentations of {len(results)} training cases ({names})"
    )
    card = model.card
    card.expectations = expectations.to_dict()
    replace_card(path, card)
    return True


def _volumes_ml(label, names: dict[str, int]) -> dict[str, float]:
    import numpy as np

    counts = np.bincount(np.asarray(label.array, dtype=np.int64).ravel(), minlength=max(names.values()) + 1)
    voxel_ml = float(np.prod(label.spacing)) / 1000.0
    return {n: round(float(counts[i]) * voxel_ml, 1) for n, i in names.items() if i > 0 and i < counts.size}
