"""The Train dock widget: corrected slices -> a fine-tuned model, by :func:`medfcn.training.train.iter_train`.

Pick an image layer and its corrected label layer (a Review overlay is never offered). The dock learns the slices
the user painted, in whatever view (each Labels layer records them as they are painted:
:func:`napari_plugin._widgets._edits.track_painting`), and says which before it starts ("3 corrected axial slices:
9, 15, 21"); a painted slice that no longer differs from what Segment wrote (``metadata["prediction"]``) is left
out, and changes it did not see painted (edited from code, a 3-D brush) are refused, never guessed ("edited slices
only", the default; every other voxel becomes 255, not annotated); "whole layer checked" takes the whole layer. The
start model is the one that made the prediction, the bundled one, a file, or a new model with label names. Training
is :func:`medfcn.training.process.train_correction` (the case written, then
:func:`medfcn.training.train.iter_train`, the generator the CLI runs, in a child process), in a napari
thread of its own: each step it yields comes back to the viewer's thread as the live plot of the smoothed loss and
Dice on the painted slices, with the time left; Cancel is polled after every step (a second at most) and the model
of the last finished epoch is kept. When it ends, the status says what the tuned model changes on the whole scan
against its start model (:mod:`medfcn.training.compare`). The tuned model is named after its start model ("<start>
fine-tuned on <scan>, 3 slices (date)").

When training ends: "Save model..." (a file dialog; a model in use is never overwritten; the saved file is the model
from then on, for Segment and the layers it made) and "Segment with this model", which hands the model to the
Segment dock and segments the image with it as a new layer. Closing the dock or the viewer ends the training process
and removes the temporary folder (copies of the scan live there only during a run, readable by the user alone).
"Accept its labels where not painted" copies the newest layer that model made into the label layer wherever nothing
is painted (one undo step). The Review queue's "Train on the corrected cases" starts one run here on all of them
(:meth:`TrainWidget.train_on_cases`, :func:`medfcn.training.process.train_corrected_cases`). A new structure:
"painted slices only" on a fresh layer (painted, or filled between by
the Annotate dock) and the start "new structure (bundled model's encoder)" with its label names. "Live" learns while
the user paints: short rounds and a preview layer (:mod:`._live`).
"""

from __future__ import annotations

import datetime
import logging
import shutil
import tempfile
import threading
import time
from enum import StrEnum
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
    LineEdit,
    PushButton,
    create_widget,
)
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QSizePolicy

from medfcn.annotation.accept import accept_prediction
from medfcn.errors import MedfcnError
from medfcn.training.compare import Preview, ScanChange
from medfcn.training.corrections import (
    CorrectionMode,
    StartModel,
    corrected_cases_run,
    correction_label,
    painted_label,
)
from medfcn.training.output import save_trained_model
from medfcn.training.process import ThreadedRun, train_corrected_cases, train_correction

from .._layers import check_same_grid, layer_scan
from .._messages import for_viewer
from ._edits import painted_planes, planes_text, sliced_axis
from ._live import ROUND_MINUTES, LiveRounds
from ._plot import TrainingPlot, smoothed
from ._scan_views import is_user_labels

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
    STRUCTURE = "new structure (bundled model's encoder)"


