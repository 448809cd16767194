"""Is a 1 mm model frame worth its cost? The boundary a frame spacing allows, and what it costs per scan.

Usage: python benchmarks/bench_frame_spacing.py [--spacings 1.0,1.5] [--json OUT.json]

1. **Ceiling of the boundary** for each spacing: the sample's reference mask (``sample_data/labels/``) brought
   onto the frame as a float (trilinear: the partial-volume probabilities a perfect model would output), then back
   to the scan's grid through :func:`medfcn.inference.frame.probabilities_to_labels`, exactly as ``medfcn segment``
   does. Dice, HD95 and surface Dice (1 mm) of that round trip against the mask: what the frame alone loses.
2. **Cost**: the bundled network run at that spacing on the 1 mm sample (``Segmenter.segment``, one fresh process
   per spacing so that peak memory is the process's own): seconds (best of 2) and peak resident memory (MB).
   The weights are the bundled ones whatever the spacing, so only the cost is meaningful here, not the mask.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "sample_data" / "images" / "colin27.nii.gz"
LABEL = ROOT / "sample_data" / "labels" / "colin27.nii.gz"


def ceiling(spacing: float) -> dict[str, float]:
    from medfcn.data.reader import read_scan
    from medfcn.evaluation.metrics import dice, hd95, surface_dice
    from medfcn.inference.frame import probabilities_to_labels, to_model_frame

    image, label = read_scan(IMAGE), read_scan(LABEL)
    mask = label.array > 0
    frame = to_model_frame(image, (spacing,) * 3, array=mask.astype(np.float32))
    p = np.clip(frame.volume, 0, 1)
    back = probabilities_to_labels(np.stack([1 - p, p]).astype(np.float32), frame) > 0
    return {
        "dice": round(dice(back, mask), 4),
        "hd95_mm": round(hd95(back, mask, image.spacing), 2),
        "surface_dice_1mm": round(surface_dice(back, mask, image.spacing, 1.0), 4),
        "frame_shape": list(frame.volume.shape),
    }


def cost(spacing: float) -> dict[str, float]:
    """In a fresh process: seconds and peak memory of segmenting the sample at ``spacing``."""
    from medfcn.data.reader import read_scan
    from medfcn.inference.pipeline import Segmenter
    from medfcn.inference.settings import InferenceSettings
    from medfcn.model.checkpoint import load_model

    model = load_model()
    model.card.spacing = (spacing,) * 3
    segmenter = Segmenter(model, InferenceSettings(device="cpu"))
    scan = read_scan(IMAGE)
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        segmenter.segment(scan)
        times.append(time.perf_counter() - t0)
    return {
        "seconds": round(min(times), 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spacings", default="1.0,1.5")
    parser.add_argument("--json", default=None)
    parser.add_argument("--cost-of", type=float, default=None, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.cost_of is not None:
        print(json.dumps(cost(args.cost_of)))
        return
    results = {}
    for spacing in (float(s) for s in args.spacings.split(",")):
        row = ceiling(spacing)
        child = subprocess.run(
            [sys.executable, __file__, "--cost-of", str(spacing)],
            check=True,
            capture_output=True,
            encoding="utf-8",
            errors="replace",
        )
        row.update(json.loads(child.stdout.strip().splitlines()[-1]))
        results[f"{spacing:g} mm"] = row
        print(f"{spacing:g} mm: {row}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
