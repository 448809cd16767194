"""Fuzz the reading layer and the whole batch path with corrupted DICOM slice headers (and NIfTI headers), and the
SEG and RTSTRUCT readers with damaged objects.

    python benchmarks/bench_fuzz.py [--dicom 2000] [--nifti 500] [--outputs 500] [--seg 1000] [--rtstruct 1000]
        [--out benchmarks/results_fuzz.json]

Each trial corrupts 1-8 random bytes of one header (seed = trial number) beside a good scan (see
``tests/support/fuzz.py`` for the outcomes):

- ``dicom``, ``nifti``: discovery and reading as ``medfcn segment`` does them;
- ``outputs``: the corrupted DICOM case through the batch's own stages (read, segment with a tiny trained model,
  write NIfTI, DICOM SEG and RTSTRUCT as one unit), as ``medfcn segment --format nifti,dicom-seg,rtstruct`` does.

A run holds when no trial ends ``internal`` or ``crash`` (reading) and none ends ``traceback``, ``unnamed`` (an error
naming neither the series nor the file) or ``silent-left-out`` (a slice dropped without a warning) (outputs); the
seeds of any that do are listed.

- ``seg``, ``rtstruct``: a damaged copy of a SEG or RTSTRUCT medfcn wrote for a real series (header bytes, frame-table
  and pixel-header tags, contour data, pixels; see ``tests/support/fuzz_objects.py``) read on its series, as
  ``medfcn evaluate`` scores it, and (a SEG) alone, as the napari reader shows it. A run holds when no trial ends
  ``internal`` (a raw exception), ``hang`` (a read over 10 s) or ``scored-damaged`` (read with other labels though
  ``dciodvfy`` finds the file damaged).

Sections run with 0 trials keep their earlier results (and the commit they were measured at) in the JSON file.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.support.record import provenance, write_result  # noqa: E402
from tests.support.fuzz import (  # noqa: E402
    OUTCOMES,
    OUTPUT_OUTCOMES,
    dicom_output_trial,
    dicom_trial,
    make_template,
    nifti_trial,
)
from tests.support.fuzz_objects import BAD_OBJECT_OUTCOMES, OBJECT_OUTCOMES, make_objects, object_trial  # noqa: E402

BAD = {"internal", "crash", "traceback", "unnamed", "silent-left-out", *BAD_OBJECT_OUTCOMES}


def _run(name: str, trial, n: int, outcomes: tuple[str, ...]) -> dict:
    counts, bad, start = Counter({o: 0 for o in outcomes}), [], time.perf_counter()
    for seed in range(n):
        outcome, detail = trial(seed)
        counts[outcome] += 1
        if outcome in BAD:
            bad.append({"seed": seed, "outcome": outcome, "detail": detail[:300]})
    seconds = round(time.perf_counter() - start, 1)
    result = {"trials": n, "outcomes": dict(counts), "bad_seeds": bad, "seconds": seconds}
    result["commit"] = provenance()["commit"]
    print(f"{name}: {n} trials {dict(counts)} in {result['seconds']} s; bad seeds: {[b['seed'] for b in bad]}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dicom", type=int, default=2000)
    parser.add_argument("--nifti", type=int, default=500)
    parser.add_argument("--outputs", type=int, default=500, help="DICOM trials through every output format")
    parser.add_argument("--seg", type=int, default=1000, help="damaged DICOM SEG objects")
    parser.add_argument("--rtstruct", type=int, default=1000, help="damaged RTSTRUCT objects")
    parser.add_argument("--out", default=str(Path(__file__).with_name("results_fuzz.json")))
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # a warning per corrupted file is expected
    warnings.simplefilter("ignore")  # and pydicom's per invalid value
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK prints a warning per odd NIfTI header
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    results.pop("provenance", None)
    with tempfile.TemporaryDirectory() as tmp:
        template = make_template(Path(tmp) / "template")
        if args.dicom:
            results["dicom"] = _run("dicom", lambda s: dicom_trial(template, s), args.dicom, OUTCOMES)
        if args.nifti:
            results["nifti"] = _run("nifti", lambda s: nifti_trial(template, s), args.nifti, OUTCOMES)
        if args.outputs:
            from medfcn.inference.pipeline import Segmenter
            from medfcn.inference.settings import InferenceSettings
            from tests.support.batch import train_tiny_model

            segmenter = Segmenter(train_tiny_model(Path(tmp) / "tiny.safetensors"), InferenceSettings(device="cpu"))
            written = Path(tmp) / "out"

            def trial(seed: int) -> tuple[str, str]:
                return dicom_output_trial(template, seed, segmenter, written)

            results["outputs"] = {
                "formats": "nifti,dicom-seg,rtstruct",
                **_run("outputs", trial, args.outputs, OUTPUT_OUTCOMES),
            }
        objects = make_objects(Path(tmp) / "objects") if args.seg or args.rtstruct else {}
        for kind in ("seg", "rtstruct"):
            if getattr(args, kind):
                work = Path(tmp) / f"damaged-{kind}"

                def damaged(seed: int, kind: str = kind, work: Path = work) -> tuple[str, str]:
                    return object_trial(objects, kind, seed, work)

                results[kind] = _run(kind, damaged, getattr(args, kind), OBJECT_OUTCOMES)
    write_result(out, results)
    return 1 if any(r["bad_seeds"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
