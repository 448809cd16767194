"""What the napari plugin's tests share: the ``gui`` marker, which skips a test when there is no display.

(The ``viewer`` fixture they use is in ``conftest.py``.)
"""

from __future__ import annotations

import os
import sys

import pytest

from napari_plugin._widgets.segment import ModelSource, SegmentWidget

NO_DISPLAY = sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def gui(test):
    """Mark a test that opens a viewer; skip it with no display (a marker, not a fixture: Qt aborts the process
    when an application is made with no display)."""
    skip = pytest.mark.skipif(NO_DISPLAY, reason="a napari viewer needs a display: run under xvfb-run -a")
    return pytest.mark.gui(skip(test))


def empty_labels_on(viewer, image, name: str = "drawn"):
    """A new, empty Labels layer placed exactly over Image layer ``image`` (as napari's "New labels" makes it)."""
    import numpy as np

    return viewer.add_labels(
        np.zeros(image.data.shape, np.uint8),
        name=name,
        scale=image.scale,
        translate=image.translate,
        rotate=image.rotate,
        metadata=image.metadata,
    )


TIMEOUT_MS = 30_000


def segment_widget(viewer, layer, model_path=None, device="cpu") -> SegmentWidget:
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image.value = layer
    if model_path is not None:
        widget.model_source.value = ModelSource.FILE
        widget.checkpoint.value = model_path
    widget.device.value = device
    return widget
