"""The Review queue dock: a batch's output folder as a list of cases to check, flagged first.

A thin face over :mod:`medfcn.batch.review_queue`: "Load" reads ``OUT/manifest.json`` (and ``OUT/review.json``,
the decisions so far); the list shows each case's score, its first reason and its decision, flagged cases first,
least trustworthy first. "Open" reads the case's scan and label map in a worker thread and adds them (``<case>``
and ``<case>_labels``, the labels on the scan's own grid); the status gives the verdict in words. "Accept" and "Needs
correction" record the decision; "Save correction" writes the labels layer as painted to
``OUT/corrected/<case>.nii.gz`` (never over the batch's output) and records ``corrected``. Everything recorded is in
``OUT/review.json``, so closing napari loses nothing. Opening the next case removes the layers of the previous one
unless its labels were painted on and not saved. "Train on the corrected cases" writes them as one list,
``OUT/corrected/pairs.csv``, and starts one fine-tuning run of the batch's model on all of them in the Train dock
(its minutes, its plot, Save and "Segment with this model"), giving the ``medfcn train`` command that does the same
from a shell.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from magicgui.widgets import Container, FileEdit, Label, PushButton, Select
from napari.qt.threading import thread_worker
from qtpy.QtWidgets import QSizePolicy

from medfcn.batch.review_queue import (
    Decision,
    QueueItem,
    corrected_path,
    read_queue,
    record_decision,
    write_corrected_pairs,
)
from medfcn.errors import MedfcnError

from .._layers import labels_checksum, scan_layer_data
from . import _scan_views

if TYPE_CHECKING:
    import napari

__all__ = ["QueueWidget", "verdict_text"]

log = logging.getLogger(__name__)


def verdict_text(item: QueueItem) -> str:
    """The verdict of a queue item in words, as the Segment dock gives it (:meth:`Verdict.text`)."""
    from medfcn.inference.verdict import Verdict

    lines = [f"{item.case}: {Verdict(item.review, item.score, list(item.reasons)).text()}"]
    if item.label_map is None:
        lines.append("- no label map was written for it (--skip-flagged)")
    if item.decision:
        lines.append(f"Recorded: {item.decision}" + (f" ({item.corrected.name})" if item.corrected else ""))
    return "\n".join(lines)


def _read_case(item: QueueItem) -> list[tuple]:
    """Worker body: the layer data tuples of a case's scan and label map (the label map as labels, on its grid)."""
    from medfcn.data.reader import read_scan

    scan = read_scan(item.scan)
    layers = [scan_layer_data(scan, layer_type="image", name=item.case)]
    label_map = item.corrected or item.label_map
    if label_map is not None:
        labels = read_scan(label_map)
        if labels.grid.differences(scan.grid):
            raise MedfcnError(f"{label_map}: not on the grid of {item.scan} ({labels.grid.differences(scan.grid)[0]})")
        labels.case = item.case
        layers.append(scan_layer_data(labels, layer_type="labels", name=f"{item.case}_labels"))
    return layers


