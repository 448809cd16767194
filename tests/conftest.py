"""Shared fixtures: ``write_scan`` (a head volume written in any format), a tiny trained ``model_file``, its
``segmenter``, a napari ``viewer``; helpers live in ``tests/support/``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.support.scans import affine_from_codes, head_volume, write_scan_file


# -- fixtures ----------------------------------------------------------------------------------------------------
@pytest.fixture
def write_scan(tmp_path) -> Callable[..., Path]:
    """Factory: ``write_scan(name, affine=None, array=None, **kw)`` writes a head volume under ``tmp_path``.

    ``name`` picks the format (``"t1.nii.gz"``, ``"ct.nrrd"``, ``"a.mha"``, ``"a.mhd"``, ``"series"`` for DICOM);
    ``affine`` defaults to an LPS-stored 1 x 1.2 x 1.5 mm grid; other keywords go to :func:`write_scan_file`.
    """

    def make(name: str, affine: np.ndarray | None = None, array: np.ndarray | None = None, **kwargs) -> Path:
        arr = head_volume() if array is None else array
        aff = affine_from_codes("LPS") if affine is None else affine
        return write_scan_file(tmp_path / name, arr, aff, **kwargs)

    return make


@pytest.fixture(scope="session")
def model_file(tmp_path_factory) -> Path:
    """A tiny FCN trained for a few steps with ``medfcn.training.train`` (real weights, seconds to make), shared by the
    batch, data-loss, DICOM and distributed tests (none of them changes it)."""
    from tests.support.batch import train_tiny_model

    return train_tiny_model(tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="module")
def segmenter(model_file):
    """The tiny model loaded once per test module, on the CPU."""
    from medfcn.inference.pipeline import Segmenter
    from medfcn.inference.settings import InferenceSettings

    return Segmenter(model_file, InferenceSettings(device="cpu"))


@pytest.fixture
def viewer(make_napari_viewer):
    """A napari viewer (from napari's ``make_napari_viewer``), closed after the test; for ``gui``-marked tests."""
    return make_napari_viewer()


def pytest_collection_finish(session) -> None:
    """Undo what importing OpenCV did to Qt's environment before any viewer starts.

    rt-utils (the tests' independent RTSTRUCT reader) pulls in opencv-python, and MONAI imports ``cv2`` optionally
    when it is imported; OpenCV's Linux wheel then points QT_QPA_PLATFORM_PLUGIN_PATH at its own Qt plugins, and the
    first napari viewer of the session aborts ("Could not load the Qt platform plugin xcb").
    """
    for key in ("QT_QPA_PLATFORM_PLUGIN_PATH", "QT_QPA_FONTDIR"):
        if "cv2" in os.environ.get(key, ""):
            del os.environ[key]
