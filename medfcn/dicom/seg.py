"""DICOM Segmentation objects (highdicom): a label map written for the DICOM series it was computed on, and back.

Writing (:func:`write_seg`): one binary segment per foreground label of the model card, numbered as the label ids,
with its coded category and type (:mod:`medfcn.dicom.codes`) and the algorithm that made it (model name, the model
file's sha256 as version, medfcn's version as source). Frames are the source slices where a label is present, each
referencing its source SOP instance; the SEG joins the source's study and Frame of Reference. Written atomically.

Reading (:func:`read_seg`): the frames are put back on the referenced series' grid (found with a
:class:`medfcn.dicom.refs.SeriesIndex`) through each source slice's own geometry: a label map ``(X, Y, Z)`` whose
value at a voxel is the number of the segment covering it (the highest, where segments overlap).

Example::

    write_seg(labels, scan, "out/case.seg.dcm", segments=segments_of(model.card.labels, model.card.label_codes))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medfcn import __version__
from medfcn.data.scan import Scan
from medfcn.data.writer import atomic_write
from medfcn.dicom.codes import Code, code_for
from medfcn.dicom.refs import SeriesIndex, frame_indices, frames_of, headers_by_uid, source_datasets
from medfcn.errors import MedfcnError, OutputError

__all__ = ["Segment", "Algorithm", "segments_of", "algorithm_of", "write_seg", "read_seg"]

log = logging.getLogger(__name__)

SEG_SERIES_NUMBER = 9901
RTSTRUCT_SERIES_NUMBER = 9902


@dataclass(frozen=True)
class Segment:
    """One label as a DICOM segment or ROI: its number (the label id), name and codes."""

    number: int
    name: str
    category: Code
    type: Code


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
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=ident,
        )
        for s in segments
    ]


def write_seg(
    labels: np.ndarray, scan: Scan, path: str | Path, *, segments: list[Segment], algorithm: Algorithm | None = None
) -> Path:
    """Write ``labels`` (X, Y, Z, on ``scan``'s grid) as a DICOM SEG referencing the series ``scan`` was read from.

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
    frames = frames_of(np.asarray(labels), scan, datasets).astype(np.uint16 if labels.max() > 255 else np.uint8)
    descriptions = _descriptions(segments, algorithm)
    if not frames.any():  # highdicom needs one frame; an empty result keeps all frames (all zero) instead
        log.info("%s: no label present; the SEG holds empty frames", path)
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
            series_description=f"medfcn {algorithm.name}"[:64],
            content_label="MEDFCN",
            content_description=f"{algorithm.name} segmentation"[:64],
            omit_empty_frames=bool(frames.any()),
        )
    except (ValueError, TypeError, AttributeError) as e:
        raise OutputError(f"{path}: cannot build a DICOM SEG for series {scan.series_uid}: {e}") from None

    def save(tmp: Path) -> None:
        import pydicom

        seg.save_as(tmp)
        pydicom.dcmread(tmp)  # read back whole before it takes the final name

    return atomic_write(path, save)


def read_seg(path: str | Path, series: SeriesIndex) -> Scan:
    """A DICOM SEG as a label map on its referenced series' grid (``case``: the series' case name).

    Raises :class:`MedfcnError` for an unreadable SEG, a referenced series not in ``series``, or frames that do not
    lie on it.
    """
    import highdicom as hd

    path = Path(path)
    try:
        seg = hd.seg.segread(path)
    except Exception as e:  # pydicom and highdicom raise many types for a damaged file
        raise MedfcnError(f"{path}: not a readable DICOM SEG ({type(e).__name__}: {str(e)[:120]})") from None
    refs = [str(s.SeriesInstanceUID) for s in getattr(seg, "ReferencedSeriesSequence", [])]
    if len(refs) != 1:
        raise MedfcnError(f"{path}: references {len(refs)} series; medfcn reads SEGs of one source series")
    scan = series.scan(refs[0], path)
    by_uid = headers_by_uid(scan)
    labels = np.zeros(scan.shape, np.uint16)
    numbers = [int(n) for n in seg.get_segment_numbers()]
    uids = [u for u in (str(x[2]) for x in seg.get_source_image_uids()) if u in by_uid]
    if not uids:
        raise MedfcnError(f"{path}: none of its frames references a slice of series {refs[0]}")
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids,
        segment_numbers=numbers,
        assert_missing_frames_are_empty=True,
        ignore_spatial_locations=True,
    )  # (slices, rows, cols, segments)
    for n_slice, uid in enumerate(uids):
        i, j, k = frame_indices(by_uid[uid], scan)
        for n_seg, number in enumerate(numbers):
            on = pixels[n_slice, :, :, n_seg] > 0
            labels[i[on], j[on], k[on]] = np.maximum(labels[i[on], j[on], k[on]], number)
    return scan.with_array(labels.astype(np.uint8) if labels.max() <= 255 else labels)
