"""A small matplotlib plot of Dice per slice, for the Review widget."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

__all__ = ["SliceDicePlot"]

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

    def mark(self, index: int | None) -> None:
        """Draw a vertical line at slice ``index`` (the viewer's current slice)."""
        if self._marker is not None:
            self._marker.remove()
            self._marker = None
        if index is not None:
            self._marker = self.axes.axvline(index, color="#ffcc00", lw=1)
        self.draw_idle()
