"""A new structure in a real viewer (issue 34): paint it on 3 slices of a fresh layer, Fill between slices (Annotate
dock), train a new structure from the bundled model's encoder on the painted and filled slices (Train dock, "painted
slices only"), segment the scan with that model, accept its labels where nothing is painted.

``MEDFCN_SCREENSHOT=/tmp/new_structure.png xvfb-run -a python -m pytest tests/napari/test_new_structure_flow.py``
also writes a screenshot of the viewer at the end.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from medfcn.model.checkpoint import DEFAULT_MODEL_PATH, file_sha256, load_model
from medfcn.training.corrections import CorrectionMode
from napari_plugin._widgets.train import StartChoice
from tests.support.napari import TIMEOUT_MS, empty_labels_on, gui
from tests.support.scans import affine_from_codes, head_volume, write_scan_file

pytestmark = pytest.mark.slow  # ITK's first use (10-40 s) and a short training run


@gui
def test_paint_three_slices_fill_between_train_a_new_structure_segment_and_accept(viewer, qtbot, tmp_path, monkeypatch):
    import medfcn.training.corrections

    monkeypatch.setattr(medfcn.training.corrections, "STEPS_PER_EPOCH", 4)  # a short epoch for a short test
    scan = write_scan_file(tmp_path / "head.nii.gz", head_volume((34, 30, 28)), affine_from_codes("LSA"))
    (image,) = viewer.open(str(scan), plugin="medfcn")
    labels = empty_labels_on(viewer, image, name="blob")
    for k, half in ((3, 3), (9, 5), (15, 4)):  # display slices across display axis 0, the one the viewer slices
        labels.data[k, 14 - half : 14 + half, 13 - half : 13 + half] = 1
    labels.refresh()

    # 1. Fill between the three painted slices, applied.
    _, annotate = viewer.window.add_plugin_dock_widget("medfcn", "Annotate")
    annotate.label_layer.value = labels
    assert annotate.fill() is not None
    qtbot.waitUntil(lambda: annotate.preview is not None, timeout=10 * TIMEOUT_MS)
    assert annotate.apply()
    held = np.flatnonzero(labels.data.any(axis=(1, 2)))
    assert held.tolist() == list(range(3, 16))  # every slice between the first and last painted one

    # 2. Train a new structure on the painted and filled slices, from the bundled model's encoder.
    _, train = viewer.window.add_plugin_dock_widget("medfcn", "Train")
    train.image.value, train.label_layer.value = image, labels
    train.start.value = StartChoice.STRUCTURE.value
    assert not train.label_names.native.isHidden() and train.model_file.native.isHidden()
    train.label_names.value = "background,blob"
    train.mode.value = CorrectionMode.EDITED.value
    assert train.run() is None and "was not made by the Segment dock" in train.status.value  # no prediction
    train.mode.value = CorrectionMode.PAINTED.value
    train.minutes.value = 0.05
    assert train.run() is not None
    qtbot.waitUntil(lambda: train.worker is None and train.train_button.enabled, timeout=10 * TIMEOUT_MS)
    assert train.trained is not None, train.status.value
    card = load_model(train.trained).card
    assert card.labels == {"background": 0, "blob": 1} and card.postprocess == ("fill_holes",)
    record = card.training
    assert record["init"]["sha256"] == file_sha256(DEFAULT_MODEL_PATH)
    assert record["init"]["new_task"]["start_labels"] == load_model(DEFAULT_MODEL_PATH).card.labels
    axis = int(image.metadata["display_axes"][0])  # the scan file's axis the viewer sliced
    assert record["data"][0]["annotated_slices"][axis] == 13
    assert record["data"][0]["annotated_voxels"] == 13 * np.prod(image.data.shape) // image.data.shape[0]

    # 3. Segment the scan with the new model: a new layer on the scan's grid, the painted layer untouched.
    before = labels.data.copy()
    n = len(viewer.layers)
    assert train.segment_with_model() is not None
    qtbot.waitUntil(lambda: len(viewer.layers) > n, timeout=10 * TIMEOUT_MS)
    new = viewer.layers[-1]
    assert new.metadata["model_path"] == str(train.trained) and new.data.shape == image.data.shape
    assert np.array_equal(labels.data, before)

    # 4. Accept the model's labels where nothing is painted, as one undo step. A few seconds of training predict
    # little, so the model's layer is given a known region too, across painted and unpainted slices.
    new.data[:, 10:14, 11:15] = 1
    new.refresh()
    predicted = np.asarray(new.data).copy()
    n = train.accept()
    assert n == int(((before == 0) & (predicted != 0)).sum()) > 0, train.status.value
    assert np.array_equal(labels.data, np.where(before > 0, before, predicted))
    labels.undo()
    assert np.array_equal(labels.data, before)
    labels.redo()
    assert np.array_equal(labels.data, np.where(before > 0, before, predicted))
    if os.environ.get("MEDFCN_SCREENSHOT"):
        viewer.dims.set_current_step(0, 9)
        viewer.screenshot(os.environ["MEDFCN_SCREENSHOT"], canvas_only=False)
