"""``medfcn train``: train a slice-wise model on your own labelled scans and write a medfcn model file.

Cases (image + label map, paired by case name, any format medfcn reads) are brought into the model's frame once and
cached (a MONAI ``CacheDataset``). Each training volume is then augmented as a whole
(:class:`medfcn.training.augment.Augmenter`) and batches of slices are drawn from it along the model's slice axes,
with foreground oversampling, stacked with their neighbours exactly as at inference
(:func:`medfcn.inference.engine.slice_stack`). Loss: Dice + cross-entropy over annotated voxels
(:class:`medfcn.training.loss.PartialDiceCELoss`: a label map may mark voxels "not annotated" with ``--ignore-
label``, ``options.IGNORE`` by default); AdamW with warm-up and cosine decay driven by steps or time, whichever runs
out first; mixed precision on a GPU. After every epoch the model is validated on held-out cases (or, with a single
case, on fixed augmented copies of it: reoriented, rescaled, re-contrasted) with the same multi-axis inference as
``medfcn segment``; the best model is written to OUTPUT, and the full training state to OUTPUT's ``.state.pt``
sibling so that ``--resume`` continues where a run stopped.

Fine-tuning (``--init MODEL``, :mod:`medfcn.training.finetune`) keeps the start model's card, its batch-norm
statistics, its own predictions on unannotated voxels as a soft target (``--distill``) and replays the data its card
records when it is at hand (``--replay``). With no held-out case, a fine-tuning run keeps its last epoch (the
learning rate has decayed to the end of the budget); the Dice on the annotated voxels is reported, not used to
choose, since those are the voxels it trained on.

:func:`iter_train` is the run as a generator of :class:`TrainProgress` (after every step and every epoch), with a
``cancel`` callable polled between steps: the napari Train dock runs it in a child process
(:mod:`medfcn.training.process`), :func:`train` (the CLI)
runs it with a progress bar.

The loop is this module: what the run owns between epochs (the network, optimiser, batch-norm settling, the state
``--resume`` reads) is the :class:`_Trainer`. Around it, one module each: its options (:mod:`~medfcn.training.options`,
resolved once by :func:`~medfcn.training.record.build_card`), the card and training record
(:mod:`~medfcn.training.record`), validation (:mod:`~medfcn.training.validation`), where the model may be written
(:mod:`~medfcn.training.output`), what the run reports (:mod:`~medfcn.training.progress`), the data
(:mod:`~medfcn.training.dataset`), the loss (:mod:`~medfcn.training.loss`) and fine-tuning's extra targets
(:mod:`~medfcn.training.finetune`). Epoch lines are log records on :data:`EPOCH_LOG`, which the CLI shows.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfcn.data.pairs import find_pairs
from medfcn.errors import CancelledError, OutputError, UsageError
from medfcn.model.checkpoint import save_model
from medfcn.training.dataset import TrainingVolume, cache_volumes, sample_batch
from medfcn.training.options import TrainConfig
from medfcn.training.output import check_output, save_state, state_path, writing
from medfcn.training.progress import TrainProgress, TrainSummary
from medfcn.training.record import build_card, record_expectations_in, training_record
from medfcn.training.validation import NO_VALIDATION, frame_dice, split_cases

__all__ = ["EPOCH_LOG", "TrainConfig", "TrainProgress", "TrainSummary", "iter_train", "train"]

log = logging.getLogger(__name__)
EPOCH_LOG = logging.getLogger("medfcn.training.epochs")  # one INFO record per finished epoch (the CLI shows them)


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


Cancel = Callable[[], bool]


def iter_train(config: TrainConfig, *, cancel: Cancel | None = None) -> Generator[TrainProgress, None, TrainSummary]:
    """Train as configured, yielding :class:`TrainProgress`; returns the :class:`TrainSummary` :func:`train`
    returns. The run holds OUTPUT's lock (:func:`medfcn.training.output.writing`) from before its checks until it
    ends: a second run writing the same model is refused (:class:`OutputError`). ``cancel()`` is polled after every
    step and during validation: when it returns true the run ends as it would at its time limit, without finishing
    the epoch: OUTPUT holds the last finished epoch's model (none if no epoch finished; ``summary.cancelled``).
    Raises :class:`MedfcnError` subclasses for bad input, before any training."""
    with writing(Path(config.output)):
        return (yield from _run(config, cancel))


def _run(config: TrainConfig, cancel: Cancel | None) -> Generator[TrainProgress, None, TrainSummary]:
    """:func:`iter_train`'s run, under OUTPUT's lock."""
    from medfcn.inference.engine import select_device
    from medfcn.training.finetune import load_start_model, replay_pairs

    torch.manual_seed(config.seed)
    cancel = cancel or (lambda: False)
    output = Path(config.output)
    pairs = find_pairs(config.images, config.labels, config.pairs)
    best_path = check_output(output, pairs, config.init)
    init = load_start_model(config.init) if config.init else None
    config, card = build_card(config, init.card if init else None)  # resolved here, once
    device = select_device(config.device)
    log.info("training on %d case(s), device %s", len(pairs), device)
    volumes = cache_volumes(pairs, card, config.ignore_label)
    replayed = replay_pairs(init.card) if init is not None and config.replay > 0 else []
    train_items, val_items, validation = split_cases(volumes, config)
    keep_last = validation == NO_VALIDATION
    trainer = _Trainer(config, card, device, train_items, init=init, replay=cache_volumes(replayed, card))
    run = trainer.restore(state_path(output)) if config.resume else _Standing()
    ours = run.epoch > 0 and best_path.exists()  # the best model so far is this run's (resumed), not one left before

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
            card.training = training_record(
                config,
                pairs,
                epochs=run.epoch,
                minutes=run.elapsed / 60,
                device=str(device),
                annotation={v.case: dict(v.annotation) for v in train_items},
                init_sha256=trainer.init_sha256,
                replayed=replayed,
                start_labels=init.card.labels if init is not None else None,
            )
            _saving(lambda: save_model(best_path, trainer.network, card), best_path if ours else None, output)
            ours = True
        _saving(lambda: save_state(state_path(output), trainer.state(run)), best_path if ours else None, output)
        if stopped_by_time or cancel():
            cancelled = not stopped_by_time
            break
    if ours and run.epoch > 0 and not cancelled:
        expect = lambda: record_expectations_in(best_path, pairs, config.ignore_label, cancel)  # noqa: E731
        _saving(expect, best_path, output)  # the card's expectations, for quality verdicts
    if best_path != output and ours:
        os.replace(best_path, output)  # the earlier model at OUTPUT is replaced only by a finished run's best
    if cancelled:
        log.info("cancelled after %d finished epoch(s)", run.epoch)
    return TrainSummary(
        output=output,
        written=output.exists() and run.epoch > 0,
        best_validation_dice=run.best,
        kept_last=keep_last,
        epochs=run.epoch,
        history=tuple(run.history),
        minutes=round((time.monotonic() - t0) / 60, 2),
        stopped_by_time=stopped_by_time,
        cancelled=cancelled,
        notes=tuple(v.note for v in volumes if v.note),
    )


def _saving(save: Callable[[], Any], kept: Path | None, output: Path) -> None:
    """``save()``; a failed write (a full disk) ends the run with one line saying where its best model so far is
    (``kept``, None before the first)."""
    try:
        save()
    except OutputError as e:
        so_far = f"; this run's best model so far is {kept}" if kept else ""
        so_far += f"; {output} is unchanged" if kept != output and output.exists() else ""
        raise OutputError(f"{e}{so_far}; make room and run again with --resume to continue") from None


def train(config: TrainConfig, *, progress: bool = True, cancel: Cancel | None = None) -> TrainSummary:
    """Train as configured (:func:`iter_train`) with a progress bar on stderr; writes the model to
    ``config.output``. Returns the run's :class:`TrainSummary`."""
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


def _report_epoch(run: _Standing, loss: float, dice: float) -> None:
    """Record an epoch in the history and say it on :data:`EPOCH_LOG` (the CLI shows one line per epoch even with
    --quiet, which hides only the progress bar)."""
    run.history.append({"epoch": run.epoch, "loss": loss, "val_dice": dice, "minutes": round(run.elapsed / 60, 2)})
    EPOCH_LOG.info("epoch %d: loss %.4f, validation Dice %.4f, %.1f min", run.epoch, loss, dice, run.elapsed / 60)


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


# -- command line --------------------------------------------------------------------------------------------
