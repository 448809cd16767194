"""Noticing every change to a Labels layer's data, including those napari makes without an event, and recording
which slices the user painted (in any view), so that training learns from those slices and no others."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from ._scan_views import unwrap

__all__ = [
    "EditWatch",
    "PAINTED_KEY",
    "record_paint",
    "painted_planes",
    "track_painting",
    "planes_text",
    "sliced_axis",
]


class EditWatch:
    """Calls ``on_edit()`` whenever a watched layer's data change: a paint, fill or erase (napari's ``paint``
    event), a new array (``data`` event), undo and redo (which change the data without an event), and
    ``layer.data[...] = ...; layer.refresh()`` from code, when ``changed(layer)`` says the array differs from the
    one last scored (napari refreshes layers for other reasons too)."""

    _WRAPPED = ("undo", "redo", "refresh")

    def __init__(self, on_edit: Callable[..., None], changed: Callable[[object], bool]) -> None:
        self._on_edit, self._changed = on_edit, changed
        self._layers: list = []

    def watch(self, layers: Iterable) -> None:
        """Watch ``layers`` (``None`` entries skipped, each once) instead of those watched before."""
        for layer in self._layers:
            layer.events.paint.disconnect(self._on_edit)
            layer.events.data.disconnect(self._on_edit)
            for name in self._WRAPPED:
                unwrap(layer).__dict__.pop(name, None)
        self._layers = [la for la in dict.fromkeys(layers) if la is not None]
        for layer in self._layers:
            layer.events.paint.connect(self._on_edit)
            layer.events.data.connect(self._on_edit)
            real = unwrap(layer)
            for name in ("undo", "redo"):
                setattr(real, name, self._notifying(getattr(type(real), name).__get__(real)))
            real.refresh = self._notifying(type(real).refresh.__get__(real), check=real)

    def _notifying(self, method, check=None):
        def run(*args, **kwargs):
            out = method(*args, **kwargs)
            if check is None or self._changed(check):
                self._on_edit()
            return out

        return run


# -- which slices the user painted ---------------------------------------------------------------------------------
PAINTED_KEY = "painted"
"""The layer metadata key of the painted-slices record: ``{"planes": {axis: [slice, ...]}, "off_plane": voxels}``,
on the layer's (display-ordered) data axes; ``off_plane`` counts voxels changed by edits that were not on one slice
(a 3-D brush, painting in the 3-D view). A layer's record goes when its metadata is replaced (a new prediction)."""


def _atom_extent(atom) -> tuple[list[tuple[int, int]], int] | None:
    """``([(start, stop) per axis], voxels changed)`` of one napari history atom (a ``_MaskedPaintAtom`` or the
    ``(indices, old values, new value)`` of ``data_setitem``); ``None`` for an empty one."""
    key = getattr(atom, "slice_key", None)
    if key is not None:
        mask = getattr(atom, "mask", None)
        if mask is None:
            count = int(np.prod([s.stop - s.start for s in key]))
            return [(int(s.start), int(s.stop)) for s in key], count
        if not mask.any():
            return None
        hit = np.nonzero(mask)
        return [(int(s.start + h.min()), int(s.start + h.max() + 1)) for s, h in zip(key, hit, strict=True)], int(
            hit[0].size
        )
    indices = atom[0]
    if not len(indices) or np.size(indices[0]) == 0:
        return None
    return [(int(np.min(i)), int(np.max(i)) + 1) for i in indices], int(np.size(indices[0]))


def record_paint(layer, atoms, slicing_axis: int | None) -> None:
    """Add the slices one paint event of ``layer`` touched to its record (:data:`PAINTED_KEY`). An atom lying on
    one slice along ``slicing_axis`` (the axis the viewer steps through in a 2-D view; ``None`` in 3-D) records that
    slice; one on a single slice of another axis records that one; any other counts as off-plane voxels."""
    meta = layer.metadata
    record = meta.setdefault(PAINTED_KEY, {"planes": {}, "off_plane": 0})
    for atom in atoms:
        extent = _atom_extent(atom)
        if extent is None:
            continue
        box, count = extent
        flat = [a for a, (lo, hi) in enumerate(box) if hi - lo == 1]
        if slicing_axis in flat:
            axis = slicing_axis
        elif len(flat) == 1 and slicing_axis is not None:
            axis = flat[0]
        else:
            record["off_plane"] += count
            continue
        planes = record["planes"].setdefault(int(axis), [])
        if box[axis][0] not in planes:
            planes.append(box[axis][0])
            planes.sort()


def painted_planes(layer) -> tuple[dict[int, list[int]], int]:
    """``({axis: [slice, ...]}, off-plane voxels)`` the user painted on ``layer`` (empty when nothing was)."""
    record = (layer.metadata or {}).get(PAINTED_KEY) or {}
    return {int(a): list(s) for a, s in (record.get("planes") or {}).items() if s}, int(record.get("off_plane", 0))


def track_painting(viewer, layer) -> None:
    """Record on ``layer`` (a Labels layer) the slices each paint, fill, erase or polygon of the user touches, in
    whatever view they are made (once per layer)."""
    if getattr(layer, "_medfcn_painting", False) or not hasattr(layer.events, "paint"):
        return
    layer._medfcn_painting = True

    def on_paint(event) -> None:
        record_paint(layer, event.value, sliced_axis(viewer, layer.ndim))

    layer.events.paint.connect(on_paint)


def sliced_axis(viewer, ndim: int) -> int | None:
    """The axis of an ``ndim``-dimensional layer's data that ``viewer`` slices through (the last axis not on
    screen, counted from the layer's first); ``None`` in a 3-D view or when that axis is not one of the layer's."""
    dims = viewer.dims
    if dims.ndisplay != 2 or not dims.not_displayed:
        return None
    axis = dims.not_displayed[-1] - (dims.ndim - ndim)
    return int(axis) if 0 <= axis < ndim else None


def planes_text(planes: dict[int, list[int]]) -> str:
    """``"3 corrected axial slices: 1, 4, 17"`` (and ``"; 2 corrected coronal slices: ..."``): the slices of the
    layer's (display-ordered) axes as the viewer's slider numbers them.

    >>> planes_text({0: [1, 4, 17], 2: [30]})
    '3 corrected axial slices: 1, 4, 17; 1 corrected sagittal slice: 30'
    """
    from medfcn.data.display import AXIS_LABELS

    parts = []
    for axis, slices in sorted(planes.items()):
        plane = AXIS_LABELS[axis] if axis < len(AXIS_LABELS) else f"axis-{axis}"
        noun = "slice" if len(slices) == 1 else "slices"
        parts.append(f"{len(slices)} corrected {plane} {noun}: {', '.join(str(k) for k in sorted(slices))}")
    return "; ".join(parts)
