"""``medfcn train``: train a slice-wise model on your own labelled scans and write a medfcn model file.

Cases (image + label map, paired by case name, any format medfcn reads) are brought into the model's frame once and
cached (a MONAI ``CacheDataset``). Each training volume is then augmented as a whole
(:class:`medfcn.training.augment.Augmenter`) and batches of slices are drawn from it along the model's slice axes,
with foreground oversampling, stacked with their neighbours exactly as at inference
(:func:`medfcn.inference.engine.slice_stack`). Loss: Dice + cross-entropy over annotated voxels
(:class:`medfcn.training.loss.PartialDiceCELoss`: a label map may mark voxels "not annotated" with ``--ignore-label``,
255 by default); AdamW with warm-up and cosine decay driven by steps or time, whichever runs out first; mixed
precision on a GPU. After every epoch the model is validated on held-out cases (or, with a single case, on fixed
augmented copies of it: reoriented, rescaled, re-contrasted) with the same multi-axis inference as ``medfcn segment``;
the best model is written to OUTPUT, and the full training state to OUTPUT's ``.state.pt`` sibling so that
``--resume`` continues where a run stopped.

Fine-tuning (``--init MODEL``, :mod:`medfcn.training.finetune`) keeps the start model's card, its batch-norm
statistics, its own predictions on unannotated voxels as a soft target (``--distill``) and replays the data its card
records when it is at hand (``--replay``). With no held-out case, a fine-tuning run keeps its last epoch (the
learning rate has decayed to the end of the budget); the Dice on the annotated voxels is reported, not used to
choose, since those are the voxels it trained on.

:func:`iter_train` is the run as a generator of :class:`TrainProgress` (after every step and every epoch), with a
``cancel`` callable polled between steps: the napari Train dock runs it in a child process, :func:`train` (the CLI)
runs it with a progress bar.

One module (over 400 lines) because it is one loop: what the run owns between epochs (the network, optimiser,
batch-norm settling, the state ``--resume`` reads) is the :class:`_Trainer`, and the rules around it (where the model
may be written, the learning-rate schedule, what the card records) act on the same run; the data it trains on
(:mod:`medfcn.training.dataset`), its loss (:mod:`medfcn.training.loss`) and fine-tuning's extra targets
(:mod:`medfcn.training.finetune`) are modules of their own.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfcn import __version__
from medfcn.data.pairs import LabelledPair, data_sha256, find_pairs
from medfcn.errors import CancelledError, OutputError, UsageError
from medfcn.model.checkpoint import save_model
from medfcn.training.dataset import TrainingVolume, cache_volumes, sample_batch
from medfcn.training.options import TrainConfig

__all__ = ["TrainConfig", "TrainProgress", "iter_train", "train"]

log = logging.getLogger(__name__)


# -- model and evaluation ---------------------------------------------------------------------------------------


def _card(config: TrainConfig, n_classes: int, init=None):
    """The card of the model to train: from the options, or with ``init`` (the ``--init`` model's card) that card,
    its network updated by the network options (equal, or a finer variant: :func:`finetune.load_init` checks)."""
    from medfcn.model.card import ModelCard
    from medfcn.model.network import FCNConfig
    from medfcn.training.finetune import start_card

    in_channels = 2 * config.context + 1
    if init is not None:
        if config.label_names and tuple(config.label_names) != tuple(sorted(init.labels, key=init.labels.get)):
            raise UsageError(
                f"--label-names {','.join(config.label_names)} differ from the --init model's labels "
                f"({','.join(init.labels)}): a fine-tuned model keeps its labels (leave --label-names out)"
            )
        given = {"in_channels": in_channels, "num_classes": len(init.labels)}
        if config.architecture == "fcn":
            given |= {"variant": config.variant, "upsampling": config.upsampling, "width": config.width}
        return start_card(init, {**init.network, **given} if config.architecture == init.architecture else given)
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


def frame_dice(
    network: torch.nn.Module,
    items: list[TrainingVolume],
    card,
    device: torch.device,
    ignore: int = 255,
    cancel: Callable[[], bool] | None = None,
) -> float:
    """Mean foreground Dice over the annotated voxels (label not ``ignore``) of ``items`` (normalised frame volumes)
    through the inference path's own stages: multi-axis probabilities and post-processing
    (:meth:`~medfcn.inference.pipeline.Segmenter.probabilities`,
    :meth:`~medfcn.inference.pipeline.Segmenter.postprocess`), the arg-max taken on the model's frame. ``cancel``
    is polled between batches (:class:`CancelledError`)."""
    from medfcn.evaluation.metrics import dice
    from medfcn.inference.pipeline import Segmenter
    from medfcn.inference.postprocess import argmax_classes
    from medfcn.inference.settings import InferenceSettings
    from medfcn.model.checkpoint import Model

    segmenter = Segmenter(Model(network=network, card=card), InferenceSettings(device=str(device), batch_size=32))
    scores = []
    for item in items:
        pred = argmax_classes(segmenter.postprocess(segmenter.probabilities(item.image, cancel=cancel)))
        annotated = item.label != ignore
        pred, label = pred[annotated], item.label[annotated]
        scores += [dice(pred == lab, label == lab) for lab in range(1, len(card.labels))]
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


@dataclass(frozen=True)
class TrainProgress:
    """Where a run is, yielded by :func:`iter_train` after every step (``epoch_done`` false: ``loss`` and ``dice``
    of that step's batch, Dice on its annotated voxels) and after every epoch (``epoch_done``: the epoch's mean loss
    and the validation Dice). ``fraction`` of the run done (steps or time budget, whichever is further)."""

    epoch: int
    step: int
    steps: int
    loss: float
    dice: float
    minutes: float
    fraction: float
    epoch_done: bool = False


Cancel = Callable[[], bool]


def iter_train(config: TrainConfig, *, cancel: Cancel | None = None) -> Generator[TrainProgress, None, dict[str, Any]]:
    """Train as configured, yielding :class:`TrainProgress`; returns the summary :func:`train` returns. ``cancel()``
    is polled after every step and during validation: when it returns true the run ends as it would at its time
    limit, without finishing the epoch: OUTPUT holds the last finished epoch's model (none if no epoch finished;
    ``summary["cancelled"]``). Raises :class:`MedfcnError` subclasses for bad input, before any training."""
    from medfcn.inference.engine import select_device
    from medfcn.training.finetune import load_start_model, replay_pairs

    torch.manual_seed(config.seed)
    cancel = cancel or (lambda: False)
    output = Path(config.output)
    state_path = output.with_name(output.name + ".state.pt")
    pairs = find_pairs(config.images, config.labels, config.pairs)
    best_path = check_output(output, pairs, config.init)
    init = load_start_model(config.init) if config.init else None
    card = _card(config, len(config.label_names), init.card if init else None)
    device = select_device(config.device)
    log.info("training on %d case(s), device %s", len(pairs), device)
    volumes = cache_volumes(pairs, card, config.ignore_label)
    replayed = replay_pairs(init.card) if init is not None and config.replay > 0 else []
    train_items, val_items, validation = _split(volumes, config, finetune=init is not None)
    keep_last = validation == NO_VALIDATION
    trainer = _Trainer(config, card, device, train_items, init=init, replay=cache_volumes(replayed, card))
    run = trainer.restore(state_path) if config.resume else _Standing()

    t0 = time.monotonic() - run.elapsed
    epoch, stopped_by_time, cancelled = run.epoch, False, False
    budget = config.max_minutes * 60 if config.max_minutes else math.inf
    for epoch in range(run.epoch, config.epochs):
        losses: list[float] = []
        for step, loss, dice in trainer.train_epoch(epoch, t0, cancel):
            losses.append(loss)
            minutes = (time.monotonic() - t0) / 60
            done = max(
                (epoch * config.steps_per_epoch + step) / (config.epochs * config.steps_per_epoch),
                60 * minutes / budget,
            )
            yield TrainProgress(epoch + 1, step, config.steps_per_epoch, loss, dice, minutes, min(done, 1.0))
            stopped_by_time = time.monotonic() - t0 > budget
            cancelled = cancel()
            if stopped_by_time or cancelled:
                break
        cancelled = cancelled or cancel()
        if cancelled:
            break
        trainer.settle_batchnorm()
        trainer.network.eval()
        try:
            dice = frame_dice(trainer.network, val_items, card, device, config.ignore_label, cancel)
        except CancelledError:
            cancelled = True
            break
        run.epoch, run.elapsed = epoch + 1, time.monotonic() - t0
        _report_epoch(run, float(np.mean(losses)), dice)
        yield TrainProgress(
            run.epoch,
            len(losses),
            config.steps_per_epoch,
            float(np.mean(losses)),
            dice,
            run.elapsed / 60,
            min(1.0, max(run.epoch / config.epochs, run.elapsed / budget)),
            True,
        )
        if keep_last or dice > run.best:
            run.best = dice
            card.metrics = {"validation_dice": round(dice, 4), "epoch": run.epoch, "validation": validation}
            card.training = _training_record(config, pairs, run, device, trainer, replayed)
            save_model(best_path, trainer.network, card)
        save_state(state_path, trainer.state(run))
        if stopped_by_time or cancel():
            cancelled = not stopped_by_time
            break
    if best_path != output and best_path.exists():
        os.replace(best_path, output)  # the earlier model at OUTPUT is replaced only by a finished run's best
    if cancelled:
        log.info("cancelled after %d finished epoch(s)", run.epoch)
    return {
        "output": str(output),
        "written": output.exists() and run.epoch > 0,
        "best_validation_dice": run.best,
        "kept": "last epoch" if keep_last else "best epoch",
        "epochs": run.epoch,
        "history": run.history,
        "minutes": round((time.monotonic() - t0) / 60, 2),
        "stopped_by_time": stopped_by_time,
        "cancelled": cancelled,
    }


def train(config: TrainConfig, *, progress: bool = True, cancel: Cancel | None = None) -> dict[str, Any]:
    """Train as configured (:func:`iter_train`) with a progress bar on stderr; writes the model to
    ``config.output``. Returns a summary dict."""
    from tqdm import tqdm

    run, bar, epoch = iter_train(config, cancel=cancel), None, 0
    try:
        while True:
            p = next(run)
            if p.epoch != epoch or bar is None:
                if bar is not None:
                    bar.close()
                epoch = p.epoch
                bar = tqdm(
                    total=p.steps,
                    desc=f"epoch {p.epoch}/{config.epochs}",
                    disable=not progress,
                    leave=False,
                    file=sys.stderr,
                )
            if not p.epoch_done:
                bar.update(1)
                bar.set_postfix(loss=f"{p.loss:.4f}", dice=f"{p.dice:.3f}")
    except StopIteration as stop:
        return stop.value
    finally:
        if bar is not None:
            bar.close()


NO_VALIDATION = "none held out: the last epoch is kept (Dice on the annotated training voxels, not used to choose)"


def _split(cases: list[TrainingVolume], config: TrainConfig, finetune: bool = False) -> tuple[list, list, str]:
    """Training items, validation items and how validation is done (recorded in the card). With one subject,
    validation is on fixed transformed copies of it (and the original); when fine-tuning with no held-out case,
    there is none (:data:`NO_VALIDATION`: the last epoch is kept, the Dice on the training cases only reported)."""
    from medfcn.training.augment import Augmenter

    n_val = min(config.val_cases, len(cases) - 1) if len(cases) > 1 else 0
    if n_val:
        return cases[n_val:], cases[:n_val], "held-out cases"
    if finetune:
        return cases, cases, NO_VALIDATION
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
    """The network, its optimiser and the training data of one run, set up once. With ``init`` (the ``--init``
    model): its weights, its frozen copy as the soft target of unannotated voxels (``--distill``), its batch-norm
    statistics kept, and ``replay`` (its recorded training data) drawn for ``--replay`` of the volumes."""

    def __init__(
        self,
        config: TrainConfig,
        card,
        device: torch.device,
        items: list[TrainingVolume],
        *,
        init=None,
        replay: list[TrainingVolume] | None = None,
    ) -> None:
        from medfcn.model.checkpoint import build_from_card
        from medfcn.training.augment import Augmenter
        from medfcn.training.finetune import Teacher, load_init
        from medfcn.training.loss import PartialDiceCELoss

        self.config, self.card, self.device, self.items = config, card, device, items
        self.replay = replay or []
        spacing = card.spacing[0]
        self.augmenter = Augmenter(spacing=spacing, p_clinical=config.clinical) if config.augment else None
        self.network = build_from_card(card).to(device)
        self.init_sha256 = load_init(self.network, card, init) if init is not None else ""
        self.finetune = init is not None
        self.teacher = Teacher(init.network, device) if init is not None and config.distill > 0 else None
        self.synthesise = _synthesiser(items, config)
        self.optimiser = torch.optim.AdamW(self.network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.loss_fn = PartialDiceCELoss(config.ignore_label)
        self.amp = device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self._bn_inputs: list[torch.Tensor] | None = None

    def annotation(self, case: str) -> dict[str, Any]:
        """How much of ``case`` was annotated (:attr:`TrainingVolume.annotation`), for the card."""
        return next((dict(v.annotation) for v in self.items if v.case == case), {})

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

        if self.config.bn_batches <= 0 or self.finetune:  # fine-tuning keeps the start model's statistics
            return
        if self._bn_inputs is None:
            rng = np.random.default_rng([self.config.seed, 7919])
            self._bn_inputs = [x.half() for x, _ in self._batches(rng, self.config.bn_batches)]
        recompute_batchnorm(self.network, (x.to(self.device, torch.float32) for x in self._bn_inputs))

    def _batches(self, rng: np.random.Generator, n: int, cancel: Cancel | None = None):
        """``n`` training batches (inputs, labels) drawn as training draws them: a new volume (synthesised or
        augmented) every ``steps_per_volume`` batches, a random slice axis per batch."""
        config, card = self.config, self.card
        for step in range(n):
            if step % config.steps_per_volume == 0:
                if cancel is not None and cancel():
                    return
                item = self._volume(rng)
            axis = int(rng.choice(card.slice_axes))
            yield sample_batch(
                *item, axis, config.batch_size, card.context, config.foreground_fraction, rng, config.ignore_label
            )

    def _volume(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A training case drawn at random, synthesised or augmented: (image, label) on the model's frame."""
        if self.replay and rng.random() < self.config.replay:
            case = self.replay[int(rng.integers(len(self.replay)))]
        else:
            case = self.items[int(rng.integers(len(self.items)))]
        if self.synthesise is not None and case.tissue is not None and rng.random() < self.config.synth:
            return self.synthesise(case, rng)
        if self.augmenter is not None:
            return self.augmenter(case.image, case.label, rng)
        return case.image, case.label

    def train_epoch(
        self, epoch: int, t0: float, cancel: Cancel | None = None
    ) -> Generator[tuple[int, float, float], None, None]:
        """One epoch of ``steps_per_epoch`` steps, yielding (steps done, loss, Dice on the batch's annotated voxels)
        after each; the caller stops it at its time limit. The learning rate follows steps or time (``t0``: the
        run's start; ``max_minutes`` the budget), whichever runs out first. ``cancel()`` is also asked before
        each new training volume is drawn (augmenting one takes a while): the epoch ends there when it is true."""
        config = self.config
        rng = np.random.default_rng([config.seed, epoch])  # same stream whether or not the run was resumed
        total_steps = config.epochs * config.steps_per_epoch
        budget = config.max_minutes * 60 if config.max_minutes else math.inf
        self.network.train()
        if self.finetune:
            from medfcn.training.finetune import freeze_batchnorm

            freeze_batchnorm(self.network)
        for step, (x, y) in enumerate(self._batches(rng, config.steps_per_epoch, cancel)):
            done = (epoch * config.steps_per_epoch + step) / total_steps
            lr = config.lr * _lr_factor(max(done, (time.monotonic() - t0) / budget))
            yield (step + 1, *self._step(x.to(self.device), y.to(self.device), lr))

    def _step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> tuple[float, float]:
        """One optimiser step on inputs ``x`` (B, K, H, W) and labels ``y`` (B, 1, H, W); returns the loss and the
        Dice on the batch's annotated voxels. With a teacher, its probabilities are the target of the voxels that
        are not annotated (weight ``--distill``)."""
        from medfcn.training.loss import annotated_dice, soft_target_loss

        for group in self.optimiser.param_groups:
            group["lr"] = lr
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            logits = self.network(x)
            loss = self.loss_fn(logits, y)
            if self.teacher is not None:
                unannotated = (y[:, 0] == self.config.ignore_label).float()
                loss = loss + self.config.distill * soft_target_loss(logits, self.teacher.probabilities(x), unannotated)
        self.optimiser.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimiser)
        self.scaler.update()
        return loss.item(), annotated_dice(logits.detach(), y, self.config.ignore_label)


