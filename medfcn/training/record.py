"""What a trained model file says of itself: the card of the model a run trains, and the record of how it was made.

:func:`build_card` is where a configuration is resolved (:meth:`~medfcn.training.options.TrainConfig.resolve`: the
label names, network and learning rate left ``None`` come from the ``--init`` model or the defaults), once, and the
card built from it: a new model's from the options, a fine-tuned model's from its start model's card
(:func:`medfcn.training.finetune.start_card`). :func:`training_record` is what the card records of a run.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

from medfcn import __version__
from medfcn.data.pairs import LabelledPair, data_sha256

if TYPE_CHECKING:
    from medfcn.model.card import ModelCard
    from medfcn.training.options import TrainConfig

__all__ = ["build_card", "training_record"]


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
    return record
