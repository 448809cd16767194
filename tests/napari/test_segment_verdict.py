"""The Segment dock shows the quality verdict (medfcn.inference.verdict) under the volumes, in a real viewer (run
under ``xvfb-run -a``), and keeps it in the result layer's metadata."""

from __future__ import annotations

import numpy as np

from medfcn.data.scan import Scan
from napari_plugin._layers import scan_layer_data
from tests.support.napari import TIMEOUT_MS, gui, segment_widget
from tests.support.scans import head_volume


def _segment(viewer, qtbot, scan: Scan, model):
    data, kwargs, _ = scan_layer_data(scan, layer_type="image")
    image = viewer.add_image(data, **kwargs)
    widget = segment_widget(viewer, image, model)
    assert widget.run() is not None
    qtbot.waitUntil(lambda: f"{scan.case}_labels" in viewer.layers and widget.run_button.enabled, timeout=TIMEOUT_MS)
    return widget, viewer.layers[f"{scan.case}_labels"]


@gui
def test_a_blank_scan_is_flagged_in_the_dock(viewer, qtbot, tiny_model):
    blank = Scan(np.zeros((30, 32, 24), np.int16), (1.5, 1.5, 1.5), (0.0, 0.0, 0.0), np.eye(3), case="blank")
    widget, labels = _segment(viewer, qtbot, blank, tiny_model)
    q = labels.metadata["quality"]
    assert q["review"] is True and q["score"] < 0.5  # whatever the tiny model makes of it: empty, or unsure
    assert f"\nCheck this result (quality score {q['score']:.2f}):\n- {q['reasons'][0]}" in widget.status.value


@gui
def test_a_head_gets_a_verdict_with_its_score(viewer, qtbot, tiny_model):
    head = Scan(head_volume((40, 44, 36), seed=2), (1.5, 1.5, 1.5), (0.0, 0.0, 0.0), np.eye(3), case="head")
    widget, labels = _segment(viewer, qtbot, head, tiny_model)
    q = labels.metadata["quality"]
    assert set(q) == {"review", "score", "reasons"}
    assert f"(quality score {q['score']:.2f})" in widget.status.value
    assert all(reason in widget.status.value for reason in q["reasons"])


@gui
def test_the_uncertainty_layer_on_request_overlays_the_scan_and_toggles(viewer, qtbot, tiny_model):
    """Ticked, a run adds ``<image>_uncertain`` (0/1, placed as the labels are, not editable); the voxels it marks
    are those ``segment_and_check(uncertainty=True)`` maps on the scan's own grid; unticking hides the layer."""
    from medfcn.inference.pipeline import Segmenter
    from medfcn.inference.settings import InferenceSettings
    from napari_plugin._layers import labels_to_display

    head = Scan(head_volume((40, 44, 36), seed=2), (1.5, 1.5, 1.5), (0.0, 0.0, 0.0), np.eye(3), case="head")
    data, kwargs, _ = scan_layer_data(head, layer_type="image")
    image = viewer.add_image(data, **kwargs)
    widget = segment_widget(viewer, image, tiny_model)
    assert "head_uncertain" not in viewer.layers
    widget.uncertainty.value = True
    assert widget.run() is not None
    qtbot.waitUntil(lambda: "head_uncertain" in viewer.layers and widget.run_button.enabled, timeout=TIMEOUT_MS)
    unsure, labels = viewer.layers["head_uncertain"], viewer.layers["head_labels"]
    assert unsure.data.shape == labels.data.shape and not unsure.editable
    assert np.allclose(unsure.affine.affine_matrix, labels.affine.affine_matrix)
    assert (unsure.scale == labels.scale).all() and (unsure.translate == labels.translate).all()
    expected = Segmenter(tiny_model, InferenceSettings(device="cpu")).segment_and_check(head, uncertainty=True)
    assert expected.uncertain.any()
    attributes = image.as_layer_data_tuple()[1]
    assert (unsure.data == labels_to_display(expected.uncertain, attributes)).all()
    widget.uncertainty.value = False
    assert not unsure.visible
    widget.uncertainty.value = True
    assert unsure.visible
