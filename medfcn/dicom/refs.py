"""What DICOM SEG and RTSTRUCT objects share: the source series they reference, and where its pixels lie in a scan.

- :func:`source_datasets`: the headers of the series a :class:`~medfcn.data.scan.Scan` was read from (a SEG or RTSTRUCT
  references each of its SOP instances, its study and its Frame of Reference);
- :func:`frame_indices`: for one source slice, the scan index ``(i, j, k)`` of each of its pixels ``(row, col)``,
  computed from the slice's own ImagePositionPatient, ImageOrientationPatient and PixelSpacing, so the file order
  of the slices and the order the volume reader chose never matter;
- :class:`SeriesIndex`: the series found under the folders given to ``medfcn evaluate --series``, by
  SeriesInstanceUID, to rebuild a SEG or RTSTRUCT on its referenced series' grid.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medfcn.data.dicom_series import DicomSeries, is_dicom_file, list_series
from medfcn.data.scan import Scan
from medfcn.errors import DicomSeriesError, MedfcnError, UnsupportedScanError

__all__ = [
    "SEG_SOP_CLASS",
    "series_referenced_by",
    "RTSTRUCT_SOP_CLASS",
    "source_datasets",
    "frame_indices",
    "frames_of",
    "headers_by_uid",
    "SeriesIndex",
    "dicom_label_kind",
]

log = logging.getLogger(__name__)

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"


def dicom_label_kind(path: Path) -> str | None:
    """``"seg"`` or ``"rtstruct"`` for a DICOM Segmentation or RT Structure Set file, else ``None``."""
    import pydicom

    path = Path(path)
    if not path.is_file() or not is_dicom_file(path):
        return None
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # not DICOM after all: not ours
        return None
    return {SEG_SOP_CLASS: "seg", RTSTRUCT_SOP_CLASS: "rtstruct"}.get(str(getattr(ds, "SOPClassUID", "")))


def series_referenced_by(ds) -> set[str]:
    """The SeriesInstanceUIDs a DICOM SEG (its ReferencedSeriesSequence) or an RT Structure Set (through its
    ReferencedFrameOfReferenceSequence) references; empty when it names none."""
    return {str(s.SeriesInstanceUID) for s in getattr(ds, "ReferencedSeriesSequence", [])} | {
        str(s.SeriesInstanceUID)
        for f in getattr(ds, "ReferencedFrameOfReferenceSequence", [])
        for st in getattr(f, "RTReferencedStudySequence", [])
        for s in getattr(st, "RTReferencedSeriesSequence", [])
    }


def _read_headers(series: DicomSeries) -> list:
    """Every slice's whole header (no pixels). Raises :class:`DicomSeriesError` naming a file pydicom cannot parse."""
    import pydicom

    headers = []
    for f in series.files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            for _ in ds.iterall():  # pydicom parses each value when first used: parse them all here, named
                pass
            headers.append(ds)
        except Exception as e:  # pydicom raises many types for a damaged header
            text = str(e).strip().splitlines()
            raise DicomSeriesError(
                f"{f}: its header cannot be read whole ({type(e).__name__}: {text[0] if text else ''})"
            ) from None
    return headers


# Type 2 attributes of the Patient and General Study modules a derived object copies from its source: a source
# that lacks one gets it empty (DICOM's "unknown"), in memory only, never a made-up value.
_TYPE2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def source_datasets(scan: Scan) -> list:
    """The headers (no pixels) of the DICOM series ``scan`` was read from, one per slice (empty Type 2 attributes
    added where the source lacks them, see ``_TYPE2_COPIED``).

    Raises:
        UnsupportedScanError: the scan was not read from a DICOM series, or from a multi-frame file.
        DicomSeriesError: the series is gone, or lacks a FrameOfReferenceUID (Type 1 in SEG and RTSTRUCT: a
            derived object cannot be placed in the patient without it).
    """
    folder = Path(scan.source) if scan.source is not None else None
    if scan.series_uid is None or folder is None or not folder.is_dir():
        raise UnsupportedScanError(
            f"{scan.source}: not a DICOM series; DICOM SEG and RTSTRUCT outputs reference the source series, "
            "so they are written only for cases read from DICOM (use --format nifti for this case)"
        )
    found = [s for s in list_series(folder) if s.uid == scan.series_uid]
    if not found or found[0].error:
        raise DicomSeriesError(f"{folder}: DICOM series {scan.series_uid} is no longer readable there")
    datasets = _read_headers(found[0])
    for ds in datasets:
        for keyword in _TYPE2_COPIED:
            if keyword not in ds:
                setattr(ds, keyword, "")
    if len(datasets) == 1 and int(getattr(datasets[0], "NumberOfFrames", 1) or 1) > 1:
        raise UnsupportedScanError(
            f"{found[0].files[0]}: a multi-frame DICOM image; medfcn writes SEG and RTSTRUCT for single-frame series"
        )
    if any("FrameOfReferenceUID" not in ds or not ds.FrameOfReferenceUID for ds in datasets):
        raise DicomSeriesError(
            f"{folder}: DICOM series {scan.series_uid} has no FrameOfReferenceUID; a DICOM SEG or RTSTRUCT must "
            "name the frame of reference of its source (ask the sender for a complete export)"
        )
    first = None
    for f, ds in zip(found[0].files, datasets, strict=True):
        missing = [k for k in _PLACED_BY if k not in ds or ds.get(k) in (None, "")]
        if missing:
            raise DicomSeriesError(
                f"{f}: no {', '.join(missing)}; a DICOM SEG or RTSTRUCT references its source slices by these and "
                "places its pixels by them (use --format nifti for this case, or ask for a complete export)"
            )
        shared = tuple(str(ds.get(k, "")) for k in _SHARED)
        first = first or (f, shared)
        for k, mine, theirs in zip(_SHARED, shared, first[1], strict=True):
            if mine != theirs:
                raise DicomSeriesError(
                    f"{f}: its {k} {mine!r} is not the {theirs!r} of {first[0].name}; a DICOM SEG or RTSTRUCT needs "
                    "it identical in every source slice (use --format nifti for this case)"
                )
    return datasets


