"""The Annotate dock widget: "Fill between slices" on the Labels layer being painted, by
:func:`medfcn.annotation.interpolate.interpolate_labels` (what ``medfcn interpolate`` runs).

Paint a structure on every few slices of one plane (axial, coronal or sagittal: the plane on screen), press
"Fill between slices" or Shift-I on the layer: every label is interpolated between the slices that hold it, along
the axis the viewer slices through, on the scan's own grid, and shown as a preview layer (``<labels> fill
preview``: the added voxels only, in the labels' colours, half transparent); the painted labels are not touched.
"Apply" (or Shift-I again) writes the preview into the labels as one undo step (Ctrl-Z takes it all back);
"Discard" drops it. A preview is for the labels it was computed from: painted on since, Apply computes it again.

ITK runs in a child process the dock starts when it opens (ITK's first use takes 10-40 s); the fill runs in a
napari ``thread_worker``, so the viewer stays responsive.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import Container, Label, PushButton, create_widget
from napari.qt.threading import thread_worker
from qtpy.QtWidgets import QSizePolicy

from medfcn.annotation.interpolate import Interpolation, interpolate_labels
from medfcn.annotation.itk_process import shared_interpolator
from medfcn.data.display import AXIS_LABELS
from medfcn.errors import MedfcnError

from .._layers import labels_checksum, labels_to_display, layer_geometry, layer_scan
from . import _scan_views
from ._edits import sliced_axis

if TYPE_CHECKING:
    import napari

__all__ = ["AnnotateWidget", "fill_layer", "FILL_KEY"]

log = logging.getLogger(__name__)

FILL_KEY = "Shift-I"  # free in napari 0.9's Labels and viewer key maps ("I" for interpolate)


def fill_layer(data: np.ndarray, attributes: dict, display_axis: int, interpolator=None):
    """Worker body: a Labels layer's data (display order) filled between its slices across ``display_axis`` (the
    axis the viewer slices through), on the layer's scan grid. Returns ``(preview, result)``: the added voxels in
    display order (0 elsewhere) and the :class:`Interpolation` on the scan's grid."""
    data = np.asarray(data)
    _, axes, _ = layer_geometry(data.shape, attributes)
    scan = layer_scan(data, attributes)
    result: Interpolation = interpolate_labels(
        scan.array, axes[display_axis], spacing=scan.spacing, interpolator=interpolator
    )
    filled = labels_to_display(result.labels, attributes).astype(data.dtype, copy=False)
    return np.where(filled != data, filled, 0).astype(data.dtype, copy=False), result


