"""What ``medfcn segment --format`` writes for a case: the NIfTI label map, a DICOM SEG, an RTSTRUCT, in any mix.

=============  ==========================  ============================================================
format         file                        written for
=============  ==========================  ============================================================
``nifti``      ``OUT/<case>.nii.gz``       every case (the default)
``dicom-seg``  ``OUT/<case>.seg.dcm``      cases read from a DICOM series (:mod:`medfcn.dicom.seg`)
``rtstruct``   ``OUT/<case>.rtstruct.dcm`` cases read from a DICOM series (:mod:`medfcn.dicom.rtstruct`)
=============  ==========================  ============================================================

Besides the label map, a case may have (:class:`OutputOptions`, the same for every case of a batch):

- ``--masked-image``: ``OUT/<case>.masked.nii.gz``, the input with everything outside the labels set to zero, on the
  same grid with the same voxel type and scaling (:mod:`medfcn.data.masked`);
- ``--border MM``: the labels' border moved out (or in, for a negative distance) by MM mm before any file is written
  (:mod:`medfcn.inference.border`);
- ``--statistics``: each label's volume and the input's intensities inside it in the case's manifest entry, and
  ``OUT/statistics.csv`` for the batch (:mod:`medfcn.data.statistics`);
- ``--skip-flagged``: no file at all for a case its quality verdict flags for review (:mod:`medfcn.inference.verdict`;
  its entry is ``flagged``, with the verdict); by default every case is written and its verdict recorded.

Where each file goes is the batch's :class:`Layout`: :data:`FLAT` (the table above) unless a caller gives another
(:mod:`medfcn.batch.bids` names them as a BIDS derivatives dataset, with JSON sidecars written in the same unit).

A case that is not a DICOM series fails with a one-line reason when a DICOM format is asked for (a SEG or RTSTRUCT
references the SOP instances of its source; medfcn does not invent a series to reference). Every file is written
atomically; a case is done (and skipped on a rerun) only when all its files are complete.

>>> parse_formats("nifti,dicom-seg")
(<OutputFormat.NIFTI: 'nifti'>, <OutputFormat.DICOM_SEG: 'dicom-seg'>)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from medfcn.choices import choices_of, parse_choice
from medfcn.data.filenames import MASKED_SUFFIX  # OUT/<case>.masked.nii.gz in the flat layout
from medfcn.data.scan import Scan
from medfcn.errors import MedfcnError, OutputError, UnsupportedScanError, UsageError

if TYPE_CHECKING:
    from medfcn.data.discovery import CaseSpec

__all__ = [
    "OutputFormat",
    "OutputOptions",
    "PLAIN",
    "MASKED_IMAGE",
    "MASKED_SUFFIX",
    "Layout",
    "FlatLayout",
    "FLAT",
    "parse_formats",
    "output_files",
    "needs_dicom",
    "check_case",
    "write_outputs",
]

log = logging.getLogger(__name__)


class OutputFormat(StrEnum):
    NIFTI = "nifti"
    DICOM_SEG = "dicom-seg"
    RTSTRUCT = "rtstruct"


SUFFIXES = {OutputFormat.NIFTI: ".nii.gz", OutputFormat.DICOM_SEG: ".seg.dcm", OutputFormat.RTSTRUCT: ".rtstruct.dcm"}


MASKED_IMAGE = "masked-image"  # the key of the masked image among a case's files (the formats' keys are their values)
_MOST_MM = 100.0  # a border moved further than this is a typing mistake, not a brain mask


@dataclass(frozen=True)
class OutputOptions:
    """What a batch writes for every case besides its label maps (see the module docstring).

    Raises :class:`UsageError` for a border that is not a finite number of mm within +-100.
    """

    masked_image: bool = False
    border_mm: float = 0.0
    statistics: bool = False
    skip_flagged: bool = False  # a case the quality verdict flags for review writes nothing (medfcn.inference.verdict)

    def __post_init__(self) -> None:
        if not (isinstance(self.border_mm, int | float) and math.isfinite(self.border_mm)):
            raise UsageError(f"--border: give a distance in mm, got {self.border_mm!r}")
        if abs(self.border_mm) > _MOST_MM:
            raise UsageError(f"--border: {self.border_mm} mm is more than {_MOST_MM:g} mm; give a distance in mm")
        object.__setattr__(self, "border_mm", float(self.border_mm))

    @property
    def needs_voxels(self) -> bool:
        """Whether the scan's voxels are still needed once it is segmented (statistics, masked image)."""
        return self.masked_image or self.statistics


