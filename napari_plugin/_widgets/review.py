"""The Review dock widget: a prediction against a reference, per label, error by error and slice by slice.

Numbers come from :mod:`medfcn.evaluation.metrics` (Dice, IoU, HD95, volumes in mL) and
:mod:`medfcn.evaluation.components` (error blobs, the smallest hidden below a size in mm^3; wrong voxels per slice;
the worst slice: the HTML report's rule), computed in a worker thread on copies of the layers. Saving goes through
:func:`medfcn.data.writer.write_labels`; the report through :func:`medfcn.evaluation.evaluate.evaluate_scans`, in
memory, naming the layers and their scans. Edits on either layer (paint, fill, erase, undo, redo, and changes made
from code followed by ``refresh()``) mark the numbers stale and recompute them (debounced) when "Recompute after
edits" is on. The error list is rebuilt from the result whenever napari refreshes the dock's choices (as it does
when any layer is added or removed), so it never empties under the user.

Without a reference, Compute lists where the model is unsure over more than the thin band every boundary has
(:func:`medfcn.evaluation.components.unsure_regions`, on the Segment dock's ``<image>_uncertain`` map), largest
first, and Next / Previous visit them as they visit errors (the buttons and the verdicts worded for it:
:data:`UNSURE_VERDICTS`).

The picture (:mod:`napari_plugin._widgets._overlay`): an overlay of where prediction and reference disagree in
colour-blind-safe colours, the reference as a contour in a colour no error uses, the prediction as a white outline;
a legend with a swatch for each, and hovering the overlay names what a voxel is.

One module (over 400 lines, all of it Qt wiring) because it is one dock: the numbers, pictures and edit watching it
shows live in :mod:`medfcn.evaluation`, :mod:`._overlay` and :mod:`._edits`; what is left is the dock's own state.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    PushButton,
    Select,
    Table,
)
from napari.layers import Image
from napari.qt.threading import thread_worker
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QAbstractScrollArea, QHeaderView, QSizePolicy

from medfcn.data.display import AXIS_LABELS
from medfcn.errors import MedfcnError
from medfcn.evaluation.components import (
    MIN_ERROR_MM3,
    UNSURE_DEPTH_MM,
    ErrorComponent,
    large_errors,
    unsure_regions,
    worst_slice_box,
)
from medfcn.evaluation.review import Review, review

from .._dicom_writer import save_seg_layer
from .._layers import check_same_grid, labels_checksum, layer_scan
from .._writer import save_labels_layer
from . import _scan_views
from ._camera import go_to_box, slicing_axis
from ._edits import EditWatch
from ._overlay import OVERLAP_COLORS, OVERLAP_NAMES, display_codes, legend_html, restore_style, show_overlap
from ._plot import SliceDicePlot
from ._scan_views import unsure_map, unwrap

if TYPE_CHECKING:
    import napari

__all__ = ["ReviewWidget", "Review", "review", "OVERLAP_COLORS", "OVERLAP_NAMES"]

log = logging.getLogger(__name__)

_RECOMPUTE_DELAY_MS = 400
_LIST_ROWS = 8  # the error list shows this many rows without scrolling
TABLE_ROWS = ("Dice", "IoU", "HD95 mm", "pred mL", "ref mL")  # one column per label: a narrow dock shows them all


def _review_with_checksums(pred: np.ndarray, ref: np.ndarray, spacing, axis: int) -> tuple:
    """The review (worker thread), the checksums of the arrays scored (to tell edits from code later) and the
    overlay's codes, edge noise marked (:func:`napari_plugin._widgets._overlay.display_codes`)."""
    from medfcn.evaluation.components import edge_voxels

    result = review(pred, ref, spacing, axis)
    codes = display_codes(result.overlap, edge_voxels(result.overlap, spacing))
    return result, (labels_checksum(pred), labels_checksum(ref)), codes


VERDICTS = ("not judged", "model wrong", "reference wrong here", "accepted")
"""What a reviewer may record of a listed error region; kept with the review and written with the report."""
UNSURE_VERDICTS = tuple(v for v in VERDICTS if v != "reference wrong here")
"""What a reviewer may record of a region where the model is unsure: there is no reference to be wrong."""


