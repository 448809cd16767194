"""Seeded damage to DICOM SEG and RTSTRUCT files, read as ``medfcn evaluate`` and the napari reader read them.

The template (:func:`make_objects`): a real DICOM series, two labels on it, and the SEG (highdicom) and RTSTRUCT
medfcn writes for them. One trial damages a copy of one object, seeded, in one of four ways:

- ``bytes``: 1-8 random bytes of its header (for a SEG, everything before PixelData: tags, lengths, the frame table);
- ``tags`` (SEG): one frame-table or pixel-header value set to a random one (a frame's position, segment number or
  source slice; PixelSpacing, Rows, Columns, BitsAllocated, NumberOfFrames, SegmentNumber);
- ``contours`` (RTSTRUCT): one contour's data replaced (random, huge, NaN or text coordinates, a point count that is
  not a multiple of 3), or its ROI number or referenced slice changed;
- ``pixels`` (SEG): a byte of PixelData changed (a whole SEG with other pixels: reading it is right).

Then reads it on its series (:func:`medfcn.dicom.label_objects.read_label_object`, what evaluate scores) and, a SEG,
alone (:func:`medfcn.dicom.seg.read_seg_alone`, what the napari reader shows without the series). Outcomes:

- ``same``: read, the same labels as the undamaged object (the damage hit something that does not matter);
- ``error``: refused with one :class:`~medfcn.errors.MedfcnError` line naming the file;
- ``valid-other``: read with other labels, and the damaged file is a valid object of other content: a pixel of a
  SEG, or a coordinate's digit of a contour, changed (``dciodvfy`` finds no error the undamaged file lacks): no
  reader can tell it from an edit, so this is counted, not failed;
- ``scored-damaged``: on its series, read with other labels though the file is damaged (``dciodvfy`` finds new
  errors): a damaged object that would be scored;
- ``shown-altered``: alone (the napari reader without the series), the same for a damaged SEG;
- ``internal``: another exception escaped; ``hang``: a read took more than :data:`HANG_S` s.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np

from medfcn.errors import MedfcnError

OBJECT_OUTCOMES = ("same", "error", "valid-other", "shown-altered", "scored-damaged", "internal", "hang")
BAD_OBJECT_OUTCOMES = ("scored-damaged", "internal", "hang")
HANG_S = 10.0
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"


def make_objects(folder: Path) -> dict[str, Path]:
    """``{"series": folder, "seg": file, "rtstruct": file}``: a 24 x 24 x 10 series, its SEG and RTSTRUCT."""
    from medfcn.batch.outputs import OutputFormat
    from medfcn.data.reader import read_scan
    from tests.support.dicom import make_series, synthetic_labels, write_all

    series = make_series("lps_shuffled", folder / "in" / "series")
    scan = read_scan(series)
    files = write_all(scan, synthetic_labels(scan), folder / "objects", (OutputFormat.DICOM_SEG, OutputFormat.RTSTRUCT))
    return {"series": series, "seg": files[OutputFormat.DICOM_SEG], "rtstruct": files[OutputFormat.RTSTRUCT]}


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang()


def _timed(read):
    """``(result or exception, seconds)`` of ``read()``, interrupted after :data:`HANG_S` s."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, HANG_S)
    start = time.perf_counter()
    try:
        out = read()
    except Exception as e:  # classified by the caller
        out = e
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    return out, time.perf_counter() - start


def _classify(out, seconds: float, path: Path, expected, grid_too: bool) -> tuple[str, str]:
    if isinstance(out, _Hang) or seconds > HANG_S:
        return "hang", f"{seconds:.1f} s"
    if isinstance(out, MedfcnError):
        text = str(out)
        return ("error", text) if str(path) in text and "\n" not in text else ("internal", f"unnamed: {text}")
    if isinstance(out, Exception):
        return "internal", f"{type(out).__name__}: {str(out)[:200]}"
    same = out.array.shape == expected.array.shape and np.array_equal(out.array, expected.array)
    if grid_too:
        same = same and not out.grid.differences(expected.grid)
    return ("same", "") if same else ("altered", f"{int((out.array != 0).sum())} labelled voxels")


def _seg_edit(ds, rng: np.random.Generator) -> str:
    """Set one frame-table or pixel-header value of a SEG dataset to a random one; what was changed."""
    items = ds.PerFrameFunctionalGroupsSequence
    k = int(rng.integers(len(items)))
    what = int(rng.integers(9))
    big = [0, 1, -1, 7, 255, 65535, 10**6, 2**31 - 1][int(rng.integers(8))]
    if what == 0:
        ipp = [float(v) for v in items[k].PlanePositionSequence[0].ImagePositionPatient]
        ipp[int(rng.integers(3))] += float(rng.choice([1e-3, 0.5, 2.2, 1e4, -1e9]))
        items[k].PlanePositionSequence[0].ImagePositionPatient = [f"{v:.6g}" for v in ipp]
    elif what == 1:
        items[k].SegmentIdentificationSequence[0].ReferencedSegmentNumber = abs(big) % 65536
    elif what == 2:
        source = items[k].DerivationImageSequence[0].SourceImageSequence[0]
        other = items[int(rng.integers(len(items)))].DerivationImageSequence[0].SourceImageSequence[0]
        source.ReferencedSOPInstanceUID = other.ReferencedSOPInstanceUID
    elif what == 3:
        measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        measures.PixelSpacing = [str(rng.choice(["0", "-1.1", "1e-9", "1e9", "nan", "1.2"])), "1.1"]
    elif what in (4, 5):
        setattr(ds, "Rows" if what == 4 else "Columns", abs(big) % 65536)
    elif what == 6:
        ds.BitsAllocated = int(rng.choice([0, 8, 16, 32]))
    elif what == 7:
        ds.NumberOfFrames = abs(big)
    else:
        ds.SegmentSequence[int(rng.integers(len(ds.SegmentSequence)))].SegmentNumber = abs(big) % 65536
    return f"frame {k}, field {what}"


