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

Every result is judged (:mod:`medfcn.inference.verdict`): the status says whether to check it, its score and the
reasons in words, and the result layer keeps the verdict in its metadata (``quality``). "Show where the model is
unsure" adds ``<image>_uncertain`` (:func:`medfcn.inference.quality.uncertain_voxels`, the per-voxel form of the
verdict's slice-direction disagreement and boundary uncertainty, on the scan's grid); unticking it hides that layer.
"""

from __future__ import annotations

import copy
import datetime
import gc
import logging
import threading
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, ProgressBar, PushButton, create_widget
from napari.qt.threading import thread_worker
from qtpy.QtWidgets import QSizePolicy
from superqt.utils import ensure_main_thread

from medfcn import __version__
from medfcn.errors import CancelledError, MedfcnError
from medfcn.inference.engine import DeviceName
from medfcn.inference.settings import Backend, InferenceSettings

from .._layers import is_unedited as _is_unedited
from .._layers import labels_checksum, labels_to_display, layer_geometry, layer_scan
from . import _scan_views

if TYPE_CHECKING:
    import napari

__all__ = ["SegmentWidget", "ModelSource", "available_devices", "available_backends", "labels_checksum", "is_unedited"]

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


def available_backends() -> list[str]:
    """``auto`` and the backends installed here (:func:`medfcn.inference.runtime.installed_backends`)."""
    from medfcn.inference.runtime import installed_backends

    return [Backend.AUTO.value, *(b.value for b in installed_backends())]


def is_unedited(layer) -> bool:
    """Whether a Labels layer still holds exactly what Segment wrote into it (a rerun may replace it)."""
    return _is_unedited(layer.data, layer.metadata)


def _segment(segmenter, model, settings: InferenceSettings, scan, progress, cancel, uncertainty: bool = False):
    """Worker body: load the model unless ``segmenter`` already holds it, then segment and judge the result (and
    map the voxels it is unsure of, if asked). Returns the segmenter and the
    :class:`~medfcn.inference.pipeline.Segmentation`."""
    from medfcn.inference.pipeline import Segmenter

    if segmenter is None:
        segmenter = Segmenter(model, settings)
    return segmenter, segmenter.segment_and_check(scan, progress=progress, cancel=cancel, uncertainty=uncertainty)


def _segment_for_layer(
    segmenter, model, settings: InferenceSettings, data, attributes: dict, progress, cancel, uncertainty: bool = False
):
    """Worker body: the image layer's scan (its voxels back in the file's order), segmented (:func:`_segment`),
    then everything the result layer needs that is not Qt's business, so the viewer's thread only adds the layer:
    the labels reordered like the image layer's data, their checksum, each label's volume in mL and the quality
    verdict, and the unsure voxels reordered alike when asked. Last, a full garbage collection: with napari, torch
    and MONAI loaded the process holds ~0.5 M objects, and the full collection that the layer's thousands of new
    objects triggered fell inside its adding 0.35 s out of 0.5-0.68 s; here it stops the viewer's thread just as
    long, but apart from the adding, with the event loop running between the two. Returns ``(segmenter, display
    labels, {label: mL}, checksum, verdict, display unsure voxels or None)``."""
    from medfcn.evaluation.metrics import label_volumes_ml

    scan = layer_scan(data, attributes)
    segmenter, found = _segment(segmenter, model, settings, scan, progress, cancel, uncertainty)
    progress(1.0)  # the bar full before the result comes: its repaint is not part of adding the layer
    volumes = label_volumes_ml(found.labels, scan.spacing)
    display = labels_to_display(found.labels, attributes)
    unsure = None if found.uncertain is None else labels_to_display(found.uncertain, attributes)
    _warm_first_labels_layer()
    gc.collect()  # Python's full collection, due soon after a run, here rather than while the layer is added
    return segmenter, display, volumes, labels_checksum(display), found.verdict, unsure


def _warm_first_labels_layer() -> None:
    """Do here, in the worker, what napari does the first time a Labels layer is added or drawn and needs no Qt:
    import pandas (napari's first features table: 1.8 s of the viewer's thread), its Labels visual and controls
    modules, build a label colormap (every Labels layer builds its random colours through ``skimage.color``, whose
    first import, with ``scipy.linalg``, took 0.05-0.08 s of the viewer's thread), and fill vispy's dash-pattern cache
    (its first line visual computes 13 patterns in Python)."""
    import napari._qt.layer_controls.qt_labels_controls  # noqa: F401
    import napari._vispy.layers.labels  # noqa: F401
    import napari._vispy.overlays.labels_polygon  # noqa: F401
    import pandas  # noqa: F401
    from napari.utils.colormaps import label_colormap
    from vispy.visuals.line.dash_atlas import DashAtlas

    label_colormap(49)  # what napari's Labels layer builds (imports skimage.color the first time)
    DashAtlas()


def volumes_text(volumes: dict[int, float], names: dict[str, int]) -> str:
    """``"brain 1,470.2 mL"``, one entry per label of the card (``{name: id}``), background left out."""
    return ", ".join(f"{n} {volumes.get(int(v), 0.0):,.1f} mL" for n, v in names.items() if int(v) != 0)


class SegmentWidget(Container):
    """Pick an Image layer, a model, a device and a backend; Segment adds ``<image>_labels`` on the image's grid."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._viewer = viewer
        self.image = create_widget(label="Image", annotation="napari.layers.Image")
        self.model_source = ComboBox(label="Model", choices=[m.value for m in ModelSource], value=ModelSource.BUNDLED)
        self.checkpoint = FileEdit(label="Checkpoint", mode="r", filter="*.safetensors", visible=False)
        self.device = ComboBox(label="Device", choices=available_devices(), value=DeviceName.AUTO)
        self.backend = ComboBox(label="Backend", choices=available_backends(), value=Backend.AUTO)
        self.uncertainty = CheckBox(text="Show where the model is unsure", value=False)
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
                self.backend,
                self.uncertainty,
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
        self.uncertainty.changed.connect(self._on_uncertainty)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.worker = None
        self._running = False
        self._cancel = threading.Event()
        self._cached: tuple[tuple, object] | None = None  # ((model path, mtime, settings), Segmenter)

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
        settings = InferenceSettings(device=str(self.device.value), backend=str(self.backend.value))
        key = (str(model), model.stat().st_mtime if model else None, settings)  # a rewritten file reloads
        segmenter = self._cached[1] if self._cached and self._cached[0] == key else None
        self._cancel.clear()
        self.worker = thread_worker(_segment_for_layer, start_thread=False, ignore_errors=True)(
            segmenter,
            model,
            settings,
            data,
            attributes,
            self._on_progress,
            self._cancel.is_set,
            bool(self.uncertainty.value),
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

    def _on_uncertainty(self, value: bool) -> None:
        """Ticked: the next run maps the unsure voxels; unticked: an uncertainty layer already there is hidden."""
        layer = self.image.value
        name = f"{layer.name}_uncertain" if layer is not None else None
        if name in self._viewer.layers:
            self._viewer.layers[name].visible = bool(value)

    @ensure_main_thread
    def _on_progress(self, fraction: float) -> None:
        self.progress.value = int(round(100 * min(max(fraction, 0.0), 1.0)))

    def _on_done(
        self, layer, key: tuple, segmenter, display: np.ndarray, volumes: dict, checksum: str, verdict=None, unsure=None
    ) -> None:
        self._cached = (key, segmenter)
        card_labels = segmenter.model.card.labels
        metadata = copy.deepcopy(dict(layer.metadata))
        metadata.update(
            model=segmenter.model.name,
            device=str(segmenter.device),
            backend=segmenter.engine.backend,
            segmented_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            medfcn_version=__version__,
            image=layer.name,
            label_names={int(v): k for k, v in card_labels.items()},
            labels_checksum=checksum,
            volumes_ml={int(k): float(v) for k, v in volumes.items()},
            prediction=display.copy(),  # what Segment wrote: the Train dock finds the slices edited since
            model_path=str(segmenter.model.path) if segmenter.model.path else None,
            quality=verdict.to_dict() if verdict is not None else None,
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
        if unsure is not None:
            self._show_unsure(layer, unsure, out.name)
        if self.progress.value != 100:  # Qt repaints a progress bar at once: 0.3-0.5 s of the window under Xvfb
            self.progress.value = 100
        found = volumes_text(volumes, card_labels)
        judged = f"\n{verdict.text()}" if verdict is not None else ""
        where = f"{segmenter.device}, {segmenter.engine.backend}"
        self.status.value = f"{out.name}: {found} ({segmenter.model.name} on {where}){kept}{judged}"

    def _show_unsure(self, layer, unsure: np.ndarray, result: str) -> None:
        """``<image>_uncertain``: the voxels the model is unsure of in the labels layer ``result``, in one colour
        (replaced on every run)."""
        from napari.utils.colormaps import DirectLabelColormap

        name = f"{layer.name}_uncertain"
        colours = DirectLabelColormap(color_dict={None: (0, 0, 0, 0), 0: (0, 0, 0, 0), 1: (1.0, 0.85, 0.0, 1.0)})
        metadata = {
            "image": layer.name,
            "unsure_of": result,
            "what": "voxels the model is unsure of (medfcn.inference.quality)",
        }
        if name in self._viewer.layers:
            self._viewer.layers.remove(name)  # derived from the result, never edited: replaced whole
        out = _scan_views.add_labels_like(self._viewer, layer, unsure, name=name, metadata=metadata, opacity=0.6)
        out.colormap = colours
        out.editable = False

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
