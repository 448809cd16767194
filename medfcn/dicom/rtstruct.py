"""RT Structure Sets: a label map as planar contours on the slices of its source DICOM series, and back.

Contours and their filling, the convention both sides share (pixel centres, even-odd fill), live in
:mod:`medfcn.dicom.contours`.

Writing (:func:`write_rtstruct`): built with pydicom, one ROI per foreground label (ROI number = label id, its code
in the RT ROI Identification Code Sequence), every contour referencing its source slice; the Patient, General
Study and Frame of Reference attributes copied from the source (empty where the source lacks a Type 2 one), so
``dciodvfy`` reports no error the source does not have itself. Reading (:func:`read_rtstruct`): each ROI filled on
its referenced series' grid, value = ROI number (the highest where ROIs overlap); an ROI or contour that cannot be
put on that grid as it says (see :func:`read_rtstruct`) refuses the file, never a silently empty or merged label.
"""

from __future__ import annotations

import logging
from collections.abc import MutableSequence
from datetime import datetime
from pathlib import Path

import numpy as np

from medfcn.data.scan import Scan
from medfcn.data.writer import FileSet, atomic_write
from medfcn.dicom.contours import fill_contours, mask_contours
from medfcn.dicom.refs import (
    RTSTRUCT_SOP_CLASS,
    SeriesIndex,
    frame_indices,
    frames_of,
    headers_by_uid,
    series_referenced_by,
    source_datasets,
)
from medfcn.dicom.seg import RTSTRUCT_SERIES_NUMBER, Algorithm, Segment
from medfcn.errors import MedfcnError

__all__ = ["mask_contours", "fill_contours", "write_rtstruct", "read_rtstruct"]

log = logging.getLogger(__name__)

_COLORS = [(255, 99, 71), (65, 105, 225), (50, 205, 50), (255, 215, 0), (186, 85, 211), (0, 206, 209)]
_STUDY_ROOT = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management, the class RT objects use to reference a study


# --- writing ---------------------------------------------------------------------------------------------------


def _to_patient(ds, pts: np.ndarray) -> np.ndarray:
    """``(K, 3)`` LPS mm of ``(col, row)`` pixel coordinates of source slice ``ds``."""
    iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
    ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    return ipp + np.outer(pts[:, 0] * col_spacing, iop[:3]) + np.outer(pts[:, 1] * row_spacing, iop[3:])


def _to_pixels(ds, xyz: np.ndarray) -> np.ndarray:
    """The inverse of :func:`_to_patient`: ``(K, 2)`` ``(col, row)`` of LPS points on slice ``ds``."""
    iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
    ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    d = xyz - ipp
    return np.stack([d @ iop[:3] / col_spacing, d @ iop[3:] / row_spacing], axis=1)


def _ds_number(v: float) -> str:
    text = f"{v:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _ref(ds):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    return item


def _code_item(code):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
    return item


_STUDY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
)
"""What an RTSTRUCT copies from its source series: the patient and the study."""


def _dataset(datasets: list, segments: list[Segment], algorithm: Algorithm):
    """The RTSTRUCT dataset, ROIs described but without contours (``ContourSequence`` empty)."""
    src = datasets[0]
    ds = _structure_set(src, algorithm)
    ds.ReferencedFrameOfReferenceSequence = _referenced_frame(datasets)
    _add_rois(ds, src, segments, algorithm)
    return ds


def _structure_set(src, algorithm: Algorithm):
    """The file meta, patient, study, series and structure set modules of a new RTSTRUCT of ``src``'s study."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    now = datetime.now()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = getattr(src, "SpecificCharacterSet", "ISO_IR 100")
    ds.SOPClassUID, ds.SOPInstanceUID = RTSTRUCT_SOP_CLASS, meta.MediaStorageSOPInstanceUID
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    for keyword in _STUDY_KEYWORDS:
        if keyword in src:
            setattr(ds, keyword, src[keyword].value)
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "RTSTRUCT", generate_uid(), RTSTRUCT_SERIES_NUMBER
    ds.SeriesDescription = f"medfcn {algorithm.name}"[:64]
    ds.OperatorsName = ""
    ds.Manufacturer, ds.ManufacturerModelName = "medfcn", algorithm.name[:64]
    ds.SoftwareVersions = algorithm.medfcn_version
    ds.FrameOfReferenceUID = src.FrameOfReferenceUID
    ds.PositionReferenceIndicator = getattr(src, "PositionReferenceIndicator", "")
    ds.StructureSetLabel = "MEDFCN"
    ds.StructureSetName = algorithm.name[:64]
    ds.StructureSetDate, ds.StructureSetTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    return ds


def _referenced_frame(datasets: list):
    """ReferencedFrameOfReferenceSequence: the frame of reference, study and series, and every source image."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    src = datasets[0]
    series_item = Dataset()
    series_item.SeriesInstanceUID = src.SeriesInstanceUID
    series_item.ContourImageSequence = Sequence([_ref(d) for d in datasets])
    study_item = Dataset()
    study_item.ReferencedSOPClassUID, study_item.ReferencedSOPInstanceUID = _STUDY_ROOT, src.StudyInstanceUID
    study_item.RTReferencedSeriesSequence = Sequence([series_item])
    frame_item = Dataset()
    frame_item.FrameOfReferenceUID = src.FrameOfReferenceUID
    frame_item.RTReferencedStudySequence = Sequence([study_item])
    return Sequence([frame_item])


