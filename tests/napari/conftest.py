"""Fixtures of the napari tests: a tiny untrained model file and a head scan file."""

from __future__ import annotations

import pytest

from medfcn.model.checkpoint import ModelCard, save_model
from medfcn.model.network import FCN
from tests.support.scans import affine_from_codes, head_volume, write_scan_file


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained small FCN saved as a medfcn model file (deterministic weights)."""
    import torch

    torch.manual_seed(0)
    net = FCN(in_channels=3, num_classes=2, width=4, depth=2, variant="fcn16s", stem_stride=1)
    card = ModelCard(network=net.config.to_dict(), name="tiny", spacing=(1.5, 1.5, 1.5), slice_axes=(2,))
    return save_model(tmp_path_factory.mktemp("model") / "tiny.safetensors", net, card)


@pytest.fixture
def scan_file(tmp_path):
    return write_scan_file(tmp_path / "head.nii.gz", head_volume(), affine_from_codes("LSA"))
