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


def segment_widget(viewer, layer, model_path=None, device="cpu", backend="torch") -> SegmentWidget:
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image.value = layer
    if model_path is not None:
        widget.model_source.value = ModelSource.FILE
        widget.checkpoint.value = model_path
    widget.device.value = device
    widget.backend.value = backend
    return widget


def open_review(viewer, pred_path, ref_path):
    """Open two label files and a Review dock on them: ``(pred layer, ref layer, widget)``."""
    from napari_plugin._widgets.review import ReviewWidget

    (pred,) = viewer.open(str(pred_path), plugin="medfcn")
    (ref,) = viewer.open(str(ref_path), plugin="medfcn")
    widget = ReviewWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.prediction.value, widget.reference.value = pred, ref
    return pred, ref, widget


def computed(widget, qtbot):
    """Press Compute on a Review dock and wait for its new result."""
    before = widget.result
    assert widget.compute() is not None
    qtbot.waitUntil(lambda: widget.result is not before and not widget._computing, timeout=TIMEOUT_MS)
    return widget.result


def paint_slices(viewer, image, labels, axis: int, slices) -> None:
    """Correct whole slices of ``labels`` to the true labels of :func:`tests.support.scans.head_labels` (brain 1) as
    a user does, slice by slice in the view of data ``axis``: each a stroke napari records in the layer's history
    (``data_setitem``, what its brush and fill end in), so the slices painted are recorded as painted."""
    import numpy as np

    from napari_plugin._layers import labels_to_display
    from tests.support.scans import head_labels

    truth = labels_to_display((head_labels() > 0).astype(np.uint8), image.as_layer_data_tuple()[1])
    viewer.dims.order = (axis, *(a for a in range(3) if a != axis))
    for k in slices:
        viewer.dims.set_current_step(axis, k)
        index = list(np.nonzero(np.ones(np.delete(truth.shape, axis), bool)))
        index.insert(axis, np.full(index[0].size, k))
        labels.data_setitem(tuple(index), truth[tuple(index)])
