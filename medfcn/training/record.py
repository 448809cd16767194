"""What a trained model file says of itself: the card of the model a run trains, and the record of how it was made.

:func:`build_card` is where a configuration is resolved (:meth:`~medfcn.training.options.TrainConfig.resolve`: the
label names, network and learning rate left ``None`` come from the ``--init`` model or the defaults), once, and the
card built from it: a new model's from the options, a fine-tuned model's from its start model's card
(:func:`medfcn.training.finetune.start_card`). :func:`training_record` is what the card records of a run, with
no path of the machine it ran on (:func:`publishable`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medfcn import __version__
from medfcn.data.pairs import LabelledPair, data_sha256

if TYPE_CHECKING:
    from medfcn.model.card import ModelCard
    from medfcn.training.options import TrainConfig

__all__ = ["build_card", "training_record", "publishable"]


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
) -> dict[str, Any]:
    """What the card records of a run: the command, the data (its hash; per case the voxels and whole slices
    annotated, ``annotation`` by case), the ignore label, the start model's SHA-256, the replayed data, epochs and
    minutes."""
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
