"""How a scan is shown to a person: the radiological display order of its voxels, its planes and their letters.

The voxel array is reordered (transposed and flipped, never resampled) so that its axes point, as closely as the
scan's direction allows, to (inferior, posterior, left) of the patient. Sliced along display axis 0 (axial), the
remaining two axes show anterior at the top and the patient's right on the screen's left, as seen from the feet;
along axis 1 (coronal): superior up, the patient's right on the left; along axis 2 (sagittal): superior up,
anterior on the left. The napari plugin shows layers in this order (world = ``LPS_TO_DISPLAY @ lps``) and the
HTML report draws its thumbnails in it, so a slice number in the report is the slice number napari shows.

>>> axes, flip = display_order(np.eye(3))  # an LPS-stored scan: i to the left, j to the back, k up
>>> axes, flip
((2, 1, 0), (True, False, False))
>>> plane_letters(0)  # axial: (top, bottom, left, right)
('A', 'P', 'R', 'L')
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "LPS_TO_DISPLAY",
    "AXIS_LABELS",
    "POSITIVE_LETTERS",
    "display_order",
    "to_display",
    "from_display",
    "display_index",
    "plane_letters",
    "screen_letters",
]

# Rows: the display (napari world) axes (inferior, posterior, left); columns: LPS x, y, z. A proper rotation.
LPS_TO_DISPLAY = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
# The planes each display axis steps through (the slider of axis 0 moves through axial slices, head to feet).
AXIS_LABELS = ("axial", "coronal", "sagittal")
# The patient direction each display axis increases towards, and the opposite one.
POSITIVE_LETTERS = ("I", "P", "L")
_OPPOSITE = {"I": "S", "P": "A", "L": "R", "S": "I", "A": "P", "R": "L"}


def display_order(direction: np.ndarray) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """The reordering of a scan's index axes for display: ``(axes, flip)``.

    Display axis ``a`` is index axis ``axes[a]``, reversed when ``flip[a]``; ``direction`` is the 3 x 3 LPS
    direction matrix (column ``n``: index axis ``n``). Axes are matched greedily by the largest cosine, so an
    oblique scan gets its nearest orientation.
    """
    m = LPS_TO_DISPLAY @ np.asarray(direction, float).reshape(3, 3)
    axes = [-1, -1, -1]
    used: set[int] = set()
    for flat in np.argsort(-np.abs(m), axis=None, kind="stable"):
        a, n = divmod(int(flat), 3)
        if axes[a] < 0 and n not in used:
            axes[a] = n
            used.add(n)
    flip = tuple(bool(m[a, axes[a]] < 0) for a in range(3))
    return tuple(axes), flip


def to_display(array: np.ndarray, axes, flip) -> np.ndarray:
    """Index-ordered ``(X, Y, Z)`` voxels -> display-ordered voxels (a contiguous copy)."""
    out = np.transpose(array, axes)
    out = np.flip(out, axis=[a for a in range(3) if flip[a]]) if any(flip) else out
    return np.ascontiguousarray(out)


def from_display(array: np.ndarray, axes, flip) -> np.ndarray:
    """The exact inverse of :func:`to_display`: display-ordered voxels -> ``(X, Y, Z)`` (contiguous)."""
    out = np.flip(array, axis=[a for a in range(3) if flip[a]]) if any(flip) else array
    return np.ascontiguousarray(np.transpose(out, np.argsort(axes)))


def display_index(index: int, axis: int, shape, axes, flip) -> tuple[int, int]:
    """Slice ``index`` across index axis ``axis`` of an array of ``shape`` -> ``(display axis, display index)``:
    the plane (``AXIS_LABELS[display axis]``) and the slice number napari shows for it."""
    a = list(axes).index(axis)
    return a, (shape[axis] - 1 - index) if flip[a] else index


def screen_letters(rows_axis: int, cols_axis: int) -> tuple[str, str, str, str]:
    """``(top, bottom, left, right)`` patient directions of a view whose rows run along display axis
    ``rows_axis`` (downwards) and whose columns along ``cols_axis`` (to the right)."""
    down, right = POSITIVE_LETTERS[rows_axis], POSITIVE_LETTERS[cols_axis]
    return _OPPOSITE[down], down, _OPPOSITE[right], right


def plane_letters(axis: int) -> tuple[str, str, str, str]:
    """``(top, bottom, left, right)`` of a slice across display axis ``axis`` drawn with the other two axes in
    order (rows, columns), as the report and napari's default view draw it."""
    rows, cols = (a for a in range(3) if a != axis)
    return screen_letters(rows, cols)
