"""Scans as napari layers and back, with no Qt and no napari import.

Display convention (what a radiologist expects, in napari's default right-handed camera; the rule itself lives in
:mod:`medfcn.data.display`, which the HTML report follows too):

- the voxel array is reordered (transposed and flipped, never resampled) so that its axes point, as closely as the
  scan's direction allows, to (inferior, posterior, left) of the patient. napari shows the last two axes of a 3-D
  layer, so an axial slice appears with anterior at the top and the patient's right on the screen's left, as seen
  from the feet; rolling the axes gives coronal (superior up, patient's right on the left) and sagittal (superior
  up, anterior on the left) views, and the 3-D view is not mirrored;
- napari's world coordinates are patient coordinates in mm on those axes: ``world = LPS_TO_DISPLAY @ lps``,
  so scans of one patient on different grids overlay. A residual rotation (an oblique scan) goes into the
  layer's ``rotate``; scale is the voxel spacing of the reordered axes.

The layer's metadata keeps what is needed to write a label map on the *source* grid exactly:
``grid`` (:class:`medfcn.data.scan.Grid` as a dict), ``display_axes`` and ``display_flip`` (the reordering),
``source``, ``case`` and ``series_uid``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from typing import Any

import numpy as np

from medfcn.data.display import AXIS_LABELS, LPS_TO_DISPLAY, display_order, from_display, to_display
from medfcn.data.scan import Grid, Scan
from medfcn.errors import GridMismatchError, UnsupportedScanError

__all__ = [
    "check_same_grid",
    "grid_mismatch_text",
    "LPS_TO_DISPLAY",
    "AXIS_LABELS",
    "display_order",
    "to_display",
    "from_display",
    "scan_layer_data",
    "layer_geometry",
    "layer_scan",
    "labels_to_display",
    "looks_like_labels",
    "auto_contrast",
    "scan_point",
    "patient_text",
    "labels_checksum",
    "is_unedited",
]

log = logging.getLogger(__name__)

_MAX_LABELS = 64  # an integer volume with at most this many distinct values opens as a Labels layer


def _grid_dict(grid: Grid) -> dict[str, list]:
    return {k: [v for v in val] for k, val in dataclasses.asdict(grid).items()}


def _display_transform(grid: Grid, axes, flip) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(scale, translate, rotate)`` of the display array in napari world mm (see the module docstring)."""
    d = grid.direction_matrix
    spacing = np.asarray(grid.spacing, float)
    size = np.asarray(grid.size)
    signed = np.zeros((3, 3))  # index = corner + signed @ display index
    corner = np.zeros(3)
    for a in range(3):
        n = axes[a]
        signed[n, a] = -1.0 if flip[a] else 1.0
        corner[n] = size[n] - 1 if flip[a] else 0
    rotate = LPS_TO_DISPLAY @ d @ signed
    translate = LPS_TO_DISPLAY @ (np.asarray(grid.origin) + d @ (spacing * corner))
    return spacing[list(axes)], translate, rotate


def looks_like_labels(array: np.ndarray) -> bool:
    """True for a bool or integer volume with at most 64 distinct values (a label map, not an image)."""
    if array.dtype == bool:
        return True
    if not np.issubdtype(array.dtype, np.integer) or array.size == 0:
        return False
    lo, hi = int(array.min()), int(array.max())
    if hi - lo > 1 << 16:
        return False
    return int(np.count_nonzero(np.bincount((array.ravel() - lo).astype(np.int64, copy=False)))) <= _MAX_LABELS


