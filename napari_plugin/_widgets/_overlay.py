"""The Review dock's picture of a prediction against a reference: an overlay of where they disagree (missed and
spurious voxels strong, agreement faint, each named on hover), the reference as a contour, the prediction filled,
and the legend the dock shows."""

from __future__ import annotations

import copy

import numpy as np

from medfcn.evaluation.metrics import Overlap
from medfcn.evaluation.thumbnails import OVERLAY_COLOURS

from ._scan_views import add_labels_like

__all__ = ["OVERLAP_COLORS", "OVERLAP_NAMES", "legend_html", "show_overlap"]

_OPACITY = {Overlap.TP: 0.22, Overlap.FP: 1.0, Overlap.FN: 1.0}  # agreement faint, so the anatomy shows through
OVERLAP_COLORS = {
    None: "transparent",
    Overlap.NONE: "transparent",
    **{code: (*(c / 255 for c in rgb), _OPACITY[code]) for code, rgb in OVERLAY_COLOURS.items()},
}
"""The overlay's RGBA (0-1) of each overlap code: the report's colours (:data:`medfcn.evaluation.thumbnails.OVERLAY_COLOURS`)."""
OVERLAP_NAMES = {Overlap.TP: "in both (TP)", Overlap.FP: "predicted only (FP)", Overlap.FN: "missed (FN)"}


def legend_html() -> str:
    """The legend of the overlay (rich text for a Qt label)."""

    def swatch(rgba) -> str:
        r, g, b, _ = (round(255 * c) for c in rgba)
        return f"<span style='background:rgb({r},{g},{b})'>&nbsp;&nbsp;&nbsp;&nbsp;</span>"

    items = [f"{swatch(OVERLAP_COLORS[c])} {OVERLAP_NAMES[c]}" for c in (Overlap.FN, Overlap.FP, Overlap.TP)]
    return "&nbsp; ".join(items) + "&nbsp; <b>&#9634;</b> reference (contour)"


def show_overlap(viewer, pred, ref, overlap: np.ndarray):
    """Show where ``pred`` and ``ref`` disagree: the overlay layer ``"<pred> vs <ref>"`` (added or updated), the
    reference as a contour on top, the prediction filled. Returns the overlay layer."""
    from napari.utils.colormaps import DirectLabelColormap

    name = f"{pred.name} vs {ref.name}"
    ref.contour = max(1, ref.contour)  # the reference as an outline, the prediction filled
    pred.contour = 0
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
            opacity=0.9,
            colormap=DirectLabelColormap(color_dict=OVERLAP_COLORS),
            features={"index": [int(c) for c in OVERLAP_NAMES], "overlap": list(OVERLAP_NAMES.values())},
        )
        layers = viewer.layers
        layers.move(layers.index(ref), len(layers))  # the reference's contour over the overlay
    viewer.layers.selection.active = pred
    return layer
