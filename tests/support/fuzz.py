"""Seeded corruption of DICOM slice headers and NIfTI headers, run on the reading layer a batch uses.

One trial: in a clean input folder (a DICOM series, a NIfTI scan and a good scan beside them), overwrite 1-8 random
bytes of one header with random values (seeded), find the cases (:func:`medfcn.data.discovery.find_cases`) and read the
corrupted one (:func:`medfcn.data.reader.read_scan`) as the batch does, then restore the file. The outcome is one of

- ``ok``: read (the bytes changed something harmless, e.g. a name);
- ``error``: refused with a :class:`~medfcn.errors.MedfcnError` (a one-line message naming the file or series);
- ``left-out``: the corrupted file no longer reads as DICOM of that series (the series reads, with a warning, or
  fails for a missing slice);
- ``internal``: any other exception (a bug: the batch would report it, but not with a message a person can act on);
- ``crash``: discovery itself raised, or lost the good scan beside it (the batch would have ended).

Used by ``tests/test_fuzz.py`` (a few hundred trials) and ``benchmarks/bench_fuzz.py`` (thousands).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medfcn.data.discovery import find_cases
from medfcn.data.reader import read_scan
from medfcn.errors import MedfcnError

OUTCOMES = ("ok", "error", "left-out", "internal", "crash")
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"


def make_template(folder: Path, shape: tuple[int, int, int] = (12, 10, 8)) -> Path:
    """A folder with a DICOM series ``series/`` (one file per slice) and ``good.nii.gz``; returns it."""
    import nibabel as nib

    from tests.support.scans import affine_from_codes, head_volume, write_dicom_pydicom

    write_dicom_pydicom(folder / "series", np.round(head_volume(shape)), affine_from_codes("LPS"))
    nib.save(nib.Nifti1Image(head_volume(shape), np.diag([1.0, 1.0, 1.0, 1.0])), folder / "good.nii.gz")
    nib.save(nib.Nifti1Image(head_volume(shape, seed=3), np.diag([1.2, 1.0, 1.5, 1.0])), folder / "scan.nii")
    return folder


def _corrupt(data: bytes, rng: np.random.Generator, start: int, stop: int) -> bytes:
    raw = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        raw[int(rng.integers(start, stop))] = int(rng.integers(0, 256))
    return bytes(raw)


def _outcome(folder: Path, corrupted: Path) -> tuple[str, str]:
    try:
        cases = find_cases(folder)
    except Exception as e:  # discovery must never raise for one bad file beside good ones
        return "crash", f"find_cases: {type(e).__name__}: {e}"
    if "good" not in [c.case for c in cases]:
        return "crash", "the good scan beside it was not found"
    mine = [c for c in cases if corrupted == c.path or corrupted in c.files or corrupted.parent == c.path]
    if not mine:
        return "left-out", "not a case any more"
    outcomes = []
    for spec in mine:  # the other cases' files are untouched: reading them is not the test
        try:
            read_scan(spec.path, series_uid=spec.series_uid, case=spec.case, files=spec.files)
            outcomes.append(("ok", ""))
        except MedfcnError as e:
            outcomes.append(("error", str(e)))
        except Exception as e:
            outcomes.append(("internal", f"{type(e).__name__}: {e}"))
    for worst in ("internal", "error"):
        if any(o == worst for o, _ in outcomes):
            return next((o, d) for o, d in outcomes if o == worst)
    if corrupted.suffix != ".nii" and not any(corrupted in c.files for c in mine):
        return "left-out", "the series read without it"
    return "ok", ""


def _trial(folder: Path, target: Path, rng: np.random.Generator, start: int, stop: int) -> tuple[str, str]:
    original = target.read_bytes()
    target.write_bytes(_corrupt(original, rng, start, stop if stop > start else len(original)))
    try:
        return _outcome(folder, target)
    finally:
        target.write_bytes(original)


def dicom_trial(template: Path, seed: int) -> tuple[str, str]:
    """Corrupt 1-8 header bytes of one slice of ``template``'s series (restored afterwards); the outcome."""
    rng = np.random.default_rng(seed)
    files = sorted((template / "series").iterdir())
    target = files[int(rng.integers(len(files)))]
    return _trial(template, target, rng, 132, target.read_bytes().find(_PIXEL_DATA_TAG))


def nifti_trial(template: Path, seed: int) -> tuple[str, str]:
    """Corrupt 1-8 bytes of the 348-byte header of ``template``'s ``scan.nii`` (restored afterwards); the outcome."""
    return _trial(template, template / "scan.nii", np.random.default_rng(seed), 0, 348)


# -- the whole batch path: read, segment, write every output format -------------------------------------------------
OUTPUT_OUTCOMES = ("ok", "ok-warned", "error", "unnamed", "silent-left-out", "traceback")
ALL_FORMATS = ("nifti", "dicom-seg", "rtstruct")


def dicom_output_trial(template: Path, seed: int, segmenter, out: Path) -> tuple[str, str]:
    """Corrupt 1-8 header bytes of one slice of ``template``'s series (as :func:`dicom_trial`), then run that case
    through the batch's own stages (:mod:`medfcn.batch.cases`: read, segment, write NIfTI, DICOM SEG and RTSTRUCT
    as one unit) into ``out``. The outcome is one of

    - ``ok``: written whole; ``ok-warned``: written, with warnings (a slice left out says so);
    - ``error``: failed with a one-line error naming the series folder or the corrupted file;
    - ``unnamed``: failed with an error that names neither (raw library text a person cannot act on);
    - ``silent-left-out``: written without a slice and without a warning saying so;
    - ``traceback``: an exception escaped discovery or the stages (the batch would have ended).
    """
    from medfcn.batch.cases import Job, case_result, read_case, segment_case, write_case
    from medfcn.batch.outputs import output_files, parse_formats

    rng = np.random.default_rng(seed)
    files = sorted((template / "series").iterdir())
    target = files[int(rng.integers(len(files)))]
    original = target.read_bytes()
    stop = original.find(_PIXEL_DATA_TAG)
    target.write_bytes(_corrupt(original, rng, 132, stop if stop > 132 else len(original)))
    try:
        try:
            cases = find_cases(template / "series")
        except Exception as e:
            return "traceback", f"find_cases: {type(e).__name__}: {e}"
        formats = parse_formats(ALL_FORMATS)
        results = []
        for i, spec in enumerate(cases):
            job = Job(i, spec, next(iter(output_files(out, spec.case, formats).values())), formats)
            try:
                step = write_case(job, segment_case(segmenter, read_case(job)), segmenter.model)
                results.append(case_result(job, step, "cpu"))
            except Exception as e:
                return "traceback", f"{type(e).__name__}: {e}"
        return _output_outcome(results, template / "series", target, len(files))
    finally:
        target.write_bytes(original)
        for f in out.iterdir() if out.is_dir() else []:
            f.unlink()


def _output_outcome(results, folder: Path, target: Path, slices: int) -> tuple[str, str]:
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        if str(folder) not in r.error and target.name not in r.error:
            return "unnamed", r.error
    if failed:
        return "error", failed[0].error
    written = sum(r.shape[2] if r.shape else 0 for r in results)
    warned = any(r.warnings for r in results)
    if written < slices and not any(target.name in w or "left out" in w for r in results for w in r.warnings):
        return "silent-left-out", f"{written} of {slices} slices written, warnings: {[r.warnings for r in results]}"
    return ("ok-warned" if warned else "ok"), ""