class QueueWidget(Container):
    """Review a batch's cases, flagged first; decisions and corrections are kept beside its manifest."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._viewer = viewer
        self.folder = FileEdit(label="Batch output", mode="d")
        self.load_button = PushButton(text="Load")
        self.items: list[QueueItem] = []
        # a callable: napari resets a docked widget's choices whenever a layer is added (a list would be emptied)
        self.cases = Select(label="Cases", choices=lambda _widget: [i.line() for i in self.items])
        self.open_button = PushButton(text="Open")
        self.accept_button = PushButton(text="Accept")
        self.needs_button = PushButton(text="Needs correction")
        self.save_button = PushButton(text="Save correction")
        self.train_button = PushButton(text="Train on the corrected cases")
        self.status = Label(value="Choose the output folder of a medfcn segment run (it holds manifest.json).")
        super().__init__(
            widgets=[
                self.folder,
                self.load_button,
                self.cases,
                self.open_button,
                self.accept_button,
                self.needs_button,
                self.save_button,
                self.train_button,
                self.status,
            ]
        )
        self.cases.native.setMaximumHeight(170)  # the status below keeps room for the verdict's reasons
        self.status.native.setWordWrap(True)
        self.status.native.setMinimumWidth(10)
        self.status.native.setMinimumHeight(130)  # the verdict's reasons, a few lines each, are read here
        self.status.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        _scan_views.install(viewer)
        self.current: QueueItem | None = None
        self._layers: tuple | None = None  # (image layer, labels layer or None, checksum when opened or saved)
        self.worker = None
        self.load_button.clicked.connect(self.load)
        self.open_button.clicked.connect(self.open)
        self.accept_button.clicked.connect(lambda: self.decide(Decision.ACCEPTED))
        self.needs_button.clicked.connect(lambda: self.decide(Decision.NEEDS_CORRECTION))
        self.save_button.clicked.connect(self.save_correction)
        self.train_button.clicked.connect(self.train_on_corrected)

    @property
    def out_dir(self) -> Path:
        return Path(self.folder.value)

    # -- actions -------------------------------------------------------------------------------------------------
    def load(self, folder: str | Path | None = None) -> list[QueueItem]:
        """Read the queue of ``folder`` (default: the chosen one); returns its items, flagged first."""
        if folder is not None:
            self.folder.value = Path(folder)
        try:
            self.items = read_queue(self.out_dir)
        except MedfcnError as e:
            self.items, self.status.value = [], str(e)
        else:
            flagged = sum(i.review for i in self.items)
            done = sum(i.decision is not None for i in self.items)
            self.status.value = f"{flagged} of {len(self.items)} cases flagged for review; {done} decided."
        self.cases.reset_choices()
        for row in range(self.cases.native.count()):  # the whole line on hover (long reasons are cut by the dock)
            self.cases.native.item(row).setToolTip(self.cases.native.item(row).text())
        if self.items:
            self.cases.value = [self.items[0].line()]
        return self.items

    def selected(self) -> QueueItem | None:
        lines = list(self.cases.value or [])
        return next((i for i in self.items if lines and i.line() == lines[0]), None)

    def open(self, item: QueueItem | None = None):
        """Open a case's scan and labels (default: the selected one) in a worker; returns the worker."""
        item = item or self.selected()
        if item is None:
            self.status.value = "Load a batch output folder and pick a case."
            return None
        self.worker = thread_worker(_read_case, start_thread=False, ignore_errors=True)(item)
        self.worker.returned.connect(lambda layers: self._on_opened(item, layers))
        self.worker.errored.connect(lambda e: setattr(self.status, "value", str(e)))
        self.status.value = f"Opening {item.case} ..."
        self.worker.start()
        return self.worker

    def decide(self, decision: Decision) -> None:
        """Record ``decision`` (accepted, needs correction) for the open case."""
        if self.current is None:
            self.status.value = "Open a case first."
            return
        self._record(decision)

    def save_correction(self) -> Path | None:
        """Write the open case's labels layer to ``OUT/corrected/<case>.nii.gz`` and record ``corrected``."""
        if self.current is None or self._layers is None or self._layers[1] is None:
            self.status.value = "Open a case with a label map first."
            return None
        from .._writer import save_labels_layer

        labels = self._layers[1]
        try:
            path = corrected_path(self.out_dir, self.current.case)
            saved = save_labels_layer(labels, path)
        except MedfcnError as e:
            self.status.value = str(e)
            return None
        self._layers = (self._layers[0], labels, labels_checksum(labels.data))
        self._record(Decision.CORRECTED, saved)
        return saved

    def corrected_pairs(self) -> tuple[Path, int, str, str] | None:
        """Write ``OUT/corrected/pairs.csv`` (:func:`write_corrected_pairs`): ``(the list, its cases, the model the
        batch was run with (the bundled one when its manifest names none), a sentence saying so or "")``, and say
        how to train on it from a shell; ``None`` after a one-line error."""
        import shlex

        from medfcn.model.checkpoint import DEFAULT_MODEL_PATH

        try:
            path, n = write_corrected_pairs(self.out_dir)
        except MedfcnError as e:
            self.status.value = str(e)
            return None
        model = self._model_path()
        unknown = "" if model else " The batch's manifest names no model file: the bundled model is fine-tuned."
        model = model or str(DEFAULT_MODEL_PATH)
        trained = self.out_dir / "corrected" / "model.safetensors"
        command = ["medfcn", "train", "--pairs", str(path), "-o", str(trained), "--init", model]
        self.status.value = f"{n} corrected cases listed in {path}.{unknown} From a shell:\n{shlex.join(command)}"
        return path, n, model, unknown

    def train_on_corrected(self):
        """The button "Train on the corrected cases": list them (:meth:`corrected_pairs`) and start one fine-tuning
        run on all of them in the Train dock (opened if needed); returns that run, or ``None``."""
        from ._docks import find_dock
        from .train import TrainWidget

        listed = self.corrected_pairs()
        if listed is None:
            return None
        path, n, model, unknown = listed
        train = find_dock(self._viewer, TrainWidget, "Train", create=True)
        run = train.train_on_cases(path, Path(model), n)
        said = self.status.value.split("\n", 1)[1]
        if run is None:
            self.status.value = f"Not started: {train.status.value}"
        else:
            self.status.value = (
                f"Training on the {n} corrected cases in the Train dock.{unknown} The same from a shell:\n{said}"
            )
        return run

    def _model_path(self) -> str | None:
        """The model file the batch was run with, from its manifest (``None``: unknown)."""
        import json

        try:
            manifest = json.loads((self.out_dir / "manifest.json").read_text(encoding="utf-8"))
            return str(manifest["model"]["path"]) or None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    # -- helpers -------------------------------------------------------------------------------------------------
    def _record(self, decision: Decision, corrected: Path | None = None) -> None:
        case = self.current.case
        try:
            record_decision(self.out_dir, case, decision, corrected)
        except MedfcnError as e:
            self.status.value = str(e)
            return
        self.load()
        self.current = next((i for i in self.items if i.case == case), None)
        if self.current is not None:
            self.cases.value = [self.current.line()]
            self.status.value = verdict_text(self.current)

    def _on_opened(self, item: QueueItem, layers: list[tuple]) -> None:
        kept = self._close_previous()
        added = [getattr(self._viewer, f"add_{kind}")(data, **kwargs) for data, kwargs, kind in layers]
        labels = added[1] if len(added) > 1 else None
        self._layers = (added[0], labels, labels_checksum(labels.data) if labels is not None else None)
        self.current = item
        self._viewer.reset_view()
        self.status.value = verdict_text(item) + kept

    def _close_previous(self) -> str:
        """Remove the previous case's layers unless its labels were painted on since opened or saved."""
        if self._layers is None:
            return ""
        image, labels, checksum = self._layers
        self._layers = None
        if labels is not None and labels in self._viewer.layers and labels_checksum(labels.data) != checksum:
            return f"\n{labels.name} was painted on and not saved: it is kept."
        for layer in (labels, image):
            if layer is not None and layer in self._viewer.layers:
                self._viewer.layers.remove(layer)
        return ""