def scan_layer_data(scan: Scan, *, layer_type: str | None = None, name: str | None = None) -> tuple:
    """A napari ``LayerDataTuple`` ``(data, kwargs, type)`` of a scan, displayed as described above.

    ``layer_type``: ``"image"`` or ``"labels"`` (default: :func:`looks_like_labels`).
    """
    grid = scan.grid
    axes, flip = display_order(scan.direction)
    scale, translate, rotate = _display_transform(grid, axes, flip)
    if layer_type is None:
        layer_type = "labels" if looks_like_labels(scan.array) else "image"
    data = to_display(scan.array, axes, flip)
    if layer_type == "labels" and data.dtype == bool:
        data = data.astype(np.uint8)
    metadata = {
        "grid": _grid_dict(grid),
        "display_axes": list(axes),
        "display_flip": list(flip),
        "source": str(scan.source) if scan.source is not None else None,
        "case": scan.case,
        "series_uid": scan.series_uid,
    }
    kwargs: dict[str, Any] = {
        "name": name or scan.case,
        "scale": tuple(scale.tolist()),
        "translate": tuple(translate.tolist()),
        "metadata": metadata,
        "units": "mm",
        "axis_labels": AXIS_LABELS,
    }
    if not np.allclose(rotate, np.eye(3), atol=1e-9):
        kwargs["rotate"] = rotate
    if layer_type == "image":
        kwargs["colormap"] = "gray"
        kwargs["contrast_limits"] = auto_contrast(data)
    return data, kwargs, layer_type


