"""Fuzz the reading layer and the whole batch path with corrupted DICOM slice headers (and NIfTI headers).

    python benchmarks/bench_fuzz.py [--dicom 2000] [--nifti 500] [--outputs 500] [--out benchmarks/results_fuzz.json]

Each trial corrupts 1-8 random bytes of one header (seed = trial number) beside a good scan (see
``tests/support/fuzz.py`` for the outcomes):

- ``dicom``, ``nifti``: discovery and reading as ``medfcn segment`` does them;
- ``outputs``: the corrupted DICOM case through the batch's own stages (read, segment with a tiny trained model,
  write NIfTI, DICOM SEG and RTSTRUCT as one unit), as ``medfcn segment --format nifti,dicom-seg,rtstruct`` does.

A run holds when no trial ends ``internal`` or ``crash`` (reading) and none ends ``traceback``, ``unnamed`` (an error
naming neither the series nor the file) or ``silent-left-out`` (a slice dropped without a warning) (outputs); the
seeds of any that do are listed. Sections run with 0 trials keep their earlier results in the JSON file.
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

from tests.support.fuzz import (  # noqa: E402
    OUTCOMES,
    OUTPUT_OUTCOMES,
    dicom_output_trial,
    dicom_trial,
    make_template,
    nifti_trial,
)

BAD = {"internal", "crash", "traceback", "unnamed", "silent-left-out"}


def _run(name: str, trial, n: int, outcomes: tuple[str, ...]) -> dict:
    counts, bad, start = Counter({o: 0 for o in outcomes}), [], time.perf_counter()
    for seed in range(n):
        outcome, detail = trial(seed)
        counts[outcome] += 1
        if outcome in BAD:
            bad.append({"seed": seed, "outcome": outcome, "detail": detail[:300]})
    result = {"trials": n, "outcomes": dict(counts), "bad_seeds": bad, "seconds": round(time.perf_counter() - start, 1)}
    print(f"{name}: {n} trials {dict(counts)} in {result['seconds']} s; bad seeds: {[b['seed'] for b in bad]}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dicom", type=int, default=2000)
    parser.add_argument("--nifti", type=int, default=500)
    parser.add_argument("--outputs", type=int, default=500, help="DICOM trials through every output format")
    parser.add_argument("--out", default=str(Path(__file__).with_name("results_fuzz.json")))
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # a warning per corrupted file is expected
    warnings.simplefilter("ignore")  # and pydicom's per invalid value
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK prints a warning per odd NIfTI header
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
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
    out.write_text(json.dumps(results, indent=2) + "\n")
    return 1 if any(r["bad_seeds"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
