"""RT Structure Sets: a label map as planar contours on the slices of its source DICOM series, and back.

Contours (:func:`mask_contours`): the outline of each 4-connected region of a slice, traced along pixel edges with
the region on its right, then moved half a pixel inwards, so each polygon passes through the centres of the
region's boundary pixels (the convention of OpenCV's ``findContours``, which rt-utils and many planning systems
use). A hole gives a contour of its own, inside its region's. Filling the contours of a slice (:func:`fill_contours`:
even-odd rule, pixels on a contour included) gives back the slice's mask exactly.

Writing (:func:`write_rtstruct`): built with pydicom, one ROI per foreground label (ROI number = label id, its code
in the RT ROI Identification Code Sequence), every contour referencing its source slice; the Patient, General
Study and Frame of Reference attributes copied from the source (empty where the source lacks a Type 2 one), so
``dciodvfy`` reports no error the source does not have itself. Reading (:func:`read_rtstruct`): each ROI filled on
its referenced series' grid, value = ROI number (the highest where ROIs overlap).

One module (just over 400 lines) because writing and reading share one contour convention (pixel centres, even-odd
fill): kept together, a change to one side cannot leave the other reading different masks.
"""

from __future__ import annotations

import logging
from collections.abc import MutableSequence
from datetime import datetime
from pathlib import Path

import numpy as np

from medfcn.data.scan import Scan
from medfcn.data.writer import FileSet, atomic_write
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


# --- contours --------------------------------------------------------------------------------------------------


def _edges(mask: np.ndarray) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """Boundary edges between pixel corners ``(x, y)`` (corner ``(x, y)`` at pixel coordinate ``(x - .5, y - .5)``),
    directed with the foreground on the right (y points down), keyed by start corner."""
    p = np.pad(mask.astype(bool), 1)
    fg = p[1:-1, 1:-1]
    out: dict[tuple[int, int], list[tuple[int, int]]] = {}

    def add(rows, cols, start, end):
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            out.setdefault((c + start[0], r + start[1]), []).append((c + end[0], r + end[1]))

    add(*np.nonzero(fg & ~p[:-2, 1:-1]), (0, 0), (1, 0))  # top edge, going right
    add(*np.nonzero(fg & ~p[1:-1, 2:]), (1, 0), (1, 1))  # right edge, going down
    add(*np.nonzero(fg & ~p[2:, 1:-1]), (1, 1), (0, 1))  # bottom edge, going left
    add(*np.nonzero(fg & ~p[1:-1, :-2]), (0, 1), (0, 0))  # left edge, going up
    return out


def mask_contours(mask: np.ndarray) -> list[np.ndarray]:
    """The contours of a 2-D mask ``(rows, cols)``: each ``(K, 2)`` float ``(col, row)`` pixel coordinates."""
    edges = _edges(mask)
    loops = []
    while edges:
        start = next(iter(edges))
        corners, here, direction = [], start, None
        while True:
            outs = edges.get(here)
            if not outs:
                break
            if len(outs) == 1 or direction is None:
                nxt = outs[0]
            else:  # a corner two regions touch diagonally: turn right, which keeps them apart
                right = (-direction[1], direction[0])
                nxt = next((o for o in outs if (o[0] - here[0], o[1] - here[1]) == right), outs[0])
            outs.remove(nxt)
            if not outs:
                del edges[here]
            step = (nxt[0] - here[0], nxt[1] - here[1])
            if step != direction:
                corners.append((here, direction, step))
            here, direction = nxt, step
            if here == start and start not in edges:
                break
        if corners and corners[0][1] is None:  # the first corner's incoming direction is the loop's last step
            corners[0] = (corners[0][0], direction, corners[0][2])
            if corners[0][1] == corners[0][2]:
                corners.pop(0)
        points = []
        for (x, y), d_in, d_out in corners:  # half a pixel inwards: to the right of both edges
            points.append((x - 0.5 + 0.5 * (-d_in[1] - d_out[1]), y - 0.5 + 0.5 * (d_in[0] + d_out[0])))
        pts = np.asarray(points, float)
        if len(pts) > 1:
            keep = np.any(pts != np.roll(pts, 1, axis=0), axis=1)
            pts = pts[keep] if keep.any() else pts[:1]
        loops.append(pts)
    return loops


