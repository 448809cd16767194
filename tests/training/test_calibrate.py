"""Decision weights in the model card and ``medfcn calibrate``: hand-worked thresholds, a reference made at a known
threshold recovered, and the usage errors."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medfcn.cli import main
from medfcn.data.pairs import LabelledPair
from medfcn.data.reader import read_scan
from medfcn.errors import ModelError
from medfcn.inference.frame import normalise_intensity
from medfcn.inference.pipeline import Segmenter
from medfcn.inference.settings import InferenceSettings
from medfcn.model.checkpoint import ModelCard, describe, load_model, save_model
from medfcn.training.calibrate import THRESHOLDS, background_weight, calibrate
from tests.support.batch import SHAPE, read_labels, write_cases
from tests.support.scans import affine_from_codes, write_scan_file


def _weighted(model_file, threshold: float | None):
    """The tiny model with its background weight set for ``threshold`` (None: no weights)."""
    model = load_model(model_file)
    weights = () if threshold is None else (background_weight(threshold), 1.0)
    return dataclasses.replace(model, card=dataclasses.replace(model.card, class_weights=weights))


def test_threshold_to_weight_by_hand():
    # p_fg > w p_bg with p_bg = 1 - p_fg  <=>  p_fg > w / (1 + w): w = t / (1 - t)
    assert background_weight(0.5) == 1.0
    assert background_weight(0.8) == pytest.approx(4.0)
    assert background_weight(0.25) == pytest.approx(1 / 3)
    assert 0.5 in THRESHOLDS and min(THRESHOLDS) == 0.3 and max(THRESHOLDS) == 0.8


def test_card_refuses_bad_weights_and_keeps_good_ones(tmp_path, model_file):
    for bad in [(1.0,), (1.0, 0.0), (-1.0, 1.0), (float("nan"), 1.0), ("a", 1.0), (1.0, 1e6)]:
        with pytest.raises(ModelError, match="class_weights"):
            ModelCard(class_weights=bad)
    model = _weighted(model_file, 0.6)
    path = save_model(tmp_path / "w.safetensors", model.network, model.card)
    again = load_model(path)
    assert again.card.class_weights == pytest.approx((1.5, 1.0))
    assert "weights      1.5, 1" in describe(again)


def test_weights_scale_the_accumulated_probabilities(model_file):
    volume = normalise_intensity(np.random.default_rng(0).random((24, 28, 20)).astype(np.float32) * 1000)
    plain = Segmenter(_weighted(model_file, None), InferenceSettings(device="cpu")).probabilities(volume)
    model = load_model(model_file)
    ones = dataclasses.replace(model, card=dataclasses.replace(model.card, class_weights=(1.0, 1.0)))
    ones = Segmenter(ones, InferenceSettings(device="cpu")).probabilities(volume)
    np.testing.assert_array_equal(ones, plain)  # weights of 1 change nothing
    weighted = Segmenter(_weighted(model_file, 0.75), InferenceSettings(device="cpu")).probabilities(volume)
    # weights (3, 1) are stored scaled to at most 1: (1, 1/3); each of the 3 axes rounds once
    np.testing.assert_array_equal(weighted[0], plain[0])
    assert np.abs(weighted[1].astype(int) - plain[1] / 3.0).max() <= 2.0  # 3 x (0.5 + 0.5 / 3)


def test_calibrate_recovers_the_threshold_a_reference_was_made_at(tmp_path, model_file):
    image = write_cases(tmp_path / "images", 1, first_seed=7)[0]
    target = 0.7
    reference = Segmenter(_weighted(model_file, target), InferenceSettings(device="cpu")).segment(read_scan(image))
    default = Segmenter(_weighted(model_file, None), InferenceSettings(device="cpu")).segment(read_scan(image))
    assert (reference != default).any(), "the tiny model's probabilities must not be saturated for this test"
    label = write_scan_file(tmp_path / "labels" / "case00.nii.gz", reference, affine_from_codes("LPS"))
    pairs = [LabelledPair("case00", Path(image), Path(label))]
    result = calibrate(model_file, pairs, tmp_path / "calibrated.safetensors", device="cpu")
    dice_at = {t: d for t, (d, _) in result.table.items()}
    assert dice_at[target] > 0.999
    assert dice_at[0.5] < dice_at[target]
    assert abs(result.threshold - target) <= 0.05
    calibrated = load_model(result.output)
    assert calibrated.card.class_weights[0] == pytest.approx(background_weight(result.threshold))
    assert calibrated.card.training["calibration"]["threshold"] == result.threshold
    out = Segmenter(calibrated, InferenceSettings(device="cpu")).segment(read_scan(image))
    agree = 2 * ((out > 0) & (reference > 0)).sum() / ((out > 0).sum() + (reference > 0).sum())
    assert agree > 0.999
    assert read_labels(label).shape == SHAPE


def test_calibrate_refuses_a_label_on_another_grid(tmp_path, model_file):
    image = write_cases(tmp_path / "images", 1)[0]
    label = write_scan_file(tmp_path / "labels" / "case00.nii.gz", np.ones(SHAPE, np.uint8), affine_from_codes("RAS"))
    code = main(
        [
            "calibrate",
            str(model_file),
            "--images",
            str(image),
            "--labels",
            str(label),
            "-o",
            str(tmp_path / "out.safetensors"),
            "--device",
            "cpu",
        ]
    )
    assert code != 0
    assert not (tmp_path / "out.safetensors").exists()


def test_calibrate_refuses_an_unwritable_output_before_any_work(tmp_path, model_file, capsys):
    image = write_cases(tmp_path / "images", 1)[0]
    label = write_scan_file(tmp_path / "labels" / "case00.nii.gz", np.ones(SHAPE, np.uint8), affine_from_codes("RAS"))
    (tmp_path / "a_file").write_text("")
    argv = ["calibrate", str(model_file), "--images", str(image), "--labels", str(label)]
    code = main([*argv, "-o", str(tmp_path / "a_file" / "out.safetensors"), "--device", "cpu"])
    # the output is refused first: the label on another grid (read later) is never reached
    assert code == 2
    assert "cannot write the model there" in capsys.readouterr().err


def test_calibrate_never_overwrites_its_model_and_usage_errors_come_first(tmp_path, model_file):
    before = model_file.read_bytes()
    image = write_cases(tmp_path / "images", 1)[0]
    code = main(["calibrate", str(model_file), "--images", str(image), "--labels", str(image), "-o", str(model_file)])
    assert code == 2
    assert model_file.read_bytes() == before
    probe = (
        "import sys; from medfcn.cli import main; code = main(['calibrate', '-o', 'x.safetensors']); "
        "print(code, 'torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, encoding="utf-8", errors="replace", cwd=tmp_path
    )
    assert done.stdout.split() == ["2", "False"]
    assert "give --images and --labels" in done.stderr