# What a derived object needs identical, as written, in every source slice (highdicom compares them exactly).
_SHARED = ("SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID", "Rows", "Columns", "ImageOrientationPatient")

# What a derived object needs of every source slice besides its Frame of Reference: the references it copies and
# what places each pixel in the patient (a slice without PixelSpacing is read as 1 mm, which a SEG must not claim).
_PLACED_BY = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "PixelSpacing",
    "ImagePositionPatient",
    "ImageOrientationPatient",
)


def headers_by_uid(scan: Scan) -> dict:
    """``{SOPInstanceUID: header}`` of the series ``scan`` was read from (for rebuilding a SEG or RTSTRUCT on it)."""
    found = [s for s in list_series(Path(scan.source)) if s.uid == scan.series_uid]
    if not found:
        raise DicomSeriesError(f"{scan.source}: DICOM series {scan.series_uid} is no longer there")
    return {str(ds.SOPInstanceUID): ds for ds in _read_headers(found[0])}


def frame_indices(ds, scan: Scan) -> np.ndarray:
    """``(3, Rows, Columns)`` int: the scan index ``(i, j, k)`` of each pixel ``(row, col)`` of source slice ``ds``.

    Raises :class:`DicomSeriesError` when the slice's pixels are not voxel centres of ``scan``'s grid.
    """
    iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
    ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    m = scan.direction * np.asarray(scan.spacing)[None, :]
    start = np.linalg.solve(m, ipp - np.asarray(scan.origin))
    along_col = np.linalg.solve(m, iop[:3] * col_spacing)  # one column to the right
    along_row = np.linalg.solve(m, iop[3:] * row_spacing)  # one row down
    steps = np.stack([start, along_col, along_row])
    if not np.allclose(steps, np.round(steps), atol=1e-2):
        raise DicomSeriesError(f"slice {ds.SOPInstanceUID}: its pixels are not voxel centres of the scan's grid")
    start, along_col, along_row = (np.round(v).astype(np.int64) for v in steps)
    rows, cols = int(ds.Rows), int(ds.Columns)
    r = np.arange(rows)[None, :, None]
    c = np.arange(cols)[None, None, :]
    idx = start[:, None, None] + along_col[:, None, None] * c + along_row[:, None, None] * r
    lo, hi = idx.reshape(3, -1).min(1), idx.reshape(3, -1).max(1)
    if (lo < 0).any() or (hi >= np.asarray(scan.shape)).any():
        raise DicomSeriesError(f"slice {ds.SOPInstanceUID}: lies outside the scan's grid")
    return idx


def frames_of(volume: np.ndarray, scan: Scan, datasets: list) -> np.ndarray:
    """``(N, Rows, Columns)``: ``volume`` (on ``scan``'s grid) cut along each source slice, in ``datasets`` order."""
    out = []
    for ds in datasets:
        i, j, k = frame_indices(ds, scan)
        out.append(volume[i, j, k])
    return np.stack(out)


@dataclass
class SeriesIndex:
    """The DICOM series under some folders (searched recursively), by SeriesInstanceUID; read on demand."""

    folders: list[Path] = field(default_factory=list)
    _series: dict[str, DicomSeries] | None = None
    _scans: dict[str, Scan] = field(default_factory=dict)

    def _build(self) -> dict[str, DicomSeries]:
        if self._series is None:
            self._series = {}
            for root in self.folders:
                for here, dirs, files in os.walk(root):
                    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                    if any(is_dicom_file(Path(here) / f) for f in files if not f.startswith(".")):
                        for s in list_series(Path(here)):
                            self._series.setdefault(s.uid, s)
        return self._series

    def scan(self, series_uid: str, what: Path) -> Scan:
        """The scan of series ``series_uid`` (its grid and source), read once. ``what`` names the referring file.

        Raises :class:`MedfcnError` when the series is not under the folders given, or cannot be read.
        """
        from medfcn.data.reader import read_scan

        if series_uid in self._scans:
            return self._scans[series_uid]
        series = self._build().get(series_uid)
        if series is None:
            where = ", ".join(str(f) for f in self.folders) or "none given"
            raise MedfcnError(
                f"{what}: references DICOM series {series_uid}, which is not under the --series folder(s) "
                f"({where}); give the folder holding that series with --series DIR"
            )
        if series.error:
            raise DicomSeriesError(series.error)
        scan = read_scan(series.folder, series_uid=series_uid)
        self._scans[series_uid] = scan
        return scan

    def __contains__(self, series_uid: object) -> bool:
        """Whether series ``series_uid`` is under the folders."""
        return series_uid in self._build()

    def case_of(self, series_uid: str) -> str | None:
        """The case name ``medfcn segment`` gives the series (its folder's name, ``FOLDER_N`` for several)."""
        from medfcn.data.discovery import find_cases

        series = self._build().get(series_uid)
        if series is None:
            return None
        try:
            cases = find_cases(series.folder)
        except MedfcnError:
            return None
        names = [c.case for c in cases if c.series_uid == series_uid and c.path == series.folder]
        return names[0] if names else None
