"""Shared fixtures: ``write_scan`` (a head volume written in any format), a tiny trained ``model_file``, its
``segmenter``, a napari ``viewer``; helpers live in ``tests/support/``."""

from __future__ import annotations

import gc
import os
import sys
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


@pytest.fixture(autouse=True)
def _no_modal_dialog_waits_forever(monkeypatch):
    """A file dialog opened by the code under test fails the test at once instead of waiting for a click that never
    comes (CI hung for 90 minutes on one). A test that means to answer a dialog sets its own answer after this."""
    if "qtpy.QtWidgets" not in sys.modules:  # no Qt in this process yet: no application, so no dialog can open
        return
    from qtpy.QtWidgets import QFileDialog

    def refuse(*args, **kwargs):
        raise AssertionError(f"a modal file dialog opened unanswered: {args[1] if len(args) > 1 else args}")

    for name in ("getExistingDirectory", "getOpenFileName", "getOpenFileNames", "getSaveFileName"):
        monkeypatch.setattr(QFileDialog, name, refuse)


@pytest.fixture(autouse=True)
def _viewer_teardown_scans_only_this_tests_objects(request):
    """napari's viewer fixture ends each test with a full garbage collection (a closed viewer lives in reference
    cycles); with torch, MONAI and hundreds of earlier tests' objects on the heap that took 1.5-2 s a test (120 s of
    the suite). Objects alive before a viewer test starts are moved out of the collector's sight (``gc.freeze``),
    so its collection scans only what the test made."""
    if "make_napari_viewer" in request.fixturenames:
        gc.freeze()
