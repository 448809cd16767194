"""The Review dock's picture of a prediction against a reference, and the legend the dock shows.

- one overlay layer per Review dock, updated in place on every Compute (it piled up a new one each time), of where
  they disagree: missed (FN, orange) and spurious (FP, blue) half-transparent, so the anatomy stays visible under
  them, edge noise (thin rims along the boundary, :data:`medfcn.evaluation.components.EDGE_DEPTH`) faint, agreement
  not drawn; each named on hover with the words the error list uses; drawn as surfaces in the 3-D view
  (``iso_categorical``) instead of stacked contours; the report's colours
  (:data:`medfcn.evaluation.thumbnails.OVERLAY_COLOURS`, Okabe & Ito's colour-blind-safe palette);
- the reference as a contour in yellow, a colour no error uses, its own style given back when the dock closes or
  another reference is chosen;
- the prediction, the layer the user corrects, as the user styled it: Review never restyles it (it turned it into
  a white outline at opacity 1, and the user then painted in outline mode).
"""

from __future__ import annotations

import copy

import numpy as np

from medfcn.evaluation.metrics import Overlap
from medfcn.evaluation.thumbnails import OVERLAY_COLOURS

from ._scan_views import add_labels_like

__all__ = [
    "OVERLAP_COLORS",
    "OVERLAP_NAMES",
    "EDGE_FP",
    "EDGE_FN",
    "REFERENCE_RGB",
    "legend_html",
    "display_codes",
    "show_overlap",
    "restore_style",
]

EDGE_FP, EDGE_FN = 4, 5  # the overlay's codes of spurious and missed voxels of edge-noise blobs
_ALPHA = {Overlap.FP: 0.55, Overlap.FN: 0.55, EDGE_FP: 0.2, EDGE_FN: 0.2}
_RGB = {**OVERLAY_COLOURS, EDGE_FP: OVERLAY_COLOURS[Overlap.FP], EDGE_FN: OVERLAY_COLOURS[Overlap.FN]}
OVERLAP_COLORS = {
    None: "transparent",
    Overlap.NONE: "transparent",
    Overlap.TP: "transparent",
    **{code: (*(c / 255 for c in _RGB[code]), alpha) for code, alpha in _ALPHA.items()},
}
"""The overlay's RGBA (0-1) of each code: errors half-transparent, edge noise faint, agreement not drawn."""
OVERLAP_NAMES = {
    Overlap.TP: "in both",
    Overlap.FP: "spurious (FP)",
    Overlap.FN: "missed (FN)",
    EDGE_FP: "spurious, edge noise",
    EDGE_FN: "missed, edge noise",
}
"""What hovering a voxel of the overlay says: the words of the error list ("missed", "spurious")."""
REFERENCE_RGB = (240, 228, 66)  # Okabe-Ito yellow: the reference's contour


def _swatch(rgb, *, outline: bool = False, alpha: float = 1.0) -> str:
    """A filled square of colour ``rgb`` (0-255), or a hollow one for a contour (Qt's rich text draws no CSS
    borders: the hollow square is a character in that colour)."""
    r, g, b = (int(v) for v in rgb[:3])
    if outline:
        return f"<span style='color:rgb({r},{g},{b}); font-size:large'><b>&#9633;</b></span>"
    r, g, b = (int(round(v * alpha + 38 * (1 - alpha))) for v in (r, g, b))  # as drawn over the dark background
    return f"<span style='background:rgb({r},{g},{b})'>&nbsp;&nbsp;&nbsp;&nbsp;</span>"


def legend_html() -> str:
    """The legend of the picture (rich text for a Qt label): a swatch for each kind of error and the contour."""
    items = [f"{_swatch(_RGB[c], alpha=_ALPHA[c])} {OVERLAP_NAMES[c]}" for c in (Overlap.FN, Overlap.FP)]
    items += [f"{_swatch(_RGB[Overlap.FN], alpha=0.35)} edge noise (faint)"]
    items += [f"{_swatch(REFERENCE_RGB, outline=True)} reference (contour)"]
    return "&nbsp; ".join(f"<nobr>{item}</nobr>" for item in items)  # each swatch beside its words


def display_codes(overlap: np.ndarray, edge: np.ndarray | None) -> np.ndarray:
    """The overlay's codes: :class:`Overlap`'s, with the wrong voxels of edge-noise blobs (``edge``) marked
    :data:`EDGE_FP` / :data:`EDGE_FN`."""
    codes = np.array(overlap, dtype=np.uint8, copy=True)
    if edge is not None:
        codes[edge & (overlap == Overlap.FP)] = EDGE_FP
        codes[edge & (overlap == Overlap.FN)] = EDGE_FN
    return codes


def _one_colour(rgb) -> dict:
    """A direct label colormap painting every label ``rgb`` (0-255) and the background transparent."""
    colour = (*(c / 255 for c in rgb), 1.0)
    return {None: colour, 0: (0.0, 0.0, 0.0, 0.0)}


def restore_style(layer, style: dict | None) -> None:
    """Give ``layer`` back the style :func:`show_overlap` saved (``None``: nothing to give back)."""
    if layer is None or not style:
        return
    try:
        for name, value in style.items():
            setattr(layer, name, value)
    except (RuntimeError, ValueError):  # the layer went, or napari refuses an old value: keep what it has
        pass


def show_overlap(viewer, pred, ref, codes: np.ndarray, overlay=None):
    """Show where ``pred`` and ``ref`` disagree (``codes``: :func:`display_codes`): ``overlay`` (this dock's
    overlay layer) updated when it is still in the viewer, else a new one, named ``"<pred> vs <ref>"``; the
    reference as a yellow contour on top; the prediction left as the user styled it. Returns ``(overlay layer,
    the reference's style before, to give back with :func:`restore_style`)``."""
    from napari.utils.colormaps import DirectLabelColormap

    name = f"{pred.name} vs {ref.name}"
    style = {"colormap": copy.copy(ref.colormap), "contour": ref.contour, "opacity": ref.opacity}
    ref.colormap = DirectLabelColormap(color_dict=_one_colour(REFERENCE_RGB))
    ref.contour, ref.opacity = max(1, ref.contour), 1.0
    if overlay is not None and overlay in viewer.layers and overlay.data.shape == codes.shape:
        overlay.data, overlay.name = codes, name
    else:
        if overlay is not None and overlay in viewer.layers:
            viewer.layers.remove(overlay)
        meta = copy.deepcopy({k: v for k, v in pred.metadata.items() if k in ("grid", "display_axes", "display_flip")})
        meta["overlap_codes"] = {**{int(c): c.name for c in Overlap}, EDGE_FP: "EDGE_FP", EDGE_FN: "EDGE_FN"}
        overlay = add_labels_like(
            viewer,
            pred,
            codes,
            name=name,
            metadata=meta,
            opacity=1.0,
            colormap=DirectLabelColormap(color_dict=OVERLAP_COLORS),
            features={"index": [int(c) for c in OVERLAP_NAMES], "overlap": list(OVERLAP_NAMES.values())},
        )
    overlay.rendering = "iso_categorical"  # in 3-D: a surface for each kind of error
    layers = viewer.layers
    layers.move(layers.index(ref), len(layers))  # the reference's contour on top
    viewer.layers.selection.active = pred
    return overlay, style
