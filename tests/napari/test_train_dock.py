"""The Train dock in a real viewer (issue 23): paint, train, cancel, train again, save, segment with the result.

``MEDFCN_SCREENSHOT=docs/images/train_dock.png xvfb-run -a python -m pytest tests/napari/test_train_dock.py`` also
writes the screenshot of the dock the README shows.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from medfcn.model.checkpoint import file_sha256, load_model
from tests.support.napari import TIMEOUT_MS, gui, paint_slices, segment_widget


class LoopWatch:
    """A QTimer ticking every 50 ms; ``longest`` is the longest gap between two ticks (the event loop blocked)."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.last, self.longest, self.running, self.phase, self.gaps = time.monotonic(), 0.0, True, "", []
        self.timer = QTimer()
        self.timer.setInterval(50)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self) -> None:
        now = time.monotonic()
        if self.running:
            self.longest = max(self.longest, now - self.last)
            self.gaps.append((round(now - self.last, 2), self.phase))
        self.last = now

    def watch(self, phase: str, running: bool = True) -> None:
        """Count gaps from now on (``running``) or not (while the test itself computes in the viewer's thread)."""
        self.phase, self.running, self.last = phase, running, time.monotonic()

    def stop(self) -> float:
        self.timer.stop()
        return self.longest

    def longest_in(self, phases: set[str]) -> float:
        return max((gap for gap, phase in self.gaps if phase in phases), default=0.0)


def _segmented(viewer, qtbot, tiny_model, scan_file):
    (image,) = viewer.open(str(scan_file), plugin="medfcn")
    segment = segment_widget(viewer, image, tiny_model)
    segment.run()
    qtbot.waitUntil(lambda: "head_labels" in viewer.layers and segment.run_button.enabled, timeout=TIMEOUT_MS)
    _, train = viewer.window.add_plugin_dock_widget("medfcn", "Train")
    train.image.value, train.label_layer.value = image, viewer.layers["head_labels"]
    return image, viewer.layers["head_labels"], segment, train


def _paint(viewer, image, labels, slices) -> None:
    """Correct whole slices along the viewer's slicing axis to the true labels (brain 1), as a user paints them."""
    paint_slices(viewer, image, labels, viewer.dims.not_displayed[-1], slices)


def _finished(train) -> bool:
    return train.worker is None and train.train_button.enabled


