"""Moving a napari viewer to a place in a layer: the slice, the camera's centre and its zoom."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["slicing_axis", "go_to_box", "MIN_FIELD_MM"]

MIN_FIELD_MM = 40.0  # the smallest field of view a jump zooms to, so a one-voxel speck keeps its surroundings
MARGIN_MM = 15.0  # the view shows this much around the box on each side


def slicing_axis(viewer, ndim: int) -> int:
    """The layer data axis the viewer's slider steps through (the first axis of the dims order) in 2-D."""
    offset = viewer.dims.ndim - ndim
    axis = viewer.dims.order[0] - offset
    return axis if 0 <= axis < ndim else 0


def go_to_box(viewer, layer, box: Sequence[tuple[float, float]], focus: Sequence[float] | None = None) -> np.ndarray:
    """Show the data box ``((start, stop), ...)`` of ``layer``: the slice through ``focus`` (default: the box's
    centre) on the slider, the camera centred on it and zoomed to the box with a 15 mm margin (at least 40 mm).
    Returns the world point moved to."""
    lo = np.array([b[0] for b in box], float)
    hi = np.array([b[1] for b in box], float) - 1
    focus = (lo + hi) / 2 if focus is None else np.asarray(focus, float)
    world = np.asarray(layer.data_to_world(focus), float)
    offset = viewer.dims.ndim - layer.ndim
    displayed = list(viewer.dims.displayed)
    for axis in range(layer.ndim):
        if axis + offset not in displayed:
            viewer.dims.set_point(axis + offset, world[axis])
    viewer.camera.center = tuple(world[d - offset] for d in displayed)
    corners = np.array([layer.data_to_world(c) for c in (lo - 0.5, hi + 0.5)], float)
    extent = np.abs(corners[1] - corners[0])
    field = np.maximum(np.array([extent[d - offset] for d in displayed[-2:]]) + 2 * MARGIN_MM, MIN_FIELD_MM)
    from ._scan_views import unwrap

    canvas = np.asarray(getattr(unwrap(viewer), "_canvas_size", (600, 800)), float)
    viewer.camera.zoom = float(np.min(canvas[-2:] / field))
    return world