class AnnotateWidget(Container):
    """Pick the Labels layer being painted; fill between its slices (preview), then Apply or Discard."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._viewer = viewer
        self.label_layer = create_widget(label="Labels", annotation="napari.layers.Labels")
        self.fill_button = PushButton(text=f"Fill between slices ({FILL_KEY})")
        self.apply_button = PushButton(text=f"Apply ({FILL_KEY})", enabled=False)
        self.discard_button = PushButton(text="Discard", enabled=False)
        self.status = Label(value="")
        super().__init__(
            widgets=[self.label_layer, self.fill_button, self.apply_button, self.discard_button, self.status]
        )
        self.status.native.setWordWrap(True)
        self.status.native.setMinimumWidth(10)
        self.status.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        _scan_views.install(viewer)
        self.fill_button.clicked.connect(self.fill)
        self.apply_button.clicked.connect(self.apply)
        self.discard_button.clicked.connect(self.discard)
        self.label_layer.changed.connect(self._bind_key)
        self.worker = None
        self.preview = None  # the preview layer
        self._preview_for: tuple | None = None  # (labels layer, checksum of the data it was made from, fill axis)
        self._bound = None
        self._interpolator = shared_interpolator()  # ITK loads in its own process while the person paints
        self._bind_key(self.label_layer.value)

    # -- actions -------------------------------------------------------------------------------------------------
    def fill(self):
        """Compute the fill of the chosen layer along the axis on screen, as a preview (in a worker thread);
        returns the worker (``None`` if there is nothing to do)."""
        layer = self.label_layer.value
        if self.worker is not None:
            return None
        if layer is None:
            self.status.value = "Choose the Labels layer you paint on (or add one: Segment > New labels on this scan)."
            return None
        axis = sliced_axis(self._viewer, layer.ndim)
        if axis is None:
            self.status.value = "Switch to a 2-D view of the slices you painted (the fill runs across them)."
            return None
        data, attributes = layer.as_layer_data_tuple()[:2]
        try:
            layer_geometry(np.shape(data), attributes)
        except MedfcnError as e:
            self.status.value = str(e)
            return None
        data = np.array(data, copy=True)  # what the preview is for, even if the person paints on meanwhile
        self.discard()
        checksum = labels_checksum(data)
        self.worker = thread_worker(fill_layer, start_thread=False, ignore_errors=True)(
            data, attributes, axis, self._interpolator
        )
        self.worker.returned.connect(lambda out: self._on_filled(layer, checksum, axis, *out))
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.fill_button.enabled = False
        self.status.value = f"Filling {layer.name} between its {AXIS_LABELS[axis]} slices ..."
        self.worker.start()
        return self.worker

    def apply(self) -> bool:
        """Write the preview into its labels as one undo step; ``False`` (and a new fill) if the labels changed
        since the preview was computed, or there is no preview."""
        if self.preview is None or self._preview_for is None or self.preview not in self._viewer.layers:
            self.discard()
            return False
        layer, checksum, axis = self._preview_for
        if layer not in self._viewer.layers or labels_checksum(np.asarray(layer.data)) != checksum:
            self.discard()
            self.status.value = "The labels changed since the preview: filling again ..."
            self.fill()
            return False
        added = np.asarray(self.preview.data)
        coords = np.nonzero(added)
        n = int(coords[0].size)
        with layer.block_history():  # one undo step, written slice by slice across the fill's axis, so that each
            for k in np.unique(coords[axis]):  # filled slice is a painted slice of that axis for the Train dock
                on = coords[axis] == k
                where = tuple(c[on] for c in coords)
                layer.data_setitem(where, added[where])
        self.discard()
        self.status.value = f"{layer.name}: {n:,} voxels filled in (Ctrl-Z undoes it)."
        return True

    def discard(self) -> None:
        """Drop the preview (the labels are unchanged)."""
        preview, self.preview, self._preview_for = self.preview, None, None
        if preview is not None and preview in self._viewer.layers:
            self._viewer.layers.remove(preview)
        self.apply_button.enabled = self.discard_button.enabled = False

    # -- callbacks -----------------------------------------------------------------------------------------------
    def _on_key(self, layer) -> None:
        if self.preview is not None and self._preview_for is not None and self._preview_for[0] is layer:
            self.apply()
        else:
            self.label_layer.value = layer
            self.fill()

    def _bind_key(self, layer) -> None:
        if self._bound is not None:
            self._bound.bind_key(FILL_KEY, None, overwrite=True)
        self._bound = layer
        if layer is not None:
            layer.bind_key(FILL_KEY, self._on_key, overwrite=True)

    def _on_filled(self, layer, checksum: str, axis: int, added: np.ndarray, result: Interpolation) -> None:
        plane = AXIS_LABELS[axis]
        if result.axis is None or not added.any():
            self.status.value = f"{layer.name}: nothing to fill between its {plane} slices."
            return
        self.preview = _scan_views.add_labels_like(
            self._viewer,
            layer,
            added,
            name=f"{layer.name} fill preview",
            colormap=layer.colormap,
            opacity=0.45,
            metadata={"preview_of": layer.name},
        )
        self._preview_for = (layer, checksum, axis)
        self._viewer.layers.selection.active = layer  # keep painting on the labels, not on the preview
        self.apply_button.enabled = self.discard_button.enabled = True
        self.status.value = (
            f"Preview: {int(np.count_nonzero(added)):,} voxels of {len(result.added)} label(s) between "
            f"{plane} slices. Apply ({FILL_KEY}) or Discard."
        )

    def _on_error(self, error: BaseException) -> None:
        if isinstance(error, MedfcnError):
            self.status.value = str(error)
        else:
            log.error("fill between slices failed", exc_info=error)
            self.status.value = f"Fill failed: {type(error).__name__}: {error}"

    def _on_finished(self) -> None:
        self.worker = None
        self.fill_button.enabled = True
