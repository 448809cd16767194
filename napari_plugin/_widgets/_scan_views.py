"""Viewer-wide helpers the docks install: orientation letters on the canvas, and label layers on a scan's grid.

- Orientation: napari's axis names say which plane a slider steps through, not which way the patient faces. The
  canvas's text overlay shows the patient directions at the edges of the current view (``axial  top A  bottom P
  left R  right L``), updated when the displayed axes change (:func:`medfcn.data.display.screen_letters`).
- Patient coordinates: hovering over a layer this plugin opened, napari's status bar shows the RAS point (mm) and
  the scan-file voxel index of the voxel under the cursor in place of napari's own index triple of the displayed
  (reordered) data (:func:`patient_status`,
  :func:`napari_plugin._layers.patient_text`), from the layer's ``get_status``, which napari calls for the
  status bar whether it computes it at once or in its status thread.
- Painted slices: every Labels layer a person may paint on records which slices each stroke touched, in any view
  (:func:`napari_plugin._widgets._edits.track_painting`): what the Train dock learns from.
- One unit: layers the user adds beside a scan (points, shapes, other images) take the scans' millimetres, so
  napari never warns of inconsistent units (:func:`_world_in_mm`).
- Grid-safe labels: napari's own "New labels" button makes a layer shaped like the displayed data, with the scan's
  transforms but none of its metadata, so it would be saved on the displayed axes instead of the scan's.
  :func:`adopt_scan_grid` gives such a layer the metadata of the Image layer it was made on (same shape and
  transforms), and :func:`new_labels_on_scan` makes one directly.
"""

from __future__ import annotations

import copy
import logging
import weakref
from typing import TYPE_CHECKING

import numpy as np

from medfcn.data.display import AXIS_LABELS, screen_letters

from .._layers import patient_text

if TYPE_CHECKING:
    import napari

__all__ = [
    "unwrap",
    "install",
    "add_labels_like",
    "labels_layer_like",
    "orientation_text",
    "patient_status",
    "adopt_scan_grid",
    "new_labels_on_scan",
    "scan_image_of",
    "is_user_labels",
    "unsure_map",
    "prefer_medfcn_reader",
    "READER_PATTERNS",
]

log = logging.getLogger(__name__)

_INSTALLED: weakref.WeakSet = weakref.WeakSet()  # the viewers whose hooks are connected


def unwrap(viewer):
    """The viewer itself behind the proxy napari hands plugin widgets (which warns on private attributes)."""
    return getattr(viewer, "__wrapped__", viewer)


def orientation_text(viewer: napari.viewer.Viewer) -> str:
    """The patient directions at the edges of the current 2-D view, e.g. ``"axial: top A, bottom P, left R,
    right L"``; ``""`` in 3-D or when the viewer does not show a scan's three axes."""
    dims = viewer.dims
    if dims.ndisplay != 2 or dims.ndim < 3:
        return ""
    order = [a - (dims.ndim - 3) for a in dims.order]
    if any(a < 0 for a in order[-2:]):
        return ""
    rows, cols = order[-2], order[-1]
    top, bottom, left, right = screen_letters(rows, cols)
    orientation = getattr(viewer.camera, "orientation", ("away", "down", "right"))
    if orientation[-2] == "up":
        top, bottom = bottom, top
    if orientation[-1] == "left":
        left, right = right, left
    plane = AXIS_LABELS[order[0]] if 0 <= order[0] < 3 else "slice"
    return f"{plane}: top {top}, bottom {bottom}, left {left}, right {right}"


def is_user_labels(layer) -> bool:
    """A Labels layer a person may paint on: not a Review overlay (its metadata holds ``overlap_codes``), a map of
    where the model is unsure (``unsure_of``) or the Train dock's live preview (``preview_of``)."""
    meta = layer.metadata or {}
    return layer.__class__.__name__ == "Labels" and not {"overlap_codes", "unsure_of", "preview_of"} & set(meta)


def unsure_map(viewer, labels):
    """The map of where the model is unsure (the Segment dock's ``<image>_uncertain``) made with the Labels layer
    ``labels`` (never another result's map on the same grid), or ``None``."""
    from .._layers import grid_mismatch_text

    maps = [
        layer
        for layer in reversed(list(viewer.layers))
        if "unsure_of" in (layer.metadata or {})
        and layer.data.shape == labels.data.shape
        and not grid_mismatch_text(layer, labels)
    ]
    return next((m for m in maps if m.metadata["unsure_of"] == labels.name), None)


def _shows_scans(viewer) -> bool:
    return any("grid" in (layer.metadata or {}) for layer in viewer.layers)