class ReviewWidget(Container):
    """Dice, IoU and HD95 per label, an error overlay, the error blobs largest first, worst slice, save, report."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._viewer = viewer
        self.result: Review | None = None
        self.checksums: tuple[str, str] = ("", "")  # of the prediction and reference arrays the result scored
        self.shown: list[ErrorComponent] = []  # the error blobs listed: those of at least min_mm3, largest first
        self.hidden = 0  # how many smaller blobs are left out
        self._scored: tuple = (None, None)  # the (prediction, reference) layers the result is of
        self.verdicts: dict[tuple, str] = {}  # {a listed region's anchor voxel: its verdict}
        self._overlay = None  # this dock's overlay layer
        self._styled: tuple = (None, None)  # (the reference restyled as a contour, its style before)
        self._closed = False
        self._unsure: list[ErrorComponent] = []  # without a reference: where the model is unsure, largest first
        self._unsure_of: tuple = (None, 0)  # (the unsure map those regions came from, the axis they are listed by)
        _scan_views.install(viewer)
        self._make_widgets()
        nav = Container(widgets=[self.previous_button, self.next_button], layout="horizontal", labels=False)
        super().__init__(
            widgets=[
                self.prediction,
                self.reference,
                self.compute_button,
                self.auto,
                self.legend,
                self.table,
                self.min_mm3,
                self.error_list,
                self.verdict,
                nav,
                self.worst_button,
                self.save_path,
                self.save_button,
                self.report_dir,
                self.report_button,
                self.status,
            ]
        )
        self._arrange()
        self.stale = False
        self.error_index = -1
        self.worker = None
        self._computing = False
        self._edits = EditWatch(self._edited, self._changed_since_scored)
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(_RECOMPUTE_DELAY_MS)
        self._connect()
        self._choose_default_pair()
        self._restore()
        self._watch()
        self._follow_mode()

    def _make_widgets(self) -> None:
        # never a Review overlay among the layers to score
        self.prediction = ComboBox(label="Prediction", choices=self._label_choices, nullable=True)
        self.reference = ComboBox(label="Reference", choices=self._label_choices, nullable=True)
        self.compute_button = PushButton(text="Compute")
        self.auto = CheckBox(text="Recompute after edits", value=True)
        self.legend = Label(value=legend_html())
        self.table = Table(value={"data": [], "index": [], "columns": []})
        self.plot = SliceDicePlot()
        self.min_mm3 = FloatSpinBox(label="Min. blob mm\u00b3", value=MIN_ERROR_MM3, min=0.0, max=1e6, step=5.0)
        # choices from a callable: napari refreshes every dock's choices when a layer is added or removed
        # "Regions": errors against a reference, or where the model is unsure without one (a label renamed later
        # widened the dock for good; the buttons' texts, not labels, follow the mode: _follow_mode)
        self.error_list = Select(label="Regions", choices=lambda _: self._error_choices(), allow_multiple=False)
        self.verdict = ComboBox(label="Verdict", choices=lambda _: self._verdict_choices(), enabled=False)
        self.previous_button = PushButton(text="< Previous error", enabled=False)
        self.next_button = PushButton(text="Next error >", enabled=False)
        self.worst_button = PushButton(text="Go to worst slice", enabled=False)
        self.save_path = FileEdit(label="Save to", mode="w", filter="*.nii.gz *.dcm")
        self.save_button = PushButton(text="Save prediction")
        self.report_dir = FileEdit(label="Report folder", mode="d")
        self.report_button = PushButton(text="Export report")
        self.status = Label(value="")

    def _arrange(self) -> None:
        """Wrap long messages, size the table and the error list to their content, and put the slice plot right
        under the table."""
        for label in (self.status, self.legend):  # long messages wrap instead of widening the dock
            label.native.setWordWrap(True)
            label.native.setMinimumWidth(10)
            label.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        table = self.table.native
        table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        table.setSizeAdjustPolicy(QAbstractScrollArea.SizeAdjustPolicy.AdjustToContents)
        errors = self.error_list.native
        errors.setMinimumHeight(_LIST_ROWS * max(errors.fontMetrics().height() + 4, 18))
        errors.setWordWrap(True)  # a long line wraps, never hides behind a horizontal scroll
        errors.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        layout = self.native.layout()
        layout.insertWidget(_layout_index(layout, self.table.native) + 1, self.plot)

    def _connect(self) -> None:
        viewer = self._viewer
        self._timer.timeout.connect(self.compute)
        self.compute_button.clicked.connect(self.compute)
        self.next_button.clicked.connect(self.next_error)
        self.previous_button.clicked.connect(self.previous_error)
        self.error_list.changed.connect(self._on_error_chosen)
        self.worst_button.clicked.connect(self.go_to_worst_slice)
        self.save_button.clicked.connect(self.save)
        self.report_button.clicked.connect(self.export_report)
        self.prediction.changed.connect(self._inputs_changed)
        self.reference.changed.connect(self._inputs_changed)
        self.min_mm3.changed.connect(self._list_errors)
        self.verdict.changed.connect(self._on_verdict)
        viewer.dims.events.current_step.connect(self._on_step)
        viewer.dims.events.order.connect(self._on_order)
        viewer.layers.events.inserted.connect(self._on_inserted)

    def _on_inserted(self, *_) -> None:
        QTimer.singleShot(0, self._default_pair_later)

    def _label_choices(self, _widget=None) -> list[tuple[str, object]]:
        viewer = getattr(self, "_viewer", None)
        return [(la.name, la) for la in (viewer.layers if viewer is not None else []) if _scan_views.is_user_labels(la)]

    def dock_closed(self) -> None:
        """The dock closed: stop listening to the viewer and the layers (a closed dock kept recomputing on every
        edit), give the reference its style back; the result stays with the overlay layer for a new Review dock
        (called once, by :mod:`._docks`)."""
        self._closed = True
        self._timer.stop()
        self._edits.watch([])
        viewer = self._viewer
        for event, callback in (
            (viewer.dims.events.current_step, self._on_step),
            (viewer.dims.events.order, self._on_order),
            (viewer.layers.events.inserted, self._on_inserted),
        ):
            event.disconnect(callback)
        restore_style(*self._styled)
        self._styled = (None, None)

    # -- inputs --------------------------------------------------------------------------------------------------
    def _default_pair_later(self) -> None:
        try:
            self._choose_default_pair()
        except RuntimeError:  # the dock was closed in the meantime
            log.debug("review dock gone", exc_info=True)

    def _choose_default_pair(self, *_) -> None:
        """Prediction: the newest Labels layer a model made (else the newest); reference: another one, preferably
        not a model's. Applied when both choices are the same layer (a new dock, or layers added after it)."""
        for combo in (self.prediction, self.reference):
            combo.reset_choices()
        if self.prediction.value is not self.reference.value:
            return
        labels = [la for la in self.prediction.choices if la is not None]
        labels = [la for la in labels if "overlap_codes" not in la.metadata]
        if len(labels) < 2:  # one labels layer: a prediction without a reference (Compute lists where it is unsure)
            self.prediction.value, self.reference.value = (labels[-1] if labels else None), None
            return
        pred = ([la for la in labels if la.metadata.get("model")] or labels)[-1]
        others = [la for la in labels if la is not pred]
        refs = [la for la in others if not la.metadata.get("model")] or others
        self.prediction.value, self.reference.value = pred, refs[-1]

    @property
    def unsure_mode(self) -> bool:
        """Whether the dock is about where the model is unsure (a prediction without a reference), not errors."""
        return self.reference.value is None

    def _verdict_choices(self) -> tuple[str, ...]:
        return UNSURE_VERDICTS if self.unsure_mode else VERDICTS

    def _follow_mode(self) -> None:
        """Word the navigation and the verdicts after what the list holds: errors against a reference, else where
        the model is unsure (no "reference wrong here" without a reference)."""
        what = "unsure region" if self.unsure_mode else "error"
        self.previous_button.text, self.next_button.text = f"< Previous {what}", f"Next {what} >"
        with self.verdict.changed.blocked():  # no verdict recorded by the change of choices
            self.verdict.native.clear()  # in their order (magicgui appends the ones it did not have: see _relist)
            self.verdict.reset_choices()

    def _pair(self):
        pred, ref = self.prediction.value, self.reference.value
        if pred is None or ref is None:
            raise MedfcnError("Choose a prediction and a reference Labels layer.")
        if pred is ref:
            raise MedfcnError("The prediction and the reference are the same layer: choose two.")
        check_same_grid(ref, pred)
        return pred, ref

    # -- actions -------------------------------------------------------------------------------------------------
    def compute(self):
        """Start computing the review in a worker thread; returns the worker (``None`` if the inputs are wrong)."""
        self._timer.stop()
        if self._closed:
            return None
        if self._computing:  # one computation at a time: try again once this one is done
            self._timer.start()
            return None
        if self.prediction.value is not None and self.reference.value is None:
            return self._compute_unsure(self.prediction.value)
        try:
            pred, ref = self._pair()
        except MedfcnError as e:
            self.status.value = str(e)
            return None
        axis = slicing_axis(self._viewer, pred.ndim)
        self.status.value = f"Scoring {pred.name} against {ref.name} ..."
        arrays = (np.array(pred.data), np.array(ref.data), tuple(pred.scale), axis)
        return self._start(_review_with_checksums, arrays, lambda r: self._show(pred, ref, r))

    def _start(self, function, args: tuple, shown) -> object:
        """Run ``function(*args)`` in a worker thread, one computation at a time, its result to ``shown``; returns
        the worker."""
        self.compute_button.enabled, self._computing = False, True
        self.worker = thread_worker(function, start_thread=False, ignore_errors=True)(*args)
        self.worker.returned.connect(shown)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._computed)
        self.worker.start()
        return self.worker

    def _compute_unsure(self, pred):
        """No reference: find where the model is unsure in a worker thread, from the Segment dock's map on ``pred``'s
        grid; returns the worker (``None`` when there is no map)."""
        found = unsure_map(self._viewer, pred)
        if found is None:
            self.status.value = (
                f"No reference chosen, and no map of where the model is unsure on the grid of {pred.name}: choose a "
                'reference, or tick "Show where the model is unsure" in Segment and segment again.'
            )
            return None
        axis = slicing_axis(self._viewer, pred.ndim)
        self.status.value = f"No reference: finding where the model is unsure ({found.name}) ..."
        args = (np.asarray(found.data) > 0, tuple(pred.scale))
        return self._start(unsure_regions, args, lambda regions: self._show_unsure(pred, found, regions, axis))

    def go_to_error(self, k: int) -> ErrorComponent | None:
        """Centre and zoom the view on listed error blob ``k`` (0: the largest) and move to its slice (the blob's
        anchor voxel, which its description names); without a reference, on unsure region ``k``."""
        if not self.shown or self.prediction.value is None:
            return None
        k %= len(self.shown)
        self.error_index = k
        blob = self.shown[k]
        what = "Unsure region" if blob.kind == "unsure" else "Error"
        self.status.value = f"{what} {k + 1} of {len(self.shown)}: {self._describe(blob)}"
        go_to_box(self._viewer, self.prediction.value, blob.box, blob.anchor)
        with self.verdict.changed.blocked():  # the region's own verdict shown, not recorded again
            self.verdict.value = self.verdicts.get(blob.anchor, VERDICTS[0])
        choice = self._error_choices()[k]
        if self.error_list.value not in (choice, [choice]):
            self.error_list.value = choice
        return blob

    def next_error(self) -> ErrorComponent | None:
        """The next error blob by size (the first call: the largest)."""
        return self.go_to_error(self.error_index + 1)

    def previous_error(self) -> ErrorComponent | None:
        """The previous error blob by size."""
        return self.go_to_error(self.error_index - 1 if self.error_index >= 0 else -1)

    def go_to_worst_slice(self) -> int | None:
        """Move to the slice with the most wrong voxels (the report's rule), centred and zoomed on its errors."""
        if self.result is None or not self.result.worst or self.prediction.value is None:
            return None
        k, axis = self.result.worst[0], self.result.axis
        box, wrong = worst_slice_box(self.result.overlap, axis, k)
        go_to_box(self._viewer, self.prediction.value, box)
        self.status.value = f"{AXIS_LABELS[axis] if axis < 3 else 'slice'} slice {k}: {wrong:,} wrong voxels, the most"
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
        """Score both layers in memory and write the report folder
        (:func:`medfcn.evaluation.evaluate.evaluate_scans`)."""
        folder = Path(self.report_dir.value)
        if not str(self.report_dir.value) or folder == Path("."):
            self.status.value = "Choose a report folder."
            return None
        try:
            pred, ref = self._pair()
            pred_scan, ref_scan = (layer_scan(*la.as_layer_data_tuple()[:2]) for la in (pred, ref))
        except MedfcnError as e:
            self.status.value = str(e)
            return None
        image = self._image_layer(pred)
        image_scan = layer_scan(*image.as_layer_data_tuple()[:2]) if image is not None else None
        label_names = pred.metadata.get("label_names") or ref.metadata.get("label_names")
        self.status.value = f"Writing the report to {folder} ..."
        self.worker = thread_worker(_evaluate, start_thread=False, ignore_errors=True)(
            pred.metadata.get("case") or pred.name,
            pred_scan,
            ref_scan,
            folder,
            image=image_scan,
            label_names=label_names,
            pred_source=_source_name(pred),
            ref_source=_source_name(ref),
        )
        self.worker.returned.connect(lambda ev: self._reported(folder))
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(lambda: setattr(self.report_button, "enabled", True))
        self.report_button.enabled = False
        self.worker.start()
        return self.worker

    # -- results -------------------------------------------------------------------------------------------------
    def _show_unsure(self, pred, found, regions: list[ErrorComponent], axis: int) -> None:
        if self._closed:
            return
        if (self.prediction.value, self.reference.value) != (pred, None) or found not in self._viewer.layers:
            self.status.value = "New layers chosen: press Compute."  # the inputs changed while it was computing
            return
        if (pred, None) != self._scored:
            self.verdicts = {}
        self.result, self.stale, self.error_index = None, False, -1
        self._unsure, self._unsure_of, self._scored = regions, (found, axis), (pred, None)
        self.table.value = {"data": [], "index": [], "columns": []}
        self._fit_table()
        self._scored_against(reference=False)
        self.worst_button.enabled = False
        found.visible = True
        self._list_errors()

    def _scored_against(self, *, reference: bool) -> None:
        """Show the legend of the error colours and the slice Dice plot with a reference only."""
        self.legend.visible = reference
        self.plot.setVisible(reference)

    def _show(self, pred, ref, reviewed: tuple) -> None:
        result, self.checksums, codes = reviewed
        if (pred, ref) != self._scored:
            self.verdicts = {}
        self.result, self.stale, self.error_index, self._unsure = result, False, -1, []
        self._scored_against(reference=True)
        names = pred.metadata.get("label_names") or ref.metadata.get("label_names") or {}
        columns = [
            [round(m.dice, 4), round(m.iou, 4), round(m.hd95_mm, 2), round(m.vol_pred_ml, 2), round(m.vol_ref_ml, 2)]
            for m in result.metrics.values()
        ]
        self.table.value = {
            "data": [list(row) for row in zip(*columns, strict=True)] if columns else [],
            "index": list(TABLE_ROWS) if columns else [],
            "columns": [_label_name(names, k) for k in result.metrics],
        }
        self._fit_table()
        self._update_overlay(pred, ref, codes)
        self.plot.show_curves(result.per_slice, names, self._current_index())
        self.worst_button.enabled = bool(result.worst)
        self._scored = (pred, ref)
        self._list_errors()

    def _fit_table(self) -> None:
        """Make the table exactly as tall as its rows (magicgui's table keeps a fixed height otherwise)."""
        table = self.table.native
        table.resizeColumnsToContents()
        frame = 2 * table.frameWidth()
        table.setFixedHeight(table.horizontalHeader().height() + table.verticalHeader().length() + frame + 2)
        widget = table.parentWidget()  # magicgui's row around the table, then the dock's content: told at once (a
        while widget is not None:  # row left at its old height clipped the table to 2 rows under the slice plot)
            if widget.layout() is not None:
                widget.layout().invalidate()
            widget.updateGeometry()
            if widget is self.native:
                break
            widget = widget.parentWidget()

    def _list_errors(self, *_) -> None:
        """List the error blobs of at least the chosen size and say how many smaller ones are hidden."""
        result = self.result
        if result is None and not self._unsure:
            self.shown, self.hidden = [], 0
            self._relist()
            return
        regions = [e for e in result.errors if not e.edge] if result is not None else self._unsure  # edge noise is
        self.shown, self.hidden = large_errors(regions, float(self.min_mm3.value))  # summarised, not listed
        self.error_index = -1
        self._relist()
        self.next_button.enabled = self.previous_button.enabled = bool(self.shown)
        self.verdict.enabled = bool(self.shown)
        if result is None:
            self.status.value = self._unsure_text()
            return
        pred, ref = self._scored
        names = (pred.metadata.get("label_names") or ref.metadata.get("label_names") or {}) if pred else {}
        summary = ", ".join(f"{_label_name(names, k)} Dice {m.dice:.4f}" for k, m in result.metrics.items())
        blobs = f"; {len(self.shown):,} error blobs" if self.shown else "; no error blobs"
        if self.hidden:
            blobs += f" of at least {self.min_mm3.value:g} mm\u00b3 ({self.hidden:,} smaller hidden)"
        edge = [e for e in result.errors if e.edge]
        if edge:
            blobs += (
                f"; noise: {len(edge):,} thin blob{'s' if len(edge) != 1 else ''} (rims along the boundary and "
                f"specks), {sum(e.volume_ml for e in edge):.2f} mL, drawn faint, not listed"
            )
        self.status.value = (summary + blobs) if summary else "Neither layer holds a label."

    def _unsure_text(self) -> str:
        found = self._unsure_of[0]
        across = f"{2 * UNSURE_DEPTH_MM:g} mm across or more"
        if not self.shown:
            smaller = f" ({self.hidden:,} smaller than {self.min_mm3.value:g} mm\u00b3 hidden)" if self.hidden else ""
            return (
                f"No reference. Nowhere is the model unsure over more than a thin band ({across}){smaller}; "
                f"{found.name} shows every unsure voxel."
            )
        hidden = f" ({self.hidden:,} smaller hidden)" if self.hidden else ""
        return (
            f"No reference. {len(self.shown):,} place{'s' if len(self.shown) != 1 else ''} where the model is unsure "
            f"over more than a thin band ({across}), largest first{hidden}: Next visits them; {found.name} shows "
            "every unsure voxel."
        )

    def _describe(self, blob: ErrorComponent) -> str:
        return blob.describe(AXIS_LABELS if len(blob.centroid) == 3 else None)

    def _error_choices(self) -> list[str]:
        """One short line per listed blob (``"1. missed 12 mL, axial 161"``: the slice the view goes to); the
        status gives the whole description of the blob chosen."""
        axis = self.result.axis if self.result is not None else self._unsure_of[1]
        plane = AXIS_LABELS[axis] if axis < 3 else "slice"
        out = []
        for i, b in enumerate(self.shown):
            verdict = self.verdicts.get(b.anchor, VERDICTS[0])
            tag = f" [{verdict}]" if verdict != VERDICTS[0] else ""
            at = b.anchor[axis] if b.anchor else round(b.centroid[axis])
            out.append(f"{i + 1}. {b.kind} {b.volume_ml:.2g} mL, {plane} {at}{tag}")
        return out

    def _on_error_chosen(self, value) -> None:
        choices = self._error_choices()
        chosen = value[0] if isinstance(value, list | tuple) and value else value
        if chosen in choices and choices.index(chosen) != self.error_index:
            self.go_to_error(choices.index(chosen))

    def judge(self, k: int, verdict: str) -> None:
        """Record ``verdict`` (one of :data:`VERDICTS`, :data:`UNSURE_VERDICTS` without a reference) for listed
        region ``k``; kept with the review and written with the report (``verdicts.csv``)."""
        if not 0 <= k < len(self.shown) or verdict not in self._verdict_choices():
            return
        self.verdicts[self.shown[k].anchor] = verdict
        index = self.error_index
        self._relist()
        self.error_index = index
        if 0 <= index < len(self.shown):
            with self.error_list.changed.blocked():  # the region shown stays chosen
                self.error_list.value = self._error_choices()[index]
        self._save_state()

    def _relist(self) -> None:
        """List the regions in their order. (magicgui keeps the rows whose text did not change and adds the others
        at the end: a region just judged, or every new one after a recompute, went to the bottom of the list.)"""
        with self.error_list.changed.blocked():
            self.error_list.native.clear()
            self.error_list.reset_choices()

    def _on_verdict(self, value) -> None:
        if self.error_index >= 0:
            self.judge(self.error_index, str(value))

    def _update_overlay(self, pred, ref, codes: np.ndarray) -> None:
        if self._styled[0] is not ref:  # the reference of before gets its style back
            restore_style(*self._styled)
            self._styled = (ref, None)
        self._overlay, style = show_overlap(self._viewer, pred, ref, codes, self._overlay)
        if self._styled[1] is None:
            self._styled = (ref, style)
        self._scored = (pred, ref)
        self._save_state()

    def _save_state(self) -> None:
        """Keep the review with its overlay layer, so a Review dock opened later shows it again."""
        if self._overlay is not None and self.result is not None:
            self._overlay.metadata["review_state"] = {
                "pair": self._scored,
                "result": self.result,
                "checksums": self.checksums,
                "verdicts": self.verdicts,
            }

    def _restore(self) -> None:
        """Show the review a closed Review dock left with its overlay layer (reopening lost it)."""
        for layer in reversed(list(self._viewer.layers)):
            state = (layer.metadata or {}).get("review_state")
            if not state or any(la not in self._viewer.layers for la in state["pair"]):
                continue
            pred, ref = state["pair"]
            self.prediction.value, self.reference.value = pred, ref
            self._overlay, self.verdicts = layer, dict(state["verdicts"])
            self._scored, self.result, self.checksums = (pred, ref), state["result"], state["checksums"]
            self._styled = (ref, None)
            self._show(pred, ref, (state["result"], state["checksums"], np.asarray(layer.data)))
            return

    def _computed(self) -> None:
        self.compute_button.enabled, self._computing = True, False

    def _reported(self, folder: Path) -> None:
        if self.verdicts and self.shown:  # the reviewer's verdicts, beside the report
            rows = ["region,kind,volume_ml,anchor_voxel,verdict"]
            for i, b in enumerate(self.shown, 1):
                where = " ".join(str(v) for v in b.anchor)
                rows.append(f"{i},{b.kind},{b.volume_ml:.4f},{where},{self.verdicts.get(b.anchor, VERDICTS[0])}")
            (folder / "verdicts.csv").write_text("\n".join(rows) + "\n")
        self.status.value = f"Report written: {folder / 'report.html'}"

    def _on_error(self, error: BaseException) -> None:
        if not isinstance(error, MedfcnError | ValueError):
            log.error("review failed", exc_info=error)
        self.status.value = f"{error}"

    def _image_layer(self, pred):
        """An Image layer on the prediction's scan grid, for the report's overlays."""
        for layer in self._viewer.layers:
            if (
                isinstance(layer, Image)
                and layer.data.shape == pred.data.shape
                and layer.metadata.get("grid") is not None
                and layer.metadata.get("grid") == pred.metadata.get("grid")
            ):
                return layer
        return None

    # -- events --------------------------------------------------------------------------------------------------
    def _inputs_changed(self, *_) -> None:
        """A new prediction or reference (chosen, or the old one removed from the viewer): the numbers, the list
        and the jumps were of the old pair, so they go."""
        self._watch()
        self._follow_mode()
        if (self.result is not None or self._unsure) and (self.prediction.value, self.reference.value) != self._scored:
            if self._styled[0] is not self.reference.value:
                restore_style(*self._styled)
                self._styled = (None, None)
            self.result, self._scored, self.stale, self._unsure = None, (None, None), False, []
            self._list_errors()
            self.worst_button.enabled = self.next_button.enabled = self.previous_button.enabled = False
            self.status.value = "New layers chosen: press Compute."

    def _watch(self, *_) -> None:
        self._edits.watch([self.prediction.value, self.reference.value])

    def _changed_since_scored(self, layer) -> bool:
        """Whether ``layer`` (the prediction or the reference) no longer holds the array the result scored."""
        if self.result is None or self.stale:
            return False
        scored = [i for i, la in enumerate(self._scored) if la is not None and unwrap(la) is layer]
        return any(labels_checksum(np.asarray(layer.data)) != self.checksums[i] for i in scored)

    def _edited(self, *_) -> None:
        if self.result is None or self._closed:
            return
        self.stale = True
        if self.auto.value:
            self.status.value = "Edited: recomputing ..."
            self._timer.start()
        else:
            self.status.value = "Edited since the last Compute: the numbers and the overlay are stale."

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
        if (self.result is not None or self._unsure) and self.prediction.value is not None:
            self.compute()


def _evaluate(case, pred, ref, out_dir, **kwargs):
    from medfcn.evaluation.evaluate import evaluate_scans

    return evaluate_scans(case, pred, ref, out_dir, **kwargs)


def _layout_index(layout, widget) -> int:
    """The position in ``layout`` of the item holding ``widget`` (magicgui may wrap it with its label)."""
    for i in range(layout.count()):
        item = layout.itemAt(i).widget()
        if item is not None and (item is widget or item.isAncestorOf(widget)):
            return i
    raise LookupError("widget not in the layout")


def _source_name(layer) -> str:
    """``layer 'x' (scan /path/to/file)`` for the report."""
    source = layer.metadata.get("source")
    drawn = layer.metadata.get("drawn_on")
    where = f"on the grid of {source}" if drawn and source else (source or "no file")
    return f"layer '{layer.name}' ({where})"


def _label_name(names: dict, label: int) -> str:
    return str(names.get(label) or names.get(str(label)) or label)
