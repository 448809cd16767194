"""A DICOM SEG's frame table, checked whole before any pixel is decoded: what each frame is, where it lies, which
segment and source slice it belongs to, and its pixels as masks.

A SEG is a file anyone can damage or forge, and the readers (:func:`medfcn.dicom.seg.read_seg`, on its series;
:func:`medfcn.dicom.seg.read_seg_alone`, on its own frames) score or display what it holds. So :func:`read_frames`
refuses, with one :class:`MedfcnError` line naming the file and the fault, a SEG whose

- segments are misnumbered: a SegmentNumber below 1 or repeated, a frame referencing a segment the SegmentSequence
  does not describe;
- frame table disagrees with its pixels: NumberOfFrames not the number of per-frame items, PixelData not the
  length of Rows x Columns x NumberOfFrames at BitsAllocated (1 for BINARY, 8 for FRACTIONAL), more voxels than
  ``MEDFCN_MAX_VOXELS`` (:mod:`medfcn.data.limits`), a type other than BINARY or FRACTIONAL;
- frames repeat: two frames of one segment derived from one source slice (a damaged segment number moves a frame
  to another segment's place; :func:`medfcn.dicom.seg.read_seg_alone` refuses two on one plane, once it knows the
  planes);
- geometry is unusable: PixelSpacing not two positive finite numbers, an orientation that is not two unit vectors at
  right angles, positions that are not finite.

**Fractional segments, one rule**: a FRACTIONAL frame's stored values are fractions of its MaximumFractionalValue
(the standard's scaling: value / MaximumFractionalValue is the fraction of the pixel occupied, or the
probability); a pixel belongs to the segment when that fraction is at least 0.5 (:data:`FRACTION_IN`). Every
reader of SEGs (evaluation, the napari reader, with or without the series) takes its masks from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medfcn.data.limits import check_voxels
from medfcn.errors import MedfcnError

__all__ = ["FRACTION_IN", "SegFrames", "segread", "read_frames"]

FRACTION_IN = 0.5
"""A FRACTIONAL SEG's pixel is in its segment when value / MaximumFractionalValue >= this."""

_BITS = {"BINARY": 1, "FRACTIONAL": 8}
_NATIVE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")  # uncompressed transfer syntaxes


@dataclass(frozen=True)
class SegFrames:
    """A SEG's frames, checked: ``masks`` ``(F, Rows, Columns)`` bool (the fractional rule applied), and per frame
    its segment ``numbers``, ``positions`` ``(F, 3)`` (ImagePositionPatient, LPS mm; NaN where not stated) and
    ``sources`` (the SOPInstanceUID of the slice it was derived from, or None); ``orientation`` ``(6,)`` and
    ``spacing`` ``(row spacing, column spacing)`` mm, shared by every frame."""

    masks: np.ndarray
    numbers: list[int]
    positions: np.ndarray
    sources: list[str | None]
    orientation: np.ndarray
    spacing: tuple[float, float]
    rows: int
    columns: int


def segread(path: Path):
    """The SEG at ``path`` through highdicom, once pydicom has read it whole and its frame count is that of its
    per-frame items (highdicom builds tables over NumberOfFrames: 2^31 - 1 of them take minutes). Raises
    :class:`MedfcnError` for a file it cannot take."""
    import highdicom as hd
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        ds.walk(lambda dataset, element: None)  # every element parsed now: a damaged one raises here, not mid-read
        frames, items = int(ds.get("NumberOfFrames", 1) or 0), len(ds.get("PerFrameFunctionalGroupsSequence", []))
    except Exception as e:  # pydicom raises many types for a damaged file
        raise MedfcnError(f"{path}: not a readable DICOM SEG ({type(e).__name__}: {str(e)[:120]})") from None
    if frames != items:
        raise MedfcnError(f"{path}: NumberOfFrames is {frames} but {items} frames are described (per-frame items)")
    try:
        return hd.seg.Segmentation.from_dataset(ds, copy=False)
    except Exception as e:  # highdicom raises many types for a dataset it cannot take
        raise MedfcnError(f"{path}: not a readable DICOM SEG ({type(e).__name__}: {str(e)[:120]})") from None


