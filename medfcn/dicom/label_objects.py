"""DICOM SEG and RTSTRUCT files as cases of ``medfcn evaluate``: found, named and read on their series' grid.

- Found: a file given as PRED or REF, or every file under a folder given, whose SOP class is Segmentation Storage
  or RT Structure Set Storage (whatever its name).
- Named: after the series it references, as ``medfcn segment`` names that series' case (its folder's name, or
  ``FOLDER_N`` in a folder of several) when that series is under a ``--series`` folder; else after the file
  (``case.seg.dcm`` -> ``case``). So a hospital's SEG pairs with medfcn's output for the same series.
- Read: rebuilt on the referenced series' grid (:func:`medfcn.dicom.seg.read_seg`,
  :func:`medfcn.dicom.rtstruct.read_rtstruct`); the series must be under a folder given with ``--series``.

In a folder, each case has one label map: a NIfTI/NRRD/MetaImage file first, then a SEG, then an RTSTRUCT.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from medfcn.data.discovery import CaseSpec
from medfcn.data.scan import Scan
from medfcn.dicom.refs import SeriesIndex, dicom_label_kind
from medfcn.errors import MedfcnError

__all__ = ["label_object_cases", "read_label_object"]

log = logging.getLogger(__name__)

_SUFFIXES = (".seg.dcm", ".rtstruct.dcm", ".dcm")
_ORDER = {"seg": 0, "rtstruct": 1}


def _referenced_series(path: Path, kind: str) -> str | None:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if kind == "seg":
            refs = [str(s.SeriesInstanceUID) for s in ds.ReferencedSeriesSequence]
        else:
            refs = [
                str(s.SeriesInstanceUID)
                for f in ds.ReferencedFrameOfReferenceSequence
                for st in getattr(f, "RTReferencedStudySequence", [])
                for s in getattr(st, "RTReferencedSeriesSequence", [])
            ]
    except Exception:  # reading it as a case reports what is wrong
        return None
    return refs[0] if len(set(refs)) == 1 else None


def _file_case(path: Path) -> str:
    low = path.name.lower()
    for suffix in _SUFFIXES:
        if low.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.name


def label_object_cases(path: Path, series: SeriesIndex) -> list[CaseSpec]:
    """The SEG and RTSTRUCT files at ``path`` (a file, or a folder searched recursively) as cases, one per name.

    ``CaseSpec.series_uid`` holds the series each references.
    """
    path = Path(path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = []
        for here, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            files += [Path(here) / n for n in sorted(names) if not n.startswith(".")]
    else:
        return []
    found = [(kind, f) for f in files if (kind := dicom_label_kind(f)) is not None]
    found.sort(key=lambda kf: (_ORDER[kf[0]], str(kf[1])))
    cases: dict[str, CaseSpec] = {}
    for kind, f in found:
        uid = _referenced_series(f, kind)
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
