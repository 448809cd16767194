"""The Review dock widget: a prediction against a reference, per label and slice by slice.

Numbers come from :mod:`medfcn.metrics` (``compute_metrics``, ``overlap_map``, ``dice_per_slice``), computed in a
worker thread on copies of the layers; saving goes through :func:`medfcn.writer.write_labels` and the report
through :func:`medfcn.evaluate.evaluate`. Edits made with napari's paint tools on either layer trigger a
recomputation (debounced).
"""

from __future__ import annotations

import copy
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import CheckBox, Container, FileEdit, Label, PushButton, Table, create_widget
from napari.qt.threading import thread_worker
from qtpy.QtCore import QTimer

from medfcn.errors import GridMismatchError, MedfcnError
from medfcn.metrics import Overlap, compute_metrics, dice_per_slice, overlap_map

from .._dicom_writer import save_seg_layer
from .._layers import layer_geometry
from .._writer import save_labels_layer
from ._plot import SliceDicePlot

if TYPE_CHECKING:
    import napari

__all__ = ["ReviewWidget", "Review", "review", "worst_slice"]

log = logging.getLogger(__name__)

OVERLAP_COLORS = {
    None: "transparent",
    Overlap.NONE: "transparent",
    Overlap.TP: "#2ca02c",
    Overlap.FP: "#d62728",
    Overlap.FN: "#1f77b4",
}
_RECOMPUTE_DELAY_MS = 400
TABLE_COLUMNS = ("label", "Dice", "IoU", "HD95 mm")


@dataclass
class Review:
    """What the widget shows: metrics per label, the overlap map, and per-slice Dice along ``axis``."""

    metrics: dict  # {label: medfcn.metrics.LabelMetrics}
    overlap: np.ndarray  # uint8 codes of medfcn.metrics.Overlap, display order
    axis: int
    per_slice: dict[int, np.ndarray]  # {label: Dice of every slice across axis, NaN where neither map has it}


def review(pred: np.ndarray, ref: np.ndarray, spacing, axis: int) -> Review:
    """All the numbers of a review (runs in the worker thread). ``spacing``: mm along the arrays' axes."""
    metrics = compute_metrics(pred, ref, spacing)
    per_slice = {label: dice_per_slice(pred, ref, label, axis) for label in metrics}
    return Review(metrics, overlap_map(pred, ref), axis, per_slice)


def worst_slice(per_slice: dict[int, np.ndarray]) -> int | None:
    """The slice with the lowest Dice of any label (slices where no label is present are skipped)."""
    if not per_slice:
        return None
    lowest = np.fmin.reduce(np.vstack(list(per_slice.values())), axis=0)
    return None if np.isnan(lowest).all() else int(np.nanargmin(lowest))