def _rtstruct_edit(ds, rng: np.random.Generator) -> str:
    """Damage one contour, ROI number or referenced slice of an RTSTRUCT dataset; what was changed."""
    rois = [r for r in ds.ROIContourSequence if "ContourSequence" in r]
    roi = rois[int(rng.integers(len(rois)))]
    item = roi.ContourSequence[int(rng.integers(len(roi.ContourSequence)))]
    what = int(rng.integers(7))
    xyz = np.asarray(item.ContourData, float).reshape(-1, 3)
    if what == 0:
        xyz = xyz + rng.normal(0, float(rng.choice([0.3, 5, 50, 1e6, 1e12])), xyz.shape)
        item.ContourData = [f"{v:.6g}" for v in xyz.ravel()]
    elif what == 1:
        item.ContourData = [*item.ContourData][: max(1, len(item.ContourData) - int(rng.integers(1, 3)))]
    elif what == 2:
        values = [f"{v:.6g}" for v in xyz.ravel()]
        values[int(rng.integers(len(values)))] = str(rng.choice(["nan", "inf", "-1e308", "1e400"]))
        item.ContourData = values
    elif what == 3:
        roi.ReferencedROINumber = int(rng.choice([0, -1, 2, 3, 70000]))
    elif what == 4:
        item.ContourImageSequence[0].ReferencedSOPInstanceUID = "1.2.3.4." + str(int(rng.integers(10**6)))
    elif what == 5:
        xyz[:, 2] += float(rng.choice([0.01, 1.0, 2.0, 50.0]))
        item.ContourData = [f"{v:.6g}" for v in xyz.ravel()]
    else:
        ds.StructureSetROISequence[int(rng.integers(len(ds.StructureSetROISequence)))].ROINumber = int(
            rng.choice([0, 1, 2, 65536])
        )
    return f"field {what}"


def object_trial(template: dict[str, Path], kind: str, seed: int, work: Path) -> tuple[str, str]:
    """Damage a copy of ``template[kind]`` (``seg`` or ``rtstruct``) as seed ``seed`` says, read it on its series
    and (a SEG) alone; the worst outcome of the reads (see the module's docstring) and its detail."""
    import pydicom

    from medfcn.dicom.label_objects import read_label_object
    from medfcn.dicom.refs import SeriesIndex
    from medfcn.dicom.seg import read_seg_alone

    rng = np.random.default_rng(seed)
    original = template[kind]
    index = SeriesIndex([template["series"].parent])
    work.mkdir(parents=True, exist_ok=True)
    path = work / original.name
    data = original.read_bytes()
    ways = ("bytes", "tags", "pixels") if kind == "seg" else ("bytes", "contours")
    way = ways[int(rng.integers(len(ways)))]
    if way == "bytes":
        stop = data.find(_PIXEL_DATA_TAG) if kind == "seg" else len(data)
        raw = bytearray(data)
        for _ in range(int(rng.integers(1, 9))):
            raw[int(rng.integers(132, stop))] = int(rng.integers(0, 256))
        path.write_bytes(bytes(raw))
    elif way == "pixels":
        raw = bytearray(data)
        raw[int(rng.integers(data.find(_PIXEL_DATA_TAG) + 12, len(data)))] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(raw))
    else:
        ds = pydicom.dcmread(original)
        (_seg_edit if kind == "seg" else _rtstruct_edit)(ds, rng)
        ds.save_as(path, enforce_file_format=False)
    expected = read_label_object(original, index)
    out, seconds = _timed(lambda: read_label_object(path, index))
    outcome, detail = _classify(out, seconds, path, expected, grid_too=False)
    if outcome == "altered":
        outcome = "valid-other" if _valid(path, original) else "scored-damaged"
    if kind == "seg" and outcome in ("same", "error", "valid-other"):
        alone, seconds = _timed(lambda: read_seg_alone(path))
        second, more = _classify(alone, seconds, path, read_seg_alone(original), grid_too=True)
        if second == "altered":
            second = "valid-other" if _valid(path, original) else "shown-altered"
        if OBJECT_OUTCOMES.index(second) > OBJECT_OUTCOMES.index(outcome):
            outcome, detail = second, f"alone: {more}"
    return outcome, f"{way}: {detail}"


def _valid(path: Path, original: Path) -> bool:
    """Whether ``dciodvfy`` finds no error in ``path`` that it does not find in ``original`` (an independent
    validator's word that the damaged file is still a valid object)."""
    from tests.support.dicom import dciodvfy_errors

    def kinds(p: Path) -> set[str]:
        return {line.split(" - ", 1)[-1].split("<")[0].strip() for line in dciodvfy_errors(p)}

    return not (kinds(path) - kinds(original))