class TrainWidget(Container):
    """Fine-tune a model on corrected slices; save it; segment with it."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._viewer = viewer
        self.image = create_widget(label="Image", annotation="napari.layers.Image")
        self.label_layer = ComboBox(label="Corrected labels", choices=self._label_choices, nullable=True)
        self.mode = ComboBox(label="Annotated", choices=[m.value for m in CorrectionMode], value=CorrectionMode.EDITED)
        self.plan = Label(value="")
        self.start = ComboBox(label="Start model", choices=[s.value for s in StartChoice], value=StartChoice.PREDICTION)
        self.model_file = FileEdit(label="Model file", mode="r", filter="*.safetensors", visible=False)
        self.label_names = LineEdit(label="Label names", value="background,structure", visible=False)
        self.minutes = FloatSpinBox(label="Minutes", value=4.0, min=0.05, max=600.0, step=0.5)
        self.live = CheckBox(text="Live: learn while I paint (a preview layer)", value=False)
        self.train_button = PushButton(text="Train")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.save_button = PushButton(text="Save model...", enabled=False)
        self.segment_button = PushButton(text="Segment with this model", enabled=False)
        self.accept_button = PushButton(text="Accept its labels where not painted", enabled=False)
        self.status = Label(value="")
        super().__init__(
            widgets=[
                self.image,
                self.label_layer,
                self.mode,
                self.plan,
                self.start,
                self.model_file,
                self.label_names,
                self.minutes,
                self.live,
                self.train_button,
                self.cancel_button,
                self.status,
                self.save_button,
                self.segment_button,
                self.accept_button,
            ]
        )
        self.plot = TrainingPlot()
        self.native.layout().addWidget(self.plot)  # below the buttons: nothing is drawn over them
        for label in (self.status, self.plan):  # long messages wrap instead of widening the dock (never cut off)
            label.native.setWordWrap(True)
            label.native.setMinimumWidth(10)
            label.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.start.changed.connect(self._on_start)
        self.train_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.save_button.clicked.connect(lambda: self.save())
        self.segment_button.clicked.connect(self.segment_with_model)
        self.accept_button.clicked.connect(self.accept)
        self.label_layer.changed.connect(self._on_label_layer)
        self.mode.changed.connect(lambda *_: self._update_plan())
        self.worker = None
        self.trained: Path | None = None  # the last model training wrote (the last good one), or where it was saved
        self.start_path: Path | None = None  # the model the last run started from
        self.change: ScanChange | None = None  # what the last run changed on the whole scan
        self._cases = 0  # the corrected cases the last run learnt from (0: the slices painted in this viewer)
        self._cancel = threading.Event()
        self._folder = tempfile.TemporaryDirectory(prefix="medfcn-train-")  # 0700: the user's alone
        self._process = None
        self._runs = 0
        self._loss: list[float] = []
        self._dice: list[float] = []
        self._drawn = 0.0
        self._watched = None
        self._user_choice = None
        self._timer = QTimer(self.native)  # drains the run's messages in the viewer's thread; dies with the dock
        self._timer.setInterval(50)
        self._timer.timeout.connect(self._poll)
        self._live = LiveRounds(self)
        self.live.changed.connect(self._live.switch)
        for widget in (self.image, self.start, self.mode, self.label_names, self.model_file):
            widget.changed.connect(self._live.restart)
        self.reset_choices()

    @property
    def folder(self) -> Path:
        """The dock's temporary folder (removed when the dock or the viewer closes)."""
        return Path(self._folder.name)

    @property
    def child_pid(self) -> int | None:
        """The process id of the training process while one runs."""
        process = self._process
        return process.pid if process is not None and process.is_alive() else None

    # -- actions -------------------------------------------------------------------------------------------------
    def run(self, *, live: bool = False):
        """Start training (a :class:`~medfcn.training.process.ThreadedRun`); returns the run (``None`` after a
        one-line error in the status). ``live``: a live round (:mod:`._live`): :data:`ROUND_MINUTES`, from the
        previous round's model, the round's preview of the scan sent back."""
        if self.worker is not None:
            return None
        try:
            scan, label, start, what, n = self._inputs()
        except MedfcnError as e:
            self.status.value = for_viewer(str(e))
            return None
        self._user_choice = self.label_layer.value  # the layer trained on stays chosen (Accept writes into it)
        learnt = f", {n} slice{'s' if n != 1 else ''}" if n else ""
        name = f"{{start}} fine-tuned on {scan.case}{learnt} ({_stamp()})"
        if live and self._live.model is not None:  # the next round goes on from the last one, under its name
            start, name = StartModel(self._live.model, continues=True), ""
        folder = self._new_run(start, cases=0)
        minutes = ROUND_MINUTES if live else float(self.minutes.value)
        generator = train_correction(
            folder, scan, label, start, minutes, self._cancel.is_set, name=name, started=self._started, preview=live
        )
        doing = f"Live round {self._live.rounds + 1}: learning" if live else "Training on"
        run = self._launch(generator, f"{doing} {what} of {self.image.value.name} ...")
        if live:
            self._live.begin(self.image.value, self.label_layer.value, what)
        return run

    def train_on_cases(self, pairs: Path, model: Path, n: int):
        """One fine-tuning run of ``model`` on the ``n`` corrected cases listed in ``pairs`` (the Review queue's
        ``OUT/corrected/pairs.csv``) for the dock's minutes; returns the run (``None`` after a one-line error in the
        status: a run already going, a list or model that cannot be used)."""
        if self.worker is not None:
            self.status.value = "A training run is already going: wait for it, or cancel it."
            return None
        start = StartModel(Path(model))
        try:  # a list or model that cannot be used is said now, before anything starts
            config = corrected_cases_run(
                Path(pairs),
                start,
                minutes=float(self.minutes.value),
                output=self._next_folder / "model.safetensors",
                name=f"{{start}} fine-tuned on {n} corrected case{'s' if n != 1 else ''} ({_stamp()})",
            )
        except MedfcnError as e:
            self.status.value = for_viewer(str(e))
            return None
        self._new_run(start, cases=n)
        generator = train_corrected_cases(config, self._cancel.is_set, started=self._started)
        return self._launch(generator, f"Training on {n} corrected case{'s' if n != 1 else ''} ({pairs}) ...")

    @property
    def _next_folder(self) -> Path:
        """The folder of the next run, inside the dock's temporary folder."""
        return self.folder / f"run{self._runs + 1}"

    def _new_run(self, start: StartModel, *, cases: int) -> Path:
        folder = self._next_folder
        self._runs += 1
        self._cancel.clear()
        self._loss, self._dice, self.change, self._cases = [], [], None, cases
        self.start_path = start.path
        return folder

    def _launch(self, generator, text: str) -> ThreadedRun:
        self.train_button.enabled, self.cancel_button.enabled = False, True
        self.status.value = text
        self.worker = ThreadedRun(generator).start()
        self._timer.start()
        return self.worker

    def cancel(self) -> None:
        """Ask training to stop after its current step; the model of the last finished epoch is kept."""
        self._cancel.set()
        self.status.value = "Cancelling ..."

    def save(self, path: str | Path | None = None) -> Path | None:
        """Copy the trained model to ``path`` (asked with a file dialog when ``None``); refuses a model in use. The
        saved file is the model from then on: for the Segment dock, and in the layers it made."""
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
            self.status.value = for_viewer(str(e))
            return None
        old, self.trained = self.trained, Path(out)
        if segment is not None and segment.model_in_use() == old:
            segment.use_model(out)
        for layer in self._viewer.layers:  # the layers it made name the file that lasts
            if (layer.metadata or {}).get("model_path") == str(old):
                layer.metadata["model_path"] = str(out)
        self.status.value = f"Model saved to {out}; it is the one used from now on."
        return Path(out)

    def model_in_use(self, path: Path) -> bool:
        """Whether a layer in the viewer names the model file ``path`` or the Segment dock segments with it."""
        segment = self._segment_widget(create=False)
        if segment is not None and segment.model_in_use() == path:
            return True
        return any((layer.metadata or {}).get("model_path") == str(path) for layer in self._viewer.layers)

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

    def accept(self) -> int | None:
        """Copy the labels the trained model segmented (its newest layer) into the chosen label layer where nothing
        is painted, as one undo step; returns how many voxels changed (``None`` after a one-line status)."""
        labels = self.label_layer.value
        made = [
            layer
            for layer in self._viewer.layers
            if layer is not labels
            and self.trained is not None
            and layer.metadata.get("model_path") == str(self.trained)
        ]
        try:
            if labels is None or not made:
                raise MedfcnError("Segment with this model first, then accept its labels.")
            check_same_grid(labels, made[-1])
            painted = np.asarray(labels.data)
            accepted = accept_prediction(painted, np.asarray(made[-1].data), name=labels.name)
        except MedfcnError as e:
            self.status.value = str(e)
            return None
        index = np.nonzero(accepted != painted)
        with self._live.muted(), labels.block_history():  # one undo step (its paint event comes as it closes), not a
            # stroke for Live to learn
            labels.data_setitem(index, accepted[index])
        n = int(index[0].size)
        self.status.value = (
            f"{labels.name}: {n:,} voxels from {made[-1].name} where nothing was painted (Ctrl-Z undoes it)."
        )
        return n

    def dock_closed(self) -> None:
        """The dock or the viewer closed: end the training process and the thread driving it, remove the temporary
        folder (called once, by :mod:`._docks`)."""
        self._cancel.set()
        self._live.stop()
        try:
            self._timer.stop()
        except RuntimeError:  # the timer went with the dock's widgets
            pass
        process, run = self._process, self.worker
        if process is not None and process.is_alive():
            process.terminate()
            process.join(5)
        if run is not None:
            run.thread.join(5)  # its loop sees the process gone within 0.1 s
        if self._watched is not None:
            self._watch(None)
        shutil.rmtree(self.folder, ignore_errors=True)
        self._folder.cleanup()

    # -- inputs --------------------------------------------------------------------------------------------------
    def _label_choices(self, _widget=None) -> list[tuple[str, object]]:
        """The Labels layers one may learn from: never a Review overlay."""
        layers = getattr(self, "_viewer", None)
        layers = layers.layers if layers is not None else []
        return [(layer.name, layer) for layer in layers if is_user_labels(layer)]

    def reset_choices(self, *_) -> None:
        """Refresh the layer choices (napari calls this when layers come and go); the corrected labels default to
        the newest Segment result unless the user chose another layer that is still there."""
        super().reset_choices()
        choices = [layer for _, layer in self._label_choices()]
        if self._user_choice is not None and any(c is self._user_choice for c in choices):
            if self.label_layer.value is not self._user_choice:
                self._set_label(self._user_choice)
            return
        made = [c for c in choices if "prediction" in (c.metadata or {})]
        if made or choices:
            self._set_label((made or choices)[-1])

    def _set_label(self, layer) -> None:
        chosen = self._user_choice
        self.label_layer.value = layer
        self._user_choice = chosen

    def _inputs(self) -> tuple:
        """(scan, partial label on the scan's grid, start model, what is learnt, slices); raises MedfcnError."""
        image, labels = self.image.value, self.label_layer.value
        if image is None or labels is None:
            raise MedfcnError("Choose an image layer and the label layer you corrected.")
        check_same_grid(image, labels)
        scan = layer_scan(*image.as_layer_data_tuple()[:2])
        attrs = labels.as_layer_data_tuple()[1]
        data = np.asarray(labels.data)
        if self.mode.value == CorrectionMode.WHOLE:
            corrected = layer_scan(data, attrs).array
            label, _ = correction_label(None, corrected, CorrectionMode.WHOLE, name=labels.name)
            return scan, label, self._start_model(labels), "the whole layer", 0
        if self.mode.value == CorrectionMode.PAINTED:  # the slices holding a label, however they got it (a file,
            held = self._held_planes(data)  # the Annotate dock's fill): along the axis on screen, else the fewest
            label = layer_scan(painted_label(data, held, name=labels.name)[0], attrs).array
            return scan, label, self._start_model(labels), planes_text(held), sum(len(k) for k in held.values())
        planes, off_plane = painted_planes(labels)
        prediction = labels.metadata.get("prediction")
        whole = CorrectionMode.WHOLE.value
        if off_plane:
            raise MedfcnError(
                f"{labels.name}: {off_plane:,} voxels were painted in 3-D (a 3-D brush or the 3-D view), not on "
                f"slices: paint the corrections slice by slice in a 2-D view, or choose '{whole}'"
            )
        if not planes:
            if prediction is not None and np.any(np.asarray(prediction) != data):
                raise MedfcnError(
                    f"{labels.name}: its changes were not painted in this viewer (edited from code, or before medfcn "
                    f"watched the layer), so which slices were checked is not known: paint the corrections slice "
                    f"by slice, or choose '{whole}'"
                )
            raise MedfcnError(f"{labels.name}: no slice painted yet: paint the corrections (in any view), then Train")
        display, kept = painted_label(data, planes, prediction=prediction, name=labels.name)
        label = layer_scan(display, attrs).array
        return scan, label, self._start_model(labels), planes_text(kept), sum(len(k) for k in kept.values())

    def _held_planes(self, data: np.ndarray) -> dict[int, list[int]]:
        """``{axis: [slice, ...]}``: the slices of the layer's data that hold a label, along the axis the viewer
        slices through (in a 3-D view, the axis with the fewest); raises MedfcnError when none does."""
        on_screen = sliced_axis(self._viewer, data.ndim)
        axes = list(range(data.ndim)) if on_screen is None else [on_screen]
        held = {a: np.flatnonzero(data.any(axis=tuple(b for b in range(data.ndim) if b != a))).tolist() for a in axes}
        axis = min(held, key=lambda a: len(held[a]))
        if not held[axis]:
            raise MedfcnError("no slice holds a label: paint the structure on a few slices first")
        return {axis: held[axis]}

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
        names = tuple(self.label_names.value.split(","))
        return StartModel(DEFAULT_MODEL_PATH if choice is StartChoice.STRUCTURE else None, names)

    def _segment_widget(self, *, create: bool):
        """The Segment dock of this viewer (opened when ``create``), or None."""
        from ._docks import find_dock
        from .segment import SegmentWidget

        return find_dock(self._viewer, SegmentWidget, "Segment", create=create)

    # -- the plan: what training will learn, said before it starts ------------------------------------------------
    def _on_label_layer(self, layer) -> None:
        self._user_choice = layer
        self._watch(layer)
        self._live.restart()
        self._update_plan()

    def _watch(self, layer) -> None:
        if self._watched is not None:
            try:
                self._watched.events.paint.disconnect(self._on_paint)
            except (TypeError, RuntimeError, ValueError):
                pass
        self._watched = layer
        if layer is not None:
            layer.events.paint.connect(self._on_paint)

    def _on_paint(self, *_) -> None:
        self._update_plan()
        self._live.edited()

    def _update_plan(self, *_) -> None:
        labels = self.label_layer.value
        if labels is None:
            self.plan.value = ""
        elif self.mode.value == CorrectionMode.WHOLE:
            self.plan.value = f"Will learn all of {labels.name}, every voxel as it is."
        elif self.mode.value == CorrectionMode.PAINTED:
            try:
                self.plan.value = f"Will learn {planes_text(self._held_planes(np.asarray(labels.data)))}."
            except MedfcnError:
                self.plan.value = "No slice holds a label yet."
        else:
            planes, off = painted_planes(labels)
            text = planes_text(planes) if planes else "no slice painted yet"
            self.plan.value = f"Will learn {text}" + (f" ({off:,} voxels painted in 3-D: refused)" if off else ".")

    # -- callbacks -----------------------------------------------------------------------------------------------
    def _poll(self) -> None:
        """Pass the run's new messages on (in the viewer's thread): progress, then its end."""
        run = self.worker
        if run is None:
            self._timer.stop()
            return
        for kind, value in run.drain():
            if kind == "item":
                run.items.append(value)
                self._on_progress(value)
                continue
            self._timer.stop()
            try:
                self._on_done(value) if kind == "done" else self._on_error(value)
            finally:  # the dock takes a new run whatever the end said
                self._on_finished()

    def _started(self, process) -> None:
        self._process = process

    def _on_start(self, value: str) -> None:
        self.model_file.visible = value == StartChoice.FILE
        self.label_names.visible = value in (StartChoice.NEW, StartChoice.STRUCTURE)

    def _on_progress(self, p) -> None:
        if isinstance(p, Preview):
            self._live.show(p)
            return
        if isinstance(p, ScanChange):
            self.change = p
            return
        if p.epoch_done:
            return
        self._loss.append(p.loss)
        self._dice.append(p.dice)
        now = time.monotonic()
        if now - self._drawn >= _REDRAW_S:
            self._drawn = now
            self.plot.show_progress(self._loss, self._dice)
            left = p.minutes * (1 - p.fraction) / p.fraction if p.fraction > 0 else float("nan")
            eta = f"about {left:.1f} min left" if np.isfinite(left) else "time left not known yet"
            self.status.value = (
                f"epoch {p.epoch}, step {p.step}/{p.steps}: loss {smoothed(self._loss)[-1]:.3f} (smoothed), "
                f"{p.minutes:.1f} min, {eta}"
            )

    def _on_done(self, result) -> None:
        config, summary = result
        self.plot.show_progress(self._loss, self._dice)
        how = "cancelled" if summary.cancelled else f"{summary.minutes:.1f} min"
        if self._live.round is not None:
            output = Path(config.output) if summary.written else None
            self.trained, self.status.value = self._live.done(output, self.trained)
        elif summary.written:
            self.trained = Path(config.output)
            on = f"the {self._cases} corrected cases" if self._cases else "the painted slices"
            self.status.value = (
                f"Trained {summary.epochs} epoch(s) ({how}). {self._change_text()} Training data: Dice "
                f"{summary.best_validation_dice:.3f} on {on}. Save it, or segment with it."
            )
        else:
            kept = "the previous trained model is kept" if self.trained else "no new model"
            self.status.value = f"Cancelled before the first epoch ended: {kept}."
        for note in summary.notes:  # painted slices snapped onto the model's frame, said by training
            self.status.value += f" {for_viewer(note)}."
        self.save_button.enabled = self.segment_button.enabled = self.accept_button.enabled = self.trained is not None

    def _change_text(self) -> str:
        """What the tuned model changes on the whole scan against its start model, in the viewer's planes."""
        change, image = self.change, self.image.value
        if self._cases:
            return f"(Fine-tuned on {self._cases} corrected cases: not compared on one scan.)"
        if change is None:
            return "(Not compared with the start model: a new model, or the run was stopped.)"
        text = (
            f"On the whole scan it changes {change.voxels:,} voxels ({change.changed_ml:.2f} mL) against the start "
            f"model: +{change.added_ml:.2f} mL, -{change.removed_ml:.2f} mL"
        )
        meta = (image.metadata or {}) if image is not None else {}
        if change.voxels and "display_axes" in meta:
            axis, flip = int(meta["display_axes"][0]), bool(meta["display_flip"][0])
            counts = np.asarray(change.per_axis[axis])[::-1] if flip else np.asarray(change.per_axis[axis])
            hit = np.flatnonzero(counts)
            text += f", in axial slices {hit[0]}-{hit[-1]} (most in {int(np.argmax(counts))})"
        return text + "."

    def _on_error(self, error: BaseException) -> None:
        if isinstance(error, MedfcnError):
            self.status.value = for_viewer(str(error))
        else:
            log.error("training failed", exc_info=error)
            self.status.value = f"Training failed: {type(error).__name__}: {error}"

    def _on_finished(self) -> None:
        self.worker, self._process = None, None
        self.train_button.enabled, self.cancel_button.enabled = True, False
        self._live.finished()


def _stamp() -> str:
    return datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
