"""The Segment dock widget: an Image layer -> a Labels layer, by :meth:`medfcn.pipeline.Segmenter.segment`.

The work runs in a napari ``thread_worker``; the pipeline's progress callback drives the progress bar (through
the main thread) and its cancel callback is polled between batches, so the viewer stays responsive and Cancel
stops the work within one batch.
"""

from __future__ import annotations

import copy
import logging
import threading
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, ProgressBar, PushButton, create_widget
from napari.qt.threading import thread_worker
from superqt.utils import ensure_main_thread

from medfcn.engine import DeviceName
from medfcn.errors import CancelledError, MedfcnError

from .._layers import labels_to_display, layer_scan

if TYPE_CHECKING:
    import napari

__all__ = ["SegmentWidget", "ModelSource", "available_devices"]

log = logging.getLogger(__name__)


class ModelSource(StrEnum):
    """Where the Segment widget takes its model from."""

    BUNDLED = "bundled default"
    FILE = "checkpoint file"


def available_devices() -> list[str]:
    """``auto``, ``cpu`` and the accelerators this machine has (``cuda:N``, ``mps``)."""
    import torch

    devices = [DeviceName.AUTO.value, DeviceName.CPU.value]
    devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append(DeviceName.MPS.value)
    return devices


def _segment(segmenter, model, device: str, scan, progress, cancel):
    """Worker body: load the model unless ``segmenter`` already holds it, then segment. Returns both."""
    from medfcn.pipeline import Segmenter

    if segmenter is None:
        segmenter = Segmenter(model, device=device)
    return segmenter, segmenter.segment(scan, progress=progress, cancel=cancel)


class SegmentWidget(Container):
    """Pick an Image layer, a model and a device; Segment adds ``<image>_labels`` on the image's grid."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._viewer = viewer
        self.image = create_widget(label="Image", annotation="napari.layers.Image")
        self.model_source = ComboBox(label="Model", choices=[m.value for m in ModelSource], value=ModelSource.BUNDLED)
        self.checkpoint = FileEdit(label="Checkpoint", mode="r", filter="*.safetensors", visible=False)
        self.device = ComboBox(label="Device", choices=available_devices(), value=DeviceName.AUTO)
        self.run_button = PushButton(text="Segment")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="Progress", min=0, max=100, value=0)
        self.status = Label(value="")
        super().__init__(
            widgets=[
                self.image,
                self.model_source,
                self.checkpoint,
                self.device,
                self.run_button,
                self.cancel_button,
                self.progress,
                self.status,
            ]
        )
        self.model_source.changed.connect(self._on_source)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.worker = None
        self._running = False
        self._cancel = threading.Event()
        self._cached: tuple[tuple, object] | None = None  # ((model path, mtime, device), Segmenter)

    # -- actions -------------------------------------------------------------------------------------------------
    def run(self):
        """Start segmenting the chosen image in a worker thread; returns the worker (``None`` if nothing to do)."""
        layer = self.image.value
        if self._running:
            return None
        if layer is None:
            self.status.value = "Open a scan first (File > Open, or File > Open Sample > medfcn)."
            return None
        model = None
        if self.model_source.value == ModelSource.FILE:
            model = Path(self.checkpoint.value)
            if not model.is_file():
                self.status.value = "Choose a model file (.safetensors) or the bundled default."
                return None
        try:
            scan = layer_scan(*layer.as_layer_data_tuple()[:2])
        except MedfcnError as e:
            self.status.value = str(e)
            return None
        key = (str(model), model.stat().st_mtime if model else None, str(self.device.value))  # a rewritten file reloads
        segmenter = self._cached[1] if self._cached and self._cached[0] == key else None
        self._cancel.clear()
        self.worker = thread_worker(_segment, start_thread=False, ignore_errors=True)(
            segmenter, model, str(self.device.value), scan, self._on_progress, self._cancel.is_set
        )
        self.worker.returned.connect(lambda result: self._on_done(layer, key, *result))
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.run_button.enabled, self.cancel_button.enabled, self._running = False, True, True
        self.progress.value = 0
        self.status.value = f"Segmenting {layer.name} ..."
        self.worker.start()
        return self.worker

    def cancel(self) -> None:
        """Ask the running segmentation to stop after its current batch."""
        self._cancel.set()
        self.status.value = "Cancelling ..."

    # -- callbacks -----------------------------------------------------------------------------------------------
    def _on_source(self, value: str) -> None:
        self.checkpoint.visible = value == ModelSource.FILE

    @ensure_main_thread
    def _on_progress(self, fraction: float) -> None:
        self.progress.value = int(round(100 * min(max(fraction, 0.0), 1.0)))

    def _on_done(self, layer, key: tuple, segmenter, labels: np.ndarray) -> None:
        self._cached = (key, segmenter)
        data, attrs, _ = layer.as_layer_data_tuple()
        metadata = copy.deepcopy(dict(layer.metadata))
        metadata["model"] = segmenter.model.name
        metadata["label_names"] = {int(v): k for k, v in segmenter.model.card.labels.items()}
        name = f"{layer.name}_labels"
        kwargs = dict(
            scale=layer.scale,
            translate=layer.translate,
            rotate=layer.rotate,
            affine=layer.affine,
            units=layer.units,
            axis_labels=layer.axis_labels,
            metadata=metadata,
        )
        display = labels_to_display(labels, attrs)
        if name in self._viewer.layers and self._viewer.layers[name].data.shape == display.shape:
            out = self._viewer.layers[name]
            out.data, out.metadata = display, metadata
        else:
            out = self._viewer.add_labels(display, name=name, **kwargs)
        self.progress.value = 100
        found = ", ".join(
            f"{n} {np.count_nonzero(display == v):,} voxels" for n, v in segmenter.model.card.labels.items() if v != 0
        )
        self.status.value = f"{out.name}: {found} ({segmenter.model.name} on {segmenter.device})"

    def _on_error(self, error: BaseException) -> None:
        if isinstance(error, CancelledError):
            self.status.value = "Cancelled."
            self.progress.value = 0
        elif isinstance(error, MedfcnError):
            self.status.value = str(error)
        else:
            log.error("segmentation failed", exc_info=error)
            self.status.value = f"Segmentation failed: {type(error).__name__}: {error}"

    def _on_finished(self) -> None:
        self.run_button.enabled, self.cancel_button.enabled, self._running = True, False, False