class ReviewWidget(Container):
    """Dice, IoU and HD95 per label, a TP/FP/FN overlay, per-slice Dice, worst-slice jump, save and report."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._viewer = viewer
        self.prediction = create_widget(label="Prediction", annotation="napari.layers.Labels")
        self.reference = create_widget(label="Reference", annotation="napari.layers.Labels")
        self.compute_button = PushButton(text="Compute")
        self.auto = CheckBox(text="Recompute after edits", value=True)
        self.table = Table(value={"data": [], "index": [], "columns": list(TABLE_COLUMNS)})
        self.plot = SliceDicePlot()
        self.worst_button = PushButton(text="Go to worst slice", enabled=False)
        self.save_path = FileEdit(label="Save to", mode="w", filter="*.nii.gz *.dcm")
        self.save_button = PushButton(text="Save prediction")
        self.report_dir = FileEdit(label="Report folder", mode="d")
        self.report_button = PushButton(text="Export report")
        self.status = Label(value="")
        super().__init__(
            widgets=[
                self.prediction,
                self.reference,
                self.compute_button,
                self.auto,
                self.table,
                self.worst_button,
                self.save_path,
                self.save_button,
                self.report_dir,
                self.report_button,
                self.status,
            ]
        )
        self.native.layout().insertWidget(5, self.plot)
        self.result: Review | None = None
        self.worker = None
        self._computing = False
        self._watched: list = []
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(_RECOMPUTE_DELAY_MS)
        self._timer.timeout.connect(self.compute)
        self.compute_button.clicked.connect(self.compute)
        self.worst_button.clicked.connect(self.go_to_worst_slice)
        self.save_button.clicked.connect(self.save)
        self.report_button.clicked.connect(self.export_report)
        self.prediction.changed.connect(self._watch)
        self.reference.changed.connect(self._watch)
        viewer.dims.events.current_step.connect(self._on_step)
        viewer.dims.events.order.connect(self._on_order)

    # -- inputs --------------------------------------------------------------------------------------------------
    def _pair(self):
        pred, ref = self.prediction.value, self.reference.value
        if pred is None or ref is None:
            raise MedfcnError("Choose a prediction and a reference Labels layer.")
        if pred is ref:
            raise MedfcnError("The prediction and the reference are the same layer.")
        if pred.data.shape != ref.data.shape:
            raise GridMismatchError(
                f"{pred.name} {pred.data.shape} and {ref.name} {ref.data.shape} have different "
                "shapes; both must be on one scan's grid"
            )
        pm, rm = pred.metadata.get("grid"), ref.metadata.get("grid")
        if pm and rm:
            pg, pa = layer_geometry(pred.data.shape, {"name": pred.name, "metadata": pred.metadata})[:2]
            rg, ra = layer_geometry(ref.data.shape, {"name": ref.name, "metadata": ref.metadata})[:2]
            diff = pg.differences(rg)
            if diff or pa != ra:
                raise GridMismatchError(f"{pred.name} and {ref.name} are on different grids ({'; '.join(diff)})")
        return pred, ref

    def _slice_axis(self, ndim: int) -> int:
        """The data axis across which the viewer slices (the first axis of the dims order)."""
        offset = self._viewer.dims.ndim - ndim
        axis = self._viewer.dims.order[0] - offset
        return axis if 0 <= axis < ndim else 0

    # -- actions -------------------------------------------------------------------------------------------------
    def compute(self):
        """Start computing the review in a worker thread; returns the worker (``None`` if the inputs are wrong)."""
        self._timer.stop()
        if self._computing:  # one computation at a time: try again once this one is done
            self._timer.start()
            return None
        try:
            pred, ref = self._pair()
        except MedfcnError as e:
            self.status.value = str(e)
            return None
        axis = self._slice_axis(pred.ndim)
        self.status.value = f"Scoring {pred.name} against {ref.name} ..."
        self.compute_button.enabled, self._computing = False, True
        self.worker = thread_worker(review, start_thread=False, ignore_errors=True)(
            np.array(pred.data), np.array(ref.data), tuple(pred.scale), axis
        )
        self.worker.returned.connect(lambda r: self._show(pred, ref, r))
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._computed)
        self.worker.start()
        return self.worker

    def go_to_worst_slice(self) -> int | None:
        """Move the viewer to the slice with the lowest Dice; returns its index."""
        if self.result is None or self.prediction.value is None:
            return None
        k = worst_slice(self.result.per_slice)
        if k is None:
            return None
        layer, axis = self.prediction.value, self.result.axis
        index = np.zeros(layer.ndim)
        index[axis] = k
        world = layer.data_to_world(index)
        self._viewer.dims.set_point(self._viewer.dims.ndim - layer.ndim + axis, world[axis])
        lowest = np.nanmin([c[k] for c in self.result.per_slice.values()])
        self.status.value = f"Slice {k}: the lowest Dice ({lowest:.3f})"
        return k

    def save(self) -> Path | None:
        """Write the prediction (with its corrections) on its scan's grid to the chosen file."""
        layer, path = self.prediction.value, Path(self.save_path.value)
        if layer is None or not str(self.save_path.value) or path.is_dir():
            self.status.value = "Choose a prediction layer and a file name (.nii.gz, or .dcm for DICOM SEG) to save to."
            return None
        try:
            dicom = path.name.lower().endswith(".dcm")  # a DICOM SEG referencing the layer's series
            out = save_seg_layer(layer, path) if dicom else save_labels_layer(layer, path)
        except MedfcnError as e:
            self.status.value = str(e)
            return None
        self.status.value = f"Saved {layer.name} to {out}"
        return out

    def export_report(self):
        """Write both layers to a temporary folder and run :func:`medfcn.evaluate.evaluate` on them (worker)."""
        folder = Path(self.report_dir.value)
        if not str(self.report_dir.value) or folder == Path("."):
            self.status.value = "Choose a report folder."
            return None
        try:
            pred, ref = self._pair()
        except MedfcnError as e:
            self.status.value = str(e)
            return None
        case = pred.metadata.get("case") or pred.name
        label_names = pred.metadata.get("label_names") or ref.metadata.get("label_names")
        image = self._image_source(pred)
        tmp = tempfile.TemporaryDirectory(prefix="medfcn-review-")
        try:
            pred_path = save_labels_layer(pred, Path(tmp.name) / "pred" / f"{case}.nii.gz")
            ref_path = save_labels_layer(ref, Path(tmp.name) / "ref" / f"{case}.nii.gz")
        except MedfcnError as e:
            tmp.cleanup()
            self.status.value = str(e)
            return None
        self.status.value = f"Writing the report to {folder} ..."
        self.worker = thread_worker(_evaluate, start_thread=False, ignore_errors=True)(
            pred_path, ref_path, folder, label_names, {case: image} if image else None
        )
        self.worker.returned.connect(lambda ev: self._reported(folder))
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(lambda: (tmp.cleanup(), setattr(self.report_button, "enabled", True)))
        self.report_button.enabled = False
        self.worker.start()
        return self.worker

    # -- results -------------------------------------------------------------------------------------------------
    def _show(self, pred, ref, result: Review) -> None:
        self.result = result
        names = pred.metadata.get("label_names") or ref.metadata.get("label_names") or {}
        self.table.value = {
            "data": [
                [_label_name(names, k), round(m.dice, 4), round(m.iou, 4), round(m.hd95_mm, 2)]
                for k, m in result.metrics.items()
            ],
            "index": [str(k) for k in result.metrics],
            "columns": list(TABLE_COLUMNS),
        }
        self._update_overlay(pred, ref, result.overlap)
        self.plot.show_curves(result.per_slice, names, self._current_index())
        self.worst_button.enabled = worst_slice(result.per_slice) is not None
        summary = ", ".join(f"{_label_name(names, k)} Dice {m.dice:.4f}" for k, m in result.metrics.items())
        self.status.value = summary or "Neither layer holds a label."

    def _update_overlay(self, pred, ref, overlap: np.ndarray) -> None:
        from napari.utils.colormaps import DirectLabelColormap

        name = f"{pred.name} vs {ref.name}"
        if name in self._viewer.layers and self._viewer.layers[name].data.shape == overlap.shape:
            self._viewer.layers[name].data = overlap
            return
        meta = copy.deepcopy(dict(pred.metadata))
        meta["overlap_codes"] = {int(c): c.name for c in Overlap}
        self._viewer.add_labels(
            overlap,
            name=name,
            scale=pred.scale,
            translate=pred.translate,
            rotate=pred.rotate,
            affine=pred.affine,
            units=pred.units,
            axis_labels=pred.axis_labels,
            metadata=meta,
            opacity=0.6,
            colormap=DirectLabelColormap(color_dict=OVERLAP_COLORS),
        )
        self._viewer.layers.selection.active = pred

    def _computed(self) -> None:
        self.compute_button.enabled, self._computing = True, False

    def _reported(self, folder: Path) -> None:
        self.status.value = f"Report written: {folder / 'report.html'}"

    def _on_error(self, error: BaseException) -> None:
        if not isinstance(error, MedfcnError | ValueError):
            log.error("review failed", exc_info=error)
        self.status.value = f"{error}"

    def _image_source(self, pred) -> str | None:
        """The file of an Image layer on the prediction's grid, for the report's overlays."""
        for layer in self._viewer.layers:
            if (
                layer.__class__.__name__ == "Image"
                and layer.data.shape == pred.data.shape
                and layer.metadata.get("grid") == pred.metadata.get("grid")
                and layer.metadata.get("source")
            ):
                return layer.metadata["source"]
        return None

    # -- events --------------------------------------------------------------------------------------------------
    def _watch(self, *_) -> None:
        for layer in self._watched:
            layer.events.paint.disconnect(self._edited)
            layer.events.data.disconnect(self._edited)
        self._watched = [w for w in (self.prediction.value, self.reference.value) if w is not None]
        for layer in self._watched:
            layer.events.paint.connect(self._edited)
            layer.events.data.connect(self._edited)

    def _edited(self, *_) -> None:
        if self.auto.value and self.result is not None:
            self._timer.start()

    def _current_index(self) -> int | None:
        layer = self.prediction.value
        if layer is None or self.result is None:
            return None
        world = list(self._viewer.dims.point)[-layer.ndim :]
        return int(np.round(layer.world_to_data(world)[self.result.axis]))

    def _on_step(self, *_) -> None:
        if self.result is not None:
            self.plot.mark(self._current_index())

    def _on_order(self, *_) -> None:
        if self.result is not None and self.prediction.value is not None:
            self.compute()


def _evaluate(pred: Path, ref: Path, out_dir: Path, label_names, images):
    from medfcn.evaluate import evaluate

    return evaluate(pred, ref, out_dir, label_names=label_names, images=images)


def _label_name(names: dict, label: int) -> str:
    return str(names.get(label) or names.get(str(label)) or label)
