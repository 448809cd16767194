"""The docks' plots: Dice per slice for the Review dock (matplotlib), the training curves for the Train dock
(QPainter)."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QWidget

__all__ = ["SliceDicePlot", "TrainingPlot", "smoothed"]

_BACKGROUND, _FOREGROUND = "#262930", "#d6d0ce"  # napari's dark theme


class SliceDicePlot(FigureCanvasQTAgg):
    """Dice of each label in every slice (NaN gaps where neither map holds the label), and the current slice."""

    def __init__(self) -> None:
        self.figure = Figure(figsize=(3.2, 1.8), dpi=100, facecolor=_BACKGROUND, layout="constrained")
        super().__init__(self.figure)
        self.axes = self.figure.add_subplot()
        self._marker = None
        self.curves: dict[int, np.ndarray] = {}
        self._style()
        self.setMinimumHeight(120)

    def _style(self) -> None:
        ax = self.axes
        ax.set_facecolor(_BACKGROUND)
        ax.tick_params(colors=_FOREGROUND, labelsize=7)
        for spine in ax.spines.values():
            spine.set_color(_FOREGROUND)
        ax.set_xlabel("slice", color=_FOREGROUND, fontsize=8)
        ax.set_ylabel("Dice", color=_FOREGROUND, fontsize=8)
        ax.set_ylim(-0.02, 1.02)

    def show_curves(self, curves: dict[int, np.ndarray], names: dict, current: int | None = None) -> None:
        """Draw ``{label: per-slice Dice}``; ``names`` maps label ids to names for the legend."""
        self.curves = curves
        self.axes.clear()
        self._style()
        for label, dice in curves.items():
            name = names.get(label) or names.get(str(label)) or str(label)
            self.axes.plot(np.arange(dice.size), dice, lw=1.2, label=str(name))
        if len(curves) > 1:
            self.axes.legend(fontsize=7, facecolor=_BACKGROUND, labelcolor=_FOREGROUND, edgecolor=_FOREGROUND)
        self._marker = None
        self.mark(current)

    def draw_idle(self) -> None:
        """Redraw soon, or when next shown: a plot in a dock behind another tab is not drawn (matplotlib redraws
        the whole figure on every resize, and napari relayouts its window whenever a layer is added: 0.2-1.2 s of
        the viewer's thread for a plot nobody sees)."""
        if not self.isVisible():
            self._hidden_stale = True
            return
        self._hidden_stale = False
        super().draw_idle()

    def showEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().showEvent(event)
        if getattr(self, "_hidden_stale", False):
            self.draw_idle()

    def mark(self, index: int | None) -> None:
        """Draw a vertical line at slice ``index`` (the viewer's current slice)."""
        if self._marker is not None:
            self._marker.remove()
            self._marker = None
        if index is not None:
            self._marker = self.axes.axvline(index, color="#ffcc00", lw=1)
        self.draw_idle()


def smoothed(values: list[float], weight: float = 0.9) -> list[float]:
    """An exponential moving average of ``values`` (bias-corrected, as TensorBoard's smoothing): the trend of a
    per-step loss that jumps with every batch.

    >>> [round(v, 3) for v in smoothed([1.0, 0.0, 0.0], 0.5)]
    [1.0, 0.333, 0.143]
    """
    out, mean = [], 0.0
    for i, v in enumerate(values, 1):
        mean = weight * mean + (1 - weight) * v
        out.append(mean / (1 - weight**i))
    return out


class TrainingPlot(QWidget):
    """The smoothed loss and the smoothed Dice on the painted slices (the training data) against training steps,
    the legend above the plot (never over the curves), drawn with QPainter.

    Not matplotlib (as the Review dock's plot is): a matplotlib redraw is thousands of Python calls in the viewer's
    thread, and while training holds the GIL between its torch calls each took 0.3-2 s on a busy 2-core machine,
    blocking the event loop; two polylines with QPainter take about a millisecond."""

    COLOURS = {"loss (smoothed)": "#f0a030", "Dice on the painted slices (smoothed)": "#50b0f0"}
    _LEGEND = 16  # px above the plot box

    def __init__(self) -> None:
        super().__init__()
        self.curves: dict[str, list[float]] = {name: [] for name in self.COLOURS}
        self.setFixedHeight(150)

    def show_progress(self, loss: list[float], dice: list[float]) -> None:
        """Draw the smoothed ``loss`` and ``dice`` of every step so far."""
        names = list(self.COLOURS)
        self.curves = {names[0]: smoothed(loss), names[1]: smoothed(dice)}
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        from qtpy.QtCore import QPointF, QRectF, Qt
        from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF

        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(_BACKGROUND))
        box = QRectF(34, 8 + self._LEGEND, max(10, self.width() - 42), max(10, self.height() - 28 - self._LEGEND))
        painter.setPen(QPen(QColor(_FOREGROUND), 1))
        painter.drawRect(box)
        n = max((len(v) for v in self.curves.values()), default=0)
        top = max([1.0, *(x for v in self.curves.values() for x in v if np.isfinite(x))])
        painter.drawText(QRectF(0, box.top() - 6, 30, 12), Qt.AlignmentFlag.AlignRight, f"{top:.1f}")
        painter.drawText(QRectF(0, box.bottom() - 6, 30, 12), Qt.AlignmentFlag.AlignRight, "0")
        painter.drawText(
            QRectF(box.left(), box.bottom() + 2, box.width(), 14), Qt.AlignmentFlag.AlignRight, f"{n} steps"
        )
        x = 4.0
        for name, values in self.curves.items():
            colour = QColor(self.COLOURS[name])
            painter.setPen(QPen(colour, 1.5))
            width = painter.fontMetrics().horizontalAdvance(name) + 12
            painter.drawText(QRectF(x, 2, width, 14), Qt.AlignmentFlag.AlignLeft, name)
            x += width
            points = [
                QPointF(box.left() + box.width() * i / max(n - 1, 1), box.bottom() - box.height() * min(v / top, 1.0))
                for i, v in enumerate(values)
                if np.isfinite(v)
            ]
            if len(points) > 1:
                painter.drawPolyline(QPolygonF(points))
        painter.end()
