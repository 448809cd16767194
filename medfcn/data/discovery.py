"""Finding the cases in what a user names on the command line: files, folders, DICOM series.

Rules:

- a file named on the command line is one case, named after the file without its extension
  (``t1.nii.gz`` -> ``t1``);
- a folder is searched recursively for image files (by extension) and DICOM files (by content); a case found in
  it is named after its path **relative to that folder**, with ``_`` between the parts and the extension
  dropped: ``bids/sub-01/anat/T1w.nii.gz`` gives ``sub-01_anat_T1w``. A name therefore never changes when
  other cases are added beside it;
- DICOM files are grouped by SeriesInstanceUID across the whole folder (a series split over several
  sub-folders is one case), named after the deepest folder holding all its files (the folder's own name when
  that is the searched folder itself); a folder holding several series gives ``NAME_1``, ``NAME_2``, ... in a
  stable order (SeriesNumber, then SeriesInstanceUID);
- hidden files and folders are skipped, and so are the folders given as ``exclude`` (a batch's output folder)
  and any sub-folder holding a medfcn ``manifest.json`` (the outputs of an earlier batch): label maps are never
  read back as scans;
- a name that two inputs give (``a/t1.nii.gz`` and ``b/t1.nii.gz`` named separately) is prefixed with its
  input folder's name; characters a terminal would interpret (control characters, escapes) become ``_``;
- names an earlier run gave (``keep``, from a batch's manifest) are kept: a case added later that would take one
  gets another name (a prefix, then ``_2``...), so the outputs already made keep theirs;
- images and label maps (training), predictions and references (evaluation) pair by case name, and only by it:
  :func:`pair_cases` is the one place that pairs them.

>>> from medfcn.data.discovery import case_name
>>> case_name("scans/brain1_image.nrrd")
'brain1_image'
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from medfcn.data.dicom_series import group_series, is_dicom_file
from medfcn.data.filenames import SCAN_SUFFIXES, strip_suffix
from medfcn.errors import MedfcnError, NoScansError, few_names

if TYPE_CHECKING:
    from medfcn.data.scan import Scan

__all__ = [
    "input_key",
    "CaseSpec",
    "Pairing",
    "find_cases",
    "resolve_input",
    "pair_cases",
    "case_name",
    "safe_name",
    "name_fault",
    "is_batch_output",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaseSpec:
    """One case to process: the file or DICOM folder, its case name and, for DICOM, its series.

    ``files`` are a DICOM series' files in slice order (they may lie in several sub-folders of ``path``);
    ``error`` holds why a DICOM series cannot be read (the batch reports it as failed); ``warnings`` what was
    noticed about it (they go into the manifest).
    """

    path: Path
    case: str
    series_uid: str | None = None
    error: str | None = None
    files: tuple[Path, ...] = field(default=(), compare=False)
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def read(self) -> Scan:
        """The case's scan (:func:`medfcn.data.reader.read_scan` of its file or series), named after the case.

        Raises:
            MedfcnError: the series was found broken (``error``), or the file cannot be read (a subclass).
        """
        if self.error:
            raise MedfcnError(self.error)
        from medfcn.data.reader import read_scan  # imports SimpleITK; discovery alone does not

        return read_scan(self.path, series_uid=self.series_uid, case=self.case, files=self.files)

    def read_labels(self) -> Scan:
        """The case as a label map (:func:`medfcn.data.reader.read_label_map`: non-finite values refused).

        Raises:
            MedfcnError: as :meth:`read`, or the map holds NaN or infinite values.
        """
        if self.error:
            raise MedfcnError(self.error)
        from medfcn.data.reader import read_label_map

        return read_label_map(self.path, series_uid=self.series_uid, case=self.case, files=self.files)


def safe_name(name: str) -> str:
    """``name`` with characters that are not printable (control characters, ANSI escapes) replaced by ``_``."""
    return "".join(ch if ch.isprintable() else "_" for ch in name) or "_"


def name_fault(name: str) -> str | None:
    """Why ``name`` cannot be a case name (an output is ``OUT/<name><suffix>``), or ``None`` when it can: it must be
    one non-empty file-name component, not ``.`` or ``..``, without a path separator, NUL or a character a terminal
    would interpret. Names found on disk pass by construction; a name read back from a manifest (which anyone can
    edit) is checked here.

    >>> name_fault("sub-01_T1w") is None, name_fault("../in/colin27"), name_fault("..")
    (True, 'it holds a path separator', 'it is . or ..')
    """
    if not isinstance(name, str) or not name:
        return "it is empty"
    if os.sep in name or (os.altsep and os.altsep in name):
        return "it holds a path separator"
    if name in (".", ".."):
        return "it is . or .."
    if safe_name(name) != name or "\0" in name:
        return "it holds control characters"
    return None


def case_name(path: str | Path) -> str:
    """The case name of a scan file or DICOM folder: its name without a scan extension."""
    path = Path(path)
    return safe_name(strip_suffix(path.name or path.resolve().name))


def _relative_name(path: Path, root: Path) -> str:
    """``sub-01/anat/T1w.nii.gz`` under ``root`` -> ``sub-01_anat_T1w``; ``root`` itself -> its own name."""
    rel = path.relative_to(root)
    if not rel.parts:
        return case_name(root)
    return safe_name("_".join([*rel.parts[:-1], strip_suffix(rel.parts[-1])]))


def is_batch_output(folder: Path) -> bool:
    """Whether ``folder`` holds a medfcn batch manifest (it is the output folder of a ``medfcn segment`` run)."""
    try:
        with open(folder / "manifest.json", encoding="utf-8", errors="replace") as f:
            return '"medfcn_version"' in f.read(4096)
    except OSError:
        return False


def _is_scan_file(path: Path) -> bool:
    return path.name.lower().endswith(SCAN_SUFFIXES) and not path.name.startswith(".") and path.is_file()


def _series_cases(root: Path, files: list[Path]) -> list[CaseSpec]:
    by_folder: dict[Path, list] = {}
    for s in group_series(files):  # a broken series is a failed case of its own; it does not hide the others
        by_folder.setdefault(s.folder, []).append(s)
    cases = []
    for folder, series in by_folder.items():
        name = _relative_name(folder, root)
        for i, s in enumerate(series, 1):
            case = name if len(series) == 1 else f"{name}_{i}"
            cases.append(CaseSpec(folder, case, s.uid, s.error, tuple(s.files), tuple(s.warnings)))
    return cases


def _cases_in_folder(root: Path, exclude: set[Path]) -> list[CaseSpec]:
    cases: list[CaseSpec] = []
    dicom_files: list[Path] = []

    def unreadable(e: OSError) -> None:
        log.warning("%s: cannot be searched (%s); left out", e.filename, e.strerror or e)

    for folder, dirs, files in os.walk(root, onerror=unreadable):
        here = Path(folder)
        kept = []
        for d in sorted(dirs):
            sub = here / d
            if d.startswith("."):
                continue
            if sub.resolve() in exclude or is_batch_output(sub):
                log.info("%s: an output folder of medfcn; its label maps are not read as scans", sub)
                continue
            kept.append(d)
        dirs[:] = kept
        for p in (here / f for f in sorted(files)):
            if _is_scan_file(p):
                cases.append(CaseSpec(p, _relative_name(p, root)))
            elif not p.name.startswith(".") and p.is_file() and (is_dicom_file(p) or p.suffix.lower() == ".dcm"):
                dicom_files.append(p)
    cases += _series_cases(root, dicom_files) if dicom_files else []
    return sorted(cases, key=lambda c: str(c.path))  # stable: series keep their order within a folder


def input_key(path: str | Path, series_uid: str | None) -> tuple[str, str]:
    """What identifies one case's input across runs: its resolved path and series (the key of ``keep``)."""
    try:
        where = str(Path(path).resolve())
    except (RuntimeError, OSError):
        where = str(path)
    return where, series_uid or ""


