"""TrainConfig checks itself (issue 30): an invalid configuration fails with the same one-line message whether the
command line, the napari Train dock's constructor or a script built it, before any scan is read or written."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import numpy as np
import pytest

from medfcn.cli import build_parser, main
from medfcn.data.scan import Scan
from medfcn.errors import UsageError
from medfcn.model.checkpoint import DEFAULT_MODEL_PATH, load_model
from medfcn.training.corrections import StartModel, prepare_correction_run
from medfcn.training.options import FINETUNE_LR, IGNORE, SCRATCH_LR, NetworkOptions, TrainConfig

SHAPE = (6, 7, 8)

# (command-line options, the same as TrainConfig keywords, a part of the message)
INVALID = [
    (["--epochs", "0"], {"epochs": 0}, "--epochs must be >= 1, got 0"),
    (["--steps-per-epoch", "-3"], {"steps_per_epoch": -3}, "--steps-per-epoch must be >= 1"),
    (["--batch-size", "0"], {"batch_size": 0}, "--batch-size must be >= 1"),
    (["--bn-batches", "513"], {"bn_batches": 513}, "--bn-batches must be between 0 and 512"),
    (["--synth", "1.5"], {"synth": 1.5}, "--synth must be a fraction between 0 and 1"),
    (["--clinical", "-0.1"], {"clinical": -0.1}, "--clinical must be a fraction between 0 and 1"),
    (["--replay", "2"], {"replay": 2.0}, "--replay must be a fraction between 0 and 1"),
    (["--distill", "-1"], {"distill": -1.0}, "--distill must be a weight >= 0"),
    (["--max-minutes", "0"], {"max_minutes": 0.0}, "--max-minutes must be a positive number of minutes"),
    (["--max-minutes", "-2"], {"max_minutes": -2.0}, "--max-minutes must be a positive number of minutes"),
    (["--lr", "-0.1"], {"lr": -0.1}, "--lr must be a learning rate >= 0"),
    (["--ignore-label", "300"], {"ignore_label": 300}, "the ignore label 300 must be from 0 to 255"),
    (["--ignore-label", "-1"], {"ignore_label": -1}, "the ignore label -1 must be from 0 to 255"),
    (["--ignore-label", "1"], {"ignore_label": 1, "label_names": ("background", "brain")}, "is also a class id"),
    (["--label-names", "background"], {"label_names": ("background",)}, "at least two distinct label names"),
    (["--label-names", "a,a"], {"label_names": ("a", "a")}, "at least two distinct label names"),
    (["--width", "0"], {"network": {"width": 0}}, "--width must be >= 1"),
    (["--axes", "0,5"], {"axes": (0, 5)}, "--axes must be comma-separated axis numbers"),
    (["--spacing", "0"], {"spacing": 0.0}, "--spacing must be a positive number of mm"),
]


def _cli_message(tmp_path, options, capsys) -> str:
    """The one line ``medfcn train`` prints for ``options`` (exit status 2: a usage error)."""
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "labels").mkdir(exist_ok=True)
    args = ["train", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels")]
    code = main([*args, "-o", str(tmp_path / "m.safetensors"), *options])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("medfcn: error: ")
    return err[0].removeprefix("medfcn: error: ")


@pytest.mark.parametrize("options, keywords, message", INVALID, ids=[" ".join(c[0]) for c in INVALID])
def test_the_cli_and_a_script_refuse_alike(tmp_path, capsys, options, keywords, message):
    from_cli = _cli_message(tmp_path, options, capsys)
    with pytest.raises(UsageError) as e:
        network = keywords.get("network")
        TrainConfig(
            images="img", labels="lab", **keywords | ({"network": NetworkOptions(**network)} if network else {})
        )
    assert str(e.value) == from_cli and message in from_cli and "\n" not in from_cli
    assert not (tmp_path / "m.safetensors").exists()


def _scan() -> Scan:
    return Scan(np.random.default_rng(0).random(SHAPE, dtype=np.float32), (1.0, 1.2, 1.5), (0, 0, 0), np.eye(3))


@pytest.mark.parametrize(
    "options, start, minutes",
    [
        (["--max-minutes", "0"], StartModel(DEFAULT_MODEL_PATH), 0.0),
        (["--max-minutes", "-1"], StartModel(None, ("background", "tumour")), -1.0),
        (["--label-names", "background"], StartModel(None, ("background",)), 2.0),
        (["--label-names", "tumour,tumour"], StartModel(None, ("tumour", "tumour")), 2.0),
    ],
)
def test_the_train_dock_and_the_cli_refuse_alike_and_write_nothing(tmp_path, capsys, options, start, minutes):
    """The dock's constructor (TrainConfig.for_corrections, through prepare_correction_run) applies the same rules
    as the CLI, with the same message, before the scan is copied anywhere."""
    (tmp_path / "cli").mkdir()
    from_cli = _cli_message(tmp_path / "cli", options, capsys)
    label = np.full(SHAPE, IGNORE, np.uint8)
    label[:, :, 2] = 1
    folder = tmp_path / "dock"
    with pytest.raises(UsageError) as e:
        prepare_correction_run(folder, _scan(), label, start, minutes=minutes, output=folder / "m.safetensors")
    assert str(e.value) == from_cli
    assert not folder.exists()  # no copy of the patient's scan was written


def test_a_config_is_frozen_and_resolved_once_against_its_start_model():
    config = TrainConfig(images="i", labels="l", init=str(DEFAULT_MODEL_PATH))
    with pytest.raises(FrozenInstanceError):
        config.lr = 1.0  # type: ignore[misc]
    assert (config.lr, config.label_names, config.network) == (None, None, NetworkOptions())
    card = load_model(DEFAULT_MODEL_PATH).card
    resolved = config.resolve(card)
    assert resolved.lr == FINETUNE_LR and resolved.label_names == tuple(card.labels)
    net = resolved.network
    assert (net.architecture, net.variant, net.width) == (card.architecture, card.network["variant"], 16)
    assert 2 * net.context + 1 == card.network["in_channels"]
    new = TrainConfig(images="i", labels="l").resolve(None)
    assert new.lr == SCRATCH_LR and new.label_names == ("background", "brain") and new.network.width == 16
    # other label names start a new task: its labels, a new model's learning rate, no distillation nor replay
    task = TrainConfig(images="i", labels="l", init="x", label_names=("background", "tumour"), replay=0.5)
    assert task.new_task(card) and not config.new_task(card)
    resolved = task.resolve(card)
    assert resolved.label_names == ("background", "tumour") and resolved.lr == SCRATCH_LR
    assert resolved.distill == 0 and resolved.replay == 0


def test_the_train_dock_starts_a_new_structure_on_the_bundled_models_encoder(tmp_path):
    """StartModel(bundled, other names): a new task from the bundled model, post-processing without the largest
    component (a new structure may have several parts); the bundled model alone still fine-tunes it."""
    label = np.full(SHAPE, IGNORE, np.uint8)
    label[:, :, 2] = 1
    card = load_model(DEFAULT_MODEL_PATH).card
    start = StartModel(DEFAULT_MODEL_PATH, ("background", "tumour"))
    config = prepare_correction_run(tmp_path / "a", _scan(), label, start, minutes=1, output=tmp_path / "a.st")
    assert config.init == str(DEFAULT_MODEL_PATH) and config.new_task(card)
    assert config.label_names == ("background", "tumour") and config.postprocess == ("fill_holes",)
    plain = prepare_correction_run(
        tmp_path / "b", _scan(), label, StartModel(DEFAULT_MODEL_PATH), minutes=1, output=tmp_path / "b.st"
    )
    assert not plain.new_task(card) and plain.postprocess == TrainConfig(images="i", labels="l").postprocess


def test_from_args_takes_the_command_it_is_given_not_sys_argv(monkeypatch):
    monkeypatch.setattr("sys.argv", ["something", "else"])
    args = build_parser().parse_args(["train", "--images", "i", "--labels", "l", "-o", "m.safetensors"])
    config = TrainConfig.from_args(args, "medfcn train --images i --labels l -o m.safetensors")
    assert config.command == "medfcn train --images i --labels l -o m.safetensors"
    assert config.network == NetworkOptions() and config.lr is None and config.label_names is None
