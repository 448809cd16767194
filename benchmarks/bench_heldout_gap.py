"""Where does the gap on held-out anatomy come from? Two diagnostics that need no training.

Usage: python benchmarks/bench_heldout_gap.py [--model MODEL] [--average A.safetensors,B.safetensors]
[--workdir DIR] [--json OUT.json]

1. Appearance. The held-out MNI152 brain is the average of 152 adults: smoother than Colin27, whose sulci and
   cortex are sharp. If the model's lower Dice there came from that smoothness, blurring the training subject
   itself would cost as much. The sample is blurred (Gaussian, sigma 1, 1.5 and 2 mm) and scored against its own
   label: a small loss means the held-out gap is anatomy, not appearance.
2. Weight averaging. With ``--average``, the listed model files (the same network, runs from one starting point)
   are averaged tensor by tensor (batch-norm statistics included) into one model, which costs nothing at
   inference; it is scored on the held-out MNI rows beside the first file.

Dice by SimpleITK's ``LabelOverlapMeasuresImageFilter`` (independent of medfcn); the cases are those of
``heads.py`` (built by ``bench_generalisation.py`` / ``bench_peers.py`` in ``--workdir``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from support.heads import SAMPLE_IMAGE, SAMPLE_LABEL  # noqa: E402

from medfcn.data.reader import read_scan  # noqa: E402
from medfcn.inference.pipeline import Segmenter  # noqa: E402
from medfcn.inference.settings import InferenceSettings  # noqa: E402
from medfcn.model.checkpoint import load_model, save_model  # noqa: E402

MNI_ROWS = ("mni_t1", "mni_t2", "mni_pd", "mni_flair")


def dice(labels: np.ndarray, scan, reference: Path) -> float:
    ref = sitk.ReadImage(str(reference), sitk.sitkUInt8)
    pred = scan.to_sitk((labels > 0).astype(np.uint8))
    pred.CopyInformation(ref)
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(ref > 0, pred)
    return round(overlap.GetDiceCoefficient(), 4)


def blurred_sample(segmenter: Segmenter, sigmas_mm: tuple[float, ...]) -> dict[str, float]:
    """Dice of the sample blurred by each sigma (mm) against its own label."""
    image = sitk.ReadImage(str(SAMPLE_IMAGE), sitk.sitkFloat32)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for sigma in sigmas_mm:
            blurred = sitk.SmoothingRecursiveGaussian(image, sigma) if sigma > 0 else image
            path = Path(tmp) / f"blur{sigma}.nii.gz"
            sitk.WriteImage(blurred, str(path))
            scan = read_scan(path)
            out[f"sigma_{sigma}_mm"] = dice(segmenter.segment(scan), scan, SAMPLE_LABEL)
            print(f"sample blurred, sigma {sigma} mm: Dice {out[f'sigma_{sigma}_mm']:.4f}", flush=True)
    return out


def average_models(paths: list[str], out: Path) -> Path:
    """One model file whose every floating-point tensor is the mean of ``paths``' (the first file's card)."""
    models = [load_model(p) for p in paths]
    states = [m.network.state_dict() for m in models]
    merged = {
        k: (sum(s[k] for s in states) / len(states)) if v.dtype.is_floating_point else v for k, v in states[0].items()
    }
    network = models[0].network
    network.load_state_dict(merged)
    return save_model(out, network, models[0].card)


def mni_rows(model: str | Path | None, cases: dict) -> dict[str, float]:
    segmenter = Segmenter(model, InferenceSettings(device="cpu"))
    out = {}
    for name in MNI_ROWS:
        scan = read_scan(cases[name]["image"])
        out[name] = dice(segmenter.segment(scan), scan, Path(cases[name]["references"]["field"]))
    out["mean"] = round(float(np.mean([out[n] for n in MNI_ROWS])), 4)
    print(f"{model or 'bundled'}: " + ", ".join(f"{k} {v:.4f}" for k, v in out.items()), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model file (default: the bundled model)")
    parser.add_argument("--average", default="", help="comma-separated model files to average")
    parser.add_argument("--workdir", default="/tmp/medfcn_bench_peers", help="cases (see bench_generalisation.py)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    results: dict = {"model": args.model or "bundled"}
    results["blurred_sample"] = blurred_sample(
        Segmenter(args.model, InferenceSettings(device="cpu")), (0.0, 1.0, 1.5, 2.0)
    )
    if args.average:
        cases_file = Path(args.workdir) / "cases" / "cases.json"
        if not cases_file.is_file():
            sys.exit(f"{cases_file}: no test heads yet; run benchmarks/bench_generalisation.py first")
        cases = json.loads(cases_file.read_text())["cases"]
        paths = args.average.split(",")
        with tempfile.TemporaryDirectory() as tmp:
            averaged = average_models(paths, Path(tmp) / "averaged.safetensors")
            results["average_of"] = paths
            results["first"] = mni_rows(paths[0], cases)
            results["averaged"] = mni_rows(averaged, cases)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