def _update_orientation(viewer) -> None:
    text = orientation_text(viewer) if _shows_scans(viewer) else ""
    viewer.text_overlay.text = text
    viewer.text_overlay.visible = bool(text)


def patient_status(layer, position, *, world: bool = True, dims_displayed=None) -> str:
    """The RAS point and scan voxel under ``position`` (world coordinates, or the layer's data coordinates when
    not ``world``) of a layer carrying a scan grid, e.g. ``"RAS 12.5, -30.0, 41.0 mm  voxel (40, 12, 7)"``;
    ``""`` for other layers, outside the scan, and in 3-D views (where the cursor is not on one voxel)."""
    meta = layer.metadata or {}
    if position is None or "grid" not in meta or layer.ndim != 3:
        return ""
    if dims_displayed is not None and len(dims_displayed) != 2:
        return ""
    data = layer.world_to_data(position) if world else np.asarray(position, float)
    return patient_text(data, meta)


def _show_patient_coordinates(layer) -> None:
    """Make ``layer.get_status`` (what napari's status bar shows) end with :func:`patient_status` (once)."""
    if getattr(layer, "_medfcn_status", False):
        return
    original = layer.get_status

    def get_status(position=None, **kwargs):
        status = original(position, **kwargs)
        if isinstance(status, dict):
            try:
                text = patient_status(
                    layer, position, world=kwargs.get("world", False), dims_displayed=kwargs.get("dims_displayed")
                )
            except Exception:  # the status bar must not break on a malformed layer
                log.debug("medfcn: no patient coordinates for %r", layer.name, exc_info=True)
                text = ""
            if text:  # in place of napari's own index triple: one place, in patient terms
                status["coordinates"] = _patient_coordinates(str(status.get("coordinates", "")), text)
        return status

    layer.get_status = get_status
    layer._medfcn_status = True


def _patient_coordinates(napari_text: str, patient: str) -> str:
    """napari's ``"[12 40 33]: value"`` with its bracketed index triple replaced by the patient text."""
    _, bracket, rest = napari_text.partition("]")
    return f"{patient}{rest if bracket else (': ' + napari_text if napari_text else '')}"


def _in_mm(layer) -> None:
    units = getattr(layer, "units", None)
    if units and all(str(u) == "pixel" for u in units):  # napari's default: units nobody chose
        layer.units = ("mm",) * len(units)


def _world_in_mm(viewer) -> None:
    """Give every layer in napari's default unit (pixel) the scans' millimetres while a scan is shown, as it is
    inserted: napari warns "Inconsistent units across layers" when a points, shapes or plain image layer (pixel)
    lies beside a scan (mm), and those layers are drawn in the scans' world, whose coordinates are millimetres.
    napari's canvas draws a new layer in its own handler of the ``inserted`` event, which runs before any
    plugin's, so the units are set in the layer list's ``insert`` (this viewer's list only)."""
    layers = viewer.layers
    insert = layers.insert

    def insert_in_mm(index, value):
        if "grid" in (getattr(value, "metadata", None) or {}):
            for layer in layers:
                _in_mm(layer)
        if _shows_scans(viewer) or "grid" in (getattr(value, "metadata", None) or {}):
            _in_mm(value)
        return insert(index, value)

    layers.insert = insert_in_mm


def scan_image_of(viewer, layer):
    """The layer in ``viewer`` carrying a scan grid (``metadata["grid"]``) with ``layer``'s shape and transforms:
    the one napari's "New labels" copied them from; ``None`` if there is none."""
    for other in viewer.layers:
        meta = other.metadata or {}
        if other is layer or "grid" not in meta or other.data.shape != layer.data.shape:
            continue
        if all(np.allclose(getattr(other, t), getattr(layer, t), atol=1e-6) for t in ("scale", "translate", "rotate")):
            if np.allclose(other.affine.affine_matrix, layer.affine.affine_matrix, atol=1e-6):
                return other
    return None


def _scan_metadata(image, name: str) -> dict:
    meta = copy.deepcopy(dict(image.metadata))
    meta = {k: meta[k] for k in ("grid", "display_axes", "display_flip", "source", "case", "series_uid") if k in meta}
    meta["case"] = name
    meta["drawn_on"] = image.name
    return meta


