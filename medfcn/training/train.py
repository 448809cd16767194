"""``medfcn train``: train a slice-wise model on your own labelled scans and write a medfcn model file.

Cases (image + label map, paired by case name, any format medfcn reads) are brought into the model's frame
once and cached (a MONAI ``CacheDataset``). Each training volume is then augmented as a whole
(:class:`medfcn.training.augment.Augmenter`) and batches of slices are drawn from it along the model's slice axes, with
foreground oversampling, stacked with their neighbours exactly as at inference
(:func:`medfcn.inference.engine.slice_stack`). Loss: Dice + cross-entropy (MONAI ``DiceCELoss``); AdamW with warm-up and
cosine decay driven by steps or time, whichever runs out first; mixed precision on a GPU. After every epoch the model is
validated on held-out cases (or, with a single case, on fixed augmented copies of it: reoriented, rescaled,
re-contrasted) with the same multi-axis inference as ``medfcn segment``; the best model is written to OUTPUT, and the
full training state to OUTPUT's ``.state.pt`` sibling so that ``--resume`` continues where a run stopped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfcn import __version__
from medfcn.data.pairs import LabelledPair, data_sha256, find_pairs, input_files
from medfcn.errors import OutputError, UsageError
from medfcn.model.checkpoint import save_model
from medfcn.training.dataset import TrainingVolume, cache_volumes, sample_batch
from medfcn.training.options import TrainConfig

__all__ = ["TrainConfig", "train"]

log = logging.getLogger(__name__)


# -- model and evaluation ---------------------------------------------------------------------------------------


def _card(config: TrainConfig, n_classes: int):
    from medfcn.model.card import ModelCard
    from medfcn.model.network import FCNConfig

    in_channels = 2 * config.context + 1
    if config.architecture == "fcn":
        network = FCNConfig(
            in_channels=in_channels,
            num_classes=n_classes,
            variant=config.variant,
            upsampling=config.upsampling,
            width=config.width,
        ).to_dict()
    else:
        network = {"in_channels": in_channels, "num_classes": n_classes}
    return ModelCard(
        network=network,
        architecture=config.architecture,
        name=config.name,
        description=config.description,
        labels={name: i for i, name in enumerate(config.label_names)},
        label_codes=dict(config.label_codes),
        modality=config.modality,
        spacing=(config.spacing,) * 3,
        slice_axes=tuple(config.axes),
        postprocess=tuple(config.postprocess),
    )


def frame_dice(network: torch.nn.Module, items: list[TrainingVolume], card, device: torch.device) -> float:
    """Mean foreground Dice over ``items`` (normalised frame volumes) through the inference path's own stages:
    multi-axis probabilities and post-processing (:meth:`~medfcn.inference.pipeline.Segmenter.probabilities`,
    :meth:`~medfcn.inference.pipeline.Segmenter.postprocess`), the arg-max taken on the model's frame."""
    from medfcn.evaluation.metrics import dice
    from medfcn.inference.pipeline import Segmenter
    from medfcn.inference.postprocess import argmax_classes
    from medfcn.inference.settings import InferenceSettings
    from medfcn.model.checkpoint import Model

    segmenter = Segmenter(Model(network=network, card=card), InferenceSettings(device=str(device), batch_size=32))
    scores = []
    for item in items:
        pred = argmax_classes(segmenter.postprocess(segmenter.probabilities(item.image)))
        scores += [dice(pred == lab, item.label == lab) for lab in range(1, len(card.labels))]
    return float(np.mean(scores)) if scores else float("nan")


def check_output(output: Path, pairs: list[LabelledPair], init: str = "") -> Path:
    """Refuse, before any training, a model path that would lose data; returns where each epoch's best model is
    written. A new OUTPUT is written after every epoch that beats the last; an existing model at OUTPUT is kept
    until the run ends (each epoch's best goes to a hidden sibling, renamed over OUTPUT at the end), so that a
    killed run never leaves a worse model in its place. Raises :class:`OutputError` when OUTPUT is a folder, one
    of the training images or label maps, the ``--init`` model, or an existing file that is not a medfcn model."""
    from medfcn.data.writer import check_writable
    from medfcn.errors import ModelError
    from medfcn.model.checkpoint import load_model

    if output.is_dir():
        raise OutputError(f"{output}: is a folder; give the model file to write, e.g. {output / 'model.safetensors'}")
    resolved = output.resolve()
    if resolved in input_files(pairs) or any(
        resolved.is_relative_to(p.resolve()) for q in pairs for p in (q.image, q.label) if p.is_dir()
    ):
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
    best = output.with_name(f".{output.name}.training.safetensors")
    log.warning("%s exists: it is replaced when this run ends (until then the best model is %s)", output, best)
    return best


