"""Dice of a model on transformed copies of the sample head (see ``copies.py``): does it generalise?

Usage: python benchmarks/bench_generalisation.py [--model MODEL] [--copies DIR] [--json OUT.json] [--only a,b]

For each copy: read with medfcn, segment with the full pipeline (``medfcn.pipeline.Segmenter``), then Dice
(SimpleITK ``LabelOverlapMeasuresImageFilter``, independent of medfcn) and HD95 (``medfcn.metrics``) against the
copy's reference mask, and the seconds the segmentation took. The copies are of the training subject: they
measure robustness to orientation, resolution, intensity and field of view, not to anatomy.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from copies import make_copies  # noqa: E402

from medfcn.metrics import hd95  # noqa: E402
from medfcn.pipeline import Segmenter  # noqa: E402
from medfcn.reader import read_scan  # noqa: E402


def evaluate_model(model: str | None, copies: dict[str, tuple[Path, Path]], device: str = "cpu") -> dict[str, dict]:
    segmenter = Segmenter(model, device=device)
    results = {}
    for name, (image_path, label_path) in copies.items():
        scan = read_scan(image_path)
        t0 = time.perf_counter()
        labels = segmenter.segment(scan)
        seconds = time.perf_counter() - t0
        ref = sitk.ReadImage(str(label_path), sitk.sitkUInt8)
        pred = scan.to_sitk((labels > 0).astype(np.uint8))
        pred.CopyInformation(ref)
        overlap = sitk.LabelOverlapMeasuresImageFilter()
        overlap.Execute(ref > 0, pred)
        ref_arr = sitk.GetArrayFromImage(ref).transpose(2, 1, 0) > 0
        results[name] = {
            "dice": round(overlap.GetDiceCoefficient(), 4),
            "hd95_mm": round(hd95(labels > 0, ref_arr, scan.spacing), 2),
            "seconds": round(seconds, 2),
            "shape": list(scan.shape),
            "spacing": [round(s, 3) for s in scan.spacing],
        }
        print(
            f"{name:14s} Dice {results[name]['dice']:.4f}  HD95 {results[name]['hd95_mm']:6.2f} mm  "
            f"{seconds:6.2f} s  {tuple(scan.shape)}",
            flush=True,
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model file (default: the bundled model)")
    parser.add_argument("--copies", default=None, help="folder for the copies (default: a temporary folder)")
    parser.add_argument("--only", default="", help="comma-separated copy names")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    folder = Path(args.copies or tempfile.mkdtemp(prefix="medfcn_copies_"))
    names = [n for n in args.only.split(",") if n] or None
    copies = {
        "original": (
            Path(__file__).resolve().parents[1] / "sample_data/images/colin27.nii.gz",
            Path(__file__).resolve().parents[1] / "sample_data/labels/colin27.nii.gz",
        )
    }
    copies.update(make_copies(folder, names))
    if names:
        copies = {k: v for k, v in copies.items() if k in names}
    results = evaluate_model(args.model, copies, args.device)
    dice = [r["dice"] for r in results.values()]
    print(f"min Dice {min(dice):.4f}, mean {np.mean(dice):.4f} over {len(dice)} copies")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model or "bundled", "results": results}, indent=1))


if __name__ == "__main__":
    main()
