"""Training: the loss goes down on a tiny synthetic set, a run resumes where it stopped, pairs are found."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest

from medfcn.data.pairs import LabelledPair, find_pairs
from medfcn.errors import MedfcnError, NoScansError, OutputError
from medfcn.model.checkpoint import file_sha256, load_model
from medfcn.training.dataset import sample_batch
from medfcn.training.options import NetworkOptions
from medfcn.training.record import build_card
from medfcn.training.train import TrainConfig, train
from tests.support.scans import affine_from_codes, head_labels, head_volume, write_scan_file

pytestmark = pytest.mark.slow  # the tests here train small networks for a few epochs

SHAPE = (24, 28, 22)


@pytest.fixture
def dataset(tmp_path):
    aff = affine_from_codes("LPS", spacing=(3.0, 3.0, 3.0))
    for i in range(2):
        write_scan_file(tmp_path / "images" / f"case{i}.nii.gz", head_volume(SHAPE, seed=i), aff)
        write_scan_file(tmp_path / "labels" / f"case{i}.nii.gz", (head_labels(SHAPE) > 0).astype(np.uint8), aff)
    return tmp_path


def _config(root, **kw) -> TrainConfig:
    base = dict(
        images=str(root / "images"),
        labels=str(root / "labels"),
        output=str(root / "m.safetensors"),
        width=4,
        spacing=3.0,
        epochs=2,
        steps_per_epoch=12,
        batch_size=6,
        augment=False,
        device="cpu",
        lr=5e-3,
        command="medfcn train --epochs 2",
    )
    base.update(kw)
    network = {k: base.pop(k) for k in ("architecture", "variant", "upsampling", "width", "context") if k in base}
    return TrainConfig(**base, network=NetworkOptions(**network))


def test_a_few_steps_reduce_the_loss_and_write_a_model_with_its_card(dataset):
    summary = train(_config(dataset), progress=False)
    losses = [h["loss"] for h in summary.history]
    assert losses[1] < losses[0]
    model = load_model(dataset / "m.safetensors")
    card = model.card
    assert card.training["command"] == "medfcn train --epochs 2"
    assert [d["case"] for d in card.training["data"]] == ["case0", "case1"]
    assert len(card.training["data_sha256"]) == 64
    assert card.metrics["validation"] == "held-out cases"
    assert 0.0 <= card.metrics["validation_dice"] <= 1.0
    assert card.spacing == (3.0, 3.0, 3.0)


def test_resume_continues_where_it_stopped(dataset, tmp_path):
    out = str(tmp_path / "b.safetensors")
    first = train(_config(dataset, output=out, epochs=1), progress=False).history
    resumed = train(_config(dataset, output=out, epochs=3, resume=True), progress=False).history
    assert [h["epoch"] for h in resumed] == [1, 2, 3]
    assert resumed[0] == first[0]  # restored from the saved state, not trained again
    fresh = train(_config(dataset, output=str(tmp_path / "c.safetensors"), epochs=3), progress=False).history
    assert resumed[1]["loss"] < fresh[0]["loss"]  # epoch 2 starts from the trained weights, not from scratch


def test_augmented_training_runs_and_single_case_validates_on_copies(dataset, tmp_path):
    (dataset / "images" / "case1.nii.gz").unlink()
    summary = train(
        _config(
            dataset, augment=True, epochs=1, steps_per_epoch=4, val_copies=2, output=str(tmp_path / "c.safetensors")
        ),
        progress=False,
    )
    assert np.isfinite(summary.history[0]["loss"])
    assert "augmented copies" in load_model(tmp_path / "c.safetensors").card.metrics["validation"]


def test_find_pairs_from_folders_and_lists(dataset, tmp_path):
    pairs = find_pairs(str(dataset / "images"), str(dataset / "labels"))
    assert [p.case for p in pairs] == ["case0", "case1"]
    listing = tmp_path / "pairs.csv"
    listing.write_text("case,image,label\nx,images/case1.nii.gz,labels/case1.nii.gz\n")
    assert find_pairs(pairs=str(listing)) == [
        LabelledPair("x", dataset / "images" / "case1.nii.gz", dataset / "labels" / "case1.nii.gz")
    ]
    js = tmp_path / "pairs.json"
    js.write_text(json.dumps([{"image": "images/case0.nii.gz", "label": "labels/case0.nii.gz"}]))
    assert find_pairs(pairs=str(js))[0].case == "case0"
    (tmp_path / "empty").mkdir()
    write_scan_file(tmp_path / "other" / "zzz.nii.gz", head_volume(SHAPE), affine_from_codes("RAS"))
    with pytest.raises(NoScansError, match="no case names are shared"):
        find_pairs(str(dataset / "images"), str(tmp_path / "other"))
    with pytest.raises(MedfcnError, match="--images and --labels"):
        find_pairs()


def test_sample_batch_oversamples_foreground_and_stacks_like_inference():
    image = np.random.default_rng(0).random((10, 12, 30), dtype=np.float32)
    label = np.zeros((10, 12, 30), np.uint8)
    label[:, :, 20] = 1
    x, y = sample_batch(image, label, 2, 8, 1, 1.0, np.random.default_rng(1))
    assert x.shape == (8, 3, 10, 12) and y.shape == (8, 1, 10, 12)
    assert (y.sum(dim=(1, 2, 3)) == 120).all()  # every slice drawn is the foreground slice 20
    np.testing.assert_array_equal(x[0, 0].numpy(), image[:, :, 19])
    np.testing.assert_array_equal(x[0, 2].numpy(), image[:, :, 21])


def test_synth_fraction_trains_on_synthesised_volumes_and_is_recorded(dataset, tmp_path, monkeypatch):
    import medfcn.training.synth

    calls = []
    real_call = medfcn.training.synth.Synthesiser.__call__

    def counting(self, image, tissue, rng):
        calls.append(tissue.n_classes)
        return real_call(self, image, tissue, rng)

    monkeypatch.setattr(medfcn.training.synth.Synthesiser, "__call__", counting)
    out = tmp_path / "s.safetensors"
    config = _config(dataset, output=str(out), epochs=1, steps_per_epoch=8, synth=1.0, bn_batches=0)
    summary = train(config, progress=False)
    assert np.isfinite(summary.history[0]["loss"])
    assert calls == [8, 8]  # one synthesised volume per 4 steps: 1 air + 3 brain + 4 non-brain classes
    assert load_model(out).card.training["settings"]["synth"] == 1.0
    calls.clear()
    train(_config(dataset, output=str(tmp_path / "n.safetensors"), epochs=1, steps_per_epoch=8), progress=False)
    assert calls == []  # --synth 0: never


def test_batchnorm_is_settled_on_the_same_batches_every_epoch_and_recorded(dataset):
    """--bn-batches: before validation the running statistics are recomputed over a fixed set of training batches,
    so they no longer depend on what training drew last; a new run (or a resumed one) draws the same set."""
    import torch

    from medfcn.training.dataset import cache_volumes
    from medfcn.training.record import build_card
    from medfcn.training.train import _Trainer

    config, card = build_card(_config(dataset, bn_batches=5, augment=True, synth=0.5))
    items = cache_volumes(find_pairs(config.images, config.labels), card)
    trainer = _Trainer(config, card, torch.device("cpu"), items)
    for _ in trainer.train_epoch(0, time.monotonic()):  # a generator of (step, loss, dice)
        pass
    bns = [m for m in trainer.network.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    trainer.settle_batchnorm()
    assert len(trainer._bn_inputs) == 5
    settled = [(b.running_mean.clone(), b.running_var.clone()) for b in bns]
    for bn in bns:  # what the last training batches would have left: anything
        bn.running_mean.uniform_(-3, 3)
        bn.running_var.uniform_(0.1, 9)
    trainer.settle_batchnorm()
    for bn, (mean, var) in zip(bns, settled, strict=True):
        torch.testing.assert_close(bn.running_mean, mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bn.running_var, var, rtol=1e-5, atol=1e-6)
    again = _Trainer(config, card, torch.device("cpu"), items)
    again.settle_batchnorm()
    assert all(torch.equal(x, y) for x, y in zip(trainer._bn_inputs, again._bn_inputs, strict=True))
    summary = train(_config(dataset, epochs=1, bn_batches=3), progress=False)
    assert load_model(summary.output).card.training["settings"]["bn_batches"] == 3


def test_init_starts_from_a_models_weights_and_refuses_another_network(dataset, tmp_path):
    first = tmp_path / "first.safetensors"
    train(_config(dataset, output=str(first), epochs=1), progress=False)
    tuned = tmp_path / "tuned.safetensors"
    # --init is an input: OUTPUT may not be it (refused before any training, the file untouched)
    before = first.read_bytes()
    with pytest.raises(OutputError, match="is the --init model"):
        train(_config(dataset, output=str(first), epochs=1, init=str(first)), progress=False)
    assert first.read_bytes() == before
    # lr 0: whatever the steps do, the weights stay those of --init
    train(_config(dataset, output=str(tuned), epochs=1, lr=0.0, init=str(first)), progress=False)
    a, b = load_model(first).network.state_dict(), load_model(tuned).network.state_dict()
    weights = [k for k in a if "running" not in k and "num_batches" not in k]
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in weights)
    assert load_model(tuned).card.training["settings"]["init_sha256"] == file_sha256(first)
    record = load_model(tuned).card.training  # no path of this machine: outside the repository, file names only
    assert record["init"]["path"] == record["settings"]["init"] == "first.safetensors"
    assert record["settings"]["output"] == "tuned.safetensors" and str(tmp_path) not in json.dumps(record)
    from medfcn.errors import ModelError

    with pytest.raises(ModelError, match="differs from the one configured here"):
        train(_config(dataset, output=str(tmp_path / "x.safetensors"), width=8, init=str(first)), progress=False)
    # A finer variant grows from a coarser file (the default fcn8s): its layers start as the file's, the new skip at
    # zero; the other way round is refused, as is any other difference.
    grown = tmp_path / "grown.safetensors"
    train(_config(dataset, output=str(grown), epochs=1, lr=0.0, variant="fcn4s", init=str(first)), progress=False)
    g = load_model(grown)
    assert g.card.network["variant"] == "fcn4s"
    assert all(np.array_equal(a[k].numpy(), g.network.state_dict()[k].numpy()) for k in weights)
    assert float(g.network.skip_scores[2].weight.detach().abs().sum()) == 0.0
    with pytest.raises(ModelError, match="differs from the one configured here"):
        train(
            _config(dataset, output=str(tmp_path / "y.safetensors"), variant="fcn16s", init=str(first)), progress=False
        )


def test_init_with_other_label_names_keeps_the_encoder_and_starts_a_new_classifier(dataset, tmp_path):
    """A new task (issue 34): the start model's encoder (weights and batch-norm statistics) kept exactly (lr 0),
    the classifier at its initialisation, the card with the new labels and post-processing and both models named."""
    first = tmp_path / "first.safetensors"
    train(_config(dataset, output=str(first), epochs=1), progress=False)
    task = tmp_path / "task.safetensors"
    config = _config(
        dataset,
        output=str(task),
        epochs=1,
        lr=0.0,
        init=str(first),
        label_names=("background", "blob"),
        postprocess=("fill_holes",),
        distill=1.0,
    )
    train(config, progress=False)
    start, new = load_model(first), load_model(task)
    a, b = start.network.state_dict(), new.network.state_dict()
    encoder = [k for k in a if k.startswith(("stem.", "levels."))]
    assert encoder and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in encoder)
    classifier = [k for k in a if k.startswith(("score.", "head.")) and k.endswith("weight")]
    assert classifier and not any(np.array_equal(a[k].numpy(), b[k].numpy()) for k in classifier)
    card = new.card
    assert card.labels == {"background": 0, "blob": 1} and card.postprocess == ("fill_holes",)
    assert card.spacing == start.card.spacing and card.class_weights == ()
    assert set(card.expectations.get("volume_ml", {})) <= {"blob"}
    # the start model's expectations are of its own labels: a new task's card starts without them
    label = next(n for n in start.card.labels if n != "background")
    known = dataclasses.replace(start.card, expectations={"volume_ml": {label: [1.0, 2.0]}, "source": "hand-made"})
    assert known.expectations and build_card(config, known)[1].expectations == {}
    record = card.training["init"]
    assert record["sha256"] == file_sha256(first) and record["new_task"]["start_labels"] == start.card.labels
    assert card.training["settings"]["distill"] == 0.0  # the start model's predictions are of another structure


# -- training's errors are named before any epoch runs (issue 11, point 10) ----------------------------------------
@pytest.mark.parametrize("value", [2, -1, 0.5])
def test_label_values_that_are_not_class_ids_are_named(dataset, value):
    label = dataset / "labels" / "case1.nii.gz"
    lab = (head_labels(SHAPE) > 0).astype(np.float32)
    lab[lab > 0] = value
    write_scan_file(label, lab, affine_from_codes("LPS", spacing=(3.0, 3.0, 3.0)))
    with pytest.raises(MedfcnError) as e:
        train(_config(dataset), progress=False)
    text = str(e.value)
    assert str(label) in text and "class ids" in text and "transform" not in text
    assert not (dataset / "m.safetensors").exists()


def test_a_label_map_on_another_grid_is_named(dataset):
    label = dataset / "labels" / "case0.nii.gz"
    write_scan_file(label, (head_labels(SHAPE) > 0).astype(np.uint8), affine_from_codes("LPS", spacing=(2.0, 3.0, 3.0)))
    with pytest.raises(MedfcnError) as e:
        train(_config(dataset), progress=False)
    assert "case0" in str(e.value) and "grid" in str(e.value) and "transform" not in str(e.value)


def test_all_zero_labels_are_refused(dataset):
    for i in range(2):
        zeros = np.zeros(SHAPE, np.uint8)
        write_scan_file(dataset / "labels" / f"case{i}.nii.gz", zeros, affine_from_codes("LPS", spacing=(3.0,) * 3))
    with pytest.raises(MedfcnError, match="only background"):
        train(_config(dataset), progress=False)


def test_output_path_is_checked_before_training(dataset, monkeypatch):
    import medfcn.training.train as train_module

    (dataset / "a_file").write_text("not a folder")
    calls = []
    monkeypatch.setattr(train_module, "cache_volumes", lambda *a: calls.append(a) or [])
    with pytest.raises(MedfcnError) as e:
        train(_config(dataset, output=str(dataset / "a_file" / "m.safetensors")), progress=False)
    assert e.value.exit_code == 2 and "a_file" in str(e.value) and calls == []  # refused before any data is read


def test_max_minutes_zero_and_an_incompatible_resume_are_refused(dataset, capsys):
    from medfcn.cli import main

    base = ["train", "--images", str(dataset / "images"), "--labels", str(dataset / "labels")]
    assert main([*base, "-o", str(dataset / "m.safetensors"), "--max-minutes", "0"]) == 2
    assert "--max-minutes" in capsys.readouterr().err
    for bad in ("-1", "1000000"):  # a million batches would be kept in memory (TBs): refused before any work
        assert main([*base, "-o", str(dataset / "m.safetensors"), "--bn-batches", bad]) == 2
        assert "--bn-batches must be between 0 and 512" in capsys.readouterr().err
    out = str(dataset / "r.safetensors")
    train(_config(dataset, output=out, epochs=1), progress=False)
    with pytest.raises(MedfcnError) as e:  # the state of a 4-wide network, resumed with an 8-wide one
        train(_config(dataset, output=out, epochs=2, width=8, resume=True), progress=False)
    assert e.value.exit_code == 2 and "r.safetensors.state.pt" in str(e.value) and "--resume" in str(e.value)


_KILLED_STATE_SAVE = """
import os, sys, torch
from pathlib import Path
from medfcn.training.output import save_state

def killed(obj, f, *args, **kwargs):  # half a file, then the process dies (no clean-up runs)
    Path(f).write_bytes(b"partial")
    os._exit(9)

torch.save = killed
save_state(Path(sys.argv[1]), {"epoch": 2})
"""


def test_a_state_save_killed_midway_keeps_the_previous_state(tmp_path):
    """The resume state is the file meant to survive a kill: it is written through the one atomic writer."""
    import subprocess
    import sys

    import torch

    from medfcn.data.writer import remove_stale_partials
    from medfcn.training.output import save_state

    path = tmp_path / "m.safetensors.state.pt"
    save_state(path, {"epoch": 1})
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_STATE_SAVE, str(path)], capture_output=True, encoding="utf-8", errors="replace"
    )
    assert done.returncode == 9, done.stderr
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    left = [p for p in tmp_path.iterdir() if p != path]
    assert len(left) == 1 and left[0].name.startswith(f".{path.name}.")
    assert remove_stale_partials(tmp_path) == left and sorted(tmp_path.iterdir()) == [path]