def _disambiguate(cases: list[tuple[CaseSpec, Path | None]], keep: Mapping[tuple[str, str], str]) -> list[CaseSpec]:
    kept: dict[int, str] = {}  # cases that keep the name an earlier run gave them
    for i, (c, _) in enumerate(cases):
        name = keep.get(input_key(c.path, c.series_uid))
        if name and (fault := name_fault(name)):
            log.warning("%s: the case name %r an earlier run's manifest gives it is not used (%s)", c.path, name, fault)
            continue
        if name and name not in kept.values():
            kept[i] = name
    counts: dict[str, int] = {}
    for i, (c, _) in enumerate(cases):
        if i not in kept:
            counts[c.case] = counts.get(c.case, 0) + 1
    out, seen = [], set(kept.values())
    for i, (c, root) in enumerate(cases):
        name = kept.get(i, c.case)
        if i not in kept:
            if counts[name] > 1 or name in seen:
                parent = root if root is not None else c.path.parent
                name = f"{case_name(parent)}_{name}" if parent.name else name
            base, k = name, 2
            while name in seen:
                name, k = f"{base}_{k}", k + 1
            seen.add(name)
        out.append(CaseSpec(c.path, name, c.series_uid, c.error, c.files, c.warnings) if name != c.case else c)
    return out


