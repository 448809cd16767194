"""Regenerate docs/images/napari.png: the sample T1 segmented by the bundled model, both medfcn docks open.

Run from the repository root on a display (or a virtual one)::

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python docs/images/make_napari_screenshot.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import napari
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QApplication

OUT = Path(__file__).resolve().parent / "napari.png"


def wait(condition, timeout_s: float = 900.0) -> None:
    """Process Qt events until ``condition()`` holds (the widgets work in threads)."""
    t0 = time.monotonic()
    while not condition():
        QApplication.processEvents()
        time.sleep(0.05)
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError("the widget did not finish")


def main() -> int:
    import napari._qt.qt_main_window as qt_main_window

    qt_main_window.SHOW_QT_WARNING = False  # no "PyQt5 is deprecated" toast over the canvas
    viewer = napari.Viewer(title="medfcn")
    viewer.window._qt_window.resize(1680, 1050)
    t1, mask = viewer.open_sample("medfcn", "colin27")
    segment_dock, segment = viewer.window.add_plugin_dock_widget("medfcn", "Segment")
    review_dock, review = viewer.window.add_plugin_dock_widget("medfcn", "Review")

    segment.image.value, segment.device.value = t1, "cpu"
    t0 = time.monotonic()
    segment.run()
    wait(lambda: "colin27_labels" in viewer.layers and segment.run_button.enabled)
    print(f"segmented in {time.monotonic() - t0:.1f} s: {segment.status.value}")

    labels = viewer.layers["colin27_labels"]
    review.prediction.value, review.reference.value = labels, mask
    review.compute()
    wait(lambda: review.result is not None and review.compute_button.enabled)
    print(review.status.value)

    viewer.layers["colin27_labels vs colin27_brain_mask"].visible = False
    mask.visible = False
    labels.opacity = 0.45
    viewer.layers.selection.active = labels
    viewer.dims.set_point(0, t1.data_to_world((80, 0, 0))[0])  # an axial slice through the ventricles
    viewer.window._qt_window.resizeDocks([segment_dock, review_dock], [230, 790], Qt.Vertical)
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.05)
    viewer.screenshot(str(OUT), canvas_only=False)
    print(f"wrote {OUT}")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
