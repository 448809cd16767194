"""The Segment dock widget: an Image layer -> a Labels layer, by :meth:`medfcn.inference.pipeline.Segmenter.segment`.

The work runs in a napari ``thread_worker``; the pipeline's progress callback drives the progress bar (through
the main thread) and its cancel callback is polled between slabs and batches, from the resampling onto the model's
frame on, so the viewer stays responsive and Cancel stops the work within one slab or batch. The result's
reordering, checksum and volumes are computed in the worker too; the viewer's thread only adds the layer. The
status names each label's volume in mL.

Edits are never lost: the result goes into ``<image>_labels``, replaced on a rerun only while it holds exactly what
Segment wrote there (its checksum is in the metadata); once painted on, a rerun writes a new layer
(``<image>_labels [2]``, ...) beside it. The result records the model, the device, the time and the label names
(shown on hover). "New labels on this scan" adds an empty Labels layer on the image's scan grid, to draw on.
"""

from __future__ import annotations

import copy
import datetime
import logging
import threading
from dataclasses import dataclass
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

from .._layers import is_unedited as _is_unedited
from .._layers import labels_checksum, labels_to_display, layer_geometry, layer_scan
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


def is_unedited(layer) -> bool:
    """Whether a Labels layer still holds exactly what Segment wrote into it (a rerun may replace it)."""
    return _is_unedited(layer.data, layer.metadata)


def _segment(segmenter, model, device: str, scan, progress, cancel):
    """Worker body: load the model unless ``segmenter`` already holds it, then segment. Returns both."""
    from medfcn.inference.pipeline import Segmenter
    from medfcn.inference.settings import InferenceSettings

    if segmenter is None:
        segmenter = Segmenter(model, InferenceSettings(device=device))
    return segmenter, segmenter.segment(scan, progress=progress, cancel=cancel)


@dataclass(frozen=True)
class _Result:
    """What a run hands the viewer's thread: the display-ordered labels, their volumes and checksum, the result
    layer's metadata and features, and the layer itself, built in the worker (napari builds a Labels layer's
    features table with pandas, and a first import of pandas alone stopped the event loop for 1.8 s)."""

    display: np.ndarray
    volumes: dict
    checksum: str
    metadata: dict
    features: dict
    layer: object


def _segment_for_layer(segmenter, model, device: str, data, attributes: dict, progress, cancel):
    """Worker body: the image layer's scan (its voxels back in the file's order), segmented (:func:`_segment`),
    then everything the result layer needs that is not Qt's business, so the viewer's thread only adds the layer:
    the labels reordered like the image layer's data, their checksum, each label's volume in mL, the metadata
    and the Labels layer itself (placed as the image layer). Returns ``(segmenter, _Result)``."""
    from medfcn.evaluation.metrics import label_volumes_ml

    scan = layer_scan(data, attributes)
    segmenter, labels = _segment(segmenter, model, device, scan, progress, cancel)
    progress(1.0)  # the bar full before the result comes: its repaint is not part of adding the layer
    volumes = label_volumes_ml(labels, scan.spacing)
    display = labels_to_display(labels, attributes)
    checksum = labels_checksum(display)
    card_labels = segmenter.model.card.labels
    metadata = copy.deepcopy(dict(attributes.get("metadata") or {}))
    metadata.update(
        model=segmenter.model.name,
        device=str(segmenter.device),
        segmented_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        medfcn_version=__version__,
        image=attributes.get("name"),
        label_names={int(v): k for k, v in card_labels.items()},
        labels_checksum=checksum,
        volumes_ml={int(k): float(v) for k, v in volumes.items()},
        prediction=display.copy(),  # what Segment wrote: the Train dock finds the slices edited since
        model_path=str(segmenter.model.path) if segmenter.model.path else None,
    )
    features = {"index": [int(v) for v in card_labels.values()], "label": list(card_labels)}
    layer = _scan_views.labels_layer_like(
        attributes, display, name=f"{attributes.get('name')}_labels", metadata=metadata, features=features
    )
    _warm_first_labels_layer()
    return segmenter, _Result(display, volumes, checksum, metadata, features, layer)


def _warm_first_labels_layer() -> None:
    """Do here, in the worker, what napari does the first time a Labels layer is drawn and needs no Qt: import
    its Labels visual and controls modules and fill vispy's dash-pattern cache (its first line visual computes
    13 patterns in Python: about 0.15 s of the viewer's thread, measured under load)."""
    import napari._qt.layer_controls.qt_labels_controls  # noqa: F401
    import napari._vispy.layers.labels  # noqa: F401
    import napari._vispy.overlays.labels_polygon  # noqa: F401
    from vispy.visuals.line.dash_atlas import DashAtlas

    DashAtlas()


def volumes_text(volumes: dict[int, float], names: dict[str, int]) -> str:
    """``"brain 1,470.2 mL"``, one entry per label of the card (``{name: id}``), background left out."""
    return ", ".join(f"{n} {volumes.get(int(v), 0.0):,.1f} mL" for n, v in names.items() if int(v) != 0)


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
        data, attributes = layer.as_layer_data_tuple()[:2]
        try:  # the grid checked here; the voxels reordered in the worker (1.3 s for a 0.5 mm head)
            layer_geometry(np.shape(data), attributes)
        except MedfcnError as e:
            self.status.value = str(e)
            return None
        key = (str(model), model.stat().st_mtime if model else None, str(self.device.value))  # a rewritten file reloads
        segmenter = self._cached[1] if self._cached and self._cached[0] == key else None
        self._cancel.clear()
        self.worker = thread_worker(_segment_for_layer, start_thread=False, ignore_errors=True)(
            segmenter, model, str(self.device.value), data, attributes, self._on_progress, self._cancel.is_set
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

    def use_model(self, path: str | Path) -> None:
        """Segment with the model file ``path`` from now on (the Train dock's "Segment with this model")."""
        self.model_source.value = ModelSource.FILE
        self.checkpoint.value = Path(path)

    def model_in_use(self) -> Path | None:
        """The model file the next run uses (``None``: the bundled one)."""
        return Path(self.checkpoint.value) if self.model_source.value == ModelSource.FILE else None

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

    def _on_done(self, layer, key: tuple, segmenter, result: _Result) -> None:
        self._cached = (key, segmenter)
        display, metadata = result.display, result.metadata
        name = f"{layer.name}_labels"
        target = self._viewer.layers[name] if name in self._viewer.layers else None
        kept = ""
        if target is not None and target.data.shape == display.shape and is_unedited(target):
            target.data, target.metadata, target.features = display, metadata, result.features
            out = target
        else:
            if target is not None:
                name, kept = _free_name(self._viewer, name), f"; {target.name} was edited, so it is kept"
            out = result.layer
            out.name = name
            self._viewer.layers.append(out)
        if self.progress.value != 100:  # Qt repaints a progress bar at once: 0.3-0.5 s of the window under Xvfb
            self.progress.value = 100
        found = volumes_text(result.volumes, segmenter.model.card.labels)
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
