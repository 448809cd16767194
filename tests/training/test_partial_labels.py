"""Partial labels (issue 23): an ignore value, a loss over annotated voxels only, fine-tuning that keeps the card."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from medfcn.data.pairs import LabelledPair
from medfcn.errors import MedfcnError
from medfcn.model.checkpoint import file_sha256, load_model
from medfcn.training.dataset import prepare_volume, sample_batch
from medfcn.training.loss import PartialDiceCELoss, annotated_dice, soft_target_loss
from medfcn.training.train import TrainConfig, iter_train, train
from medfcn.training.validation import NO_VALIDATION
from tests.support.scans import affine_from_codes, head_labels, head_volume, write_scan_file
from tests.training.test_train import _config as train_config

SHAPE = (24, 28, 22)
AFFINE = affine_from_codes("RAS", spacing=(3.0, 3.0, 3.0))


# -- the loss ------------------------------------------------------------------------------------------------------
def test_masked_loss_equals_monai_dicece_when_every_voxel_is_annotated():
    from monai.losses import DiceCELoss

    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(3, 3, 9, 7, generator=g), torch.randint(0, 3, (3, 1, 9, 7), generator=g)
    ours = PartialDiceCELoss(255)(logits, labels)
    monai = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)(logits, labels)
    assert ours.item() == pytest.approx(monai.item(), abs=1e-6)


def test_masked_loss_by_hand_and_blind_to_ignored_voxels():
    # Three voxels of two classes: p(class 1) = sigmoid(l1 - l0). Annotated: voxel a (class 1, logits 0, 0: p 0.5)
    # and voxel b (class 0, logits 0, ln 3: p1 0.75); voxel c is 255.
    logits = torch.tensor([[[[0.0, 0.0, 5.0]], [[0.0, np.log(3.0), -5.0]]]], requires_grad=True)
    labels = torch.tensor([[[[1, 0, 255]]]])
    loss = PartialDiceCELoss(255)(logits, labels)
    ce = (np.log(2.0) + -np.log(0.25)) / 2  # mean over the two annotated voxels
    # class 0: probabilities 0.5, 0.25; truth 0, 1 -> 1 - 2 * 0.25 / (0.75 + 1); class 1: 0.5, 0.75 vs 1, 0
    d0 = 1 - (2 * 0.25 + 1e-5) / (0.75 + 1 + 1e-5)
    d1 = 1 - (2 * 0.5 + 1e-5) / (1.25 + 1 + 1e-5)
    assert loss.item() == pytest.approx(ce + (d0 + d1) / 2, abs=1e-6)
    loss.backward()
    assert torch.all(logits.grad[..., 2] == 0)  # the ignored voxel gets no gradient
    other = logits.detach().clone()
    other[..., 2] = torch.tensor([[-9.0], [9.0]])
    assert PartialDiceCELoss(255)(other, labels).item() == pytest.approx(loss.item(), abs=1e-7)
    assert annotated_dice(logits.detach(), labels) == 0.0  # a predicted 0 where 1 is, 1 where 0 is


def test_soft_target_loss_by_hand():
    logits = torch.tensor([[[[0.0, 1.0]], [[0.0, -1.0]]]])  # voxel 0: p (0.5, 0.5); voxel 1: p0 = sigmoid(2)
    teacher = torch.tensor([[[[0.9, 0.2]], [[0.1, 0.8]]]])
    p0 = 1 / (1 + np.exp(-2.0))
    only_second = soft_target_loss(logits, teacher, torch.tensor([[[0.0, 1.0]]]))
    assert only_second.item() == pytest.approx(-(0.2 * np.log(p0) + 0.8 * np.log(1 - p0)), abs=1e-6)
    both = soft_target_loss(logits, teacher, torch.ones(1, 1, 2))
    assert both.item() == pytest.approx((np.log(2.0) + only_second.item()) / 2, abs=1e-6)
    assert soft_target_loss(logits, teacher, torch.zeros(1, 1, 2)).item() == 0.0


# -- the data ------------------------------------------------------------------------------------------------------
@pytest.fixture
def partial(tmp_path):
    """One head with three axial slices annotated (the rest 255) and its full label."""
    full = (head_labels(SHAPE) > 0).astype(np.uint8)
    label = np.full(SHAPE, 255, np.uint8)
    label[:, :, [8, 11, 14]] = full[:, :, [8, 11, 14]]
    write_scan_file(tmp_path / "images" / "head.nii.gz", head_volume(SHAPE), AFFINE)
    write_scan_file(tmp_path / "labels" / "head.nii.gz", label, AFFINE)
    return tmp_path


def _pair(root) -> LabelledPair:
    return LabelledPair("head", root / "images" / "head.nii.gz", root / "labels" / "head.nii.gz")


def test_partial_label_is_kept_through_the_frame_and_batches_come_from_annotated_slices(partial):
    from medfcn.model.card import ModelCard

    card = ModelCard(network={"num_classes": 2, "in_channels": 3}, spacing=(3.0, 3.0, 3.0))
    vol = prepare_volume(_pair(partial), card)
    assert vol.annotation == {
        "voxels": int(np.prod(SHAPE)),
        "annotated_voxels": 3 * 24 * 28,
        "annotated_slices": [0, 0, 3],
    }
    assert set(np.unique(vol.label)) == {0, 1, 255}
    annotated_z = np.flatnonzero((vol.label != 255).any(axis=(0, 1)))
    assert annotated_z.tolist() == [8, 11, 14]  # RAS at the file's own spacing: the same slices
    rng = np.random.default_rng(0)
    _, y = sample_batch(vol.image, vol.label, 2, 12, 1, 0.5, rng)
    assert all((y[i] != 255).any() for i in range(12))  # every axial slice drawn holds annotated voxels
    _, y = sample_batch(vol.image, vol.label, 0, 12, 1, 0.5, rng)  # sagittal slices cross the annotated rows
    assert all(set(torch.unique(y[i]).tolist()) >= {0, 255} for i in range(12))


@pytest.mark.parametrize(
    "label, ignore, message",
    [
        (np.full(SHAPE, 255, np.uint8), 255, "no voxel is annotated"),
        ((head_labels(SHAPE) > 0).astype(np.uint8), 1, "is also a class id"),
        ((head_labels(SHAPE) > 0).astype(np.uint8) * 7, 255, "not class ids"),
    ],
)
def test_bad_partial_labels_are_refused_naming_the_file(partial, label, ignore, message):
    from medfcn.model.card import ModelCard

    write_scan_file(partial / "labels" / "head.nii.gz", label, AFFINE)
    with pytest.raises(MedfcnError) as e:
        prepare_volume(_pair(partial), ModelCard(network={"num_classes": 2, "in_channels": 3}), ignore)
    text = str(e.value)
    assert message in text and str(partial / "labels" / "head.nii.gz") in text and "\n" not in text


def test_cli_refuses_an_ignore_label_that_is_a_class_id(partial, capsys):
    from medfcn.cli import main

    args = ["train", "--images", str(partial / "images"), "--labels", str(partial / "labels")]
    # the configuration's own rule (issue 30): refused as a usage error before any image is read
    assert main([*args, "-o", str(partial / "m.safetensors"), "--ignore-label", "1", "--spacing", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--ignore-label" in err[0] and "is also a class id" in err[0]
    assert not (partial / "m.safetensors").exists()


# -- fine-tuning ---------------------------------------------------------------------------------------------------
def _config(root, **kw) -> TrainConfig:
    """test_train's small run, on one case (no held-out case), in short epochs."""
    base = dict(spacing=3.0, steps_per_epoch=6, batch_size=4, val_cases=0, command="test", lr=2e-3)
    return train_config(root, **(base | kw))


