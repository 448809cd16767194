"""DICOM Segmentation objects (highdicom): a label map written for the DICOM series it was computed on, and back.

Writing (:func:`write_seg`): one binary segment per foreground label of the model card, numbered as the label ids,
with its coded category and type (:mod:`medfcn.dicom.codes`), a display colour, how it was made (AUTOMATIC as the
model wrote it; SEMIAUTOMATIC once a person edited the model's label, MANUAL for a label the model does not make) and
the algorithm that made it (model name, the model file's sha256 as version, medfcn's version as source). One frame
per segment and source slice, empty ones included, each referencing its source SOP instance, so the SEG alone holds
the series' grid; the spacing between slices it states is measured from the slices' positions, never copied from
the source's SpacingBetweenSlices tag. The SEG joins the source's study and Frame of Reference. Written atomically.

Reading (:func:`read_seg`): the frames are put back on the referenced series' grid (found with a
:class:`medfcn.dicom.refs.SeriesIndex`) through each source slice's own geometry: a label map ``(X, Y, Z)`` whose
value at a voxel is the number of the segment covering it (the highest, where segments overlap).
:func:`read_seg_alone` reads a SEG without its series, on the grid its own frames' positions span.

Example::

    write_seg(labels, scan, "out/case.seg.dcm", segments=segments_of(model.card.labels, model.card.label_codes))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

import numpy as np

from medfcn import __version__
from medfcn.data.limits import check_voxels
from medfcn.data.scan import Scan
from medfcn.data.writer import FileSet, atomic_write
from medfcn.dicom.codes import Code, code_for
from medfcn.dicom.refs import SeriesIndex, frame_indices, frames_of, headers_by_uid, source_datasets
from medfcn.dicom.seg_frames import read_frames, segread
from medfcn.errors import MedfcnError, OutputError

__all__ = [
    "Generation",
    "Segment",
    "Algorithm",
    "segments_of",
    "edited_segments",
    "algorithm_of",
    "display_rgb",
    "write_seg",
    "read_seg",
    "read_seg_alone",
]

log = logging.getLogger(__name__)

SEG_SERIES_NUMBER = 9901
RTSTRUCT_SERIES_NUMBER = 9902


class Generation(StrEnum):
    """How a segment was made (DICOM's SegmentAlgorithmType / ROIGenerationAlgorithm)."""

    AUTOMATIC = "AUTOMATIC"  # a model's output as it came out
    SEMIAUTOMATIC = "SEMIAUTOMATIC"  # a model's output edited by a person
    MANUAL = "MANUAL"  # drawn by a person (a label the model does not make)


@dataclass(frozen=True)
class Segment:
    """One label as a DICOM segment or ROI: its number (the label id), name, codes and how it was made."""

    number: int
    name: str
    category: Code
    type: Code
    generation: Generation = Generation.AUTOMATIC


@dataclass(frozen=True)
class Algorithm:
    """What made the labels: the model's name, its file's sha256 and the medfcn version."""

    name: str = "medfcn"
    sha256: str = ""
    medfcn_version: str = __version__


def segments_of(labels: dict[str, int], label_codes: dict | None = None) -> list[Segment]:
    """The segments of a model card's ``labels`` (``{name: id}``, background 0 left out) with their codes."""
    out = []
    for name, number in sorted(labels.items(), key=lambda kv: kv[1]):
        if number > 0:
            codes = code_for(name, label_codes or {})
            out.append(Segment(int(number), name, codes["category"], codes["type"]))
    return out


def edited_segments(segments: list[Segment], model_labels: set[int] | None) -> list[Segment]:
    """``segments`` of a label map a person edited: a label the model makes (its id in ``model_labels``) becomes
    SEMIAUTOMATIC, any other MANUAL; every one MANUAL when no model made the map (``model_labels`` None)."""
    made = model_labels or set()
    return [
        replace(s, generation=Generation.SEMIAUTOMATIC if s.number in made else Generation.MANUAL) for s in segments
    ]


# Okabe & Ito's colour-blind-safe palette (orange, sky blue, bluish green, yellow, blue, vermillion, reddish purple):
# the display colour a written segment recommends, by its order among the segments.
_PALETTE = ((230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0), (204, 121, 167))


def display_rgb(number: int) -> tuple[int, int, int]:
    """The RGB (0-255) a segment numbered ``number`` (1, 2, ...) is recommended to be shown in."""
    return _PALETTE[(int(number) - 1) % len(_PALETTE)]


def algorithm_of(model) -> Algorithm:
    """The :class:`Algorithm` of a :class:`medfcn.model.checkpoint.Model`."""
    return Algorithm(model.name, model.sha256 or "")


def _check_labels(labels: np.ndarray, segments: list[Segment], path: Path) -> None:
    present = {int(v) for v in np.unique(labels)} - {0}
    unknown = present - {s.number for s in segments}
    if unknown:
        raise MedfcnError(f"{path}: label value(s) {sorted(unknown)} have no segment description (label names)")


def _descriptions(segments: list[Segment], algorithm: Algorithm) -> list:
    """highdicom's SegmentDescription of each segment, all naming ``algorithm`` as their maker."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    ident = hd.AlgorithmIdentificationSequence(
        name=algorithm.name[:64],
        family=codes.cid7162.ArtificialIntelligence,
        version=(algorithm.sha256 or "unknown")[:64],
        source=f"medfcn {algorithm.medfcn_version}"[:64],
    )
    return [
        hd.seg.SegmentDescription(
            segment_number=s.number,
            segment_label=s.name[:64],
            segmented_property_category=hd.sr.CodedConcept(*s.category),
            segmented_property_type=hd.sr.CodedConcept(*s.type),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues(s.generation.value),
            algorithm_identification=None if s.generation == Generation.MANUAL else ident,
            display_color=hd.color.CIELabColor.from_rgb(*display_rgb(s.number)),
        )
        for s in segments
    ]


def _spacing_from_positions(datasets: list) -> None:
    """Set the source headers' SpacingBetweenSlices (in memory) to the spacing measured from the slices'
    ImagePositionPatient along their normal, or remove it when the positions are not evenly spaced: highdicom
    copies the tag into the SEG, readers rebuild the volume from it, and a source's tag can lie."""
    normal = np.cross(*np.asarray(datasets[0].ImageOrientationPatient, float).reshape(2, 3))
    steps = np.diff(np.sort([float(np.asarray(ds.ImagePositionPatient, float) @ normal) for ds in datasets]))
    between = float(np.median(steps)) if steps.size else 0.0
    even = between > 0 and np.allclose(steps, between, rtol=1e-3, atol=1e-3)
    stated = datasets[0].get("SpacingBetweenSlices")
    if stated is not None and (not even or abs(float(stated) - between) > 1e-3):
        log.info(
            "the source states SpacingBetweenSlices %s; its slice positions are %s",
            stated,
            between if even else "uneven",
        )
    for ds in datasets:
        if even:
            ds.SpacingBetweenSlices = f"{between:.6g}"
        elif "SpacingBetweenSlices" in ds:
            del ds.SpacingBetweenSlices


def write_seg(
    labels: np.ndarray,
    scan: Scan,
    path: str | Path,
    *,
    segments: list[Segment],
    algorithm: Algorithm | None = None,
    into: FileSet | None = None,
) -> Path:
    """Write ``labels`` (X, Y, Z, on ``scan``'s grid) as a DICOM SEG referencing the series ``scan`` was read from
    (``into``: renamed into place with the rest of that unit, see :class:`medfcn.data.writer.FileSet`).

    Raises:
        UnsupportedScanError: ``scan`` was not read from a DICOM series.
        DicomSeriesError: the series lacks a FrameOfReferenceUID, or is gone.
        MedfcnError: a label value has no segment.  OutputError: the file cannot be written.
    """
    import highdicom as hd

    path = Path(path)
    algorithm = algorithm or Algorithm()
    _check_labels(labels, segments, path)
    datasets = source_datasets(scan)
    _spacing_from_positions(datasets)
    frames = frames_of(np.asarray(labels), scan, datasets).astype(np.uint16 if labels.max() > 255 else np.uint8)
    descriptions = _descriptions(segments, algorithm)
    edited = any(s.generation != Generation.AUTOMATIC for s in segments)
    what = f"{algorithm.name}, edited" if edited else algorithm.name
    try:
        seg = hd.seg.Segmentation(
            source_images=datasets,
            pixel_array=frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=SEG_SERIES_NUMBER,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="medfcn",
            manufacturer_model_name=algorithm.name[:64],
            software_versions=algorithm.medfcn_version,
            device_serial_number="0",
            series_description=f"medfcn {what}"[:64],
            content_label="MEDFCN",
            content_description=f"{what} segmentation"[:64],
            omit_empty_frames=False,  # every source slice: the SEG alone then carries the series' whole grid
        )
    except (ValueError, TypeError, AttributeError) as e:
        where = f"series {scan.series_uid} in {scan.source}"
        raise OutputError(f"{path}: cannot build a DICOM SEG for {where}: {e}") from None

    def save(tmp: Path) -> None:
        import pydicom

        seg.save_as(tmp)
        pydicom.dcmread(tmp)  # read back whole before it takes the final name

    return atomic_write(path, save, into=into)


def read_seg(path: str | Path, series: SeriesIndex) -> Scan:
    """A DICOM SEG as a label map on its referenced series' grid (``case``: the series' case name).

    Every frame must be derived from a slice of that series as found (:mod:`medfcn.dicom.seg_frames` checks the
    rest): a frame whose slice is missing (a partial copy of the series, frames of another) refuses the SEG instead
    of dropping its voxels.

    Raises :class:`MedfcnError` for an unreadable or damaged SEG, a referenced series not in ``series``, or frames
    that do not lie on it.
    """
    path = Path(path)
    seg = segread(path)
    refs = [str(s.SeriesInstanceUID) for s in getattr(seg, "ReferencedSeriesSequence", [])]
    if len(refs) != 1:
        raise MedfcnError(f"{path}: references {len(refs)} series; medfcn reads SEGs of one source series")
    frames = read_frames(path, seg)
    scan = series.scan(refs[0], path)
    by_uid = headers_by_uid(scan)
    missing = [u for u in frames.sources if u not in by_uid]
    if missing:
        raise MedfcnError(
            f"{path}: {len(missing)} of its {len(frames.sources)} frames are derived from no slice of series "
            f"{refs[0]} as found in {scan.source} ({len(by_uid)} slices: a partial copy?); not read"
        )
    labels = np.zeros(scan.shape, np.uint16)
    where: dict[str, np.ndarray] = {}
    for mask, number, uid, ipp in zip(frames.masks, frames.numbers, frames.sources, frames.positions, strict=True):
        src = by_uid[uid]
        _check_on_source(path, frames, src, ipp)
        if uid not in where:
            where[uid] = frame_indices(src, scan)
        i, j, k = where[uid]
        labels[i[mask], j[mask], k[mask]] = np.maximum(labels[i[mask], j[mask], k[mask]], number)
    return scan.with_array(labels.astype(np.uint8) if labels.max() <= 255 else labels)


def _check_on_source(path: Path, frames, src, ipp: np.ndarray) -> None:
    """Refuse a frame whose pixels, orientation, spacing or stated position are not those of its source slice."""
    uid = src.SOPInstanceUID
    if (int(src.Rows), int(src.Columns)) != (frames.rows, frames.columns):
        raise MedfcnError(f"{path}: its {frames.rows} x {frames.columns} frames do not fit slice {uid}'s pixels")
    same = np.allclose(frames.orientation, np.asarray(src.ImageOrientationPatient, float), atol=1e-3)
    same &= np.allclose(frames.spacing, np.asarray(src.PixelSpacing, float), rtol=1e-3, atol=1e-3)
    if not np.isnan(ipp).any():
        same &= np.allclose(ipp, np.asarray(src.ImagePositionPatient, float), atol=1e-2)
    if not same:
        raise MedfcnError(f"{path}: a frame's position, orientation or pixel spacing is not that of slice {uid}")


_SAME_PLANE_MM = 1e-4  # frames whose positions differ less along the normal lie on one plane (a writer states one
# plane's frames with one position; 1e-4 mm is float noise in its decimal strings, far below any slice gap)
_MIN_STEP_MM = 0.01  # planes closer than this are not slices of one grid


def _planes(path: Path, depth: np.ndarray) -> tuple[np.ndarray, float]:
    """``(plane index of each frame, step mm)`` of frames at ``depth`` mm along the normal: the step is the smallest
    gap between distinct planes, and every gap must be a whole number of steps (gaps of several steps: empty planes
    a writer left out). Raises :class:`MedfcnError` for irregular spacing."""
    order = np.sort(depth)
    gaps = np.diff(order)
    gaps = gaps[gaps > _SAME_PLANE_MM]
    if not gaps.size:
        return np.zeros(depth.shape, np.int64), 0.0
    step = float(gaps.min())
    if step < _MIN_STEP_MM:
        raise MedfcnError(f"{path}: two of its frames lie {step:.3g} mm apart: not slices of one grid")
    offset = (depth - order[0]) / step
    index = np.round(offset)
    if not np.allclose(index, offset, atol=0.02):
        raise MedfcnError(
            f"{path}: its frames are irregularly spaced (gaps {np.unique(np.round(gaps, 3))[:6].tolist()} mm are "
            f"not whole multiples of {step:.4g} mm); open it with its series"
        )
    return index.astype(np.int64), step


def _one_frame_per_plane(path: Path, numbers: list[int], index: np.ndarray) -> None:
    """Refuse two frames of one segment on one plane (a damaged segment number moves a frame to another's place)."""
    seen: dict[tuple[int, int], int] = {}
    for k, key in enumerate(zip(numbers, index.tolist(), strict=True)):
        if key in seen:
            raise MedfcnError(f"{path}: frames {seen[key] + 1} and {k + 1} are both segment {key[0]} on one plane")
        seen[key] = k


def _thickness(seg) -> float:
    """The slice thickness a SEG of one plane states (its pixel measures), else 1 mm."""
    try:
        measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        value = float(measures.get("SliceThickness") or seg.get("SliceThickness") or 1.0)
    except (AttributeError, IndexError, TypeError, ValueError):
        return 1.0
    return value if np.isfinite(value) and 1e-3 <= value <= 1e3 else 1.0


def read_seg_alone(path: str | Path) -> Scan:
    """A DICOM SEG on the grid its own frames span, without its source series: a label map ``(X, Y, Z)`` (X along
    a row, Y down the columns, Z along the slice normal), value = segment number (the highest where they overlap).

    The grid comes from the frames' ImagePositionPatient, ImageOrientationPatient and PixelSpacing only (never
    SpacingBetweenSlices): the planes are the distinct frame positions, which must lie on one line along the
    normal, evenly spaced (a gap of whole steps is filled with empty planes: frames a writer left out as empty;
    see :func:`_planes`). The grid's voxels are bounded by ``MEDFCN_MAX_VOXELS`` before it is allocated.
    ``source`` is the SEG file, ``case`` its name without ``.seg.dcm``/``.dcm``; ``series_uid`` stays None (it is
    not an image series).

    Raises :class:`MedfcnError` for an unreadable or damaged SEG or frames that lie on no regular grid.
    """
    path = Path(path)
    seg = segread(path)
    frames = read_frames(path, seg)
    ipp, iop = frames.positions, frames.orientation
    if np.isnan(ipp).any():
        raise MedfcnError(f"{path}: a frame does not state its position; open it with its series")
    along_row, down_col = iop[:3], iop[3:]
    normal = np.cross(along_row, down_col)
    depth = ipp @ normal
    index, step = _planes(path, depth)
    _one_frame_per_plane(path, frames.numbers, index)
    step = step or _thickness(seg)
    origin = ipp[int(np.argmin(depth))]
    off_line = ipp - origin - np.outer(depth - depth.min(), normal)
    if not np.allclose(off_line, 0, atol=1e-2):
        raise MedfcnError(f"{path}: its frames are not planes of one grid (shifted within their plane)")
    shape = (frames.columns, frames.rows, int(index.max()) + 1)
    check_voxels(path, shape)
    labels = np.zeros(shape, np.uint8 if max(frames.numbers, default=0) <= 255 else np.uint16)
    for mask, k, number in zip(frames.masks, index, frames.numbers, strict=True):
        on = mask.T  # (columns, rows): X along a row, Y down the columns
        labels[:, :, k][on] = np.maximum(labels[:, :, k][on], number)
    row_mm, col_mm = frames.spacing
    case = path.name[: -len(".seg.dcm")] if path.name.lower().endswith(".seg.dcm") else path.stem
    return Scan(
        array=labels,
        spacing=(col_mm, row_mm, step),
        origin=tuple(float(v) for v in origin),
        direction=np.stack([along_row, down_col, normal], axis=1),
        source=path,
        case=case,
    )
