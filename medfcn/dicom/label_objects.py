"""DICOM SEG and RTSTRUCT files as cases of ``medfcn evaluate``: found, named and read on their series' grid.

- Found: a file given as PRED or REF, or every file under a folder given, whose SOP class is Segmentation Storage
  or RT Structure Set Storage (whatever its name).
- Named: after the series it references, as ``medfcn segment`` names that series' case (its folder's name, or
  ``FOLDER_N`` in a folder of several) when that series is under a ``--series`` folder; else after the file
  (``case.seg.dcm`` -> ``case``). So a hospital's SEG pairs with medfcn's output for the same series.
- Read: rebuilt on the referenced series' grid (:func:`medfcn.dicom.seg.read_seg`,
  :func:`medfcn.dicom.rtstruct.read_rtstruct`); the series must be under a folder given with ``--series``.

In a folder, each case has one label map: a NIfTI/NRRD/MetaImage file first, then a SEG, then an RTSTRUCT.

For a viewer (:func:`open_label_object`, :func:`label_legend`): a SEG or RTSTRUCT on its series when the series is
at hand, else a SEG on the grid of its own frames (an RTSTRUCT's contours need their series' grid); each label's
name and display colour as the file states them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from medfcn.data.discovery import CaseSpec
from medfcn.data.scan import Scan
from medfcn.dicom.refs import SeriesIndex, dicom_label_kind, series_referenced_by
from medfcn.errors import MedfcnError, SeriesNotFoundError

__all__ = [
    "label_object_cases",
    "read_label_object",
    "label_object_files",
    "referenced_series",
    "open_label_object",
    "LabelLegend",
    "label_legend",
]

log = logging.getLogger(__name__)

_SUFFIXES = (".seg.dcm", ".rtstruct.dcm", ".dcm")
_ORDER = {"seg": 0, "rtstruct": 1}


def referenced_series(path: Path) -> str | None:
    """The SeriesInstanceUID a SEG or RTSTRUCT references (``None``: not one of them, unreadable, or several)."""
    kind = dicom_label_kind(Path(path))
    return _referenced_series(Path(path)) if kind else None


def _referenced_series(path: Path) -> str | None:
    import pydicom

    try:
        refs = series_referenced_by(pydicom.dcmread(path, stop_before_pixels=True))
    except Exception:  # reading it as a case reports what is wrong
        return None
    return refs.pop() if len(refs) == 1 else None


def _file_case(path: Path) -> str:
    low = path.name.lower()
    for suffix in _SUFFIXES:
        if low.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.name


def _label_files(path: Path) -> list[tuple[str, Path]]:
    """``(kind, file)`` of every SEG and RTSTRUCT at ``path`` (a file, or a folder searched recursively)."""
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = []
        for here, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            files += [Path(here) / n for n in sorted(names) if not n.startswith(".")]
    else:
        return []
    return [(kind, f) for f in files if (kind := dicom_label_kind(f)) is not None]


def label_object_files(path: Path) -> list[Path]:
    """Every SEG and RTSTRUCT file at ``path`` (a file, or a folder searched recursively), in name order."""
    return [f for _, f in _label_files(Path(path))]


def label_object_cases(path: Path, series: SeriesIndex) -> list[CaseSpec]:
    """The SEG and RTSTRUCT files at ``path`` (a file, or a folder searched recursively) as cases, one per name.

    ``CaseSpec.series_uid`` holds the series each references.
    """
    found = _label_files(Path(path))
    found.sort(key=lambda kf: (_ORDER[kf[0]], str(kf[1])))
    cases: dict[str, CaseSpec] = {}
    for _, f in found:
        uid = _referenced_series(f)
        name = (series.case_of(uid) if uid else None) or _file_case(f)
        if name in cases:
            log.info("%s: case %s already has a label map (%s); not used", f, name, cases[name].path)
            continue
        cases[name] = CaseSpec(f, name, uid)
    return list(cases.values())


def read_label_object(path: Path, series: SeriesIndex, case: str | None = None) -> Scan:
    """A SEG or RTSTRUCT as a label map on its referenced series' grid. Raises :class:`MedfcnError`."""
    from medfcn.dicom.rtstruct import read_rtstruct
    from medfcn.dicom.seg import read_seg

    kind = dicom_label_kind(path)
    if kind is None:
        raise MedfcnError(f"{path}: not a DICOM SEG or RTSTRUCT")
    scan = (read_seg if kind == "seg" else read_rtstruct)(path, series)
    scan.source, scan.case = Path(path), case or scan.case
    return scan


def open_label_object(path: Path, series: SeriesIndex) -> Scan:
    """A SEG or RTSTRUCT as a label map: on its referenced series' grid when that series is in ``series``
    (``source``, ``case`` and ``series_uid`` those of the series, so it saves back as a SEG of it); otherwise a SEG
    on the grid of its own frames (:func:`medfcn.dicom.seg.read_seg_alone`).

    Raises:
        SeriesNotFoundError: an RTSTRUCT whose series is not in ``series`` (its contours are drawn on that
            series' slices).
        MedfcnError: not a SEG or RTSTRUCT, or unreadable.
    """
    from medfcn.dicom.rtstruct import read_rtstruct
    from medfcn.dicom.seg import read_seg, read_seg_alone

    path = Path(path)
    kind = dicom_label_kind(path)
    if kind is None:
        raise MedfcnError(f"{path}: not a DICOM SEG or RTSTRUCT")
    uid = _referenced_series(path)
    if uid is not None and uid in series:
        return (read_seg if kind == "seg" else read_rtstruct)(path, series)
    if kind == "seg":
        return read_seg_alone(path)
    raise SeriesNotFoundError(
        f"{path}: an RT Structure Set is drawn on the slices of its image series ({uid}), which is not beside it; "
        "open the folder holding both"
    )


@dataclass(frozen=True)
class LabelLegend:
    """One label of a SEG or RTSTRUCT: its name and recommended display colour (RGB 0-255, or None)."""

    name: str
    rgb: tuple[int, int, int] | None = None


def label_legend(path: Path) -> dict[int, LabelLegend]:
    """``{label value: LabelLegend}`` of a SEG (segment number, SegmentLabel, RecommendedDisplayCIELabValue) or an
    RTSTRUCT (ROI number, ROIName, ROIDisplayColor); ``{}`` for other files or when the header cannot be read."""
    import pydicom

    kind = dicom_label_kind(Path(path))
    if kind is None:
        return {}
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if kind == "seg":
            return {int(s.SegmentNumber): LabelLegend(str(s.SegmentLabel), _lab_rgb(s)) for s in ds.SegmentSequence}
        colours = {
            int(c.ReferencedROINumber): tuple(int(v) for v in c.ROIDisplayColor)
            for c in getattr(ds, "ROIContourSequence", [])
            if "ROIDisplayColor" in c
        }
        return {
            int(r.ROINumber): LabelLegend(str(r.ROIName), colours.get(int(r.ROINumber)))
            for r in getattr(ds, "StructureSetROISequence", [])
        }
    except Exception:  # names and colours are a courtesy; reading the labels reports a damaged file
        log.debug("%s: no label names", path, exc_info=True)
        return {}


def _lab_rgb(segment) -> tuple[int, int, int] | None:
    import highdicom as hd

    value = segment.get("RecommendedDisplayCIELabValue")
    return tuple(int(v) for v in hd.color.CIELabColor.from_dicom_value(value).to_rgb(clip=True)) if value else None
