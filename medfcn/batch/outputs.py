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
from medfcn.errors import MedfcnError, OutputError, UnsupportedScanError, UsageError

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
    """``{format: OUT/<case><suffix>}`` in the formats' order, each a file directly inside ``out_dir``.

    Raises :class:`OutputError` for a case name that would put a file elsewhere (a separator, ``..``, an absolute
    name: see :func:`medfcn.data.discovery.name_fault`), so no output is ever written outside ``out_dir``.
    """
    from medfcn.data.discovery import name_fault

    if fault := name_fault(case):
        raise OutputError(f"{Path(out_dir) / str(case)}: {case!r} cannot be a case name ({fault}); nothing written")
    out = {OutputFormat(f): Path(out_dir) / f"{case}{SUFFIXES[OutputFormat(f)]}" for f in formats}
    for path in out.values():
        if path.parent != Path(out_dir) or path.name in (".", ".."):
            raise OutputError(f"{path}: not a file inside the output folder {out_dir}; nothing written")
    return out


def needs_dicom(formats: Iterable[OutputFormat]) -> bool:
    return any(OutputFormat(f) is not OutputFormat.NIFTI for f in formats)


def check_case(scan: Scan, formats: Iterable[OutputFormat]) -> None:
    """Refuse, before any segmenting, a case the formats asked for cannot be written for: a DICOM format for a case
    not read from DICOM (:class:`UnsupportedScanError`), or a series whose headers lack what a SEG or RTSTRUCT
    references (:class:`~medfcn.errors.DicomSeriesError`, see :func:`medfcn.dicom.refs.source_datasets`)."""
    if not needs_dicom(formats):
        return
    if scan.series_uid is None:
        asked = ", ".join(f.value for f in map(OutputFormat, formats) if f is not OutputFormat.NIFTI)
        raise UnsupportedScanError(
            f"{scan.source}: not a DICOM series, so no {asked} can reference it (use --format nifti for this case)"
        )
    from medfcn.dicom.refs import source_datasets

    source_datasets(scan)


def write_outputs(labels: np.ndarray, scan: Scan, files: dict[OutputFormat, Path], model=None) -> list[Path]:
    """Write ``labels`` (X, Y, Z, on ``scan``'s grid) in each format of ``files`` as one unit; returns the paths.

    Every file is written and read back under its temporary name first; only when all are does each replace its
    final name (:class:`medfcn.data.writer.FileSet`). If any fails, no final name changes: the files of an
    earlier run stay as they were, all of them.

    ``model``: the :class:`medfcn.model.checkpoint.Model` (label names, codes, name and sha256 for the DICOM objects).
    Raises a one-line :class:`medfcn.errors.MedfcnError` naming the file (:class:`OutputError` for what a writer
    raised that is not one).
    """
    from medfcn.data.writer import FileSet, write_labels

    with FileSet() as unit:
        for fmt, path in files.items():
            try:
                if fmt is OutputFormat.NIFTI:
                    write_labels(labels, scan, path, into=unit)
                else:
                    _write_dicom(fmt, labels, scan, path, model, unit)
            except MedfcnError:
                raise
            except Exception as e:  # a library's error on a source series it did not expect: name the file
                raise OutputError(f"{path}: cannot write a {fmt.value} for {scan.source} ({_first_line(e)})") from None
        return unit.commit()


def _write_dicom(fmt: OutputFormat, labels: np.ndarray, scan: Scan, path: Path, model, unit) -> Path:
    from medfcn.dicom.rtstruct import write_rtstruct
    from medfcn.dicom.seg import Algorithm, algorithm_of, segments_of, write_seg

    card_labels = model.card.labels if model is not None else {"background": 0, "brain": 1}
    segments = segments_of(card_labels, model.card.label_codes if model is not None else {})
    algorithm = algorithm_of(model) if model is not None else Algorithm()
    write = write_seg if fmt is OutputFormat.DICOM_SEG else write_rtstruct
    return write(labels, scan, path, segments=segments, algorithm=algorithm, into=unit)


def _first_line(exc: BaseException) -> str:
    """A library's error as its type and the first line of its text (never a traceback), at most 200 characters."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