def _add_rois(ds, src, segments: list[Segment], algorithm: Algorithm) -> None:
    """One ROI, observation and (empty) contour item per segment, in segment order."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds.StructureSetROISequence, ds.ROIContourSequence, ds.RTROIObservationsSequence = Sequence(), Sequence(), Sequence()
    described = f"{algorithm.name} {algorithm.sha256[:16]} medfcn {algorithm.medfcn_version}"[:64]
    for n, seg in enumerate(segments):
        roi = Dataset()
        roi.ROINumber, roi.ReferencedFrameOfReferenceUID = seg.number, src.FrameOfReferenceUID
        roi.ROIName, roi.ROIGenerationAlgorithm = seg.name[:64], "AUTOMATIC"
        roi.ROIGenerationDescription = described
        ds.StructureSetROISequence.append(roi)
        obs = Dataset()
        obs.ObservationNumber, obs.ReferencedROINumber = seg.number, seg.number
        obs.RTROIInterpretedType, obs.ROIInterpreter = "ORGAN", ""
        obs.RTROIIdentificationCodeSequence = Sequence([_code_item(seg.type)])
        ds.RTROIObservationsSequence.append(obs)
        contour = Dataset()
        contour.ReferencedROINumber = seg.number
        contour.ROIDisplayColor = list(_COLORS[n % len(_COLORS)])
        contour.ContourSequence = Sequence()
        ds.ROIContourSequence.append(contour)


def write_rtstruct(
    labels: np.ndarray,
    scan: Scan,
    path: str | Path,
    *,
    segments: list[Segment],
    into: FileSet | None = None,
    algorithm: Algorithm | None = None,
) -> Path:
    """Write ``labels`` (X, Y, Z, on ``scan``'s grid) as an RT Structure Set on the series ``scan`` was read from.

    Raises: as :func:`medfcn.dicom.seg.write_seg`.
    """
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    path = Path(path)
    algorithm = algorithm or Algorithm()
    datasets = source_datasets(scan)
    frames = frames_of(np.asarray(labels), scan, datasets)
    ds = _dataset(datasets, segments, algorithm)
    for seg, roi in zip(segments, ds.ROIContourSequence, strict=True):
        number = 0
        for src, frame in zip(datasets, frames, strict=True):
            for pts in mask_contours(frame == seg.number):
                number += 1
                item = Dataset()
                item.ContourNumber = number
                item.ContourImageSequence = Sequence([_ref(src)])
                item.ContourGeometricType = "CLOSED_PLANAR"
                xyz = _to_patient(src, pts)
                item.NumberOfContourPoints = len(xyz)
                item.ContourData = [_ds_number(v) for v in xyz.ravel()]
                roi.ContourSequence.append(item)
        if not number:
            del roi.ContourSequence  # Type 3: an ROI the model did not find has no contour

    def save(tmp: Path) -> None:
        pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
        pydicom.dcmread(tmp)  # read back whole before it takes the final name

    return atomic_write(path, save, into=into)


# --- reading ---------------------------------------------------------------------------------------------------


def read_rtstruct(path: str | Path, series: SeriesIndex) -> Scan:
    """An RT Structure Set as a label map on its referenced series' grid (value: ROI number).

    Raises :class:`MedfcnError` for an unreadable or damaged file, no or several referenced series, a series not in
    ``series``; ROI numbers outside 1-65535 or repeated, an ROI on another Frame of Reference than the series', a
    contour of an ROI the structure set does not describe; a contour on no slice of the series, off the plane of
    the slice it references, or wholly outside its slice; contour points that are not finite numbers or more than a
    slice can hold (:func:`_contour_points`).
    """
    import pydicom

    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
        refs = series_referenced_by(ds)
    except Exception as e:  # pydicom raises many types for a damaged file
        raise MedfcnError(f"{path}: not a readable RT Structure Set ({type(e).__name__}: {str(e)[:120]})") from None
    if len(refs) != 1:
        raise MedfcnError(f"{path}: references {len(refs)} image series; medfcn reads structure sets of one series")
    scan = series.scan(refs.pop(), path)
    by_uid = headers_by_uid(scan)
    try:
        return scan.with_array(_labels(ds, path, scan, by_uid))
    except MedfcnError:
        raise
    except Exception as e:  # pydicom parses an element when it is first used: a damaged one raises its own type
        raise MedfcnError(f"{path}: a damaged RT Structure Set ({type(e).__name__}: {str(e)[:120]})") from None


def _labels(ds, path: Path, scan: Scan, by_uid: dict) -> np.ndarray:
    """The label map ``(X, Y, Z)`` of structure set ``ds`` on ``scan``'s grid (uint8, or uint16 for ROI numbers
    above 255)."""
    _check_rois(ds, path, {str(getattr(d, "FrameOfReferenceUID", "")) for d in by_uid.values()})
    planes = _Planes(by_uid)
    limit = _max_points(by_uid)
    labels = np.zeros(scan.shape, np.uint16)
    for roi in getattr(ds, "ROIContourSequence", []):
        number = int(roi.ReferencedROINumber)
        per_slice: dict[str, list[np.ndarray]] = {}
        for n, item in enumerate(getattr(roi, "ContourSequence", []), 1):
            where = f"ROI {number}, contour {n}"
            uid, pixels = planes.place(item, _contour_points(item, path, where, limit), path, where)
            per_slice.setdefault(uid, []).append(pixels)
        for uid, contours in per_slice.items():
            src = by_uid[uid]
            try:
                on = fill_contours(contours, (int(src.Rows), int(src.Columns)))
            except MedfcnError as e:
                raise MedfcnError(f"{path}: ROI {number} on slice {uid}: {e}") from None
            i, j, k = frame_indices(src, scan)
            labels[i[on], j[on], k[on]] = np.maximum(labels[i[on], j[on], k[on]], number)
    return labels.astype(np.uint8) if labels.max() <= 255 else labels


def _check_rois(ds, path: Path, frames: set[str]) -> None:
    """Refuse ROI numbers a label map cannot hold (outside 1-65535), repeated ones (two ROIs would merge into one
    label), ROIs on another Frame of Reference than the series' (``frames``), and contours of undescribed ROIs; and a
    structure set without one of the standard's three Type 1 sequences of ROIs, or whose items hold an item tag (a
    damaged length or tag swallows what follows it: what was lost cannot be scored as empty)."""
    names = ("StructureSetROISequence", "ROIContourSequence", "RTROIObservationsSequence")
    for name in names:
        if not ds.get(name):
            raise MedfcnError(f"{path}: no {name} (the standard requires it): damaged or incomplete; not read")
    items = [item for name in names for item in ds[name].value]
    items += [c for roi in ds.ROIContourSequence for c in roi.get("ContourSequence", [])]
    if any(tag.group == 0xFFFE for item in items for tag in item.keys()):  # tags only: no value is parsed
        raise MedfcnError(f"{path}: an item holds an item tag (a damaged length swallowed what follows); not read")
    try:
        described = [
            (int(r.ROINumber), str(r.get("ReferencedFrameOfReferenceUID", ""))) for r in ds.StructureSetROISequence
        ]
        drawn = [int(c.ReferencedROINumber) for c in getattr(ds, "ROIContourSequence", [])]
    except (AttributeError, TypeError, ValueError) as e:
        raise MedfcnError(f"{path}: its ROIs are not described ({e})") from None
    numbers = [n for n, _ in described]
    bad = sorted({n for n in numbers + drawn if not 1 <= n <= 65535})
    if bad:
        raise MedfcnError(f"{path}: ROI number(s) {bad}: a label map holds ROIs numbered 1 to 65535")
    twice = sorted({n for n in numbers if numbers.count(n) > 1} | {n for n in drawn if drawn.count(n) > 1})
    if twice:
        raise MedfcnError(f"{path}: ROI number(s) {twice} used by more than one ROI; they would merge into one label")
    foreign = sorted({n for n, frame in described if frame and frame not in frames})
    if foreign:
        raise MedfcnError(f"{path}: ROI(s) {foreign} lie on another Frame of Reference than their image series")
    unknown = sorted(set(drawn) - set(numbers))
    if unknown:
        raise MedfcnError(f"{path}: contours of ROI(s) {unknown}, which its StructureSetROISequence does not describe")


def _max_points(by_uid: dict) -> int:
    """The most points a contour on one of these slices can need: one per pixel corner, ``(Rows+1) x (Columns+1)``
    (a contour through every pixel boundary of the largest slice); more is not a contour of this series."""
    return max((int(d.Rows) + 1) * (int(d.Columns) + 1) for d in by_uid.values())


def _contour_points(item, path: Path, where: str, limit: int) -> np.ndarray:
    """``(K, 3)`` LPS mm of one contour item, parsed from its raw text (pydicom's per-value parsing of a
    million-point contour takes minutes and gigabytes). Raises :class:`MedfcnError` naming ``path`` and ``where``
    for values that are not finite numbers, a count that is not a multiple of 3, or more than ``limit`` points."""
    element = item.get_item(0x30060050) if "ContourData" in item else None
    if element is None:
        raise MedfcnError(f"{path}: {where} has no ContourData")
    raw = element.value
    try:
        if isinstance(raw, bytes):  # not yet parsed by pydicom: its DS text, values separated by backslashes
            n = raw.count(b"\\") + 1
            if n > 3 * limit:
                raise MedfcnError(f"{path}: {where} has {n // 3:,} points, more than the {limit:,} a slice can hold")
            values = np.array(raw.replace(b"\\", b" ").split(), dtype=np.float64)
        else:
            values = np.asarray([float(v) for v in (raw if isinstance(raw, MutableSequence | tuple) else [raw])])
    except ValueError as e:
        raise MedfcnError(f"{path}: {where}: ContourData is not a list of numbers ({e})") from None
    if values.size % 3 or values.size == 0:
        raise MedfcnError(f"{path}: {where}: ContourData holds {values.size} numbers, not x, y, z triples")
    if values.size > 3 * limit:
        raise MedfcnError(f"{path}: {where} has {values.size // 3:,} points, more than the {limit:,} a slice can hold")
    if not np.all(np.isfinite(values)):
        raise MedfcnError(f"{path}: {where}: ContourData holds NaN or infinite coordinates")
    return values.reshape(-1, 3)


class _Planes:
    """The slices of a series as planes: which slice a contour lies on, that it does lie on it, and where.

    A contour lies on a slice when every point is within a quarter of the slice spacing of its plane (at least
    0.01 mm, at most 0.5 mm: writers round coordinates) and some point falls inside the slice's pixels."""

    def __init__(self, by_uid: dict) -> None:
        self.geometry = {}  # uid -> (origin, along a row, down a column, normal, column mm, row mm, rows, columns)
        for uid, d in by_uid.items():
            iop = np.asarray([float(v) for v in d.ImageOrientationPatient])
            row_mm, col_mm = (float(v) for v in d.PixelSpacing)
            origin = np.asarray([float(v) for v in d.ImagePositionPatient])
            normal = np.cross(iop[:3], iop[3:])
            self.geometry[uid] = (origin, iop[:3], iop[3:], normal, col_mm, row_mm, int(d.Rows), int(d.Columns))
        normal = next(iter(self.geometry.values()))[3]
        depths = np.sort([g[0] @ normal for g in self.geometry.values()])
        gaps = np.diff(depths)[np.diff(depths) > 1e-3]
        self.tolerance = float(np.clip(0.25 * gaps.min(), 0.01, 0.5)) if gaps.size else 0.5

    def _off_plane(self, uid: str, xyz: np.ndarray) -> float:
        origin, _, _, normal, *_ = self.geometry[uid]
        return float(np.abs((xyz - origin) @ normal).max())

    def place(self, item, xyz: np.ndarray, path: Path, where: str) -> tuple[str, np.ndarray]:
        """``(SOP instance, (K, 2) (col, row) pixel coordinates)`` of ``item``'s contour ``xyz``: on the slice it
        references, else the slice whose plane holds its points. Raises :class:`MedfcnError` for a contour off that
        plane or wholly outside the slice."""
        uid = None
        for ref in getattr(item, "ContourImageSequence", []):
            if str(ref.get("ReferencedSOPInstanceUID", "")) in self.geometry:
                uid = str(ref.ReferencedSOPInstanceUID)
                break
        if uid is None:
            uid = next((u for u in self.geometry if self._off_plane(u, xyz) <= self.tolerance), None)
            if uid is None:
                raise MedfcnError(f"{path}: {where} lies on no slice of its referenced series")
        off = self._off_plane(uid, xyz)
        if off > self.tolerance:
            raise MedfcnError(f"{path}: {where} lies {off:.3g} mm off the plane of the slice it references ({uid})")
        origin, along_row, down_col, _, col_mm, row_mm, rows, cols = self.geometry[uid]
        d = xyz - origin
        px = np.stack([d @ along_row / col_mm, d @ down_col / row_mm], axis=1)
        if px[:, 0].max() < -0.5 or px[:, 0].min() > cols - 0.5 or px[:, 1].max() < -0.5 or px[:, 1].min() > rows - 0.5:
            raise MedfcnError(f"{path}: {where} lies wholly outside its slice ({uid})")
        return uid, px
