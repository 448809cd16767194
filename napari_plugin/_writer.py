"""napari writer: a Labels layer to ``.nii.gz`` on its source scan's grid (:func:`medfcn.data.writer.write_labels`).

The grid comes from the layer's metadata (what the reader stored: exactly the grid SimpleITK reads from the source
file). A Labels layer drawn by hand works the same when it carries the scan's metadata: one made with the Segment
dock's "New labels on this scan" does, and one made with napari's own "New labels" button (which copies shape and
transforms, not metadata) is given the metadata of the scan it was made on as it is added to a viewer where a scan
was opened with this plugin (:mod:`napari_plugin._widgets._scan_views`). A layer with no scan behind it at all is
written on its own axes with the physical placement of its transforms, which overlays the scan in any viewer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ._layers import layer_scan

__all__ = ["write_labels", "save_labels_layer"]


def write_labels(path: str | os.PathLike, data: Any, attributes: dict) -> list[str]:
    """Write one Labels layer (``data``, ``attributes`` as napari passes them) to ``path``; returns ``[path]``.

    ``path`` without ``.nii``/``.nii.gz`` gets ``.nii.gz`` appended.

    Raises:
        UnsupportedScanError: the layer is not 3-D.  GridMismatchError: its data does not fit its metadata's grid.
        OutputError: the file cannot be written.
    """
    from medfcn.data.writer import write_labels as write

    scan = layer_scan(data, attributes)
    return [str(write(scan.array, scan, Path(path)))]


def save_labels_layer(layer, path: str | os.PathLike) -> Path:
    """Write a napari Labels layer to ``path`` on its source grid (see :func:`write_labels`)."""
    data, attributes, _ = layer.as_layer_data_tuple()
    return Path(write_labels(path, data, attributes)[0])