@dataclass(frozen=True)
class Pairing:
    """Cases of two sides paired by name: ``(case, first, second)`` in case order, and the names on one side only."""

    pairs: list[tuple[str, CaseSpec, CaseSpec]]
    only_first: list[str]
    only_second: list[str]


def pair_cases(
    first: Sequence[CaseSpec], second: Sequence[CaseSpec], *, sides: tuple[str, str] = ("images", "labels")
) -> Pairing:
    """Pair the cases of ``first`` (images, predictions) with those of ``second`` (label maps, references) by case
    name (:func:`case_name`: the file name without its extension, or the path relative to a searched folder).

    ``sides`` names the two sides in the error messages.

    Raises:
        MedfcnError: a name occurs twice on one side (which of the two is meant is unknown).
        NoScansError: no case pairs.
    """
    for side, specs in zip(sides, (first, second), strict=True):
        seen: dict[str, CaseSpec] = {}
        for c in specs:
            if c.case in seen:
                raise MedfcnError(f"case {c.case} is named twice among the {side} ({seen[c.case].path}, {c.path})")
            seen[c.case] = c
    by_name = {c.case: c for c in second}
    pairs = sorted(((c.case, c, by_name[c.case]) for c in first if c.case in by_name), key=lambda p: p[0])
    paired = {name for name, _, _ in pairs}
    only_first = [c.case for c in first if c.case not in paired]
    only_second = [c.case for c in second if c.case not in paired]
    if not pairs:
        raise NoScansError(
            f"no case names are shared by the {sides[0]} ({len(first)}: {few_names(only_first)}) and the "
            f"{sides[1]} ({len(second)}: {few_names(only_second)}); cases pair by file name without extension"
        )
    return Pairing(pairs, only_first, only_second)


def resolve_input(path: str | Path) -> Path:
    """``path`` resolved (symbolic links followed). Raises :class:`NoScansError` for a loop of symbolic links, which
    ``Path.resolve`` reports as a bare ``RuntimeError`` and ``is_dir``/``is_file`` as nothing at all."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as e:
        raise NoScansError(f"{path}: a loop of symbolic links, not a file or folder ({e})") from None


def find_cases(
    inputs: str | Path | Iterable[str | Path],
    *,
    exclude: Iterable[str | Path] = (),
    keep: Mapping[tuple[str, str], str] | None = None,
) -> list[CaseSpec]:
    """The cases named by ``inputs`` (files and folders, in any mix), in a stable order.

    A file given explicitly is always a case, whatever its extension (reading it reports what is wrong).
    Folders in ``exclude`` (and everything under them) are never searched. ``keep``: ``{input_key: name}`` of an
    earlier run (a batch's manifest): each such input keeps its name, and a case added since that would take it
    gets another, so adding cases never renames the ones already done.

    Raises:
        NoScansError: an input does not exist, or a folder holds no scan.
    """
    if isinstance(inputs, str | Path):
        inputs = [inputs]
    skip = {Path(p).resolve() for p in exclude}
    cases: list[tuple[CaseSpec, Path | None]] = []
    for item in inputs:
        path = Path(item)
        resolve_input(path)
        if path.is_dir():
            found = _cases_in_folder(path, skip)
            if not found:
                raise NoScansError(
                    f"{path}: no scans found (looked for {', '.join(SCAN_SUFFIXES)} files and DICOM series)"
                )
            cases += [(c, path) for c in found]
        elif path.is_file():
            cases.append((CaseSpec(path, case_name(path)), None))
        else:
            raise NoScansError(f"{path}: no such file or folder")
    return _disambiguate(cases, keep or {})