PLAIN = OutputOptions()  # the label maps alone


class Layout(Protocol):
    """Where a case's files go (``files``, the label map first) and the texts written beside them (``texts``:
    ``{key of files: text}``, e.g. JSON sidecars, which may carry the case's ``quality`` verdict), as one unit with
    the rest of the case's outputs."""

    def files(
        self, out_dir: Path, spec: CaseSpec, formats: tuple[OutputFormat, ...], options: OutputOptions
    ) -> dict[str, Path]: ...

    def texts(
        self, files: Mapping[str, Path], spec: CaseSpec, model, quality: Mapping | None = None
    ) -> dict[str, str]: ...


@dataclass(frozen=True)
class FlatLayout:
    """``OUT/<case><suffix>`` for every format, ``OUT/<case>.masked.nii.gz`` for the masked image; no texts."""

    def files(
        self, out_dir: Path, spec: CaseSpec, formats: tuple[OutputFormat, ...], options: OutputOptions
    ) -> dict[str, Path]:
        files: dict[str, Path] = {str(k): v for k, v in output_files(out_dir, spec.case, formats).items()}
        if options.masked_image:
            files[MASKED_IMAGE] = Path(out_dir) / f"{spec.case}{MASKED_SUFFIX}"
        return files

    def texts(self, files: Mapping[str, Path], spec: CaseSpec, model, quality: Mapping | None = None) -> dict[str, str]:
        return {}


FLAT = FlatLayout()


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


def write_outputs(
    labels: np.ndarray,
    scan: Scan,
    files: Mapping[str, Path],
    model=None,
    *,
    texts: Mapping[str, str] | None = None,
    warnings: list[str] | None = None,
) -> list[Path]:
    """Write ``labels`` (X, Y, Z, on ``scan``'s grid) in each format of ``files`` (keyed by format, or
    :data:`MASKED_IMAGE` for the masked image), and each text of ``texts`` to the file of its key, as one unit;
    returns the paths. What is noticed on the way (a masked image that could not keep its scaling) is appended to
    ``warnings``.

    Every file is written and read back under its temporary name first; only when all are does each replace its
    final name (:class:`medfcn.data.writer.FileSet`). If any fails, no final name changes: the files of an
    earlier run stay as they were, all of them.

    ``model``: the :class:`medfcn.model.checkpoint.Model` (label names, codes, name and sha256 for the DICOM objects).
    Raises a one-line :class:`medfcn.errors.MedfcnError` naming the file (:class:`OutputError` for what a writer
    raised that is not one).
    """
    from medfcn.data.masked import write_masked_image
    from medfcn.data.writer import FileSet, atomic_write_text, write_labels

    texts = texts or {}
    with FileSet() as unit:
        for key, path in files.items():
            try:
                if key in texts:
                    atomic_write_text(path, texts[key], into=unit)
                elif key == MASKED_IMAGE:
                    noticed = write_masked_image(scan, labels != 0, path, into=unit)
                    if warnings is not None:
                        warnings.extend(noticed)
                elif key == OutputFormat.NIFTI:
                    write_labels(labels, scan, path, into=unit)
                else:
                    _write_dicom(OutputFormat(key), labels, scan, path, model, unit)
            except MedfcnError:
                raise
            except Exception as e:  # a library's error on a source series it did not expect: name the file
                raise OutputError(f"{path}: cannot write a {key} for {scan.source} ({_first_line(e)})") from None
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