def _frame_item(seg, name: str, k: int):
    """Frame ``k``'s functional group item ``name`` (its own, else the shared one); ``None`` when neither has it."""
    here = getattr(seg.PerFrameFunctionalGroupsSequence[k], name, None)
    if not here and "SharedFunctionalGroupsSequence" in seg and len(seg.SharedFunctionalGroupsSequence):
        here = getattr(seg.SharedFunctionalGroupsSequence[0], name, None)
    return here[0] if here else None


def _source_of(seg, k: int) -> str | None:
    item = _frame_item(seg, "DerivationImageSequence", k)
    for source in getattr(item, "SourceImageSequence", None) or []:
        if "ReferencedSOPInstanceUID" in source:
            return str(source.ReferencedSOPInstanceUID)
    return None


def _table(seg, path: Path) -> tuple[int, int, int, str]:
    """``(frames, rows, columns, type)`` once the header's promise about the pixels has been checked."""
    kind = str(seg.get("SegmentationType", ""))
    if kind not in _BITS:
        raise MedfcnError(f"{path}: SegmentationType {kind or 'missing'}; medfcn reads BINARY and FRACTIONAL SEGs")
    try:
        rows, cols, bits = int(seg.Rows), int(seg.Columns), int(seg.BitsAllocated)
        frames = int(seg.get("NumberOfFrames", 1) or 0)
        items = len(seg.PerFrameFunctionalGroupsSequence)
    except (AttributeError, TypeError, ValueError) as e:
        raise MedfcnError(f"{path}: its pixel header is incomplete ({e})") from None
    if bits != _BITS[kind]:
        raise MedfcnError(f"{path}: a {kind} SEG with BitsAllocated {bits} (the standard says {_BITS[kind]})")
    if min(rows, cols, frames) < 1:
        raise MedfcnError(f"{path}: {rows} x {cols} pixels in {frames} frames: no pixels")
    if frames != items:
        raise MedfcnError(f"{path}: NumberOfFrames is {frames} but {items} frames are described (per-frame items)")
    check_voxels(path, (cols, rows, frames))
    if "PixelData" not in seg:
        raise MedfcnError(f"{path}: no PixelData")
    if str(seg.file_meta.get("TransferSyntaxUID", _NATIVE[1])) in _NATIVE:
        need = -(-rows * cols * frames * bits // 8)
        have = len(seg.PixelData)
        if have not in (need, need + need % 2):  # a value of odd length is padded to even
            need_text = f"{frames} frames of {rows} x {cols} need {need:,}"
            raise MedfcnError(f"{path}: PixelData holds {have:,} bytes; {need_text}, not more, not less")
    return frames, rows, cols, kind


def _segment_numbers(seg, path: Path) -> set[int]:
    try:
        numbers = [int(s.SegmentNumber) for s in seg.SegmentSequence]
    except (AttributeError, TypeError, ValueError) as e:
        raise MedfcnError(f"{path}: its segments are not described ({e})") from None
    if not numbers or min(numbers) < 1 or len(set(numbers)) != len(numbers):
        raise MedfcnError(f"{path}: SegmentNumbers {numbers}: they must be 1, 2, ... each once")
    return set(numbers)


def _geometry(seg, path: Path, n: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float], list[int]]:
    """``(positions (F, 3), orientation (6,), spacing, segment numbers (F,))``; positions NaN where not stated."""
    try:
        numbers = [int(_frame_item(seg, "SegmentIdentificationSequence", k).ReferencedSegmentNumber) for k in range(n)]
        iop = np.asarray([float(v) for v in _frame_item(seg, "PlaneOrientationSequence", 0).ImageOrientationPatient])
        spacing = tuple(float(v) for v in _frame_item(seg, "PixelMeasuresSequence", 0).PixelSpacing)
        ipp = np.full((n, 3), np.nan)
        for k in range(n):
            plane = _frame_item(seg, "PlanePositionSequence", k)
            if plane is not None and "ImagePositionPatient" in plane:
                ipp[k] = [float(v) for v in plane.ImagePositionPatient]
    except (AttributeError, IndexError, ValueError, TypeError) as e:
        raise MedfcnError(f"{path}: its frames do not state their segment and geometry ({e})") from None
    if len(spacing) != 2 or not all(np.isfinite(spacing)) or min(spacing) < 1e-4 or max(spacing) > 1e4:
        raise MedfcnError(f"{path}: PixelSpacing {list(spacing)}: not two pixel sizes in mm (1e-4 to 1e4)")
    a, b = (iop[:3], iop[3:]) if iop.size == 6 else (iop, iop)
    if iop.size != 6 or not np.all(np.isfinite(iop)) or not np.allclose([a @ a, b @ b, a @ b], [1, 1, 0], atol=1e-3):
        raise MedfcnError(f"{path}: ImageOrientationPatient {iop.tolist()}: not two unit vectors at right angles")
    if np.isinf(ipp).any():
        raise MedfcnError(f"{path}: a frame's ImagePositionPatient is not finite")
    return ipp, iop, (spacing[0], spacing[1]), numbers


