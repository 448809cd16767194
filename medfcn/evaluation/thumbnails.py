"""Overlay thumbnails of a case's worst slices, for the HTML report (:mod:`medfcn.evaluation.report`).

Each thumbnail is a whole slice as napari shows it (:mod:`medfcn.data.display`): square pixels, named by plane and
by the slice number napari's slider shows, with the patient's directions at the edges; sky blue where both maps
agree, blue where only the prediction has a label, orange where the prediction missed one (Okabe & Ito's
colour-blind-safe colours, :data:`OVERLAY_COLOURS`, which the napari Review dock's overlay uses too), and a yellow box
around the slice's errors. Worst slices are the ones with the most
wrong voxels (:func:`medfcn.evaluation.components.worst_slices`, the rule of the napari Review dock too).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence

import numpy as np

from medfcn.data.display import AXIS_LABELS, display_index, display_order, plane_letters, to_display
from medfcn.evaluation.components import worst_slices
from medfcn.evaluation.metrics import Overlap, dice_per_slice, overlap_map
from medfcn.evaluation.results import Thumbnail

__all__ = ["case_thumbnails", "slice_axis", "worst_slices", "OVERLAY_COLOURS", "BOX_COLOUR"]

OVERLAY_COLOURS = {Overlap.TP: (86, 180, 233), Overlap.FP: (0, 114, 178), Overlap.FN: (230, 159, 0)}
"""RGB (0-255) of each overlap code: in both (sky blue), predicted only (blue), missed (orange): Okabe & Ito's
palette, told apart with any of the three common colour-vision deficiencies (red and green, as before, are not), and
from the napari Review's yellow reference contour and white prediction outline; the prediction is blue (light where
right), what it missed orange. The report and the napari overlay use them."""
BOX_COLOUR = (255, 214, 0)  # the box around a thumbnail's errors


def _png_base64(rgb: np.ndarray) -> str:
    from matplotlib.image import imsave

    buf = io.BytesIO()
    imsave(buf, rgb, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def slice_axis(spacing: Sequence[float]) -> int:
    """The axis thumbnails slice across: the one with the coarsest spacing (the last of equals)."""
    sp = np.asarray(spacing, float)
    return int(np.flatnonzero(sp >= sp.max() - 1e-6)[-1])


def _to_display(plane: np.ndarray, sp_rows: float, sp_cols: float, size_px: int) -> np.ndarray:
    """Nearest-neighbour resampling of a 2-D array to square pixels, the longer side ``size_px``."""
    h_mm, w_mm = plane.shape[0] * sp_rows, plane.shape[1] * sp_cols
    scale = size_px / max(h_mm, w_mm)
    out_h, out_w = max(1, round(h_mm * scale)), max(1, round(w_mm * scale))
    ri = np.minimum(((np.arange(out_h) + 0.5) * plane.shape[0] / out_h).astype(int), plane.shape[0] - 1)
    ci = np.minimum(((np.arange(out_w) + 0.5) * plane.shape[1] / out_w).astype(int), plane.shape[1] - 1)
    return plane[np.ix_(ri, ci)]


def _overlay_rgb(codes: np.ndarray, image: np.ndarray | None) -> np.ndarray:
    """An RGB uint8 picture of a 2-D overlap map, over a grey image when one is given."""
    if image is not None:
        lo, hi = np.percentile(image, (1, 99)) if image.size else (0.0, 1.0)
        grey = np.clip((image.astype(np.float64) - lo) / max(hi - lo, 1e-9), 0, 1) * 255
        rgb, alpha = np.repeat(grey[..., None], 3, axis=-1), 0.45
    else:
        rgb, alpha = np.full(codes.shape + (3,), 25.0), 0.9
    for code, colour in OVERLAY_COLOURS.items():
        where = codes == code
        rgb[where] = (1 - alpha) * rgb[where] + alpha * np.asarray(colour, float)
    return rgb.round().astype(np.uint8)


def _draw_box(rgb: np.ndarray, rows: tuple[int, int], cols: tuple[int, int], width: int = 2) -> None:
    """Draw a rectangle of :data:`BOX_COLOUR` just outside pixel rows ``[r0, r1)`` and columns ``[c0, c1)``."""
    h, w = rgb.shape[:2]
    r0, r1 = max(0, rows[0] - width - 1), min(h, rows[1] + width + 1)
    c0, c1 = max(0, cols[0] - width - 1), min(w, cols[1] + width + 1)
    colour = np.asarray(BOX_COLOUR, np.uint8)
    rgb[r0 : r0 + width, c0:c1] = colour
    rgb[max(r0, r1 - width) : r1, c0:c1] = colour
    rgb[r0:r1, c0 : c0 + width] = colour
    rgb[r0:r1, max(c0, c1 - width) : c1] = colour


def _error_box(rgb: np.ndarray, plane: np.ndarray) -> int:
    """Box the wrong voxels of ``plane`` (overlap codes) on its picture ``rgb``; returns how many there are."""
    wrong_rows, wrong_cols = np.nonzero(plane >= Overlap.FP)
    if wrong_rows.size:
        fr, fc = rgb.shape[0] / plane.shape[0], rgb.shape[1] / plane.shape[1]
        _draw_box(
            rgb,
            (int(wrong_rows.min() * fr), int(np.ceil((wrong_rows.max() + 1) * fr))),
            (int(wrong_cols.min() * fc), int(np.ceil((wrong_cols.max() + 1) * fc))),
        )
    return int(wrong_rows.size)


class _DisplayedCase:
    """A case's overlap codes (and image) in napari's display order, and how its array slices map to it."""

    def __init__(self, codes: np.ndarray, spacing: Sequence[float], direction, image) -> None:
        self.shape = codes.shape
        self.axes, self.flip = display_order(np.eye(3) if direction is None else direction)
        self.codes = to_display(codes, self.axes, self.flip)
        self.image = None if image is None else to_display(np.asarray(image), self.axes, self.flip)
        self.spacing = [float(spacing[a]) for a in self.axes]

    def picture(self, axis: int, index: int, size_px: int) -> tuple[np.ndarray, np.ndarray, int, int]:
        """``(rgb, codes, display axis, display index)`` of array slice ``index`` across ``axis``."""
        d_axis, d_index = display_index(index, axis, self.shape, self.axes, self.flip)
        rows_axis, cols_axis = (a for a in range(3) if a != d_axis)
        plane = np.take(self.codes, d_index, axis=d_axis)
        img = None if self.image is None else np.take(self.image, d_index, axis=d_axis)
        rgb = _to_display(_overlay_rgb(plane, img), self.spacing[rows_axis], self.spacing[cols_axis], size_px)
        return rgb, plane, d_axis, int(d_index)


def case_thumbnails(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    *,
    direction: np.ndarray | None = None,
    image: np.ndarray | None = None,
    labels: Sequence[int] | None = None,
    n: int = 3,
    size_px: int = 240,
) -> list[Thumbnail]:
    """Overlays of the worst slices of a case (see :func:`worst_slices`): whole slices, square pixels, oriented
    and numbered as napari shows them, with a box around the slice's errors.

    Args:
        pred, ref: label maps ``(X, Y, Z)`` of the same shape.
        spacing: mm along the array axes.
        direction: the 3 x 3 LPS direction of the grid (``Scan.direction``) to orient the slices; default identity.
        image: the scan ``(X, Y, Z)`` to draw under the overlay, or ``None`` for the masks alone.
        labels: the labels whose slice Dice the captions give (default: every nonzero id in either map).
        n: the most thumbnails.
        size_px: the longer side of a thumbnail, in pixels.
    """
    codes = overlap_map(pred, ref)
    axis = slice_axis(spacing)
    shown = _DisplayedCase(codes, spacing, direction, image)
    if labels is None:
        labels = sorted(int(v) for v in np.union1d(np.unique(pred), np.unique(ref)) if v != 0)
    per_label = {label: dice_per_slice(pred, ref, label, axis) for label in labels}
    out = []
    for index in worst_slices(codes, axis, n):
        rgb, plane, d_axis, d_index = shown.picture(axis, index, size_px)
        errors = _error_box(rgb, plane)
        dice = {k: float(v[index]) for k, v in per_label.items() if not math.isnan(v[index])}
        png = _png_base64(rgb)
        out.append(Thumbnail(axis, index, dice, errors, png, AXIS_LABELS[d_axis], d_index, plane_letters(d_axis)))
    return out
