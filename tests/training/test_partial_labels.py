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
from tests.support.scans import affine_from_codes, head_labels, head_volume, oblique_affine, write_scan_file
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


# -- painted slices on the model's frame (issue 34) ----------------------------------------------------------------
THIN = (14, 16, 48)  # 1.5 x 1.5 x 0.5 mm: three axial slices to each of the 1.5 mm frame's
NAMES = ("background", "square", "bar")


def _painted(root, slices, affine, shape=THIN, name="head"):
    """A scan of ``shape`` and a label map painted on whole axial ``slices`` (scan axis 2), each slice's labels
    its own: a square of class 1 and one of class 2 placed by the slice number, so a mix of two slices shows. The
    rest is 255. Returns the label array written."""
    label = np.full(shape, 255, np.uint8)
    for k in slices:
        label[..., k] = 0
        label[1 + k % 7 : 5 + k % 7, 2:6, k] = 1
        label[6:9, 3 + k % 9 : 6 + k % 9, k] = 2
    write_scan_file(root / "images" / f"{name}.nii.gz", head_volume(shape), affine)
    write_scan_file(root / "labels" / f"{name}.nii.gz", label, affine)
    return label


def _card(spacing=(1.5, 1.5, 1.5)):
    from medfcn.model.card import ModelCard

    labels = {name: i for i, name in enumerate(NAMES)}
    return ModelCard(labels=labels, network={"num_classes": 3, "in_channels": 3}, spacing=spacing)


def _frame_slices(label: np.ndarray) -> list[int]:
    return np.flatnonzero((label != 255).any(axis=(0, 1))).tolist()


def test_a_slice_painted_between_two_frame_samples_is_learnt_on_the_nearest(tmp_path, caplog):
    # Frame slice i lies at scan slice 3 i: nearest-neighbour sampling takes slices 0, 3, 6, ... only, and slice 19
    # (0.5 mm from frame slice 6, 1 mm from 7) was dropped: the map reached training with no annotated voxel.
    label = _painted(tmp_path, [19], affine_from_codes("RAS", spacing=(1.5, 1.5, 0.5)))
    with caplog.at_level(logging.WARNING, logger="medfcn"):
        vol = prepare_volume(_pair(tmp_path), _card())
    assert _frame_slices(vol.label) == [6]  # the frame slice nearest to it, and only that one
    assert np.array_equal(vol.label[..., 6], label[..., 19])  # its labels, exactly (1.5 mm in-plane: the same grid)
    assert vol.note == (
        "case head: 1 painted axial slice fell between the samples of the model's 1.5 mm frame: "
        "snapped to the nearest frame slice (0.5 mm away)"
    )
    assert [r.getMessage() for r in caplog.records] == [vol.note]  # one line, in the CLI's log
    assert vol.annotation["moved_to_frame"] == {
        "axial": {"snapped": 1, "left_out": 0, "frame_mm": 1.5, "snapped_mm": 0.5}
    }  # recorded with the case in the model's training record


def test_a_painted_slice_of_an_oblique_scan_reaches_the_frame(tmp_path):
    # The frame keeps an oblique scan's rotation: its slices stay parallel to the scan's, and a slice snaps the same
    # way. Here the frame's slices lie at scan slices 3 i - 1.5 (0.5 mm axial slices): nearest-neighbour sampling
    # takes only pairs of slices beside them, never a multiple of 3 such as 21 (0.75 mm from frame slices 7 and 8).
    label = _painted(tmp_path, [21], oblique_affine(spacing=(1.5, 1.5, 0.5), degrees=(12.0, -8.0, 5.0)))
    vol = prepare_volume(_pair(tmp_path), _card())
    assert len(_frame_slices(vol.label)) == 1 and "1 painted axial slice" in vol.note and "snapped" in vol.note
    assert [int((vol.label == c).sum()) for c in (1, 2)] == [int((label == c).sum()) for c in (1, 2)]


@pytest.mark.parametrize("affine", [affine_from_codes("RAS", spacing=(1.0, 1.0, 1.0)), oblique_affine()])
def test_a_fully_labelled_map_is_sampled_as_before_bit_for_bit(tmp_path, affine):
    from medfcn.data.pairs import read_pair
    from medfcn.inference.pipeline import frame_for_model

    full = head_labels(SHAPE)
    write_scan_file(tmp_path / "images" / "head.nii.gz", head_volume(SHAPE), affine)
    write_scan_file(tmp_path / "labels" / "head.nii.gz", full, affine)
    vol = prepare_volume(_pair(tmp_path), _card())
    image, label = read_pair(_pair(tmp_path))
    before = np.rint(frame_for_model(image, _card(), array=label.array, mode="nearest").volume).astype(np.uint8)
    assert vol.label.dtype == before.dtype and np.array_equal(vol.label, before) and vol.note == ""
    assert "moved_to_frame" not in vol.annotation


def test_painted_slices_near_each_other_each_keep_their_own_labels(tmp_path):
    # Frame slice i at scan slice 3 i (0.5 mm axial slices, a 1.5 mm frame). Slices 30 and 31 share frame slice 10
    # (30 is its sample: 31 is left out, said); 34 snaps to 11 (33 is not painted); 38 and 39 share 13 (39, its
    # sample, keeps it); 45 is sampled by 15, and 47 by 16 (at scan slice 48, past the last: the border slice is its
    # sample). No frame slice mixes two painted slices, and none holds a slice from more than 0.75 mm away.
    painted = [30, 31, 34, 38, 39, 45, 47]
    label = _painted(tmp_path, painted, affine_from_codes("RAS", spacing=(1.5, 1.5, 0.5)))
    vol = prepare_volume(_pair(tmp_path), _card())
    held = {10: 30, 11: 34, 13: 39, 15: 45, 16: 47}
    assert _frame_slices(vol.label) == sorted(held)
    for i, k in held.items():
        assert np.array_equal(vol.label[..., i], label[..., k]), (i, k)
        assert abs(3 * i - k) * 0.5 <= 0.75  # mm from the frame slice's centre
    assert vol.note == (
        "case head: 1 painted axial slice fell between the samples of the model's 1.5 mm frame: snapped to the "
        "nearest frame slice (0.5 mm away); 2 painted axial slices are not learnt: the slices of the model's 1.5 mm "
        "frame nearest to them hold other painted slices, less than 1.5 mm away"
    )
    # slices never painted stay not annotated: every frame voxel is either a painted slice's label or 255
    assert set(np.unique(vol.label[..., [i for i in range(vol.label.shape[2]) if i not in held]])) == {255}


def test_the_run_says_what_it_snapped_in_its_summary(tmp_path):
    _painted(tmp_path, [19], affine_from_codes("RAS", spacing=(1.5, 1.5, 0.5)))
    config = _config(
        tmp_path, output=str(tmp_path / "m.safetensors"), epochs=1, steps_per_epoch=1, spacing=1.5, label_names=NAMES
    )
    summary = train(config, progress=False)
    assert summary.written and summary.notes == (prepare_volume(_pair(tmp_path), load_model(config.output).card).note,)
    assert "snapped to the nearest frame slice" in summary.notes[0]


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
