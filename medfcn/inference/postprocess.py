"""Clean-ups applied to a label map per foreground label: keep the largest connected component, fill holes (in 3-D,
or in every 2-D slice along each axis of the model's frame as well: a thick-slice scan's slices lie along one of them).

Applied on the model's frame by editing class probabilities (:func:`apply_to_probabilities`), so that what is
resampled back onto the scan's grid is still probabilities, never labels.

>>> import numpy as np
>>> m = np.zeros((9, 9, 9), bool); m[1:5, 1:5, 1:5] = True; m[7, 7, 7] = True; m[2, 2, 2] = False
>>> int(clean_mask(m, ("largest_component", "fill_holes")).sum())
64
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from medfcn.choices import parse_choice
from medfcn.model.card import PostStep

__all__ = [
    "PostStep",
    "clean_mask",
    "apply_to_probabilities",
    "argmax_classes",
    "mask_box",
    "fill_holes",
    "fill_slice_holes",
]


def clean_mask(mask: np.ndarray, steps: Sequence[str]) -> np.ndarray:
    """Boolean ``mask`` (any 3-D shape) after ``steps`` in order."""
    out = np.asarray(mask, dtype=bool)
    for name in steps:
        step = parse_choice(PostStep, name, "post-processing step")
        if not out.any():
            break
        if step is PostStep.LARGEST_COMPONENT:
            components, n = ndimage.label(out)
            if n > 1:
                sizes = np.bincount(components.ravel())
                sizes[0] = 0
                out = components == int(sizes.argmax())
        elif step is PostStep.FILL_SLICES:
            out = _fill_all_slices(out)
        else:
            out = fill_holes(out)
    return out


def _fill_all_slices(mask: np.ndarray) -> np.ndarray:
    """``mask`` with the holes of every slice along each axis filled, then those in 3-D; computed inside the mask's
    bounding box (every voxel outside it is background joined to the border, so no hole lies outside it)."""
    box = mask_box(mask)
    inner = mask[box]
    for axis in range(mask.ndim):
        inner = fill_slice_holes(inner, axis)
    out = mask.copy()
    out[box] = fill_holes(inner)
    return out


def fill_slice_holes(mask: np.ndarray, axis: int) -> np.ndarray:
    """``mask`` (3-D) with the holes of each 2-D slice along ``axis`` filled: background not connected (through
    edges, within its slice) to the slice's border becomes foreground. One labelling for all slices; the same as
    ``scipy.ndimage.binary_fill_holes`` slice by slice.

    >>> m = np.zeros((3, 5, 5), bool); m[1, 1:4, 1:4] = True; m[1, 2, 2] = False
    >>> int(fill_slice_holes(m, 0).sum()), int(fill_slice_holes(m, 1).sum())
    (9, 8)
    """
    structure = np.zeros((3, 3, 3), bool)
    structure[1, 1, 1] = True
    for other in (a for a in range(3) if a != axis):
        for end in (0, 2):
            index = [1, 1, 1]
            index[other] = end
            structure[tuple(index)] = True
    background, n = ndimage.label(~mask, structure)
    outside = np.zeros(n + 1, dtype=bool)
    for face_axis, face in _faces_with_axis(background):
        if face_axis != axis:  # the faces across ``axis`` are whole slices, not borders
            outside[face] = True
    outside[0] = False
    return ~outside[background]


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with every background region that is not face-connected to the array's border filled: what
    ``scipy.ndimage.binary_fill_holes`` returns, from one labelling of the background (~5x faster than its
    iterated dilation, ~0.1 s a head at 1.5 mm)."""
    background, n = ndimage.label(~mask)  # face-connected regions of the background
    outside = np.zeros(n + 1, dtype=bool)
    for face in _faces(background):
        outside[face] = True
    outside[0] = False  # label 0 is the mask itself
    return ~outside[background]


def _faces(a: np.ndarray) -> list[np.ndarray]:
    """The six faces (any number of dimensions: 2 x ndim) of ``a``, as views."""
    return [face for _, face in _faces_with_axis(a)]


def _faces_with_axis(a: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(axis, face) for the 2 x ndim faces of ``a`` (views), each with the axis it lies across."""
    index = [slice(None)] * a.ndim
    faces = []
    for axis in range(a.ndim):
        for end in (0, -1):
            index[axis] = end
            faces.append((axis, a[tuple(index)]))
        index[axis] = slice(None)
    return faces


def mask_box(mask: np.ndarray, pad: int | Sequence[int] = 0) -> tuple[slice, ...]:
    """The slices of ``mask``'s bounding box grown by ``pad`` voxels on every side (one number for every axis, or one
    per axis), clipped to the array; the whole array for an empty mask.

    >>> m = np.zeros((5, 6), bool); m[2, 3] = True
    >>> mask_box(m), mask_box(m, (1, 9))
    ((slice(2, 3, None), slice(3, 4, None)), (slice(1, 4, None), slice(0, 6, None)))
    """
    pads = (pad,) * mask.ndim if isinstance(pad, int) else tuple(pad)
    out = []
    for axis in range(mask.ndim):
        rows = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if rows.size == 0:
            return (slice(None),) * mask.ndim
        out.append(slice(max(0, int(rows[0]) - pads[axis]), min(mask.shape[axis], int(rows[-1]) + 1 + pads[axis])))
    return tuple(out)


def argmax_classes(probs: np.ndarray) -> np.ndarray:
    """uint8 (int32 beyond 256 classes) index of the largest of ``probs`` (C, ...) along its first axis, the first
    on ties (as ``argmax(0)``, which reduces over the strided class axis ~20x slower)."""
    n = probs.shape[0]
    if n == 1:
        return np.zeros(probs.shape[1:], dtype=np.uint8)
    first = probs[1] > probs[0]  # class 1 against class 0: the labels, as bytes (30x faster than assigning into zeros)
    labels = first.view(np.uint8) if n <= 256 else first.astype(np.int32)
    if n > 2:
        best = np.maximum(probs[0], probs[1])
        for c in range(2, n):
            better = probs[c] > best
            labels[better] = c
            if c + 1 < n:
                best = np.maximum(best, probs[c])
    return labels


def apply_to_probabilities(probs: np.ndarray, steps: Sequence[str]) -> np.ndarray:
    """``probs`` (C, X, Y, Z), any numeric dtype, edited in place so that its argmax is the cleaned label map.

    Voxels a step removes from label ``l`` get label 0's highest value; voxels it adds get label ``l``'s.
    Returns ``probs``.
    """
    if not steps or probs.shape[0] < 2:
        return probs
    top = np.iinfo(probs.dtype).max if np.issubdtype(probs.dtype, np.integer) else 1.0
    labels = argmax_classes(probs)
    for label in range(1, probs.shape[0]):
        mask = labels == label
        cleaned = clean_mask(mask, steps)
        for changed, winner in ((mask & ~cleaned, 0), (cleaned & ~mask, label)):
            if changed.any():
                probs[:, changed] = 0
                probs[winner, changed] = top
    return probs