def _synthesiser(items: list[TrainingVolume], config: TrainConfig):
    """``draw(case, rng) -> (image, label)`` over tissue maps built once per training case, or None (--synth 0)."""
    if config.synth <= 0:
        return None
    from medfcn.training.synth import Synthesiser, tissue_map

    for item in items:  # a partially annotated case is augmented, never synthesised (its tissue map is unknown)
        if not np.any(item.label == config.ignore_label):
            item.tissue = tissue_map(item.image, item.label)
    synthesiser = Synthesiser(spacing=config.spacing)
    log.info("synthesising %.0f%% of the training volumes from tissue maps", 100 * config.synth)
    return lambda case, rng: synthesiser(case.image, case.tissue, rng)


def _training_record(
    config: TrainConfig, pairs: list[LabelledPair], run: _Standing, device, trainer: _Trainer, replayed
) -> dict[str, Any]:
    """What the card records of a run: the command, the data (its hash; per case the voxels and whole slices
    annotated), the ignore label, the start model's SHA-256, the replayed data, epochs and minutes."""
    settings = {k: v for k, v in asdict(config).items() if k not in ("command", "resume")}
    record: dict[str, Any] = {
        "command": config.command,
        "data": [p.summary() | trainer.annotation(p.case) for p in pairs],
        "data_sha256": data_sha256(pairs),
        "ignore_label": config.ignore_label,
        "seed": config.seed,
        "epochs": run.epoch,
        "minutes": round(run.elapsed / 60, 1),
        "device": str(device),
        "settings": settings,
        "medfcn_version": __version__,
    }
    if trainer.init_sha256:
        settings["init_sha256"] = trainer.init_sha256
        record["init"] = {"path": config.init, "sha256": trainer.init_sha256}
        record["replayed"] = [p.summary() for p in replayed]
    return record


# -- command line --------------------------------------------------------------------------------------------
