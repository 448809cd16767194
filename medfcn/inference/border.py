"""Grow or shrink a label map's foreground by a distance in mm (``medfcn segment --border MM``, SynthStrip's ``-b``).

Distances are Euclidean between voxel centres in physical mm (the scan's spacing along each index axis; the
direction matrix is a rotation, so it does not change them), computed with SciPy's exact distance transform:

- ``mm > 0`` adds every background voxel whose centre lies within ``mm`` of a foreground voxel's centre; it takes
  the label of that nearest foreground voxel (one label: the mask grows).
- ``mm < 0`` removes every foreground voxel whose centre lies within ``|mm|`` of a background voxel's centre (a
  voxel at exactly ``|mm|`` is removed: the border moves in by at least ``|mm|``).
- ``mm == 0`` returns the labels unchanged.

Only the box around the foreground (plus the border) is transformed, so a small mask in a large scan costs little.

>>> import numpy as np
>>> m = np.zeros((9, 9, 9), np.uint8); m[4, 4, 4] = 1
>>> int(move_border(m, (1.0, 1.0, 1.0), 1.0).sum()), int(move_border(m, (1.0, 1.0, 1.0), 1.5).sum())
(7, 19)
>>> int(move_border(move_border(m, (1.0, 1.0, 1.0), 1.0), (1.0, 1.0, 1.0), -1.0).sum())
1
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from medfcn.inference.postprocess import mask_box

__all__ = ["move_border"]


def move_border(labels: np.ndarray, spacing: Sequence[float], mm: float) -> np.ndarray:
    """``labels`` (X, Y, Z, integer ids, 0 background) with the foreground's border moved out (``mm > 0``) or in
    (``mm < 0``) by ``mm``; ``spacing`` in mm along X, Y, Z. Returns a new array of the same dtype (``labels``
    itself when ``mm == 0`` or there is no foreground)."""
    labels = np.asarray(labels)
    fg = labels != 0
    if mm == 0 or not fg.any():
        return labels
    spacing = tuple(float(s) for s in spacing)
    box = mask_box(fg, [int(np.ceil(max(mm, 0.0) / s)) + 1 for s in spacing])  # the border and one voxel more
    out = labels.copy()
    inner, sub = out[box], fg[box]
    if mm > 0:
        if labels.max() == labels.min(where=fg, initial=labels.max()):  # one label: no nearest-voxel lookup
            dist = ndimage.distance_transform_edt(~sub, sampling=spacing)
            inner[(dist <= mm) & ~sub] = labels[fg].flat[0]
        else:
            dist, nearest = ndimage.distance_transform_edt(~sub, sampling=spacing, return_indices=True)
            grow = (dist <= mm) & ~sub
            inner[grow] = inner[tuple(ix[grow] for ix in nearest)]
    else:
        # the box holds background around the foreground unless the foreground reaches the scan's edge: there the
        # scan ends, and what lies beyond it is not counted as background (the border does not move in from the edge)
        dist = ndimage.distance_transform_edt(np.pad(sub, 1, mode="edge"), sampling=spacing)[1:-1, 1:-1, 1:-1]
        inner[sub & (dist <= -mm)] = 0
    return out
