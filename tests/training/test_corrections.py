"""What the Train dock calls (issue 23): corrected layers -> a partial label, a run's configuration, a saved copy."""

from __future__ import annotations

import numpy as np
import pytest

from medfcn.data.scan import Scan
from medfcn.errors import MedfcnError, OutputError, UsageError
from medfcn.model.checkpoint import DEFAULT_MODEL_PATH, load_model
from medfcn.training.corrections import (
    CorrectionMode,
    StartModel,
    correction_label,
    prepare_correction_run,
)
from medfcn.training.options import FINETUNE_LR, IGNORE
from medfcn.training.output import save_trained_model

SHAPE = (6, 7, 8)


def test_edited_slices_are_annotated_whole_and_the_rest_ignored():
    pred = np.zeros(SHAPE, np.uint8)
    fixed = pred.copy()
    fixed[2:4, 3, 5] = 1  # one stroke in axial slice 5 ...
    fixed[1, 1, 2] = 1  # ... and a dot in slice 2
    label, slices = correction_label(pred, fixed, CorrectionMode.EDITED, axis=2)
    assert slices == [2, 5]
    assert np.array_equal(label[:, :, [2, 5]], fixed[:, :, [2, 5]])
    assert np.all(np.delete(label, [2, 5], axis=2) == 255)
    # without an axis: the one along which the fewest slices changed (here axis 2: 2 slices; axes 0 and 1: 3 and 2)
    _, auto = correction_label(pred, fixed, "edited slices only")
    assert auto == [1, 3]  # axis 1 ties with 2 slices and comes first


def test_painted_slices_of_a_fresh_layer_are_annotated_whole_without_a_prediction():
    """A new structure painted on a few slices of an empty layer (issue 34): those slices count whole (their
    unpainted voxels as background), every other slice is not annotated; a prediction, if any, is not looked at."""
    fixed = np.zeros(SHAPE, np.uint8)
    fixed[2:4, 3:5, 1] = 1
    fixed[1, 1, 6] = 2
    for prediction in (None, np.ones(SHAPE, np.uint8)):
        label, slices = correction_label(prediction, fixed, CorrectionMode.PAINTED, axis=2)
        assert slices == [1, 6]
        assert np.array_equal(label[..., [1, 6]], fixed[..., [1, 6]]) and (label[..., [1, 6]] == 0).sum() == 2 * 42 - 5
        assert np.all(np.delete(label, [1, 6], axis=2) == 255)
    _, auto = correction_label(None, fixed, "painted slices only")  # no axis: the one with the fewest slices
    assert len(auto) == 2
    with pytest.raises(MedfcnError, match="my labels: no slice holds a label: paint the structure"):
        correction_label(None, np.zeros(SHAPE, np.uint8), CorrectionMode.PAINTED, axis=2, name="my labels")


def test_whole_layer_is_the_label_and_bad_input_is_refused_in_one_line():
    pred = np.zeros(SHAPE, np.uint8)
    fixed = pred.copy()
    fixed[0, 0, 0] = 1
    label, _ = correction_label(None, fixed, CorrectionMode.WHOLE)
    assert np.array_equal(label, fixed)
    for prediction, corrected, message in [
        (pred, pred, "no slice differs"),
        (None, fixed, "was not made by the Segment dock"),
        (pred[:-1], fixed, "is not that of its prediction"),
        (pred, np.full(SHAPE, 255, np.uint8), "255 means not annotated"),
    ]:
        with pytest.raises(MedfcnError) as e:
            correction_label(prediction, corrected, CorrectionMode.EDITED, axis=2, name="my labels")
        assert message in str(e.value) and "my labels" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UsageError, match="correction mode"):
        correction_label(pred, fixed, "some slices")


def _scan() -> Scan:
    return Scan(np.random.default_rng(0).random(SHAPE, dtype=np.float32), (1.0, 1.2, 1.5), (0, 0, 0), np.eye(3))


