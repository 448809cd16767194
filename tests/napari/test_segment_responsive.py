"""The Segment dock on a large scan in a real viewer (run under ``xvfb-run -a``): progress moves and Cancel works
while the scan is still being resampled onto the model's frame, the viewer's event loop never stops for more than
0.5 s from the press of Segment to the result (the adding of the result layer comes after:
``benchmarks/bench_plugin_responsive.py`` measures it), the viewer's thread imports nothing when it adds the first
result layer (the worker readied it), and the status names each label's volume in mL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import QTimer

from medfcn.data.scan import Scan
from medfcn.inference import pipeline
from napari_plugin._layers import scan_layer_data
from tests.support.napari import TIMEOUT_MS, gui, segment_widget
from tests.support.scans import head_volume


@pytest.fixture(scope="module")
def big_scan() -> Scan:
    """A 0.5 mm head-sized scan (300 x 330 x 280 voxels, 55 MB of int16): seconds of resampling to 1.5 mm."""
    small = head_volume((50, 55, 47), seed=3)
    big = np.repeat(np.repeat(np.repeat(small, 6, 0), 6, 1), 6, 2)[:300, :330, :280]
    return Scan((big * 1000).astype(np.int16), (0.5, 0.5, 0.5), (-75.0, -80.0, -70.0), np.eye(3), case="big")


def add_scan(viewer, scan):
    data, kwargs, _ = scan_layer_data(scan, layer_type="image")
    return viewer.add_image(data, **kwargs)


def start(viewer, scan, model, monkeypatch):
    """A Segment dock running on ``scan``: ``(widget, fractions [(time, fraction)], inference starts [time])``."""
    image = add_scan(viewer, scan)
    widget = segment_widget(viewer, image, model)
    fractions, inference = [], []
    original = pipeline.Segmenter.probabilities

    def probabilities(self, *args, **kwargs):
        inference.append(time.perf_counter())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pipeline.Segmenter, "probabilities", probabilities)
    shown = widget._on_progress
    widget._on_progress = lambda f: (fractions.append((time.perf_counter(), f)), shown(f))
    assert widget.run() is not None
    return widget, fractions, inference


@gui
def test_progress_moves_and_cancel_stops_during_preprocessing(viewer, qtbot, tiny_model, big_scan, monkeypatch):
    widget, fractions, inference = start(viewer, big_scan, tiny_model, monkeypatch)
    qtbot.waitUntil(lambda: any(0 < f < pipeline._FRAME_SHARE for _, f in fractions), timeout=TIMEOUT_MS)
    assert not inference  # still resampling onto the model's frame, and the bar has moved
    qtbot.waitUntil(lambda: widget.progress.value > 0, timeout=TIMEOUT_MS)
    cancelled = time.perf_counter()
    widget.cancel()
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=TIMEOUT_MS)
    assert time.perf_counter() - cancelled < 1.0  # within one slab of the resampling
    assert widget.status.value == "Cancelled." and not inference  # the network never ran
    assert "big_labels" not in viewer.layers


@gui
def test_the_event_loop_never_blocks_and_volumes_are_named_in_ml(viewer, qtbot, tiny_model, big_scan, monkeypatch):
    widget, fractions, inference = start(viewer, big_scan, tiny_model, monkeypatch)
    ticks = [time.perf_counter()]  # from the moment Segment was pressed to the result coming back
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(10)
    done, show = [], widget._on_done
    widget._on_done = lambda *args: (done.append(time.perf_counter()), show(*args))
    qtbot.waitUntil(lambda: "big_labels" in viewer.layers and widget.run_button.enabled, timeout=120_000)
    timer.stop()
    # the adding of the layer to the viewer comes after: not counted (bench_plugin_responsive.py measures it)
    gaps = np.diff([t for t in ticks if t <= done[0]] + [done[0]])
    assert inference and fractions[0][0] < inference[0]  # progress reported before inference started
    assert gaps.max() < 0.5, f"the event loop stopped for {gaps.max():.2f} s at {np.argmax(gaps)} of {gaps.size}"

    labels = viewer.layers["big_labels"]
    for name, value in labels.metadata["label_names"].items():
        if int(name) == 0:
            continue
        ml = np.count_nonzero(np.asarray(labels.data) == int(name)) * 0.5**3 / 1000  # voxels x 0.125 mm³
        assert f"{value} {ml:,.1f} mL" in widget.status.value
        assert labels.metadata["volumes_ml"][int(name)] == pytest.approx(ml)


FIRST_LAYER = r"""
import json, sys, threading
import numpy as np
import napari
from qtpy.QtWidgets import QApplication
from napari_plugin._widgets import _scan_views, segment

viewer = napari.Viewer(show=False)
image = viewer.add_image(np.zeros((6, 7, 8), np.float32), scale=(0.5, 0.5, 0.5), units="mm")
worker = threading.Thread(target=segment._warm_first_labels_layer)  # what the Segment dock's worker does last
worker.start()
worker.join()
before = set(sys.modules)
layer = _scan_views.add_labels_like(  # as the dock adds its result: metadata, features, the image's placement
    viewer, image, np.ones((6, 7, 8), np.uint8), name="head_labels", metadata={"model": "m"},
    features={"index": [0, 1], "label": ["background", "brain"]},
)
QApplication.processEvents()
print("NEW " + json.dumps(sorted(set(sys.modules) - before)))
viewer.close()
"""


@gui
def test_the_first_result_layer_imports_nothing_on_the_viewers_thread(tmp_path):
    """The first Labels layer of a process builds napari's random label colours through ``skimage.color`` (with
    ``scipy.linalg``: 0.05-0.08 s of the viewer's thread) and a features table through pandas: the worker imports
    them, so adding the result layer imports no module. In a process of its own: this one has imported them all."""
    env = {**os.environ, "NAPARI_CONFIG": str(tmp_path / "napari.yaml")}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", FIRST_LAYER], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    new = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("NEW "))[4:])
    assert new == [], new
