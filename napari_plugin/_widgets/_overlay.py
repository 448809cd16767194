"""The Review dock's picture of a prediction against a reference, and the legend the dock shows.

- an overlay of where they disagree: missed (FN, orange) and spurious (FP, blue) voxels strong, agreement (TP,
  sky blue) faint, each named on hover; the report's colours (:data:`medfcn.evaluation.thumbnails.OVERLAY_COLOURS`,
  Okabe & Ito's colour-blind-safe palette);
- the reference as a contour in yellow, a colour no error uses, drawn on top;
- the prediction as a white outline (not filled: a fill under the faint agreement colour mixes into a third colour).
"""

from __future__ import annotations

import copy

import numpy as np

from medfcn.evaluation.metrics import Overlap
from medfcn.evaluation.thumbnails import OVERLAY_COLOURS

from ._scan_views import add_labels_like

__all__ = ["OVERLAP_COLORS", "OVERLAP_NAMES", "REFERENCE_RGB", "PREDICTION_RGB", "legend_html", "show_overlap"]

_OPACITY = {Overlap.TP: 0.3, Overlap.FP: 1.0, Overlap.FN: 1.0}  # agreement faint, so the anatomy shows through
OVERLAP_COLORS = {
    None: "transparent",
    Overlap.NONE: "transparent",
    **{code: (*(c / 255 for c in rgb), _OPACITY[code]) for code, rgb in OVERLAY_COLOURS.items()},
}
"""The overlay's RGBA (0-1) of each overlap code (the report's colours)."""
OVERLAP_NAMES = {Overlap.TP: "in both (TP)", Overlap.FP: "predicted only (FP)", Overlap.FN: "missed (FN)"}
REFERENCE_RGB = (240, 228, 66)  # Okabe-Ito yellow: the reference's contour
PREDICTION_RGB = (255, 255, 255)  # the prediction's outline


def _swatch(rgb, *, outline: bool = False) -> str:
    """A filled square of colour ``rgb`` (0-255), or a hollow one for a contour (Qt's rich text draws no CSS
    borders: the hollow square is a character in that colour)."""
    r, g, b = (int(v) for v in rgb[:3])
    if outline:
        return f"<span style='color:rgb({r},{g},{b}); font-size:large'><b>&#9633;</b></span>"
    return f"<span style='background:rgb({r},{g},{b})'>&nbsp;&nbsp;&nbsp;&nbsp;</span>"


def legend_html() -> str:
    """The legend of the picture (rich text for a Qt label): a swatch for each overlap code and each outline."""
    items = [f"{_swatch(OVERLAY_COLOURS[c])} {OVERLAP_NAMES[c]}" for c in (Overlap.FN, Overlap.FP, Overlap.TP)]
    items += [f"{_swatch(REFERENCE_RGB, outline=True)} reference (contour)"]
    items += [f"{_swatch(PREDICTION_RGB, outline=True)} prediction (outline)"]
    return "&nbsp; ".join(items)


def _one_colour(rgb) -> dict:
    """A direct label colormap painting every label ``rgb`` (0-255) and the background transparent."""
    colour = (*(c / 255 for c in rgb), 1.0)
    return {None: colour, 0: (0.0, 0.0, 0.0, 0.0)}


def show_overlap(viewer, pred, ref, overlap: np.ndarray):
    """Show where ``pred`` and ``ref`` disagree: the overlay layer ``"<pred> vs <ref>"`` (added or updated), the
    reference as a yellow contour on top, the prediction as a white outline. Returns the overlay layer."""
    from napari.utils.colormaps import DirectLabelColormap

    name = f"{pred.name} vs {ref.name}"
    ref.colormap = DirectLabelColormap(color_dict=_one_colour(REFERENCE_RGB))
    pred.colormap = DirectLabelColormap(color_dict=_one_colour(PREDICTION_RGB))
    ref.contour = max(1, ref.contour)
    pred.contour = max(1, pred.contour)
    pred.opacity = ref.opacity = 1.0
    if name in viewer.layers and viewer.layers[name].data.shape == overlap.shape:
        layer = viewer.layers[name]
        layer.data = overlap
    else:
        meta = copy.deepcopy(dict(pred.metadata))
        meta = {k: v for k, v in meta.items() if k in ("grid", "display_axes", "display_flip", "source", "case")}
        meta["overlap_codes"] = {int(c): c.name for c in Overlap}
        layer = add_labels_like(
            viewer,
            pred,
            overlap,
            name=name,
            metadata=meta,
            opacity=1.0,
            colormap=DirectLabelColormap(color_dict=OVERLAP_COLORS),
            features={"index": [int(c) for c in OVERLAP_NAMES], "overlap": list(OVERLAP_NAMES.values())},
        )
    layers = viewer.layers
    layers.move(layers.index(pred), len(layers))  # the outlines over the overlay, the reference's on top
    layers.move(layers.index(ref), len(layers))
    viewer.layers.selection.active = pred
    return layer
