"""Finding the cases in what a user names on the command line: files, folders, DICOM series.

Rules:

- a file is one case, named after the file without its extension (``t1.nii.gz`` -> ``t1``);
- a folder is searched recursively: image files by extension, and in each sub-folder the DICOM series it holds;
- a folder holding one DICOM series gives one case named after the folder; several series give
  ``FOLDER_1``, ``FOLDER_2``, ... in a stable order (SeriesNumber, then SeriesInstanceUID);
- cases are ordered stably (by path); two cases with the same name are told apart by their parent folder.

>>> from medfcn.discovery import case_name
>>> case_name("scans/brain1_image.nrrd")
'brain1_image'
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from medfcn.dicom import is_dicom_file, list_series
from medfcn.errors import NoScansError
from medfcn.filenames import SCAN_SUFFIXES, strip_suffix

__all__ = ["CaseSpec", "find_cases", "case_name"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaseSpec:
    """One case to process: the file or DICOM folder, its case name and, for DICOM, its series.

    ``error`` holds why a DICOM series found in a folder cannot be read (the batch reports it as failed).
    """

    path: Path
    case: str
    series_uid: str | None = None
    error: str | None = None


def case_name(path: str | Path) -> str:
    """The case name of a scan file or DICOM folder: its name without a scan extension."""
    return strip_suffix(Path(path).name)


def _is_scan_file(path: Path) -> bool:
    return path.name.lower().endswith(SCAN_SUFFIXES) and not path.name.startswith(".")


def _series_cases(folder: Path) -> list[CaseSpec]:
    series = list_series(folder)  # a broken series is a failed case of its own; it does not hide the others
    if len(series) == 1:
        return [CaseSpec(folder, folder.name, series[0].uid, series[0].error)]
    return [CaseSpec(folder, f"{folder.name}_{i}", s.uid, s.error) for i, s in enumerate(series, 1)]


def _cases_in_folder(root: Path) -> list[CaseSpec]:
    cases: list[CaseSpec] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        here = Path(folder)
        paths = [here / f for f in sorted(files)]
        cases += [CaseSpec(p, case_name(p)) for p in paths if _is_scan_file(p)]
        if any(not _is_scan_file(p) and not p.name.startswith(".") and is_dicom_file(p) for p in paths):
            cases += _series_cases(here)
    return cases


def _disambiguate(cases: list[CaseSpec]) -> list[CaseSpec]:
    counts: dict[str, int] = {}
    for c in cases:
        counts[c.case] = counts.get(c.case, 0) + 1
    out, seen = [], set()
    for c in cases:
        name = c.case
        if counts[name] > 1:
            name = f"{c.path.parent.name}_{name}" if c.path.parent.name else name
        base, k = name, 2
        while name in seen:
            name, k = f"{base}_{k}", k + 1
        seen.add(name)
        out.append(CaseSpec(c.path, name, c.series_uid, c.error) if name != c.case else c)
    return out


def find_cases(inputs: str | Path | list[str | Path]) -> list[CaseSpec]:
    """The cases named by ``inputs`` (files and folders, in any mix), in a stable order.

    A file given explicitly is always a case, whatever its extension (reading it reports what is wrong).

    Raises:
        NoScansError: an input does not exist, or a folder holds no scan.
    """
    if isinstance(inputs, str | Path):
        inputs = [inputs]
    cases: list[CaseSpec] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = _cases_in_folder(path)
            if not found:
                raise NoScansError(
                    f"{path}: no scans found (looked for {', '.join(SCAN_SUFFIXES)} files and DICOM series)"
                )
            cases += found
        elif path.is_file():
            cases.append(CaseSpec(path, case_name(path)))
        else:
            raise NoScansError(f"{path}: no such file or folder")
    return _disambiguate(cases)
