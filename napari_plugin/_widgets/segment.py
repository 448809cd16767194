"""The Segment dock widget: an Image layer -> a Labels layer, by :meth:`medfcn.inference.pipeline.Segmenter.segment`.

The work runs in a napari ``thread_worker``; the pipeline's progress callback drives the progress bar (through
the main thread) and its cancel callback is polled between batches, so the viewer stays responsive and Cancel
stops the work within one batch.

Edits are never lost: the result goes into ``<image>_labels``, replaced on a rerun only while it holds exactly what
Segment wrote there (its checksum is in the metadata); once painted on, a rerun writes a new layer
(``<image>_labels [2]``, ...) beside it. The result records the model, the device, the time and the label names
(shown on hover). "New labels on this scan" adds an empty Labels layer on the image's scan grid, to draw on.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import logging
import threading
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, ProgressBar, PushButton, create_widget
from napari.qt.threading import thread_worker
from qtpy.QtWidgets import QSizePolicy
from superqt.utils import ensure_main_thread

from medfcn import __version__
from medfcn.errors import CancelledError, MedfcnError
from medfcn.inference.engine import DeviceName

from .._layers import labels_to_display, layer_scan
from . import _scan_views

if TYPE_CHECKING:
    import napari

__all__ = ["SegmentWidget", "ModelSource", "available_devices", "labels_checksum", "is_unedited"]

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


def labels_checksum(data: np.ndarray) -> str:
    """A checksum of a label array's values, shape and type (to tell whether a layer was edited)."""
    array = np.ascontiguousarray(data)
    digest = hashlib.blake2b(f"{array.dtype.str}{array.shape}".encode(), digest_size=16)
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def is_unedited(layer) -> bool:
    """Whether a Labels layer still holds exactly what Segment wrote into it (a rerun may replace it)."""
    recorded = layer.metadata.get("labels_checksum")
    return recorded is not None and recorded == labels_checksum(np.asarray(layer.data))


def _segment(segmenter, model, device: str, scan, progress, cancel):
    """Worker body: load the model unless ``segmenter`` already holds it, then segment. Returns both."""
    from medfcn.inference.pipeline import Segmenter

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
        self.new_labels_button = PushButton(text="New labels on this scan")
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
                self.new_labels_button,
                self.status,
            ]
        )
        self.status.native.setWordWrap(True)  # long messages wrap instead of widening the dock
        self.status.native.setMinimumWidth(10)
        self.status.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        _scan_views.install(viewer)
        self.new_labels_button.clicked.connect(self.new_labels)
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

    def new_labels(self):
        """Add an empty Labels layer on the chosen image's scan grid (it saves on that grid); returns it."""
        layer = self.image.value
        if layer is None:
            self.status.value = "Open a scan first (File > Open, or File > Open Sample > medfcn)."
            return None
        out = _scan_views.new_labels_on_scan(self._viewer, layer)
        self.status.value = f"{out.name}: draw with the paint brush; it saves on the grid of {layer.name}."
        return out

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
        attrs = layer.as_layer_data_tuple()[1]
        display = labels_to_display(labels, attrs)
        card_labels = segmenter.model.card.labels
        metadata = copy.deepcopy(dict(layer.metadata))
        metadata.update(
            model=segmenter.model.name,
            device=str(segmenter.device),
            segmented_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            medfcn_version=__version__,
            image=layer.name,
            label_names={int(v): k for k, v in card_labels.items()},
            labels_checksum=labels_checksum(display),
        )
        features = {"index": [int(v) for v in card_labels.values()], "label": list(card_labels)}
        name = f"{layer.name}_labels"
        target = self._viewer.layers[name] if name in self._viewer.layers else None
        kept = ""
        if target is not None and target.data.shape == display.shape and is_unedited(target):
            target.data, target.metadata, target.features = display, metadata, features
            out = target
        else:
            if target is not None:
                name, kept = _free_name(self._viewer, name), f"; {target.name} was edited, so it is kept"
            out = _scan_views.add_labels_like(
                self._viewer, layer, display, name=name, metadata=metadata, features=features
            )
        self.progress.value = 100
        found = ", ".join(f"{n} {np.count_nonzero(display == v):,} voxels" for n, v in card_labels.items() if v != 0)
        self.status.value = f"{out.name}: {found} ({segmenter.model.name} on {segmenter.device}){kept}"

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


def _free_name(viewer, name: str) -> str:
    """``name [2]``, ``name [3]``, ...: the first not taken by a layer."""
    k = 2
    while f"{name} [{k}]" in viewer.layers:
        k += 1
    return f"{name} [{k}]"