def _masks(seg, path: Path, frames: int, rows: int, cols: int, kind: str) -> np.ndarray:
    try:
        pixels = np.asarray(seg.pixel_array).reshape(frames, rows, cols)
    except Exception as e:  # pydicom's decoders raise many types for damaged pixel data
        raise MedfcnError(f"{path}: its pixels cannot be decoded ({type(e).__name__}: {str(e)[:120]})") from None
    if kind == "BINARY":
        if pixels.max(initial=0) > 1:
            raise MedfcnError(f"{path}: a BINARY SEG with pixel values above 1")
        return pixels.astype(bool)
    try:
        top = float(seg.MaximumFractionalValue)
    except (AttributeError, TypeError, ValueError):
        top = 0.0
    if not 1 <= top <= 255:
        raise MedfcnError(f"{path}: a FRACTIONAL SEG with MaximumFractionalValue {seg.get('MaximumFractionalValue')}")
    if pixels.max(initial=0) > top:
        raise MedfcnError(f"{path}: pixel values above its MaximumFractionalValue {top:g}")
    return pixels >= FRACTION_IN * top


def _check_unique(path: Path, numbers: list[int], sources: list[str | None]) -> None:
    """Refuse two frames of one segment derived from one source slice."""
    seen: dict[tuple[int, str], int] = {}
    for k, (number, source) in enumerate(zip(numbers, sources, strict=True)):
        if source is None:
            continue
        if (number, source) in seen:
            raise MedfcnError(
                f"{path}: frames {seen[number, source] + 1} and {k + 1} are both segment {number} "
                f"derived from one slice ({source})"
            )
        seen[number, source] = k


def read_frames(path: str | Path, seg=None) -> SegFrames:
    """The checked frames of the SEG at ``path`` (``seg``: it, already read). Raises :class:`MedfcnError`."""
    path = Path(path)
    seg = segread(path) if seg is None else seg
    n, rows, cols, kind = _table(seg, path)
    described = _segment_numbers(seg, path)
    ipp, iop, spacing, numbers = _geometry(seg, path, n)
    unknown = sorted(set(numbers) - described)
    if unknown:
        raise MedfcnError(f"{path}: frames reference segment(s) {unknown}, which its SegmentSequence does not describe")
    sources = [_source_of(seg, k) for k in range(n)]
    _check_unique(path, numbers, sources)
    masks = _masks(seg, path, n, rows, cols, kind)
    return SegFrames(masks, numbers, ipp, sources, iop, spacing, rows, cols)
