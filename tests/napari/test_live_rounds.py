"""The Train dock's live mode in a real viewer (issue 34, point 3; run under ``xvfb-run -a``): strokes on a fresh
layer start short training rounds in the background; each round's model segments the scan into ``<labels>_preview``
(never the user's layer, which stays selected and unchanged); the next round goes on from the last one's model;
Accept copies the preview where nothing is painted and starts no round; a round whose labels layer goes while it
runs shows nothing and leaves the dock free (no run held); unticked, strokes start nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medfcn.inference.pipeline import Segmenter
from medfcn.inference.settings import InferenceSettings
from medfcn.model.checkpoint import file_sha256, load_model
from medfcn.training.corrections import CorrectionMode
from napari_plugin._layers import labels_to_display, layer_scan
from napari_plugin._widgets import _live
from napari_plugin._widgets.train import StartChoice
from tests.support.napari import TIMEOUT_MS, empty_labels_on, gui
from tests.support.scans import affine_from_codes, head_volume, write_scan_file

pytestmark = pytest.mark.slow  # three short training runs in child processes


def _stroke(labels, k: int, half: int, value: int = 1) -> None:
    """One stroke on display slice ``k``: a square of ``value`` (0: the eraser), as napari's brush records it."""
    index = np.nonzero(np.pad(np.ones((2 * half, 2 * half), bool), ((14 - half, 16 - half), (13 - half, 15 - half))))
    labels.data_setitem((np.full(index[0].size, k), *index), value)


@gui
def test_live_rounds_follow_the_strokes_into_a_preview_layer(viewer, qtbot, tmp_path, monkeypatch, tiny_model):
    import medfcn.training.corrections
    import napari_plugin._widgets.train

    monkeypatch.setattr(medfcn.training.corrections, "STEPS_PER_EPOCH", 4)  # short rounds for a short test
    monkeypatch.setattr(napari_plugin._widgets.train, "ROUND_MINUTES", 0.05)
    scan = write_scan_file(tmp_path / "head.nii.gz", head_volume((34, 30, 28)), affine_from_codes("LSA"))
    (image,) = viewer.open(str(scan), plugin="medfcn")
    labels = empty_labels_on(viewer, image, name="blob")
    _, train = viewer.window.add_plugin_dock_widget("medfcn", "Train")
    train.image.value, train.label_layer.value = image, labels
    train.start.value = StartChoice.FILE.value
    train.model_file.value = tiny_model
    train.mode.value = CorrectionMode.PAINTED.value

    for k, half in ((3, 3), (9, 5)):
        _stroke(labels, k, half)
    assert train.worker is None  # live is off: strokes start nothing
    train.live.value = True  # ticked: a round on what is painted so far
    qtbot.waitUntil(lambda: train.worker is not None, timeout=TIMEOUT_MS)
    assert "Live round 1: learning 2 corrected" in train.status.value, train.status.value
    _stroke(labels, 15, 4)  # painted while round 1 runs: round 2 follows it
    qtbot.waitUntil(lambda: "blob_preview" in viewer.layers, timeout=10 * TIMEOUT_MS)
    preview = viewer.layers["blob_preview"]
    assert not preview.editable and viewer.layers.selection.active is labels  # the brush stays on the user's layer
    first = preview.metadata["model_path"]
    assert load_model(first).card.training["init"]["sha256"] == file_sha256(tiny_model)
    first_sha = file_sha256(first)
    assert "blob_preview" not in [la.name for la in train.label_layer.choices if la is not None]

    qtbot.waitUntil(lambda: preview.metadata["live_round"] == 2 and train.worker is None, timeout=10 * TIMEOUT_MS)
    second = preview.metadata["model_path"]
    assert second != first and train.trained == type(train.trained)(second)
    record = load_model(second).card.training
    assert record["init"]["sha256"] == first_sha  # round 2 went on from round 1's model ...
    assert not Path(first).exists()  # ... whose file went once round 2's was shown (not one file per round)
    assert record["data"][0]["annotated_slices"][int(image.metadata["display_axes"][0])] == 3
    assert len(train._live.latencies) == 2 and "Live round 2: blob_preview shows" in train.status.value
    expected = Segmenter(second, InferenceSettings(device="cpu")).segment(layer_scan(*image.as_layer_data_tuple()[:2]))
    assert np.array_equal(preview.data, labels_to_display(expected, image.as_layer_data_tuple()[1]))

    painted = np.asarray(labels.data).copy()
    assert np.count_nonzero(painted) == 36 + 100 + 64  # the three strokes, nothing else written into the layer
    preview.data = np.where(painted > 0, 0, 1).astype(preview.data.dtype)  # a known preview to accept
    n = train.accept()
    assert n == int((painted == 0).sum()) and np.array_equal(labels.data, np.where(painted > 0, painted, 1))
    qtbot.wait(_live.PAUSE_MS + 500)
    assert train.worker is None and train._live.rounds == 2  # Accept is not a stroke: no round learns the preview

    kept = train.trained
    _stroke(labels, 20, 3, value=0)  # an erasing stroke (the accepted preview holds 1 there): round 3 starts ...
    qtbot.waitUntil(lambda: train.worker is not None, timeout=TIMEOUT_MS)
    viewer.layers.remove(labels)  # ... and its labels layer goes while it runs
    qtbot.waitUntil(lambda: train.worker is None, timeout=10 * TIMEOUT_MS)
    assert "ended before its preview" in train.status.value, train.status.value
    assert train.trained == kept and kept.is_file() and preview.metadata["live_round"] == 2  # nothing misplaced

    other = empty_labels_on(viewer, image, name="other")
    train.label_layer.value = other
    train.live.value = False
    _stroke(other, 5, 3)
    qtbot.wait(_live.PAUSE_MS + 500)
    assert train.worker is None and "other_preview" not in viewer.layers  # unticked: strokes start nothing


@gui
def test_a_round_keeps_the_model_before_while_a_layer_uses_it(viewer):
    """The round before's model leaves the temporary folder when a round's preview is shown, but not while a layer
    it segmented ("Segment with this model") still names it."""
    from napari_plugin._widgets._live import _Round

    image = viewer.add_image(np.zeros((4, 5, 6), np.float32))
    labels = viewer.add_labels(np.zeros((4, 5, 6), np.uint8), name="blob")
    _, train = viewer.window.add_plugin_dock_widget("medfcn", "Train")
    live = train._live

    def round_after(previous: Path, output: Path):
        for path in (previous, output):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"a model")
        live.round = _Round(0, image, labels, "2 slices", previous, shown=True)
        return live.done(output, previous)[0]

    r1, r2, r3 = (train.folder / f"run{k}" / "model.safetensors" for k in (1, 2, 3))
    segmented = viewer.add_labels(np.zeros((4, 5, 6), np.uint8), name="seg", metadata={"model_path": str(r1)})
    assert round_after(r1, r2) == r2 and r1.is_file()  # a layer names it: kept
    viewer.layers.remove(segmented)
    assert round_after(r2, r3) == r3 and not r2.exists() and r3.is_file()  # nothing uses it: gone
