"""A model's expectations in its card (medfcn.model.expectations) and rewriting a card with the weights kept bit for bit
(medfcn.model.checkpoint.replace_card); real safetensors files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from medfcn.errors import ModelError
from medfcn.model.card import ModelCard
from medfcn.model.checkpoint import DEFAULT_MODEL_PATH, load_model, replace_card, save_model
from medfcn.model.expectations import Expectations
from medfcn.model.network import FCN

GOOD = {
    "volume_ml": {"brain": [800.0, 2400.0]},
    "centre": [[0.3, 0.7], [0.2, 0.8], [0.3, 0.9]],
    "pieces": 1,
    "object_quantiles": [i / 20 for i in range(1, 20)],
    "mask_quantiles": [0.4] * 19,
    "profile_distance": 0.05,
    "disagreement": 0.1,
    "uncertain": 0.12,
    "outside_largest": 0.0,
    "source": "test",
}


def _model(tmp_path, **card) -> str:
    net = FCN(in_channels=3, num_classes=2, width=4)
    return save_model(tmp_path / "m.safetensors", net, ModelCard(network=net.config.to_dict(), **card))


def test_a_card_with_expectations_round_trips(tmp_path):
    model = load_model(_model(tmp_path, expectations=GOOD))
    assert Expectations.from_dict(model.card.expectations).volume_ml == {"brain": (800.0, 2400.0)}
    assert Expectations.from_dict(model.card.expectations).to_dict() == GOOD


def test_a_card_without_expectations_still_loads(tmp_path):
    model = load_model(_model(tmp_path))
    assert model.card.expectations == {} and Expectations.from_dict(model.card.expectations).empty


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"volume_ml": {"brain": [2400, 800]}}, "low 2400.0 above high 800.0"),
        ({"volume_ml": {"liver": [1, 2]}}, "labels the model lacks"),
        ({"object_quantiles": [0.1, 0.2]}, "object_quantiles must be 19 quantiles"),
        ({"disagreement": "high"}, "disagreement must be a number"),
        ({"surprise": 1}, "unknown field(s) surprise"),
        ({"centre": [[0, 1]]}, "centre must be three"),
    ],
)
def test_a_bad_expectation_is_refused_naming_it(tmp_path, change, named):
    with pytest.raises(ModelError, match="expectations") as err:
        _model(tmp_path, expectations={**GOOD, **change})
    assert named in str(err.value)


def test_replace_card_keeps_every_weight_bit_for_bit(tmp_path):
    out = tmp_path / "with_expectations.safetensors"
    model = load_model(DEFAULT_MODEL_PATH)
    card = ModelCard.from_json(model.card.to_json())
    card.expectations = GOOD
    replace_card(DEFAULT_MODEL_PATH, card, out)
    before, after = load_file(str(DEFAULT_MODEL_PATH)), load_file(str(out))
    assert before.keys() == after.keys()
    for k in before:  # same dtype, shape and bytes
        assert before[k].dtype == after[k].dtype and before[k].shape == after[k].shape
        assert before[k].reshape(-1).view(torch.uint8).equal(after[k].reshape(-1).view(torch.uint8))
    with safe_open(str(out), framework="pt") as f:
        assert json.loads(f.metadata()["card"])["expectations"] == GOOD
    assert load_model(out).card.expectations == GOOD


def test_replace_card_refuses_a_card_that_does_not_fit_the_weights(tmp_path):
    card = ModelCard.from_json(load_model(DEFAULT_MODEL_PATH).card.to_json())
    card.network = {**card.network, "width": card.network.get("width", 16) * 2}
    with pytest.raises(ModelError, match="weights do not fit"):
        replace_card(DEFAULT_MODEL_PATH, card, tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()
