"""DICOM series: found by SeriesInstanceUID (across folders), slices ordered along the slice normal.

Only headers are read here (pydicom, ``stop_before_pixels``); the voxels are read by SimpleITK's GDCM series
reader from the file list this module orders. Files that are not DICOM are ignored; DICOM files without the
128-byte preamble (raw data sets, as some archives export them) are recognised by their first tag.

Rules, checked before any voxel is read; each refusal is a :class:`~medfcn.errors.DicomSeriesError` naming the
series, its folder and, where one slice is at fault, the file:

- slices are ordered by their position (ImagePositionPatient) projected on the slice normal
  (the cross product of the ImageOrientationPatient row and column directions), never by file name;
- a series whose slice positions are not evenly spaced (a missing slice) or repeat (a duplicate slice) is
  refused: resampling it silently would misplace anatomy;
- a series mixing orientations, in-plane sizes or pixel spacings is refused likewise;
- a slice whose position or orientation is not finite, an orientation whose row and column directions are not
  orthogonal unit vectors, and a stack whose slices shift within their plane from one to the next (gantry tilt,
  a sheared volume) are refused: a volume of parallel, stacked slices cannot place their voxels;
- a header that cannot be parsed (a corrupt value) fails its own series, naming the file; a file whose
  SeriesInstanceUID cannot be read is left out with a warning on every series beside it;
- a series without PixelSpacing is read with 1 mm pixels (what GDCM assumes) and a warning;
- slices that share a SeriesInstanceUID but not a PatientID or FrameOfReferenceUID are refused (two patients, or
  two frames of reference, cannot be one volume);
- the header bounds the read (:mod:`medfcn.data.limits`): Rows x Columns x slices beyond the voxel bound, or an
  uncompressed slice file shorter than its Rows x Columns promise, fails the series before any voxel is read;
- a ``.dcm`` file that is no longer DICOM (a damaged preamble) beside a series is left out with a warning on it.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medfcn.data.limits import check_voxels
from medfcn.errors import DicomSeriesError, MedfcnError

__all__ = [
    "DicomSeries",
    "find_series",
    "list_series",
    "group_series",
    "is_dicom_file",
]

log = logging.getLogger(__name__)

# Objects that are not images (segmentations, structure sets, reports...): never a series to read as a volume.
NON_IMAGE_MODALITIES = frozenset({"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "SR", "PR", "KO", "REG"})

_HEADER_TAGS = [
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "InstanceNumber",
    "Modality",
    "FrameOfReferenceUID",
    "PatientID",
    "SamplesPerPixel",
    "BitsAllocated",
]


@dataclass
class DicomSeries:
    """One series: its UID and the files holding its slices, ordered along the slice normal.

    ``folder`` is the deepest folder holding all its files. ``error`` says why the series cannot form a volume
    (then ``files`` are in name order), else ``None``; ``warnings`` what was noticed (missing PixelSpacing,
    unreadable DICOM files beside it).
    """

    uid: str
    folder: Path
    files: list[Path] = field(default_factory=list)
    number: int | None = None
    description: str = ""
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Slice:
    """The header fields of one file, parsed eagerly (pydicom parses values lazily, on first access)."""

    path: Path
    uid: str
    number: int | None = None
    description: str = ""
    modality: str = ""
    position: np.ndarray | None = None
    orientation: np.ndarray | None = None
    pixel_spacing: tuple[float, float] | None = None
    size: tuple[int, int] = (0, 0)
    frames: int = 1
    frame_of_reference: str = ""
    patient: str = ""
    error: str | None = None


def _raw_dataset_start(head: bytes) -> bool:
    """Whether ``head`` starts like a DICOM data set without preamble: a (0002,xxxx) or (0008,xxxx) tag."""
    if len(head) < 8:
        return False
    group = int.from_bytes(head[0:2], "little")
    element = int.from_bytes(head[2:4], "little")
    if group not in (0x0002, 0x0008) or element > 0x0200:
        return False
    vr = head[4:6]
    if vr.isalpha() and vr.isupper():  # explicit VR
        return True
    return int.from_bytes(head[4:8], "little") < 1 << 16  # implicit VR: a 4-byte length of a short value


def is_dicom_file(path: Path) -> bool:
    """True for a file with the DICOM preamble (``DICM`` at byte 128), a raw data set, or a ``.dcm`` name."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return (len(head) == 132 and head[128:132] == b"DICM") or _raw_dataset_start(head)


def _numbers(value, n: int, what: str) -> np.ndarray:
    values = np.asarray([float(v) for v in value], dtype=float)
    if values.shape != (n,):
        raise ValueError(f"{what} has {values.size} values, expected {n}")
    return values