@gui
@pytest.mark.slow
def test_train_dock_end_to_end(viewer, qtbot, tiny_model, scan_file, tmp_path, monkeypatch):
    import medfcn.training.corrections

    monkeypatch.setattr(medfcn.training.corrections, "STEPS_PER_EPOCH", 6)  # short epochs for a short test
    image, labels, segment, train = _segmented(viewer, qtbot, tiny_model, scan_file)
    _paint(viewer, image, labels, [9, 15, 21])
    train.minutes.value = 2.0
    watch = LoopWatch()
    watch.watch("train and cancel")

    # 1. Train, and Cancel once an epoch has been saved: it stops within a second, keeping that epoch's model.
    run = train.run()
    assert run is not None and train.run() is None  # one run at a time
    qtbot.waitUntil(lambda: any(getattr(p, "epoch_done", False) for p in run.items), timeout=TIMEOUT_MS)
    t0 = time.monotonic()
    train.cancel()
    qtbot.waitUntil(lambda: _finished(train), timeout=TIMEOUT_MS)
    assert time.monotonic() - t0 < 1.0
    watch.watch("checks", running=False)  # the test's own reading of files below is not the dock's
    assert "cancelled" in train.status.value and train.trained is not None
    first = train.trained
    assert load_model(first).card.metrics["epoch"] >= 1

    # 2. Train again for the whole (short) budget.
    train.minutes.value = 0.05
    watch.watch("train")
    train.run()
    qtbot.waitUntil(lambda: _finished(train), timeout=TIMEOUT_MS)
    watch.watch("checks", running=False)
    assert train.trained is not None and train.trained != first and "Trained" in train.status.value
    # The head's axial slices are 1.2 mm apart, the model's frame 1.5 mm: one of the three painted slices falls
    # between the frame's samples and is snapped to its nearest frame slice (issue 34), which the dock says.
    assert "1 painted axial slice fell between the samples of the model's 1.5 mm frame" in train.status.value
    assert len(train._loss) > 0 and np.all(np.isfinite(train._loss))  # the live plot's data
    card = load_model(train.trained).card
    record = card.training
    assert record["init"]["sha256"] == file_sha256(tiny_model)
    assert card.name.startswith("tiny fine-tuned on head, 3 slices")
    assert card.labels == load_model(tiny_model).card.labels and record["ignore_label"] == 255
    # three whole slices annotated, along the axis of the scan file the viewer sliced
    axis = int(image.metadata["display_axes"][viewer.dims.not_displayed[-1]])
    assert record["data"][0]["annotated_slices"][axis] == 3
    assert record["data"][0]["moved_to_frame"]["axial"]["snapped"] == 1
    assert (
        record["data"][0]["annotated_voxels"]
        == 3 * np.prod(image.data.shape) // image.data.shape[viewer.dims.not_displayed[-1]]
    )

    # 3. Save (the dialog's answer given directly); a model in use is never overwritten.
    watch.watch("save")
    saved = train.save(tmp_path / "tuned.safetensors")
    watch.watch("checks", running=False)
    assert saved is not None and load_model(saved).card.training == record
    before = tiny_model.read_bytes()
    assert train.save(tiny_model) is None and "in use" in train.status.value
    assert tiny_model.read_bytes() == before

    # 4. Segment with this model: the Segment dock uses it and adds a new layer (the edited one is kept).
    if os.environ.get("MEDFCN_SCREENSHOT"):
        train.native.grab().save(os.environ["MEDFCN_SCREENSHOT"])
    watch.watch("segment")
    assert train.segment_with_model() is not None
    qtbot.waitUntil(lambda: "head_labels [2]" in viewer.layers and segment.run_button.enabled, timeout=TIMEOUT_MS)
    watch.stop()
    new = viewer.layers["head_labels [2]"]
    assert new.metadata["model_path"] == str(train.trained) and segment.model_in_use() == train.trained
    assert new.data.shape == image.data.shape
    # The viewer's event loop never blocked for more than 0.5 s by the Train dock (training runs in a child process).
    # The Segment dock's run (its worker thread and adding the layer, issue 24's code) is held to 2 s: on this
    # shared 2-core machine at load 10-12 it blocked 0.3-1.8 s; at a normal load it stays under 0.5 s.
    long = [g for g in watch.gaps if g[0] > 0.2]
    assert watch.longest_in({"train and cancel", "train", "save"}) < 0.5, long
    assert watch.longest_in({"segment"}) < 2.0, long


@gui
def test_train_dock_refuses_bad_input_with_one_line(viewer, qtbot, tiny_model, scan_file, tmp_path):
    image, labels, segment, train = _segmented(viewer, qtbot, tiny_model, scan_file)
    # no edit yet, in "edited slices only" mode
    assert train.run() is None and "no slice painted yet" in train.status.value
    # a label layer on another grid
    other = viewer.add_labels(np.zeros((5, 6, 7), np.uint8), name="other")
    train.label_layer.value = other
    assert train.run() is None and "other" in train.status.value and "\n" not in train.status.value
    # a model file that cannot be fine-tuned: said when the worker reads it, nothing written
    train.label_layer.value = labels
    _paint(viewer, image, labels, [12])
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    train.start.value, train.model_file.value = "model file", bad
    assert train.run() is not None
    qtbot.waitUntil(lambda: _finished(train), timeout=TIMEOUT_MS)
    assert "cannot be fine-tuned" in train.status.value and train.trained is None
    assert not train.save_button.enabled
