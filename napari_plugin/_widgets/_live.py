"""The Train dock's live mode: short training rounds in the background while the user paints, and a preview layer.

With "Live" ticked, every stroke on the chosen labels layer (brush, fill, erase: napari's ``paint`` event) restarts
a short timer; when the user pauses (:data:`PAUSE_MS`), a round starts: the dock's own training run
(:meth:`napari_plugin._widgets.train.TrainWidget.run` with ``live=True``: the painted slices as the dock's mode reads
them, :data:`ROUND_MINUTES` of training in the child process, starting from the previous round's model), and the
round's model segments the scan in that child (:func:`medfcn.training.compare.scan_preview`). The labels come back as
``<labels>_preview``: a layer of its own, never the user's, not editable, replaced in place each round, the user's
layer left selected for painting. Strokes made while a round runs start the next round when it ends; a round whose
layers went, or that another labels layer, image, start model or mode made out of date, shows nothing. "Accept its
labels where not painted" copies the preview into the user's layer (the newest layer the model made); that copy is
not a stroke and starts no round. Each round's model replaces the one before in the dock's temporary folder.

The latency of each preview (from the oldest stroke it includes to the preview on screen) is kept in
:attr:`LiveRounds.latencies` and said in the status; ``benchmarks/bench_annotate.py live`` measures it.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from qtpy.QtCore import QTimer

from .._layers import labels_to_display
from ._scan_views import add_labels_like

if TYPE_CHECKING:
    from medfcn.training.compare import Preview

__all__ = ["LiveRounds", "ROUND_MINUTES", "PAUSE_MS"]

ROUND_MINUTES = 0.2
"""Training time of one live round: 12 s, which with the child's start (5-8 s: torch and the model loaded) and the
preview's segmentation (2-4 s on a 1.5 mm head) keeps a preview within 30 s of a stroke on 2 CPU cores."""

PAUSE_MS = 1000
"""A round starts this long after the last stroke (a stroke restarts the wait), so a slice painted in several strokes
is learnt at once."""


@dataclass
class _Round:
    """The running round: what it learns from, so that its preview lands where it belongs (or nowhere)."""

    generation: int
    image: object
    labels: object
    what: str
    previous: Path | None = None  # the round before's model, where this one started
    shown: bool = False


class LiveRounds:
    """The live mode of a Train dock (``dock``: its ``live`` check box, ``run(live=True)``, ``folder`` and
    ``_viewer``)."""

    def __init__(self, dock) -> None:
        self._dock = dock
        self.model: Path | None = None  # the newest round's model: where the next round starts
        self.rounds = 0
        self.latencies: list[float] = []  # seconds from the oldest stroke a preview includes to the preview shown
        self.round: _Round | None = None  # the round running, if any
        self._generation = 0  # a new labels layer, image, start model or mode starts the rounds again
        self._edited_at: float | None = None  # the oldest stroke not yet in a round
        self._round_edit: float | None = None  # the oldest stroke the running round includes
        self._pending = False  # strokes came while a round ran: the next one starts when it ends
        self._muted = False  # the dock itself is writing into the labels (Accept): not the user's strokes
        self._timer = QTimer(dock.native)
        self._timer.setSingleShot(True)
        self._timer.setInterval(PAUSE_MS)
        self._timer.timeout.connect(self._due)

    @property
    def on(self) -> bool:
        return bool(self._dock.live.value)

    def switch(self, on: bool) -> None:
        """Ticked: a round starts now (the slices painted so far); unticked: no new round (one running runs to its
        end)."""
        if on:
            self._edited_at = time.monotonic()
            self._due()
        else:
            self._timer.stop()
            self._pending, self._edited_at = False, None

    def restart(self, *_) -> None:
        """Another labels layer, image, start model or mode: the next round starts from the dock's start model, and
        the preview of a round still running is dropped."""
        self.model, self.rounds = None, 0
        self._generation += 1

    def edited(self) -> None:
        """A stroke on the labels layer: a round starts when the user pauses."""
        if not self.on or self._muted:
            return
        if self._edited_at is None:
            self._edited_at = time.monotonic()
        self._timer.start()

    @contextmanager
    def muted(self):
        """Writes into the labels that are not the user's strokes (Accept) start no round."""
        self._muted = True
        try:
            yield
        finally:
            self._muted = False

    def begin(self, image, labels, what: str) -> None:
        """The dock started a round on ``image`` and ``labels``, learning ``what``."""
        self.rounds += 1
        self.round = _Round(self._generation, image, labels, what, self.model)

    def _due(self) -> None:
        if not self.on:
            return
        if self._dock.worker is not None:
            self._pending = True
            return
        self._round_edit, self._edited_at = self._edited_at, None
        self._dock.run(live=True)

    def show(self, preview: Preview) -> None:
        """The round's labels as ``<labels>_preview``, replaced in place; the user's layer stays selected. Dropped
        when the round's layers are gone or the rounds started again meanwhile."""
        viewer, r = self._dock._viewer, self.round
        if r is None or r.generation != self._generation or any(la not in viewer.layers for la in (r.image, r.labels)):
            return
        display = labels_to_display(preview.labels, r.image.as_layer_data_tuple()[1])
        name = f"{r.labels.name}_preview"
        metadata = {"preview_of": r.labels.name, "model_path": preview.model, "live_round": self.rounds}
        layer = viewer.layers[name] if name in viewer.layers else None
        if layer is not None and layer.data.shape == display.shape:
            layer.data = display
            layer.metadata.update(metadata)
        else:
            if layer is not None:
                viewer.layers.remove(layer)
            layer = add_labels_like(viewer, r.image, display, name=name, metadata=metadata, opacity=0.5)
            layer.editable = False
            viewer.layers.selection.active = r.labels  # the brush stays on the user's layer
        self.model, r.shown = Path(preview.model), True
        if self._round_edit is not None:
            self.latencies.append(time.monotonic() - self._round_edit)
            self._round_edit = None

    def done(self, output: Path | None, trained: Path | None) -> tuple[Path | None, str]:
        """The round ended, its model written to ``output`` (``None``: none); ``trained`` is the dock's model
        before it. Returns the dock's model from now on (this round's when its preview was shown) and the status.
        The round before's model file goes (the temporary folder would keep one per round) unless it was saved
        elsewhere or something still uses it (a layer it segmented, the Segment dock: :meth:`model_in_use`)."""
        r, self.round = self.round, None
        if r is None or not r.shown or output is None:
            return trained, f"Live round {self.rounds} ended before its preview (stopped, or the layers changed)."
        old = r.previous
        if old is not None and old != output and Path(self._dock.folder) in old.parents:
            if not self._dock.model_in_use(old):
                old.unlink(missing_ok=True)
        latency = f", {self.latencies[-1]:.0f} s after your edit" if self.latencies else ""
        return output, (
            f"Live round {self.rounds}: {r.labels.name}_preview shows what the model learnt from {r.what}{latency}. "
            "Keep painting, or accept its labels."
        )

    def finished(self) -> None:
        """The dock's run ended (a round or not): strokes made meanwhile start the next round."""
        self.round = None
        if self._pending and self.on:
            self._pending = False
            self._timer.start()

    def stop(self) -> None:
        try:
            self._timer.stop()
        except RuntimeError:  # the timer went with the dock's widgets
            pass
