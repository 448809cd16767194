"""``medfcn train`` records what the trained model expects of scans (its card's ``expectations``, for quality
verdicts) from its own segmentations of its training cases; a model fine-tuned from one that has them keeps them."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.torch import load_file

from medfcn.model.checkpoint import load_model
from medfcn.model.expectations import VOLUME_MARGIN, Expectations
from medfcn.training.options import NetworkOptions
from medfcn.training.train import TrainConfig, train
from tests.support.scans import affine_from_codes, head_labels, head_volume, write_scan_file

pytestmark = pytest.mark.slow  # trains small networks

SHAPE = (24, 28, 22)


def _config(root, **kw) -> TrainConfig:
    base = dict(
        images=str(root / "images"),
        labels=str(root / "labels"),
        output=str(root / "m.safetensors"),
        spacing=3.0,
        epochs=1,
        steps_per_epoch=6,
        batch_size=6,
        augment=False,
        device="cpu",
        lr=5e-3,
        val_cases=0,
        command="medfcn train (test)",
    )
    return TrainConfig(**{**base, **kw}, network=NetworkOptions(width=4))


def test_training_records_expectations_and_fine_tuning_keeps_them(tmp_path):
    aff = affine_from_codes("LPS", spacing=(3.0, 3.0, 3.0))
    volumes = []
    for i, grow in enumerate((0, 2)):  # two cases with brains of different sizes
        label = head_labels(SHAPE) > 0
        if grow:
            from scipy import ndimage

            label = ndimage.binary_dilation(label, iterations=grow)
        write_scan_file(tmp_path / "images" / f"case{i}.nii.gz", head_volume(SHAPE, seed=i), aff)
        write_scan_file(tmp_path / "labels" / f"case{i}.nii.gz", label.astype(np.uint8), aff)
        volumes.append(label.sum() * 27 / 1000)  # 3 mm voxels, mL
    train(_config(tmp_path), progress=False)

    card = load_model(tmp_path / "m.safetensors").card
    e = Expectations.from_dict(card.expectations)
    lo, hi = e.volume_ml["brain"]
    assert lo == pytest.approx(VOLUME_MARGIN[0] * min(volumes), abs=0.1)
    assert hi == pytest.approx(VOLUME_MARGIN[1] * max(volumes), abs=0.1)
    assert e.uncertain is not None and len(e.object_quantiles) == 19 and "2 training cases" in e.source

    tuned = tmp_path / "tuned.safetensors"
    train(_config(tmp_path, output=str(tuned), init=str(tmp_path / "m.safetensors"), lr=1e-4), progress=False)
    assert load_model(tuned).card.expectations == card.expectations
    assert load_file(str(tuned)).keys() == load_file(str(tmp_path / "m.safetensors")).keys()
