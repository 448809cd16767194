"""The Train dock widget: corrected slices -> a fine-tuned model, by :func:`medfcn.training.train.iter_train`.

Pick an image layer and its corrected label layer. The dock knows which slices were edited: the Segment dock
keeps what it wrote (``metadata["prediction"]``), and the slices along the viewer's current slicing axis that
differ from it are the annotated ones ("edited slices only", the default; every other voxel becomes 255, not
annotated); "whole layer checked" takes the whole layer as the label. The start model is the one that made the
prediction, the bundled one, a file, or a new model with label names. Training is
:func:`medfcn.training.process.train_correction` (the case written, then
:func:`medfcn.training.train.iter_train`, the generator the CLI runs, in a child process), in a napari
``thread_worker``: each step it yields comes back to the viewer's thread as the
live plot of the loss and the Dice on annotated voxels; Cancel is polled after every step (a second at most) and the
model of the last finished epoch is kept. Nothing is computed in the viewer's thread but the plot.

When training ends: "Save model..." (a file dialog; a model in use is never overwritten) and "Segment with this
model", which hands the model to the Segment dock and segments the image with it as a new layer.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSpinBox, Label, LineEdit, PushButton, create_widget
from napari.qt.threading import thread_worker
from qtpy.QtWidgets import QSizePolicy, QWidget

from medfcn.errors import MedfcnError
from medfcn.training.corrections import CorrectionMode, StartModel, correction_label
from medfcn.training.output import save_trained_model
from medfcn.training.process import train_correction

from .._layers import check_same_grid, layer_geometry, layer_scan

if TYPE_CHECKING:
    import napari

__all__ = ["TrainWidget", "StartChoice"]

log = logging.getLogger(__name__)

_REDRAW_S = 0.25  # the live plot and the status are redrawn at most this often


class StartChoice(StrEnum):
    """Where training starts."""

    PREDICTION = "model that made the prediction"
    BUNDLED = "bundled default"
    FILE = "model file"
    NEW = "new model"


class TrainingPlot(QWidget):
    """Loss and Dice on annotated voxels against training steps, drawn with QPainter.

    Not matplotlib (as the Review dock's plot is): a matplotlib redraw is thousands of Python calls in the viewer's
    thread, and while training holds the GIL between its torch calls each took 0.3-2 s on a busy 2-core machine,
    blocking the event loop; two polylines with QPainter take about a millisecond."""

    COLOURS = {"loss": "#f0a030", "Dice (annotated)": "#50b0f0"}

    def __init__(self) -> None:
        super().__init__()
        self.curves: dict[str, list[float]] = {name: [] for name in self.COLOURS}
        self.setFixedHeight(130)

    def show_progress(self, loss: list[float], dice: list[float]) -> None:
        self.curves = {"loss": list(loss), "Dice (annotated)": list(dice)}
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        from qtpy.QtCore import QPointF, QRectF, Qt
        from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF

        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("#262930"))
        box = QRectF(34, 8, max(10, self.width() - 42), max(10, self.height() - 28))
        painter.setPen(QPen(QColor("#d6d0ce"), 1))
        painter.drawRect(box)
        n = max((len(v) for v in self.curves.values()), default=0)
        top = max([1.0, *(x for x in self.curves["loss"] if np.isfinite(x))])
        painter.drawText(QRectF(0, box.top() - 6, 30, 12), Qt.AlignmentFlag.AlignRight, f"{top:.1f}")
        painter.drawText(QRectF(0, box.bottom() - 6, 30, 12), Qt.AlignmentFlag.AlignRight, "0")
        painter.drawText(
            QRectF(box.left(), box.bottom() + 2, box.width(), 14), Qt.AlignmentFlag.AlignRight, f"{n} steps"
        )
        for row, (name, values) in enumerate(self.curves.items()):
            colour = QColor(self.COLOURS[name])
            painter.setPen(QPen(colour, 1.5))
            painter.drawText(
                QRectF(box.left() + 6, box.top() + 2 + 13 * row, 160, 13), Qt.AlignmentFlag.AlignLeft, name
            )
            points = [
                QPointF(box.left() + box.width() * i / max(n - 1, 1), box.bottom() - box.height() * min(v / top, 1.0))
                for i, v in enumerate(values)
                if np.isfinite(v)
            ]
            if len(points) > 1:
                painter.drawPolyline(QPolygonF(points))
        painter.end()


class TrainWidget(Container):
    """Fine-tune a model on corrected slices; save it; segment with it."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._viewer = viewer
        self.image = create_widget(label="Image", annotation="napari.layers.Image")
        self.label_layer = create_widget(label="Corrected labels", annotation="napari.layers.Labels")
        self.mode = ComboBox(label="Annotated", choices=[m.value for m in CorrectionMode], value=CorrectionMode.EDITED)
        self.start = ComboBox(label="Start model", choices=[s.value for s in StartChoice], value=StartChoice.PREDICTION)
        self.model_file = FileEdit(label="Model file", mode="r", filter="*.safetensors", visible=False)
        self.label_names = LineEdit(label="Label names", value="background,structure", visible=False)
        self.minutes = FloatSpinBox(label="Minutes", value=4.0, min=0.05, max=600.0, step=0.5)
        self.train_button = PushButton(text="Train")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.save_button = PushButton(text="Save model...", enabled=False)
        self.segment_button = PushButton(text="Segment with this model", enabled=False)
        self.status = Label(value="")
        super().__init__(
            widgets=[
                self.image,
                self.label_layer,
                self.mode,
                self.start,
                self.model_file,
                self.label_names,
                self.minutes,
                self.train_button,
                self.cancel_button,
                self.status,
                self.save_button,
                self.segment_button,
            ]
        )
        self.plot = TrainingPlot()
        self.native.layout().addWidget(self.plot)  # below the buttons: nothing is drawn over them
        self.status.native.setWordWrap(True)
        self.status.native.setMinimumWidth(10)
        self.status.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.start.changed.connect(self._on_start)
        self.train_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.save_button.clicked.connect(lambda: self.save())
        self.segment_button.clicked.connect(self.segment_with_model)
        self.worker = None
        self.trained: Path | None = None  # the last model training wrote (the last good one)
        self.start_path: Path | None = None  # the model the last run started from
        self._cancel = threading.Event()
        self._folder = tempfile.TemporaryDirectory(prefix="medfcn-train-")
        self._runs = 0
        self._loss: list[float] = []
        self._dice: list[float] = []
        self._drawn = 0.0

    # -- actions -------------------------------------------------------------------------------------------------
    def run(self):
        """Start training in a worker thread; returns the worker (``None`` after a one-line error in the status)."""
        if self.worker is not None:
            return None
        try:
            scan, label, start, slices = self._inputs()
        except MedfcnError as e:
            self.status.value = str(e)
            return None
        self._runs += 1
        folder = Path(self._folder.name) / f"run{self._runs}"
        self._cancel.clear()
        self._loss, self._dice = [], []
        self.start_path = start.path
        self.worker = thread_worker(train_correction, start_thread=False, ignore_errors=True)(
            folder, scan, label, start, float(self.minutes.value), self._cancel.is_set
        )
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(self._on_done)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.train_button.enabled, self.cancel_button.enabled = False, True
        self.status.value = f"Training on {len(slices)} slice(s) of {self.image.value.name} ..."
        self.worker.start()
        return self.worker

    def cancel(self) -> None:
        """Ask training to stop after its current step; the model of the last finished epoch is kept."""
        self._cancel.set()
        self.status.value = "Cancelling ..."

    def save(self, path: str | Path | None = None) -> Path | None:
        """Copy the trained model to ``path`` (asked with a file dialog when ``None``); refuses a model in use."""
        if self.trained is None:
            self.status.value = "Train a model first."
            return None
        if path is None:
            from qtpy.QtWidgets import QFileDialog

            path, _ = QFileDialog.getSaveFileName(
                self.native, "Save the trained model", "", "medfcn model (*.safetensors)"
            )
            if not path:
                return None
        segment = self._segment_widget(create=False)
        in_use = [self.start_path, segment.model_in_use() if segment is not None else None]
        try:
            out = save_trained_model(self.trained, Path(path), in_use)
        except MedfcnError as e:
            self.status.value = str(e)
            return None
        self.status.value = f"Model saved to {out}"
        return out

    def segment_with_model(self):
        """Hand the trained model to the Segment dock and segment the chosen image with it; returns its worker."""
        if self.trained is None:
            self.status.value = "Train a model first."
            return None
        segment = self._segment_widget(create=True)
        segment.use_model(self.trained)
        if self.image.value is not None:
            segment.image.value = self.image.value
        return segment.run()

    # -- inputs --------------------------------------------------------------------------------------------------
    def _inputs(self) -> tuple:
        """(scan, partial label on the scan's grid, start model, annotated slices); raises MedfcnError."""
        image, labels = self.image.value, self.label_layer.value
        if image is None or labels is None:
            raise MedfcnError("Choose an image layer and the label layer you corrected.")
        check_same_grid(image, labels)
        scan = layer_scan(*image.as_layer_data_tuple()[:2])
        attrs = labels.as_layer_data_tuple()[1]
        corrected = layer_scan(np.asarray(labels.data), attrs)
        prediction = labels.metadata.get("prediction")
        if prediction is not None:
            prediction = layer_scan(np.asarray(prediction), attrs).array
        label, slices = correction_label(
            prediction, corrected.array, self.mode.value, axis=self._slicing_axis(labels), name=labels.name
        )
        return scan, label, self._start_model(labels), slices

    def _slicing_axis(self, labels) -> int | None:
        """The axis of the scan's ``(X, Y, Z)`` the viewer slices along now (None in 3-D view)."""
        dims = self._viewer.dims
        if dims.ndisplay != 2 or labels.ndim != 3:
            return None
        shown_axis = dims.not_displayed[-1] - (dims.ndim - labels.ndim)
        _, axes, _ = layer_geometry(labels.data.shape, labels.as_layer_data_tuple()[1])
        return int(axes[shown_axis])

    def _start_model(self, labels) -> StartModel:
        from medfcn.model.checkpoint import DEFAULT_MODEL_PATH

        choice = StartChoice(self.start.value)
        if choice is StartChoice.PREDICTION:
            if "model_path" not in labels.metadata:
                raise MedfcnError(f"{labels.name}: was not made by the Segment dock; choose the start model")
            return StartModel(Path(labels.metadata["model_path"] or DEFAULT_MODEL_PATH))
        if choice is StartChoice.BUNDLED:
            return StartModel(DEFAULT_MODEL_PATH)
        if choice is StartChoice.FILE:
            path = Path(self.model_file.value)
            if not path.is_file():
                raise MedfcnError(f"{path}: choose a model file (.safetensors) to start from")
            return StartModel(path)
        return StartModel(None, tuple(self.label_names.value.split(",")))

    def _segment_widget(self, *, create: bool):
        """The Segment dock of this viewer (opened when ``create``), or None."""
        from .segment import SegmentWidget

        for widget in self._viewer.window.dock_widgets.values():
            if isinstance(widget, SegmentWidget):
                return widget
        if not create:
            return None
        return self._viewer.window.add_plugin_dock_widget("medfcn", "Segment")[1]

    # -- callbacks -----------------------------------------------------------------------------------------------
    def _on_start(self, value: str) -> None:
        self.model_file.visible = value == StartChoice.FILE
        self.label_names.visible = value == StartChoice.NEW

    def _on_progress(self, p) -> None:
        if p.epoch_done:
            self.status.value = f"epoch {p.epoch}: loss {p.loss:.3f}, Dice on annotated voxels {p.dice:.3f}"
            return
        self._loss.append(p.loss)
        self._dice.append(p.dice)
        now = time.monotonic()
        if now - self._drawn >= _REDRAW_S:
            self._drawn = now
            self.plot.show_progress(self._loss, self._dice)
            self.status.value = f"epoch {p.epoch}, step {p.step}/{p.steps}: loss {p.loss:.3f}, {p.minutes:.1f} min"

    def _on_done(self, result) -> None:
        config, summary = result
        self.plot.show_progress(self._loss, self._dice)
        how = "cancelled" if summary.cancelled else f"{summary.minutes:.1f} min"
        if summary.written:
            self.trained = Path(config.output)
            self.status.value = (
                f"Trained {summary.epochs} epoch(s) ({how}); Dice on annotated voxels "
                f"{summary.best_validation_dice:.3f}. Save it, or segment with it."
            )
        else:
            kept = "the previous trained model is kept" if self.trained else "no new model"
            self.status.value = f"Cancelled before the first epoch ended: {kept}."
        self.save_button.enabled = self.segment_button.enabled = self.trained is not None

    def _on_error(self, error: BaseException) -> None:
        if isinstance(error, MedfcnError):
            self.status.value = str(error)
        else:
            log.error("training failed", exc_info=error)
            self.status.value = f"Training failed: {type(error).__name__}: {error}"

    def _on_finished(self) -> None:
        self.worker = None
        self.train_button.enabled, self.cancel_button.enabled = True, False
