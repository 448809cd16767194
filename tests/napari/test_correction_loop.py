"""The correction loop in a real viewer (run under ``xvfb-run -a``; issue 33): the Train dock learns the slices the
user painted whatever view is on screen and says which before it starts, never offers a Review overlay as labels,
names the tuned model after its start model, keeps to the file it was saved to, and says what training changed on
the whole scan against the start model."""

from __future__ import annotations

import numpy as np
import pytest

from medfcn.model.checkpoint import load_model
from napari_plugin._layers import labels_to_display
from napari_plugin._widgets.review import ReviewWidget
from tests.support.napari import TIMEOUT_MS, gui, paint_slices, segment_widget
from tests.support.scans import head_labels


def _segmented(viewer, qtbot, tiny_model, scan_file):
    (image,) = viewer.open(str(scan_file), plugin="medfcn")
    segment = segment_widget(viewer, image, tiny_model)
    segment.run()
    qtbot.waitUntil(lambda: "head_labels" in viewer.layers and segment.run_button.enabled, timeout=TIMEOUT_MS)
    return image, viewer.layers["head_labels"], segment


def _finished(train) -> bool:
    return train.worker is None and train.train_button.enabled


@gui
@pytest.mark.slow
def test_train_learns_the_painted_slices_not_the_view_and_names_its_model(
    viewer, qtbot, tiny_model, scan_file, tmp_path, monkeypatch
):
    import medfcn.training.corrections

    monkeypatch.setattr(medfcn.training.corrections, "STEPS_PER_EPOCH", 4)
    image, labels, segment = _segmented(viewer, qtbot, tiny_model, scan_file)
    reference = viewer.add_labels(labels_to_display(head_labels(), image.as_layer_data_tuple()[1]), name="ref")
    reference.metadata = {k: v for k, v in image.metadata.items()}
    review = ReviewWidget(viewer)
    viewer.window.add_dock_widget(review)
    review.prediction.value, review.reference.value = labels, reference
    review.compute()
    qtbot.waitUntil(lambda: review.result is not None and not review._computing, timeout=TIMEOUT_MS)
    overlays = [la for la in viewer.layers if "overlap_codes" in la.metadata]
    assert len(overlays) == 1

    _, train = viewer.window.add_plugin_dock_widget("medfcn", "Train")
    # 3. an overlay is never offered as labels to learn from; the default is the user's corrected layer
    assert overlays[0] not in train.label_layer.choices
    assert train.label_layer.value is labels and train.image.value is image

    # 1. three axial slices corrected, then a look at the coronal view: the dock learns the three axial slices
    paint_slices(viewer, image, labels, 0, [9, 15, 21])
    viewer.dims.order = (1, 0, 2)
    qtbot.wait(50)
    assert "3 corrected axial slices: 9, 15, 21" in train.plan.value, train.plan.value
    train.minutes.value = 0.05
    assert train.run() is not None
    said = [train.status.value]
    assert "3 corrected axial slices: 9, 15, 21" in said[0], said

    def finished() -> bool:  # what the status said on the way
        said.append(train.status.value)
        return _finished(train)

    qtbot.waitUntil(finished, timeout=120_000)
    assert train.trained is not None, train.status.value
    card = load_model(train.trained).card
    data = card.training["data"][0]
    axis = int(image.metadata["display_axes"][0])  # the scan file's axis behind the axial slider
    assert data["annotated_slices"][axis] == 3 and sum(data["annotated_slices"]) == 3
    assert data["annotated_voxels"] == 3 * int(np.prod(image.data.shape[1:]))

    # 4. the tuned model has a name of its own, derived from its start model
    assert card.name != "tiny" and card.name.startswith("tiny") and "fine-tuned on head, 3 slices" in card.name
    # 7. the status says what changed on the whole scan against the start model, named as such; ETA while running
    assert any("left" in s for s in said), said
    final = train.status.value
    assert "whole scan" in final and "voxels" in final and "start model" in final, final
    assert "Dice on annotated voxels" not in final
    assert "smoothed" in " ".join(train.plot.curves)

    # 4. saved elsewhere: the saved file is the one used from then on, and the layers say which model made them
    saved = train.save(tmp_path / "tuned.safetensors")
    assert saved is not None and train.trained == saved
    assert train.segment_with_model() is not None
    qtbot.waitUntil(lambda: "head_labels [2]" in viewer.layers and segment.run_button.enabled, timeout=TIMEOUT_MS)
    new = viewer.layers["head_labels [2]"]
    assert new.metadata["model_path"] == str(saved) and new.metadata["model"] == card.name
    assert card.name in segment.status.value


@gui
def test_train_refuses_to_guess_edits_it_did_not_see(viewer, qtbot, tiny_model, scan_file):
    image, labels, segment = _segmented(viewer, qtbot, tiny_model, scan_file)
    _, train = viewer.window.add_plugin_dock_widget("medfcn", "Train")
    changed = np.asarray(labels.data).copy()
    changed[10] = 1 - changed[10]  # edited from code: no stroke recorded
    labels.data = changed
    assert train.run() is None
    assert "not painted" in train.status.value and "whole layer checked" in train.status.value, train.status.value
    labels.n_edit_dimensions = 3  # a 3-D brush: not a slice
    labels.brush_size = 3
    labels.paint((12, 20, 20), 3)
    assert train.run() is None and "3-D" in train.status.value, train.status.value
