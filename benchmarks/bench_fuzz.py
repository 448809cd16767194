"""Fuzz the reading layer with thousands of corrupted DICOM slice headers (and NIfTI headers); count the outcomes.

    python benchmarks/bench_fuzz.py [--dicom 2000] [--nifti 500] [--out benchmarks/results_fuzz.json]

Each trial corrupts 1-8 random bytes of one header (seed = trial number) beside a good scan and runs discovery
and reading as ``medfcn segment`` does (see ``tests/fuzz_support.py`` for the outcomes). A run holds when no
trial ends ``internal`` or ``crash``; the seeds of any that do are listed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fuzz_support import OUTCOMES, dicom_trial, make_template, nifti_trial  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dicom", type=int, default=2000)
    parser.add_argument("--nifti", type=int, default=500)
    parser.add_argument("--out", default=str(Path(__file__).with_name("results_fuzz.json")))
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK prints a warning per odd NIfTI header
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        template = make_template(Path(tmp) / "template")
        for name, trial, n in (("dicom", dicom_trial, args.dicom), ("nifti", nifti_trial, args.nifti)):
            counts, bad, start = Counter({o: 0 for o in OUTCOMES}), [], time.perf_counter()
            for seed in range(n):
                outcome, detail = trial(template, seed)
                counts[outcome] += 1
                if outcome in ("internal", "crash"):
                    bad.append({"seed": seed, "outcome": outcome, "detail": detail[:300]})
            results[name] = {
                "trials": n,
                "outcomes": dict(counts),
                "bad_seeds": bad,
                "seconds": round(time.perf_counter() - start, 1),
            }
            print(
                f"{name}: {n} trials {dict(counts)} in {results[name]['seconds']} s; "
                f"bad seeds: {[b['seed'] for b in bad]}"
            )
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 1 if any(r["bad_seeds"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