def _read_header(path: Path) -> _Slice | None:
    """The parsed header of ``path``; ``None`` when it is not DICOM or its SeriesInstanceUID is unreadable.

    A file whose UID reads but whose geometry does not comes back with ``error`` set (it fails its series).
    """
    import pydicom

    try:
        with warnings.catch_warnings():  # pydicom warns per invalid value; what matters is reported below
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS, force=True)
            uid = ds.get("SeriesInstanceUID")
            uid = str(uid).strip() if uid is not None else ""
            modality = str(ds.get("Modality", "") or "").strip().upper()
    except Exception as e:  # pydicom raises many types for damaged files; a bad file never ends the batch
        log.debug("ignoring %s: not a readable DICOM file (%s)", path, e)
        return None
    if not uid:
        return None
    s = _Slice(path, uid, modality=modality)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _parse_geometry(ds, s)
    except MedfcnError as e:  # the voxel bound: already one line naming the file
        s.error = str(e)
    except Exception as e:
        text = str(e).strip().splitlines()
        s.error = f"{path.name}: header cannot be parsed ({type(e).__name__}: {text[0] if text else ''})"
    return s


def _parse_geometry(ds, s: _Slice) -> None:
    """Fill ``s`` from the data set ``ds``; raises whatever a damaged value makes pydicom or float() raise."""
    number = ds.get("SeriesNumber")
    s.number = int(number) if number not in (None, "") else None
    s.description = str(ds.get("SeriesDescription", "") or "")
    iop, ipp, spacing = (ds.get(k) for k in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"))
    s.orientation = None if iop is None else _numbers(iop, 6, "ImageOrientationPatient")
    s.position = None if ipp is None else _numbers(ipp, 3, "ImagePositionPatient")
    s.pixel_spacing = None if spacing in (None, "") else tuple(_numbers(spacing, 2, "PixelSpacing").tolist())
    s.size = (int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0))
    s.frames = max(1, int(ds.get("NumberOfFrames", 1) or 1))
    s.frame_of_reference = str(ds.get("FrameOfReferenceUID", "") or "").strip()
    s.patient = str(ds.get("PatientID", "") or "").strip()
    _check_pixel_bytes(ds, s)


def _check_pixel_bytes(ds, s: _Slice) -> None:
    """Refuse, before any pixel is read, a slice whose size the voxel bound refuses, or an uncompressed slice file
    shorter than the pixels its Rows x Columns x frames promise (a forged 4096 x 4096 in a small file)."""
    rows, cols = s.size
    check_voxels(s.path, (cols, rows, s.frames))
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or syntax.is_encapsulated or syntax.is_deflated:  # compressed: the voxel count bounds it
        return
    bits = int(ds.get("BitsAllocated", 16) or 16)
    needed = rows * cols * s.frames * max(1, int(ds.get("SamplesPerPixel", 1) or 1)) * bits // 8
    held = s.path.stat().st_size
    if held < needed:
        raise ValueError(f"Rows x Columns {rows} x {cols} promise {needed:,} bytes of pixels, the file holds {held:,}")


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
    try:
        names = sorted(os.listdir(folder))
    except OSError as e:
        raise DicomSeriesError(f"{folder}: cannot list the folder ({e.strerror or e})") from None
    return group_series([folder / n for n in names if (folder / n).is_file() and _dicom_named_or_read(folder / n)])


def _dicom_named_or_read(path: Path) -> bool:
    """A DICOM file by its content, or by its ``.dcm`` name (a damaged one is then reported, not skipped)."""
    return path.suffix.lower() == ".dcm" or is_dicom_file(path)


def _common_folder(paths: list[Path]) -> Path:
    return Path(os.path.commonpath([str(p.parent) for p in paths]))


def group_series(files: list[Path]) -> list[DicomSeries]:
    """The series the DICOM ``files`` hold (they may lie in several folders), grouped by SeriesInstanceUID.

    Ordered by SeriesNumber, then UID; each with its files ordered along the slice normal, or its ``error``.
    """
    groups: dict[str, list[_Slice]] = {}
    unreadable: dict[Path, list[Path]] = {}
    for path in files:
        s = _read_header(path)
        if s is None:
            if path.suffix.lower() == ".dcm" or is_dicom_file(path):
                unreadable.setdefault(path.parent, []).append(path)
            continue
        if s.modality in NON_IMAGE_MODALITIES:
            log.debug("ignoring %s: a %s object, not an image", path, s.modality)
            continue
        groups.setdefault(s.uid, []).append(s)
    series = []
    for uid, items in groups.items():
        items.sort(key=lambda s: str(s.path))
        folder = _common_folder([s.path for s in items])
        s = DicomSeries(uid=uid, folder=folder, number=items[0].number, description=items[0].description)
        try:
            s.files, s.warnings = _sorted_slices(items, folder)
        except DicomSeriesError as e:
            s.files, s.error = [i.path for i in items], str(e)
        folders = {i.path.parent for i in items}
        for where in sorted(folders & set(unreadable)):
            bad = unreadable[where]
            s.warnings.append(
                f"{where}: {len(bad)} DICOM file(s) without a readable SeriesInstanceUID left out "
                f"(first: {bad[0].name})"
            )
        for w in s.warnings:
            log.warning(w)
        series.append(s)
    series.sort(key=lambda s: (s.number if s.number is not None else 1 << 30, s.uid))
    return series