def test_a_run_fine_tunes_the_start_model_or_makes_a_new_one(tmp_path):
    label = np.full(SHAPE, 255, np.uint8)
    label[:, :, 3] = 1
    config = prepare_correction_run(
        tmp_path, _scan(), label, StartModel(DEFAULT_MODEL_PATH), minutes=2, output=tmp_path / "m"
    )
    assert config.init == str(DEFAULT_MODEL_PATH) and config.label_names is None and config.max_minutes == 2
    assert config.val_cases == 0 and config.ignore_label == IGNORE and config.lr is None  # resolved from the card
    written = load_model(DEFAULT_MODEL_PATH).card
    resolved = config.resolve(written)
    assert (resolved.network.width, resolved.network.variant) == (written.network["width"], written.network["variant"])
    assert resolved.lr == FINETUNE_LR and resolved.label_names == tuple(written.labels)
    from medfcn.data.reader import read_scan

    assert np.array_equal(read_scan(config.labels).array, label)  # on the scan's grid, 255 kept
    new = prepare_correction_run(
        tmp_path, _scan(), label, StartModel(None, ("background", "tumour")), minutes=1, output=tmp_path / "n"
    )
    assert new.init == "" and new.label_names == ("background", "tumour")
    with pytest.raises(UsageError, match="at least two distinct label names"):
        prepare_correction_run(
            tmp_path, _scan(), label, StartModel(None, ("background",)), minutes=1, output=tmp_path / "x"
        )
    with pytest.raises(MedfcnError, match="not on the grid"):
        prepare_correction_run(
            tmp_path, _scan(), label[:-1], StartModel(DEFAULT_MODEL_PATH), minutes=1, output=tmp_path / "x"
        )


def test_a_live_round_goes_on_as_the_round_before_was_trained(tmp_path):
    """The Train dock's next live round starts from the last round's model: at that round's learning rate and
    distillation weight (a new structure's rounds all learn at a new model's rate, without the last round's
    predictions as targets), not a fine-tuning run's."""
    from dataclasses import replace

    from medfcn.model.checkpoint import replace_card
    from medfcn.training.options import SCRATCH_LR

    card = load_model(DEFAULT_MODEL_PATH).card
    earlier = replace_card(
        DEFAULT_MODEL_PATH, replace(card, training={"settings": {"lr": SCRATCH_LR, "distill": 0.0}}), tmp_path / "r1"
    )
    label = np.full(SHAPE, 255, np.uint8)
    label[:, :, 3] = 1
    go_on = prepare_correction_run(
        tmp_path, _scan(), label, StartModel(earlier, continues=True), minutes=1, output=tmp_path / "r2"
    )
    assert (go_on.init, go_on.lr, go_on.distill) == (str(earlier), SCRATCH_LR, 0.0)
    assert go_on.resolve(load_model(earlier).card).lr == SCRATCH_LR
    tune = prepare_correction_run(tmp_path, _scan(), label, StartModel(earlier), minutes=1, output=tmp_path / "t")
    assert (tune.lr, tune.distill) == (None, 1.0) and tune.resolve(load_model(earlier).card).lr == FINETUNE_LR


def test_saving_never_overwrites_a_model_in_use(tmp_path):
    trained = tmp_path / "trained.safetensors"
    trained.write_bytes(b"the trained model")
    start = tmp_path / "start.safetensors"
    start.write_bytes(b"the start model")
    for target in (start, DEFAULT_MODEL_PATH, trained):
        with pytest.raises(OutputError, match="in use"):
            save_trained_model(trained, target, [start])
    assert start.read_bytes() == b"the start model"
    with pytest.raises(OutputError, match="is a folder"):
        save_trained_model(trained, tmp_path, [start])
    out = save_trained_model(trained, tmp_path / "copy.safetensors", [start])
    assert out.read_bytes() == b"the trained model"