def auto_contrast(array: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> tuple[float, float]:
    """Contrast limits at the 0.5th and 99.5th percentiles of the voxels (of at most ~1 M of them, evenly
    strided), so a few very bright voxels (vessels, metal, a marker) do not leave the anatomy grey on black."""
    flat = np.asarray(array).ravel()
    flat = flat[:: max(1, flat.size // 1_000_000)]
    flat = flat[np.isfinite(flat)] if np.issubdtype(flat.dtype, np.floating) else flat
    if flat.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(flat, percentiles))
    if hi <= lo:
        lo, hi = float(flat.min()), float(flat.max())
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def _transform_grid(shape: tuple[int, ...], attributes: dict) -> Grid:
    """The grid of a display array from its napari transforms alone (scale, translate, rotate, shear, affine)."""
    scale = np.asarray(attributes.get("scale", np.ones(3)), float)
    translate = np.asarray(attributes.get("translate", np.zeros(3)), float)
    rotate = np.asarray(attributes.get("rotate", np.eye(3)), float)
    shear = attributes.get("shear")
    linear = rotate.reshape(3, 3)
    if shear is not None and np.size(shear) == 3:
        sh = np.eye(3)
        sh[np.triu_indices(3, 1)] = np.asarray(shear, float)
        linear = linear @ sh
    elif shear is not None:
        linear = linear @ np.asarray(shear, float).reshape(3, 3)
    linear = linear @ np.diag(scale)
    offset = translate
    affine = attributes.get("affine")
    if affine is not None:
        a = np.asarray(affine, float).reshape(4, 4)
        linear, offset = a[:3, :3] @ linear, a[:3, :3] @ offset + a[:3, 3]
    to_lps = LPS_TO_DISPLAY.T
    columns = to_lps @ linear
    spacing = np.linalg.norm(columns, axis=0)
    direction = columns / spacing
    origin = to_lps @ offset
    return Grid(
        tuple(int(s) for s in shape),
        tuple(spacing.tolist()),
        tuple(origin.tolist()),
        tuple(direction.flatten().tolist()),
    )


def layer_geometry(shape: tuple[int, ...], attributes: dict) -> tuple[Grid, tuple[int, ...], tuple[bool, ...]]:
    """The source grid of a display array of ``shape`` and the reordering that maps it there.

    ``attributes`` are the layer's (``layer.as_layer_data_tuple()[1]`` or the kwargs of a layer data tuple).
    From the metadata the reader stored when it is there (the exact source grid); otherwise (a layer napari made,
    e.g. with its "New labels" button, which copies transforms but not metadata) from the layer's transforms, on
    the display array's own axes.

    Raises:
        UnsupportedScanError: the array is not 3-D.
        GridMismatchError: the metadata's grid does not fit the array.
    """
    if len(shape) != 3:
        raise UnsupportedScanError(f"a {len(shape)}-D layer; medfcn reads and writes 3-D volumes")
    meta = attributes.get("metadata") or {}
    if "grid" in meta:
        g = meta["grid"]
        grid = Grid(
            tuple(int(v) for v in g["size"]),
            tuple(float(v) for v in g["spacing"]),
            tuple(float(v) for v in g["origin"]),
            tuple(float(v) for v in g["direction"]),
        )
        axes = tuple(int(a) for a in meta.get("display_axes", (0, 1, 2)))
        flip = tuple(bool(f) for f in meta.get("display_flip", (False, False, False)))
        expected = tuple(grid.size[a] for a in axes)
        if tuple(shape) != expected:
            name = attributes.get("name", "layer")
            raise GridMismatchError(
                f"{name}: data of shape {tuple(shape)} does not fit its scan's grid "
                f"(displayed as {expected}); draw labels on a layer of the scan's shape"
            )
        return grid, axes, flip
    log.info("layer %r has no medfcn grid in its metadata; using its transforms", attributes.get("name"))
    return _transform_grid(shape, attributes), (0, 1, 2), (False, False, False)


def _voxels_text(size, spacing=None) -> str:
    """``"256 x 256 x 25 voxels of 0.9 x 0.9 x 6.5 mm"`` (``"of 1.5 mm"`` when isotropic)."""
    text = " x ".join(str(int(n)) for n in size) + " voxels"
    if spacing is None:
        return text
    mm = [f"{float(v):.3g}" for v in spacing]
    return f"{text} of {mm[0] if len(set(mm)) == 1 else ' x '.join(mm)} mm"


def grid_mismatch_text(first, second) -> str:
    """Why layer ``second`` does not lie on layer ``first``'s grid, and what to do, in the viewer's terms
    (``""`` when it does). Shapes first, then (when both record their scan's grid) size, spacing, placement and
    orientation, each said as a person reads it, not as the grids' fields."""
    what = ""
    if first.data.shape != second.data.shape:
        what = f"{_voxels_text(second.data.shape)} against {_voxels_text(first.data.shape)}"
    elif "grid" in (first.metadata or {}) and "grid" in (second.metadata or {}):
        fg, fa = layer_geometry(first.data.shape, {"name": first.name, "metadata": first.metadata})[:2]
        sg, sa = layer_geometry(second.data.shape, {"name": second.name, "metadata": second.metadata})[:2]
        if fg.differences(sg) or fa != sa:
            parts = []
            if tuple(fg.size) != tuple(sg.size) or not np.allclose(fg.spacing, sg.spacing, atol=1e-4):
                parts.append(f"{_voxels_text(sg.size, sg.spacing)} against {_voxels_text(fg.size, fg.spacing)}")
            shift = float(np.linalg.norm(np.subtract(sg.origin, fg.origin)))
            if shift > 1e-3:
                parts.append(f"placed {shift:.1f} mm away")
            if not np.allclose(fg.direction, sg.direction, atol=1e-5) or fa != sa:
                parts.append("turned another way")
            what = ", ".join(parts)
    if not what:
        return ""
    return (
        f"{second.name} does not lie on the grid of {first.name} ({what}): choose a layer made on {first.name} "
        "(its Segment result, one drawn with 'New labels on this scan', or a file saved on this scan's grid)"
    )


def check_same_grid(first, second) -> None:
    """Refuse two layers whose data do not lie on one scan's grid: their shapes, then, when both record the grid
    of their scan (the reader's and the Segment dock's layers do), its size, spacing, origin and direction and
    the display order. The one same-grid rule of the docks. Raises :class:`GridMismatchError` naming both, in the
    viewer's terms (:func:`grid_mismatch_text`)."""
    text = grid_mismatch_text(first, second)
    if text:
        raise GridMismatchError(text)


def layer_scan(data: np.ndarray, attributes: dict) -> Scan:
    """The scan a layer displays: voxels back in the source's ``(X, Y, Z)`` order, on the source grid.

    Raises:
        UnsupportedScanError, GridMismatchError: see :func:`layer_geometry`.
    """
    data = np.asarray(data)
    grid, axes, flip = layer_geometry(data.shape, attributes)
    meta = attributes.get("metadata") or {}
    return Scan(
        array=from_display(data, axes, flip),
        spacing=grid.spacing,
        origin=grid.origin,
        direction=grid.direction_matrix,
        source=meta.get("source"),
        case=meta.get("case") or attributes.get("name") or "scan",
        series_uid=meta.get("series_uid"),
    )


def scan_point(data_position, metadata: dict) -> tuple[np.ndarray, np.ndarray]:
    """A point in a layer's data coordinates (display-ordered voxel indices, continuous) -> ``(index, ras)``:
    the continuous voxel index in the scan file's ``(X, Y, Z)`` order and the patient point in RAS mm.

    ``metadata`` is the layer's (``grid``, ``display_axes``, ``display_flip``, as :func:`scan_layer_data` stores
    them). LPS is ``origin + direction @ (spacing * index)``, as SimpleITK's
    ``TransformContinuousIndexToPhysicalPoint``; RAS negates its x and y.
    """
    g = metadata["grid"]
    axes = [int(a) for a in metadata.get("display_axes", (0, 1, 2))]
    flip = [bool(f) for f in metadata.get("display_flip", (False, False, False))]
    size = np.asarray(g["size"], float)
    shown = np.asarray(data_position, float)[-3:]
    index = np.empty(3)
    for a, n in enumerate(axes):
        index[n] = size[n] - 1 - shown[a] if flip[a] else shown[a]
    direction = np.asarray(g["direction"], float).reshape(3, 3)
    lps = np.asarray(g["origin"], float) + direction @ (np.asarray(g["spacing"], float) * index)
    return index, lps * np.array([-1.0, -1.0, 1.0])


def patient_text(data_position, metadata: dict) -> str:
    """The voxel under a point in a layer's data coordinates, as the status bar shows it:
    ``"RAS 12.5, -30.0, 41.0 mm  voxel (i, j, k)"`` (the voxel's centre; its index in the scan file's order);
    ``""`` outside the scan or for a layer without a scan grid in its metadata."""
    if "grid" not in (metadata or {}):
        return ""
    shown = np.round(np.asarray(data_position, float)[-3:])  # the voxel napari reports the value of
    index, ras = scan_point(shown, metadata)
    voxel = np.round(index).astype(int)
    if np.any(voxel < 0) or np.any(voxel >= np.asarray(metadata["grid"]["size"])):
        return ""
    mm = ", ".join("0.0" if f"{v:.1f}" == "-0.0" else f"{v:.1f}" for v in ras)
    return f"RAS {mm} mm  voxel ({voxel[0]}, {voxel[1]}, {voxel[2]})"


def labels_to_display(labels: np.ndarray, attributes: dict) -> np.ndarray:
    """A label map ``(X, Y, Z)`` on a layer's source grid, reordered like that layer's data."""
    meta = attributes.get("metadata") or {}
    axes = tuple(int(a) for a in meta.get("display_axes", (0, 1, 2))) if "grid" in meta else (0, 1, 2)
    flip = tuple(bool(f) for f in meta.get("display_flip", (False,) * 3)) if "grid" in meta else (False,) * 3
    return to_display(labels, axes, flip)


def labels_checksum(data: np.ndarray) -> str:
    """A checksum of a label array's values, shape and type (to tell whether a layer was edited)."""
    array = np.ascontiguousarray(data)
    digest = hashlib.blake2b(f"{array.dtype.str}{array.shape}".encode(), digest_size=16)
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def is_unedited(data: np.ndarray, metadata: dict) -> bool:
    """Whether a label layer's ``data`` is exactly what a model wrote (the ``labels_checksum`` in its metadata)."""
    recorded = (metadata or {}).get("labels_checksum")
    return recorded is not None and recorded == labels_checksum(np.asarray(data))