def adopt_scan_grid(viewer, layer) -> bool:
    """Give a Labels layer without a scan grid the metadata of the scan layer it overlays exactly (see
    :func:`scan_image_of`), so it saves on that scan's grid; returns whether it did."""
    if layer.__class__.__name__ != "Labels" or "grid" in (layer.metadata or {}):
        return False
    image = scan_image_of(viewer, layer)
    if image is None:
        return False
    layer.metadata = {**dict(layer.metadata or {}), **_scan_metadata(image, layer.name)}
    log.info("labels layer %r takes the grid of %r", layer.name, image.name)
    return True


def add_labels_like(viewer, like, data: np.ndarray, **kwargs):
    """Add a Labels layer of ``data`` placed exactly as layer ``like`` (its transforms, units and axis names);
    ``kwargs`` go to ``viewer.add_labels`` (name, metadata, features, colormap, ...)."""
    transforms = {t: getattr(like, t) for t in ("scale", "translate", "rotate", "affine", "units", "axis_labels")}
    return viewer.add_labels(data, **transforms, **kwargs)


def labels_layer_like(attributes: dict, data: np.ndarray, **kwargs):
    """A Labels layer of ``data`` (not yet in a viewer) placed exactly as the layer whose ``as_layer_data_tuple()``
    attributes are ``attributes`` (its transforms, units and axis names); safe to build in a worker thread."""
    from napari.layers import Labels

    names = ("scale", "translate", "rotate", "shear", "affine", "units", "axis_labels")
    return Labels(data, **{k: attributes[k] for k in names if k in attributes}, **kwargs)


def new_labels_on_scan(viewer, image, name: str | None = None):
    """An empty Labels layer on ``image``'s scan grid (its shape, transforms and grid metadata)."""
    name = name or f"{image.name}_drawn"
    return add_labels_like(
        viewer, image, np.zeros(image.data.shape, np.uint8), name=name, metadata=_scan_metadata(image, name)
    )


READER_PATTERNS = ("*.nii", "*.nii.gz", "*.nrrd", "*.nhdr", "*.mha", "*.mhd", "*.dcm")
"""The medical file patterns napari's own reader claims too (through imageio, which cannot read them)."""


def prefer_medfcn_reader() -> list[str]:
    """Make medfcn napari's preferred reader of :data:`READER_PATTERNS` the user has not assigned to a reader
    (napari's ``settings.plugins.extension2reader``, which its "remember this choice" box writes too), so File >
    Open and ``viewer.open(path, plugin=None)`` pick it. npe2 gives a plugin no way to declare this, so it is done
    on the plugin's first use. Returns the patterns assigned now."""
    try:
        from napari.settings import get_settings

        plugins = get_settings().plugins
        taken = dict(plugins.extension2reader)
        new = [p for p in READER_PATTERNS if p not in taken]
        if new:
            plugins.extension2reader = {**taken, **dict.fromkeys(new, "medfcn")}
            log.info("medfcn: napari now opens %s with medfcn (Preferences > Plugins to change)", ", ".join(new))
        return new
    except Exception:  # a preference is a convenience; never fail a read for it
        log.debug("medfcn: could not set the reader preference", exc_info=True)
        return []


def install(viewer: napari.viewer.Viewer) -> None:
    """Connect the orientation letters, the patient coordinates and the grid adoption to ``viewer`` (once per
    viewer), tab medfcn's docks together (:mod:`._docks`), and make medfcn napari's reader of the medical file
    patterns (:func:`prefer_medfcn_reader`)."""
    if unwrap(viewer) in _INSTALLED:
        return
    _INSTALLED.add(unwrap(viewer))
    prefer_medfcn_reader()
    from ._docks import install_dock_layout
    from ._edits import track_painting

    install_dock_layout(unwrap(viewer))

    def on_inserted(event) -> None:
        adopt_scan_grid(viewer, event.value)
        _show_patient_coordinates(event.value)
        if is_user_labels(event.value):
            track_painting(viewer, event.value)
        _update_orientation(viewer)

    viewer.layers.events.inserted.connect(on_inserted)
    viewer.layers.events.removed.connect(lambda _: _update_orientation(viewer))
    viewer.dims.events.order.connect(lambda _: _update_orientation(viewer))
    viewer.dims.events.ndisplay.connect(lambda _: _update_orientation(viewer))
    if hasattr(viewer.camera.events, "orientation"):
        viewer.camera.events.orientation.connect(lambda _: _update_orientation(viewer))
    for layer in list(viewer.layers):
        adopt_scan_grid(viewer, layer)
        _show_patient_coordinates(layer)
        if is_user_labels(layer):
            track_painting(viewer, layer)
        if _shows_scans(viewer):
            _in_mm(layer)
    _world_in_mm(unwrap(viewer))
    _update_orientation(viewer)