def _check_orientation(iop: np.ndarray, where: str, name: str) -> None:
    row, col = iop[:3], iop[3:]
    if not np.all(np.isfinite(iop)):
        raise DicomSeriesError(f"{where}: {name} has a non-finite ImageOrientationPatient {iop.tolist()}")
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        angle = math.degrees(
            math.acos(max(-1.0, min(1.0, row @ col / (np.linalg.norm(row) * np.linalg.norm(col) or 1))))
        )
        raise DicomSeriesError(
            f"{where}: {name} has an ImageOrientationPatient whose row and column directions are not orthogonal "
            f"unit vectors ({angle:.2f} degrees apart, lengths {np.linalg.norm(row):.4g} and {np.linalg.norm(col):.4g})"
        )


def _spacing_warnings(items: list[_Slice], where: str) -> list[str]:
    """Warnings about the series' PixelSpacing; raises :class:`DicomSeriesError` when it differs or is not valid."""
    spacings = {s.pixel_spacing for s in items}
    if None in spacings and len(spacings) == 1:
        return [f"{where}: no PixelSpacing; read with 1 mm pixels, so distances and volumes may be wrong"]
    if len(spacings) > 1:
        shown = sorted(str(list(v)) if v else "none" for v in spacings)
        raise DicomSeriesError(f"{where}: slices with different PixelSpacing {shown}")
    if min(next(iter(spacings))) <= 0 or not all(math.isfinite(v) for v in next(iter(spacings))):
        raise DicomSeriesError(f"{where}: PixelSpacing {list(next(iter(spacings)))} is not two positive numbers")
    return []


def _check_stack(items: list[_Slice], where: str) -> None:
    """Every slice of a multi-slice series: one size, a finite position, one valid orientation."""
    sizes = {s.size for s in items}
    if len(sizes) > 1:
        raise DicomSeriesError(f"{where}: slices of different sizes {sorted(sizes)}")
    for what, key in (("PatientID", "patient"), ("FrameOfReferenceUID", "frame_of_reference")):
        values = {getattr(s, key) for s in items}
        if len(values) > 1:
            odd = next(s for s in items if getattr(s, key) != getattr(items[0], key))
            raise DicomSeriesError(
                f"{where}: slices with {len(values)} different {what}s share this SeriesInstanceUID ({odd.path.name}: "
                f"{getattr(odd, key) or 'none'}, {items[0].path.name}: {getattr(items[0], key) or 'none'}); "
                "slices of another patient or frame of reference cannot be one volume"
            )
    rows, cols = items[0].size
    try:
        check_voxels(where, (cols, rows, len(items)))
    except MedfcnError as e:
        raise DicomSeriesError(str(e)) from None
    for s in items:
        if s.orientation is None or s.position is None:
            raise DicomSeriesError(f"{where}: {s.path.name} has no ImagePositionPatient/ImageOrientationPatient")
        if not np.all(np.isfinite(s.position)):
            raise DicomSeriesError(
                f"{where}: {s.path.name} has a non-finite ImagePositionPatient {s.position.tolist()}"
            )
        _check_orientation(s.orientation, where, s.path.name)
    iop0 = items[0].orientation
    if any(not np.allclose(s.orientation, iop0, atol=1e-4) for s in items):
        raise DicomSeriesError(f"{where}: slices with different orientations")


def _slice_order(items: list[_Slice], where: str) -> np.ndarray:
    """The slices' order along their normal; raises when slices repeat, a slice is missing or the stack shears."""
    iop0 = items[0].orientation
    normal = np.cross(iop0[:3], iop0[3:])
    positions = np.stack([s.position for s in items])
    depth = positions @ normal
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
    steps = np.diff(positions[order], axis=0)
    in_plane = np.linalg.norm(steps - np.outer(steps @ normal, normal), axis=1)
    if np.max(in_plane) > max(0.01 * step, 1e-3):
        tilt = math.degrees(math.atan2(float(np.max(in_plane)), step))
        raise DicomSeriesError(
            f"{where}: slices shift {np.max(in_plane):.3g} mm within their plane from one to the next "
            f"(gantry tilt or a sheared stack, {tilt:.1f} degrees): medfcn reads only stacks of aligned slices; "
            "resample the series to a regular grid first"
        )
    return order


def _sorted_slices(items: list[_Slice], folder: Path) -> tuple[list[Path], list[str]]:
    """Paths of one series ordered along the slice normal, and warnings; raises :class:`DicomSeriesError`."""
    where = f"DICOM series {items[0].uid} in {folder}"
    for s in items:
        if s.error is not None:
            raise DicomSeriesError(f"{where}: {s.error}")
    warnings = _spacing_warnings(items, where)
    if len(items) == 1:
        if items[0].orientation is not None:
            _check_orientation(items[0].orientation, where, items[0].path.name)
        return [items[0].path], warnings
    _check_stack(items, where)
    return [items[i].path for i in _slice_order(items, where)], warnings