@pytest.mark.slow
def test_fine_tuning_keeps_the_card_records_the_start_and_yields_progress(partial, tmp_path):
    start = tmp_path / "start.safetensors"
    train(
        _config(partial, output=str(start), epochs=1, label_names=("background", "head"), name="start"), progress=False
    )
    out = tmp_path / "tuned.safetensors"
    run = iter_train(_config(partial, output=str(out), init=str(start), label_names=None, lr=1e-3))
    steps = []
    try:
        while True:
            steps.append(next(run))
    except StopIteration as stop:
        summary = stop.value
    assert [s.step for s in steps if not s.epoch_done] == [1, 2, 3, 4, 5, 6] * 2
    assert [s.epoch for s in steps if s.epoch_done] == [1, 2]
    assert all(np.isfinite(s.loss) for s in steps) and summary.written and not summary.cancelled
    card = load_model(out).card
    assert card.name == "start" and card.labels == {"background": 0, "head": 1}  # the start model's card
    record = card.training
    assert record["init"]["sha256"] == file_sha256(start) and record["ignore_label"] == 255
    assert record["data"][0]["annotated_slices"] == [0, 0, 3] and record["data"][0]["annotated_voxels"] == 3 * 24 * 28
    assert record["epochs"] == 2 and record["minutes"] >= 0
    assert card.metrics["validation"] == NO_VALIDATION and card.metrics["epoch"] == 2  # the last epoch is kept
    json.dumps(record)


@pytest.mark.slow
def test_cancel_stops_within_a_step_and_keeps_the_last_finished_epoch(partial, tmp_path):
    out = tmp_path / "c.safetensors"
    stop = {"now": False}
    run = iter_train(_config(partial, output=str(out), epochs=5), cancel=lambda: stop["now"])
    seen = []
    try:
        while True:
            p = next(run)
            seen.append((p.epoch, p.step, p.epoch_done))
            stop["now"] = p.epoch == 2 and p.step == 2  # Cancel pressed during the second epoch
    except StopIteration as end:
        summary = end.value
    assert seen[-1] == (2, 2, False)  # no step after the one during which Cancel was pressed
    assert summary.cancelled and summary.epochs == 1 and summary.written
    assert load_model(out).card.metrics["epoch"] == 1


def test_replay_finds_the_recorded_data_only_when_unchanged(partial, tmp_path, caplog):
    from medfcn.data.pairs import data_sha256
    from medfcn.model.card import ModelCard
    from medfcn.training.finetune import replay_pairs

    pair = _pair(partial)
    record = {
        "data": [{"case": "head", "image": "head.nii.gz", "label": "head.nii.gz"}],
        "data_sha256": data_sha256([pair]),
        "settings": {"images": "images", "labels": "labels"},
    }
    card = ModelCard(network={"num_classes": 2, "in_channels": 3}, training=record)
    found = replay_pairs(card, roots=[tmp_path / "elsewhere", partial])
    assert [(p.image, p.label) for p in found] == [(pair.image, pair.label)]
    write_scan_file(pair.label, (head_labels(SHAPE) > 0).astype(np.uint8), AFFINE)  # the data changed
    with caplog.at_level(logging.WARNING, logger="medfcn"):
        assert replay_pairs(card, roots=[partial]) == []
    assert "head.nii.gz" in caplog.text and "without replay" in caplog.text  # asked for and not done: said
