"""DICOM series in a folder: found by SeriesInstanceUID, slices ordered along the slice normal.

Only headers are read here (pydicom, ``stop_before_pixels``); the voxels are read by SimpleITK's GDCM series
reader from the file list this module orders. Files that are not DICOM are ignored.

Rules, checked before any voxel is read:

- slices are ordered by their position (ImagePositionPatient) projected on the slice normal
  (the cross product of the ImageOrientationPatient row and column directions), never by file name;
- a series whose slice positions are not evenly spaced (a missing slice) or repeat (a duplicate slice) is
  refused with :class:`~medfcn.errors.DicomSeriesError`: resampling it silently would misplace anatomy;
- a series mixing orientations or in-plane sizes is refused likewise.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medfcn.errors import DicomSeriesError

__all__ = ["DicomSeries", "find_series", "list_series", "is_dicom_file", "sorted_series_files"]

log = logging.getLogger(__name__)

# Objects that are not images (segmentations, structure sets, reports...): never a series to read as a volume.
NON_IMAGE_MODALITIES = frozenset({"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "SR", "PR", "KO", "REG"})

_HEADER_TAGS = [
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDescription",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "InstanceNumber",
    "Modality",
]


@dataclass
class DicomSeries:
    """One series: its UID and the files holding its slices, ordered along the slice normal.

    ``error`` says why the series cannot form a volume (then ``files`` are in name order), else ``None``.
    """

    uid: str
    folder: Path
    files: list[Path] = field(default_factory=list)
    number: int | None = None
    description: str = ""
    error: str | None = None


def is_dicom_file(path: Path) -> bool:
    """True for a file with the DICOM preamble (``DICM`` at byte 128) or a ``.dcm`` name."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _read_header(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError, EOFError) as e:
        log.debug("ignoring %s: not a readable DICOM file (%s)", path, e)
        return None


def find_series(folder: Path) -> list[DicomSeries]:
    """The DICOM series whose files lie directly in ``folder``, in a stable order (SeriesNumber, then UID).

    Each series' files are ordered along the slice normal (see :func:`sorted_series_files`).
    Raises :class:`DicomSeriesError` for a series that cannot form a regular volume.
    """
    series = list_series(folder)
    for s in series:
        if s.error is not None:
            raise DicomSeriesError(s.error)
    return series


def list_series(folder: Path) -> list[DicomSeries]:
    """Like :func:`find_series`, but a series that cannot form a volume is returned with its ``error`` set.

    One broken series in a folder then does not hide the others.
    """
    folder = Path(folder)
    groups: dict[str, list[tuple[Path, object]]] = {}
    for name in sorted(os.listdir(folder)):
        path = folder / name
        if not path.is_file() or not is_dicom_file(path):
            continue
        ds = _read_header(path)
        uid = getattr(ds, "SeriesInstanceUID", None) if ds is not None else None
        if uid is None:
            continue
        if str(getattr(ds, "Modality", "")).upper() in NON_IMAGE_MODALITIES:
            log.debug("ignoring %s: a %s object, not an image", path, ds.Modality)
            continue
        groups.setdefault(str(uid), []).append((path, ds))
    series = []
    for uid, items in groups.items():
        first = items[0][1]
        number = getattr(first, "SeriesNumber", None)
        s = DicomSeries(
            uid=uid,
            folder=folder,
            number=int(number) if number not in (None, "") else None,
            description=str(getattr(first, "SeriesDescription", "") or ""),
        )
        try:
            s.files = sorted_series_files(items, folder)
        except DicomSeriesError as e:
            s.files, s.error = [path for path, _ in items], str(e)
        series.append(s)
    series.sort(key=lambda s: (s.number if s.number is not None else 1 << 30, s.uid))
    return series


def sorted_series_files(items: list[tuple[Path, object]], folder: Path) -> list[Path]:
    """Files of one series ordered by position along the slice normal; checks the spacing is regular."""
    if len(items) == 1:
        return [items[0][0]]
    uid = str(getattr(items[0][1], "SeriesInstanceUID", "?"))
    where = f"DICOM series {uid} in {folder}"
    orientations, positions, sizes = [], [], set()
    for path, ds in items:
        iop = getattr(ds, "ImageOrientationPatient", None)
        ipp = getattr(ds, "ImagePositionPatient", None)
        if iop is None or ipp is None:
            raise DicomSeriesError(f"{where}: {path.name} has no ImagePositionPatient/ImageOrientationPatient")
        orientations.append(np.asarray([float(v) for v in iop]))
        positions.append(np.asarray([float(v) for v in ipp]))
        sizes.add((int(getattr(ds, "Rows", 0)), int(getattr(ds, "Columns", 0))))
    if len(sizes) > 1:
        raise DicomSeriesError(f"{where}: slices of different sizes {sorted(sizes)}")
    iop0 = orientations[0]
    if any(not np.allclose(o, iop0, atol=1e-4) for o in orientations):
        raise DicomSeriesError(f"{where}: slices with different orientations")
    normal = np.cross(iop0[:3], iop0[3:])
    depth = np.asarray([p @ normal for p in positions])
    order = np.argsort(depth, kind="stable")
    gaps = np.diff(depth[order])
    if np.any(np.abs(gaps) < 1e-3):
        raise DicomSeriesError(f"{where}: two slices at the same position (duplicate slice)")
    step = float(np.median(gaps))
    if np.any(np.abs(gaps - step) > max(0.01 * step, 1e-3)):
        k = int(np.argmax(np.abs(gaps - step)))
        raise DicomSeriesError(
            f"{where}: uneven slice spacing ({gaps[k]:.3g} mm between slices {k + 1} and {k + 2}, "
            f"{step:.3g} mm elsewhere): a slice is probably missing"
        )
    return [items[i][0] for i in order]
