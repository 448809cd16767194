"""Model files: round trip, the bundled model, and refusal of anything that is not a medfcn model."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from medfcn.errors import ModelError, OutputError
from medfcn.model.checkpoint import DEFAULT_MODEL_PATH, ModelCard, describe, load_model, save_model
from medfcn.model.network import FCN


def _model(tmp_path, **kw):
    torch.manual_seed(0)
    net = FCN(in_channels=3, num_classes=3, variant="fcn16s", upsampling="transpose", width=8, **kw)
    for m in net.modules():  # non-trivial batch-norm statistics, so that a lost buffer would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    card = ModelCard(
        network=net.config.to_dict(),
        labels={"background": 0, "a": 1, "b": 2},
        spacing=(1.0, 1.0, 2.0),
        slice_axes=(2,),
        training={"command": "medfcn train x", "data_sha256": "abc"},
    )
    path = save_model(tmp_path / "m.safetensors", net, card)
    return net.eval(), card, path


def test_round_trip_rebuilds_an_identical_model(tmp_path):
    net, card, path = _model(tmp_path)
    model = load_model(path)
    assert model.card == card
    x = torch.randn(2, 3, 45, 51)
    with torch.no_grad():
        assert torch.equal(model.network(x), net(x))
    for key, value in net.state_dict().items():
        assert torch.equal(model.network.state_dict()[key], value), key
    assert len(model.sha256) == 64
    text = describe(model)
    assert "a=1" in text and "medfcn train x" in text and "1 x 1 x 2 mm" in text


class _Trap:
    def __reduce__(self):
        return (os.system, (f"touch {_Trap.marker}",))


@pytest.mark.parametrize("writer", ["pickle", "torch"])
def test_a_booby_trapped_pickle_is_refused_without_running_it(tmp_path, writer):
    _Trap.marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    if writer == "pickle":
        path.write_bytes(pickle.dumps({"state_dict": _Trap()}))
    else:
        torch.save({"state_dict": _Trap()}, path)
    with pytest.raises(ModelError, match="not a medfcn model file"):
        load_model(path)
    assert not _Trap.marker.exists()


def test_other_files_are_refused_with_clear_errors(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "missing.safetensors")
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(ModelError, match="not a medfcn model"):
        load_model(plain)
    net, card, path = _model(tmp_path)
    future = tmp_path / "future.safetensors"
    save_file(
        dict(net.state_dict()),
        str(future),
        metadata={"format": "medfcn", "format_version": "99", "card": card.to_json()},
    )
    with pytest.raises(ModelError, match="format version 99"):
        load_model(future)
    wrong = tmp_path / "wrong.safetensors"
    other = json.loads(card.to_json())
    other["network"]["width"] = 16
    save_file(
        dict(net.state_dict()),
        str(wrong),
        metadata={"format": "medfcn", "format_version": "1", "card": json.dumps(other)},
    )
    with pytest.raises(ModelError, match="do not fit"):
        load_model(wrong)


def test_card_validation_names_the_problem():
    with pytest.raises(ModelError, match="architecture"):
        ModelCard(architecture="resnet")
    with pytest.raises(ModelError, match="slice_axes"):
        ModelCard(slice_axes=(3,))
    with pytest.raises(ModelError, match="label ids"):
        ModelCard(labels={"background": 0, "brain": 2})


def _with_card(source, path, **changes):
    """A copy of the model file ``source`` at ``path`` whose card has ``changes``."""
    from safetensors import safe_open

    with safe_open(str(source), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(path), metadata={**meta, "card": json.dumps(json.loads(meta["card"]) | changes)})
    return path


@pytest.mark.parametrize(
    ("field", "value", "choices"),
    [
        ("normalisation", "bogus", "percentile, zscore"),
        ("architecture", "resnet", "fcn, basicunet"),
        ("postprocess", ["fill_holes", "erode"], "largest_component, fill_holes"),
    ],
)
def test_a_card_with_an_unknown_choice_fails_at_load(tmp_path, field, value, choices):
    """Not at segment time, case after case: the load names the file, the field, the value and the choices."""
    bad = _with_card(DEFAULT_MODEL_PATH, tmp_path / "bad.safetensors", **{field: value})
    with pytest.raises(ModelError) as err:
        load_model(bad)
    message = str(err.value)
    assert str(bad) in message and f"is not one of: {choices}" in message and "\n" not in message, message


def test_card_choices_are_stored_in_their_canonical_spelling():
    card = ModelCard(normalisation=" ZScore", postprocess=["Fill_Holes"], architecture="FCN")
    assert (card.normalisation, card.postprocess, card.architecture) == ("zscore", ("fill_holes",), "fcn")


_KILLED_SAVE = """
import os, sys, torch
from pathlib import Path
import safetensors.torch
from medfcn.model.checkpoint import ModelCard, save_model
from medfcn.model.network import FCN

def killed(state, name, metadata=None):  # half a file, then the process dies (no clean-up runs)
    Path(name).write_bytes(b"partial")
    os._exit(9)

safetensors.torch.save_file = killed
net = FCN(in_channels=3, num_classes=2, width=4, depth=2, variant="fcn16s")
save_model(sys.argv[1], net, ModelCard(network=net.config.to_dict()))
"""


def test_a_save_killed_midway_keeps_the_previous_model_and_a_recognised_temporary(tmp_path):
    import subprocess
    import sys

    from medfcn.data.writer import remove_stale_partials

    net, card, path = _model(tmp_path)
    before = path.read_bytes()
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_SAVE, str(path)], capture_output=True, encoding="utf-8", errors="replace"
    )
    assert done.returncode == 9, done.stderr
    assert path.read_bytes() == before and load_model(path).card.labels == card.labels
    left = [p for p in tmp_path.iterdir() if p != path]
    assert len(left) == 1 and left[0].name.startswith(f".{path.name}.")  # the dead process's temporary
    assert remove_stale_partials(tmp_path) == left and sorted(tmp_path.iterdir()) == [path]


def test_a_failed_save_leaves_the_previous_model_and_nothing_else(tmp_path, monkeypatch):
    import safetensors.torch

    net, card, path = _model(tmp_path)
    before = path.read_bytes()

    def fails(state, name, metadata=None):
        open(name, "wb").write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", fails)
    with pytest.raises(OutputError, match="No space left"):
        save_model(path, net, card)
    assert path.read_bytes() == before and sorted(tmp_path.iterdir()) == [path]


def test_the_bundled_model_loads_with_its_card():
    model = load_model()
    card = model.card
    assert card.labels == {"background": 0, "brain": 1}
    assert card.training["command"].startswith("medfcn train")
    assert len(card.training["data_sha256"]) == 64
    assert DEFAULT_MODEL_PATH.stat().st_size < 10 * 2**20
    out = model.network(torch.zeros(1, card.network["in_channels"], 40, 48))
    assert out.shape == (1, 2, 40, 48) and np.isfinite(out.detach().numpy()).all()
