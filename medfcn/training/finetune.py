"""Fine-tuning (``medfcn train --init MODEL``): start from a model, learn a few corrected slices, keep the rest.

What the start model knew elsewhere is kept three ways, each measured in ``benchmarks/bench_finetune.py``:

- **its card**: the new model has the start model's labels, label codes, frame (orientation, spacing), slice axes,
  normalisation, post-processing and decision weights; only the weights, the training record and the metrics change
  (:func:`start_card`);
- **its own predictions as a soft target** on every voxel the user did not annotate (:class:`Teacher`, weighted by
  ``--distill``): an annotated axial slice teaches the rows it crosses in coronal and sagittal slices, the rest of
  those slices keeps saying what the start model said;
- **replay of the data its card records**, when that data is at hand and unchanged (the card's ``data_sha256``
  matches the files found): ``--replay`` of the training volumes are drawn from it (:func:`replay_pairs`).

Batch norm keeps the start model's statistics (its layers stay in eval mode): a few slices of one scan are no
estimate of the statistics of every scan.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from medfcn.data.pairs import LabelledPair, data_sha256
from medfcn.errors import ModelError

if TYPE_CHECKING:
    from medfcn.model.card import ModelCard
    from medfcn.model.checkpoint import Model

__all__ = ["start_card", "load_start_model", "replay_pairs", "Teacher", "freeze_batchnorm"]

log = logging.getLogger(__name__)


def load_start_model(path: str | Path) -> Model:
    """The model ``--init`` names; raises :class:`ModelError` (``--init PATH: ...``) for one that cannot be
    fine-tuned: missing, not a medfcn model, or damaged."""
    from medfcn.model.checkpoint import load_model

    try:
        return load_model(path)
    except ModelError as exc:
        raise ModelError(f"--init {path}: cannot be fine-tuned: {exc}") from None


def start_card(init: ModelCard, network: dict) -> ModelCard:
    """The new model's card: ``init``'s, with ``network`` (the same, or a finer variant grown from it) and no
    training record or metrics yet."""
    return replace(init, network=dict(network), training={}, metrics={})


def load_init(network: torch.nn.Module, card: ModelCard, init: Model) -> str:
    """Copy the weights of ``init`` into ``network`` (built from ``card``); ``card``'s network must be ``init``'s,
    or a finer FCN variant grown from it (:meth:`FCNConfig.grows_from`). Returns ``init``'s SHA-256 (taken when it
    was read: OUTPUT may not be the same file, but the record holds what training started from). Raises
    :class:`ModelError`."""
    path = init.path
    if card.labels != init.card.labels:  # a new task: the encoder that knows the images, a new classifier
        return _load_encoder(network, card, init)
    if init.card.architecture == card.architecture and init.card.network == card.network:
        network.load_state_dict(init.network.state_dict())
    elif _grows_variant(init.card, card):
        from medfcn.model.network import load_coarser_weights

        try:
            fresh = load_coarser_weights(network, init.network.state_dict())
        except ModelError as exc:
            raise ModelError(f"--init {path}: {exc}") from None
        log.info(
            "growing %s into %s: %d new skip tensors start at their initialisation",
            init.card.network.get("variant"),
            card.network.get("variant"),
            len(fresh),
        )
    else:
        raise ModelError(
            f"--init {path}: its network ({init.card.architecture} {init.card.network}) differs from the one "
            f"configured here ({card.architecture} {card.network}); give the same --width/--context/--upsampling "
            "(the --variant may be finer than the file's: its extra skip layers start at zero)"
        )
    log.info("starting from the weights of %s (%s)", path, (init.sha256 or "")[:12])
    return init.sha256 or ""


ENCODER = ("stem.", "levels.")  # the FCN's layers that do not depend on the labels


def _load_encoder(network: torch.nn.Module, card: ModelCard, init: Model) -> str:
    """A new task from ``init``: its encoder's weights and batch-norm statistics (:data:`ENCODER`) copied into
    ``network``, whose classifier keeps its initialisation. Raises :class:`ModelError` for another architecture or
    an encoder of other shapes."""
    from medfcn.model.card import Architecture

    if not init.card.architecture == card.architecture == Architecture.FCN.value:
        raise ModelError(f"--init {init.path}: a new task keeps an FCN's encoder; this is a {init.card.architecture}")
    own = network.state_dict()
    encoder = {k: v for k, v in init.network.state_dict().items() if k.startswith(ENCODER)}
    wrong = [k for k, v in encoder.items() if k not in own or own[k].shape != v.shape]
    if wrong or not encoder:
        raise ModelError(
            f"--init {init.path}: its encoder does not fit the network configured here ({', '.join(wrong[:3])}); "
            "give the same --width and --context"
        )
    network.load_state_dict(encoder, strict=False)
    log.info("new task from %s: encoder kept (%d tensors), classifier new", init.path, len(encoder))
    return init.sha256 or ""


def _grows_variant(init_card, card) -> bool:
    """Both cards are FCNs and ``card``'s grows from ``init_card``'s (:meth:`FCNConfig.grows_from`)."""
    from medfcn.model.card import Architecture
    from medfcn.model.network import FCNConfig

    if not init_card.architecture == card.architecture == Architecture.FCN.value:
        return False
    return FCNConfig.from_dict(dict(card.network)).grows_from(FCNConfig.from_dict(dict(init_card.network)))


def replay_pairs(card: ModelCard, roots: list[Path] | None = None) -> list[LabelledPair]:
    """The labelled pairs ``card``'s training record names, if they are at hand and unchanged: looked up under
    the record's ``--images``/``--labels`` folders relative to each of ``roots`` (default: the working folder and
    the folder above the installed ``medfcn`` package), accepted only when their bytes hash to the record's
    ``data_sha256``. Empty, with a warning (the user asked for replay), when not found."""
    record = card.training or {}
    data, settings = record.get("data") or [], record.get("settings") or {}
    if not data or not record.get("data_sha256"):
        log.warning("--replay: the start model's card records no training data: training without replay")
        return []
    if roots is None:
        import medfcn

        roots = [Path.cwd(), Path(medfcn.__file__).resolve().parents[1]]
    for root in roots:
        try:
            pairs = [
                LabelledPair(
                    str(d["case"]),
                    root / settings.get("images", "") / d["image"],
                    root / settings.get("labels", "") / d["label"],
                )
                for d in data
            ]
        except (KeyError, TypeError):  # a malformed record: nothing to look for, said below like data not found
            break
        if all(p.image.is_file() and p.label.is_file() for p in pairs) and data_sha256(pairs) == record["data_sha256"]:
            log.info("replaying the start model's training data: %s", ", ".join(str(p.image) for p in pairs))
            return pairs
    log.warning(
        "--replay: the start model's training data (%s) is not at hand unchanged: training without replay",
        ", ".join(str(d.get("image", d)) if isinstance(d, dict) else str(d) for d in data)[:200],
    )
    return []


class Teacher:
    """The start model, frozen: ``probabilities(x)`` (B, C, H, W) for inputs (B, K, H, W), as it would predict."""

    def __init__(self, network: torch.nn.Module, device: torch.device) -> None:
        self.network = network.to(device).eval()
        for p in self.network.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.network(x).float(), dim=1)


def freeze_batchnorm(network: torch.nn.Module) -> None:
    """Batch-norm layers of ``network`` back in eval mode (their running statistics used and kept as they are)."""
    for m in network.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
