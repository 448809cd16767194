"""What ``medfcn segment --format`` writes for a case: the NIfTI label map, a DICOM SEG, an RTSTRUCT, in any mix.

=============  ==========================  ============================================================
format         file                        written for
=============  ==========================  ============================================================
``nifti``      ``OUT/<case>.nii.gz``       every case (the default)
``dicom-seg``  ``OUT/<case>.seg.dcm``      cases read from a DICOM series (:mod:`medfcn.dicom.seg`)
``rtstruct``   ``OUT/<case>.rtstruct.dcm`` cases read from a DICOM series (:mod:`medfcn.dicom.rtstruct`)
=============  ==========================  ============================================================

A case that is not a DICOM series fails with a one-line reason when a DICOM format is asked for (a SEG or RTSTRUCT
references the SOP instances of its source; medfcn does not invent a series to reference). Every file is written
atomically; a case is done (and skipped on a rerun) only when all its files are complete.

>>> parse_formats("nifti,dicom-seg")
(<OutputFormat.NIFTI: 'nifti'>, <OutputFormat.DICOM_SEG: 'dicom-seg'>)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path

import numpy as np

from medfcn.choices import choices_of, parse_choice
from medfcn.data.scan import Scan
from medfcn.errors import UnsupportedScanError, UsageError

__all__ = ["OutputFormat", "parse_formats", "output_files", "needs_dicom", "check_case", "write_outputs"]

log = logging.getLogger(__name__)


class OutputFormat(StrEnum):
    NIFTI = "nifti"
    DICOM_SEG = "dicom-seg"
    RTSTRUCT = "rtstruct"


SUFFIXES = {OutputFormat.NIFTI: ".nii.gz", OutputFormat.DICOM_SEG: ".seg.dcm", OutputFormat.RTSTRUCT: ".rtstruct.dcm"}


def parse_formats(value: str | Iterable[str]) -> tuple[OutputFormat, ...]:
    """Formats from ``"nifti,dicom-seg"`` or a list, in the given order, without repeats. Raises UsageError."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[OutputFormat] = []
    for item in (str(i).strip().lower() for i in items):
        fmt = parse_choice(OutputFormat, item, "--format", UsageError)
        if fmt not in out:
            out.append(fmt)
    if not out:
        raise UsageError(f"--format: give one or more of {choices_of(OutputFormat)}, comma-separated")
    return tuple(out)


def output_files(out_dir: str | Path, case: str, formats: Iterable[OutputFormat]) -> dict[OutputFormat, Path]:
    """``{format: OUT/<case><suffix>}`` in the formats' order."""
    return {OutputFormat(f): Path(out_dir) / f"{case}{SUFFIXES[OutputFormat(f)]}" for f in formats}


def needs_dicom(formats: Iterable[OutputFormat]) -> bool:
    return any(OutputFormat(f) is not OutputFormat.NIFTI for f in formats)


def check_case(scan: Scan, formats: Iterable[OutputFormat]) -> None:
    """Raise :class:`UnsupportedScanError` (one line) when a DICOM format is asked for a case not read from DICOM."""
    if needs_dicom(formats) and scan.series_uid is None:
        asked = ", ".join(f.value for f in map(OutputFormat, formats) if f is not OutputFormat.NIFTI)
        raise UnsupportedScanError(
            f"{scan.source}: not a DICOM series, so no {asked} can reference it (use --format nifti for this case)"
        )


def write_outputs(labels: np.ndarray, scan: Scan, files: dict[OutputFormat, Path], model=None) -> list[Path]:
    """Write ``labels`` (X, Y, Z, on ``scan``'s grid) in each format of ``files``; returns the paths written.

    ``model``: the :class:`medfcn.model.checkpoint.Model` (label names, codes, name and sha256 for the DICOM objects).
    Raises what the writers raise (one-line :class:`medfcn.errors.MedfcnError`).
    """
    from medfcn.data.writer import write_labels

    written = []
    for fmt, path in files.items():
        if fmt is OutputFormat.NIFTI:
            written.append(write_labels(labels, scan, path))
            continue
        from medfcn.dicom.rtstruct import write_rtstruct
        from medfcn.dicom.seg import Algorithm, algorithm_of, segments_of, write_seg

        card_labels = model.card.labels if model is not None else {"background": 0, "brain": 1}
        segments = segments_of(card_labels, model.card.label_codes if model is not None else {})
        algorithm = algorithm_of(model) if model is not None else Algorithm()
        write = write_seg if fmt is OutputFormat.DICOM_SEG else write_rtstruct
        written.append(write(labels, scan, path, segments=segments, algorithm=algorithm))
    return written