def save_state(path: Path, state: dict[str, Any]) -> Path:
    """Write the training state (what ``--resume`` reads) through :func:`medfcn.data.writer.atomic_write`: a run killed
    while saving keeps the previous state whole. Raises :class:`OutputError`."""
    from medfcn.data.writer import atomic_write

    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def _lr_factor(progress: float) -> float:
    warm = 0.03
    if progress < warm:
        return max(progress / warm, 0.02)
    t = min(1.0, (progress - warm) / (1 - warm))
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t))


# -- the loop ------------------------------------------------------------------------------------------------


@dataclass
class _Standing:
    """Where a run stands after its last finished epoch: what the training state keeps and ``--resume`` restores."""

    epoch: int = 0
    best: float = -1.0
    elapsed: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


def train(config: TrainConfig, *, progress: bool = True) -> dict[str, Any]:
    """Train as configured; writes the best model to ``config.output``. Returns a summary dict."""
    from medfcn.inference.engine import select_device

    torch.manual_seed(config.seed)
    output = Path(config.output)
    state_path = output.with_name(output.name + ".state.pt")
    pairs = find_pairs(config.images, config.labels, config.pairs)
    best_path = check_output(output, pairs, config.init)
    card = _card(config, len(config.label_names))
    device = select_device(config.device)
    log.info("training on %d case(s), device %s", len(pairs), device)
    train_items, val_items, validation = _split(cache_volumes(pairs, card), config)
    trainer = _Trainer(config, card, device, train_items)
    run = trainer.restore(state_path) if config.resume else _Standing()

    t0 = time.monotonic() - run.elapsed
    epoch, stopped_by_time = run.epoch, False
    for epoch in range(run.epoch, config.epochs):
        loss, stopped_by_time = trainer.train_epoch(epoch, t0, run.best, progress)
        trainer.settle_batchnorm()
        trainer.network.eval()
        dice = frame_dice(trainer.network, val_items, card, device)
        run.epoch, run.elapsed = epoch + 1, time.monotonic() - t0
        _report_epoch(run, loss, dice)
        if dice > run.best:
            run.best = dice
            card.metrics = {"validation_dice": round(dice, 4), "epoch": run.epoch, "validation": validation}
            card.training = _training_record(config, pairs, run.epoch, run.elapsed, device, trainer.init_sha256)
            save_model(best_path, trainer.network, card)
        save_state(state_path, trainer.state(run))
        if stopped_by_time:
            break
    if best_path != output and best_path.exists():
        os.replace(best_path, output)  # the earlier model at OUTPUT is replaced only by a finished run's best
    return {
        "output": str(output),
        "best_validation_dice": run.best,
        "epochs": epoch + 1,
        "history": run.history,
        "minutes": round((time.monotonic() - t0) / 60, 2),
        "stopped_by_time": stopped_by_time,
    }


def _split(cases: list[TrainingVolume], config: TrainConfig) -> tuple[list, list, str]:
    """Training items, validation items and how validation is done (recorded in the card). With one subject,
    validation is on fixed transformed copies of it (and the original)."""
    from medfcn.training.augment import Augmenter

    n_val = min(config.val_cases, len(cases) - 1) if len(cases) > 1 else 0
    if n_val:
        return cases[n_val:], cases[:n_val], "held-out cases"
    val_rng = np.random.default_rng([config.seed, 99991])
    base, augment = cases[0], Augmenter(spacing=config.spacing)
    copies = [
        TrainingVolume(f"{base.case} copy {i + 1}", *augment(base.image, base.label, val_rng))
        for i in range(config.val_copies)
    ]
    return cases, [base, *copies], f"original + {config.val_copies} augmented copies"


