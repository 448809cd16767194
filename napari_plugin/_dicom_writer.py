"""napari writer: a Labels layer opened on a DICOM series (or segmented from one) as a DICOM SEG referencing it.

The series comes from the layer's metadata (``source`` folder and ``series_uid``, stored by the reader and copied
by the Segment dock); segment names from ``label_names`` (the Segment dock's model card, or the segments of a SEG
or RTSTRUCT the layer was read from) when there, else ``label N``; their codes from :mod:`medfcn.dicom.codes`.
How each segment was made: AUTOMATIC, naming the model, while the layer holds exactly what the model wrote (its
``labels_checksum``); once edited, SEMIAUTOMATIC for the model's labels and MANUAL for any other; MANUAL for a layer
no model made. Written by :func:`medfcn.dicom.seg.write_seg`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ._layers import is_unedited, layer_scan
from ._messages import for_viewer

__all__ = ["write_dicom_seg", "save_seg_layer"]


def write_dicom_seg(path: str | os.PathLike, data: Any, attributes: dict) -> list[str]:
    """Write one Labels layer as a DICOM SEG at ``path`` (``.dcm`` appended if missing); returns ``[path]``.

    Raises:
        UnsupportedScanError: the layer was not opened on (or segmented from) a DICOM series, or is not 3-D.
        DicomSeriesError: the series lacks a FrameOfReferenceUID or is gone.  OutputError: cannot write.
    """
    from medfcn.errors import MedfcnError

    try:
        return _write(Path(path), data, attributes)
    except MedfcnError as e:  # said as the viewer says it (no command-line options)
        raise type(e)(for_viewer(str(e))) from None


def _write(path: Path, data: Any, attributes: dict) -> list[str]:
    from medfcn.dicom.seg import Algorithm, edited_segments, segments_of, write_seg

    if not path.name.lower().endswith(".dcm"):
        path = path.with_name(path.name + ".seg.dcm")
    scan = layer_scan(data, attributes)
    meta = attributes.get("metadata") or {}
    names = {int(k): str(v) for k, v in (meta.get("label_names") or {}).items()}
    values = [int(v) for v in np.unique(scan.array) if v > 0]
    labels = {names.get(v, f"label {v}"): v for v in sorted(set(values) | {k for k in names if k > 0})}
    segments = segments_of(labels)
    model = meta.get("model")
    if not (model and is_unedited(data, meta)):
        segments = edited_segments(segments, set(names) if model else None)
    algorithm = Algorithm(str(model or "napari (manual)"))
    return [str(write_seg(scan.array, scan, path, segments=segments, algorithm=algorithm))]


def save_seg_layer(layer, path: str | os.PathLike) -> Path:
    """Write a napari Labels layer as a DICOM SEG referencing its source series (see :func:`write_dicom_seg`)."""
    data, attributes, _ = layer.as_layer_data_tuple()
    return Path(write_dicom_seg(path, data, attributes)[0])