def fill_contours(contours: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """A ``(rows, cols)`` mask of the pixels whose centres are inside the contours (even-odd rule) or on one.

    ``contours``: ``(K, 2)`` ``(col, row)`` pixel coordinates, as :func:`mask_contours` gives.
    """
    rows, cols = shape
    out = np.zeros(shape, bool)
    segs = []
    for pts in contours:
        a = np.asarray(pts, float)
        segs.append(np.stack([a, np.roll(a, -1, axis=0)], axis=1))  # (K, 2 ends, xy)
    if not segs:
        return out
    s = np.concatenate(segs)
    x0, y0, x1, y1 = s[:, 0, 0], s[:, 0, 1], s[:, 1, 0], s[:, 1, 1]
    for r in range(max(0, int(np.floor(s[..., 1].min()))), min(rows, int(np.ceil(s[..., 1].max())) + 1)):
        cross = ((y0 <= r) & (r < y1)) | ((y1 <= r) & (r < y0))
        xs = np.sort(x0[cross] + (r - y0[cross]) * (x1[cross] - x0[cross]) / (y1[cross] - y0[cross]))
        for xa, xb in zip(xs[0::2], xs[1::2], strict=False):
            lo, hi = max(0, int(np.ceil(xa - 1e-6))), min(cols - 1, int(np.floor(xb + 1e-6)))
            if lo <= hi:
                out[r, lo : hi + 1] = True
    for (ax, ay), (bx, by) in s:  # pixel centres on a contour: the lattice points of each segment
        if max(abs(v - round(v)) for v in (ax, ay, bx, by)) > 1e-3:
            continue
        ax, ay, bx, by = (int(round(v)) for v in (ax, ay, bx, by))
        n = max(np.gcd(abs(bx - ax), abs(by - ay)), 1)
        for t in range(n + 1):
            x, y = ax + (bx - ax) * t // n, ay + (by - ay) * t // n
            if 0 <= y < rows and 0 <= x < cols:
                out[y, x] = True
    return out


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

    Raises :class:`MedfcnError` for an unreadable file, no or several referenced series, a series not in
    ``series``, a contour on no slice of it, or a contour whose points are not finite numbers or more than a slice
    can hold (:func:`_contour_points`).
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
    normal_of = {u: np.cross(*np.asarray(d.ImageOrientationPatient, float).reshape(2, 3)) for u, d in by_uid.items()}
    labels = np.zeros(scan.shape, np.uint16)
    for roi in getattr(ds, "ROIContourSequence", []):
        number = int(roi.ReferencedROINumber)
        per_slice: dict[str, list[np.ndarray]] = {}
        for n, item in enumerate(getattr(roi, "ContourSequence", []), 1):
            xyz = _contour_points(item, path, f"ROI {number}, contour {n}", _max_points(by_uid))
            uid = _slice_of(item, xyz, by_uid, normal_of, path)
            per_slice.setdefault(uid, []).append(_to_pixels(by_uid[uid], xyz))
        for uid, contours in per_slice.items():
            src = by_uid[uid]
            on = fill_contours(contours, (int(src.Rows), int(src.Columns)))
            i, j, k = frame_indices(src, scan)
            labels[i[on], j[on], k[on]] = np.maximum(labels[i[on], j[on], k[on]], number)
    return scan.with_array(labels.astype(np.uint8) if labels.max() <= 255 else labels)


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


def _slice_of(item, xyz: np.ndarray, by_uid: dict, normal_of: dict, path: Path) -> str:
    """The SOP instance a contour lies on: the one it references, else the slice whose plane holds its points."""
    for ref in getattr(item, "ContourImageSequence", []):
        if str(ref.ReferencedSOPInstanceUID) in by_uid:
            return str(ref.ReferencedSOPInstanceUID)
    for uid, d in by_uid.items():
        n = normal_of[uid]
        if np.allclose((xyz - np.asarray(d.ImagePositionPatient, float)) @ n, 0, atol=1e-2):
            return uid
    raise MedfcnError(f"{path}: a contour lies on no slice of its referenced series")