def _report_epoch(run: _Standing, loss: float, dice: float) -> None:
    """Record an epoch in the history and say it: one line per epoch even with --quiet (which hides only the
    progress bar)."""
    run.history.append({"epoch": run.epoch, "loss": loss, "val_dice": dice, "minutes": round(run.elapsed / 60, 2)})
    log.info("epoch %d: loss %.4f, validation Dice %.4f", run.epoch, loss, dice)
    print(
        f"epoch {run.epoch}: loss {loss:.4f}, validation Dice {dice:.4f}, {run.elapsed / 60:.1f} min",
        file=sys.stderr,
    )


class _Trainer:
    """The network, its optimiser and the training data of one run, set up once (weights from ``--init``)."""

    def __init__(self, config: TrainConfig, card, device: torch.device, items: list[TrainingVolume]) -> None:
        from medfcn._monai import import_monai

        import_monai()  # the one way medfcn imports MONAI
        from monai.losses import DiceCELoss

        from medfcn.model.checkpoint import build_from_card
        from medfcn.training.augment import Augmenter

        self.config, self.card, self.device, self.items = config, card, device, items
        self.augmenter = Augmenter(spacing=config.spacing) if config.augment else None
        self.network = build_from_card(card).to(device)
        self.init_sha256 = _load_init(self.network, card, config.init) if config.init else ""
        self.synthesise = _synthesiser(items, config)
        self.optimiser = torch.optim.AdamW(self.network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
        self.amp = device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self._bn_inputs: list[torch.Tensor] | None = None

    def state(self, run: _Standing) -> dict[str, Any]:
        """The training state to save after an epoch (read back by :meth:`restore`)."""
        return {
            "network": self.network.state_dict(),
            "optimiser": self.optimiser.state_dict(),
            "epoch": run.epoch,
            "best": run.best,
            "elapsed": run.elapsed,
            "history": json.dumps(run.history),
        }

    def restore(self, path: Path) -> _Standing:
        """Load the state saved at ``path`` into the network and optimiser (``--resume``); where the run stood.
        Raises :class:`UsageError` for a state of another network or a damaged file."""
        if not path.exists():
            log.warning("no training state at %s: starting from scratch", path)
            return _Standing()
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
            self.network.load_state_dict(state["network"])
            self.optimiser.load_state_dict(state["optimiser"])
            run = _Standing(int(state["epoch"]), float(state["best"]), float(state["elapsed"]))
            run.history = json.loads(state["history"])
        except Exception as exc:  # another network, a damaged or foreign file: torch raises many types
            text = str(exc).strip().splitlines()
            raise UsageError(
                f"{path}: cannot resume from this training state ({type(exc).__name__}: "
                f"{text[0] if text else ''}); it was written for another network or is damaged: "
                "drop --resume or remove it"
            ) from None
        log.info("resuming after epoch %d (best validation Dice %.4f)", run.epoch, run.best)
        return run

    def settle_batchnorm(self) -> None:
        """Batch norm's statistics averaged over ``config.bn_batches`` training batches (see
        :func:`medfcn.model.network.recompute_batchnorm`), the same batches at every epoch and after ``--resume``: drawn
        once, as training draws them, from a stream of their own, and kept (float16) for the run."""
        from medfcn.model.network import recompute_batchnorm

        if self.config.bn_batches <= 0:
            return
        if self._bn_inputs is None:
            rng = np.random.default_rng([self.config.seed, 7919])
            self._bn_inputs = [x.half() for x, _ in self._batches(rng, self.config.bn_batches)]
        recompute_batchnorm(self.network, (x.to(self.device, torch.float32) for x in self._bn_inputs))

    def _batches(self, rng: np.random.Generator, n: int):
        """``n`` training batches (inputs, labels) drawn as training draws them: a new volume (synthesised or
        augmented) every ``steps_per_volume`` batches, a random slice axis per batch."""
        config, card = self.config, self.card
        for step in range(n):
            if step % config.steps_per_volume == 0:
                item = self._volume(rng)
            axis = int(rng.choice(card.slice_axes))
            yield sample_batch(*item, axis, config.batch_size, card.context, config.foreground_fraction, rng)

    def _volume(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A training case drawn at random, synthesised or augmented: (image, label) on the model's frame."""
        case = self.items[int(rng.integers(len(self.items)))]
        if self.synthesise is not None and rng.random() < self.config.synth:
            return self.synthesise(case, rng)
        if self.augmenter is not None:
            return self.augmenter(case.image, case.label, rng)
        return case.image, case.label

    def train_epoch(self, epoch: int, t0: float, best: float, progress: bool) -> tuple[float, bool]:
        """One epoch of ``steps_per_epoch`` steps; returns its mean loss and whether the time budget ran out.
        The learning rate follows steps or time (``t0``: the run's start), whichever runs out first."""
        from tqdm import tqdm

        config = self.config
        rng = np.random.default_rng([config.seed, epoch])  # same stream whether or not the run was resumed
        total_steps = config.epochs * config.steps_per_epoch
        budget = config.max_minutes * 60 if config.max_minutes else math.inf
        self.network.train()
        bar = tqdm(
            enumerate(self._batches(rng, config.steps_per_epoch)),
            total=config.steps_per_epoch,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            disable=not progress,
            leave=False,
            file=sys.stderr,
        )
        losses: list[float] = []
        stopped_by_time = False
        for step, (x, y) in bar:
            done = (epoch * config.steps_per_epoch + step) / total_steps
            lr = config.lr * _lr_factor(max(done, (time.monotonic() - t0) / budget))
            losses.append(self._step(x.to(self.device), y.to(self.device), lr))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", best=f"{max(best, 0):.4f}")
            if time.monotonic() - t0 > budget:
                stopped_by_time = True
                break
        bar.close()
        return float(np.mean(losses)), stopped_by_time

    def _step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> float:
        """One optimiser step on inputs ``x`` (B, K, H, W) and labels ``y`` (B, 1, H, W); returns the loss."""
        for group in self.optimiser.param_groups:
            group["lr"] = lr
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            loss = self.loss_fn(self.network(x), y)
        self.optimiser.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimiser)
        self.scaler.update()
        return loss.item()


def _load_init(network: torch.nn.Module, card, path: str) -> str:
    """Start from the weights of the model file ``path`` (fine-tuning); its network must match ``card``'s.
    Returns the file's SHA-256 (taken now: OUTPUT may be the same file and is overwritten later)."""
    from medfcn.errors import ModelError
    from medfcn.model.checkpoint import load_model

    init = load_model(path)
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
    log.info("starting from the weights of %s (%s)", path, init.sha256[:12])
    return init.sha256


def _grows_variant(init_card, card) -> bool:
    """Both cards are FCNs and ``card``'s grows from ``init_card``'s (:meth:`FCNConfig.grows_from`)."""
    from medfcn.model.card import Architecture
    from medfcn.model.network import FCNConfig

    if not init_card.architecture == card.architecture == Architecture.FCN.value:
        return False
    return FCNConfig.from_dict(dict(card.network)).grows_from(FCNConfig.from_dict(dict(init_card.network)))


def _synthesiser(items: list[TrainingVolume], config: TrainConfig):
    """``draw(case, rng) -> (image, label)`` over tissue maps built once per training case, or None (--synth 0)."""
    if config.synth <= 0:
        return None
    from medfcn.training.synth import Synthesiser, tissue_map

    for item in items:
        item.tissue = tissue_map(item.image, item.label)
    synthesiser = Synthesiser(spacing=config.spacing)
    log.info("synthesising %.0f%% of the training volumes from tissue maps", 100 * config.synth)
    return lambda case, rng: synthesiser(case.image, case.tissue, rng)


def _training_record(
    config: TrainConfig, pairs, epochs: int, seconds: float, device, init_sha256: str = ""
) -> dict[str, Any]:
    settings = {k: v for k, v in asdict(config).items() if k not in ("command", "resume")}
    if init_sha256:
        settings["init_sha256"] = init_sha256
    return {
        "command": config.command,
        "data": [p.summary() for p in pairs],
        "data_sha256": data_sha256(pairs),
        "seed": config.seed,
        "epochs": epochs,
        "minutes": round(seconds / 60, 1),
        "device": str(device),
        "settings": settings,
        "medfcn_version": __version__,
    }


# -- command line --------------------------------------------------------------------------------------------
