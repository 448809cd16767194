"""Time :func:`medfcn.evaluation.metrics.compute_metrics` on a 512 x 512 x 300 pair with 3 labels (CT-like: liver,
kidneys).

Run: ``python benchmarks/bench_metrics.py [--repeat N] [--monai]``; prints the seconds per call (best of N), the
time of the report's overlay thumbnails of the same pair (what :func:`medfcn.evaluation.evaluate.evaluate` adds per
case) and, with ``--monai``, the time of MONAI's HD95, ASSD and surface Dice on the same pair and the largest
difference.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from medfcn.evaluation.metrics import compute_metrics
from medfcn.evaluation.thumbnails import case_thumbnails

SHAPE = (512, 512, 300)
SPACING = (0.8, 0.8, 1.5)


def _ellipsoid(out: np.ndarray, label: int, centre_mm, radii_mm, rng: np.random.Generator, noise: float) -> None:
    """Paint an ellipsoid (with a bumpy surface when ``noise`` > 0) into ``out``, on its bounding box only."""
    centre, radii, sp = np.asarray(centre_mm), np.asarray(radii_mm), np.asarray(SPACING)
    lo = np.maximum(((centre - radii * 1.3) / sp).astype(int), 0)
    hi = np.minimum(((centre + radii * 1.3) / sp).astype(int) + 1, SHAPE)
    axes = [np.arange(a, b) * s for a, b, s in zip(lo, hi, sp, strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    r = ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + ((z - centre[2]) / radii[2]) ** 2
    if noise:
        bumps = noise * np.sin(x / 7.0 + rng.uniform(0, 6)) * np.cos(y / 9.0) * np.sin(z / 11.0 + rng.uniform(0, 6))
        r = r + bumps
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    out[box][r <= 1] = label


def make_pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A reference and a plausible prediction (shifted, resized, bumpy), uint8 (X, Y, Z)."""
    rng = np.random.default_rng(seed)
    ref, pred = np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8)
    organs = {
        1: ((240, 200, 230), (95, 75, 80)),
        2: ((130, 260, 200), (28, 30, 55)),
        3: ((290, 260, 190), (27, 31, 52)),
    }
    for label, (c, r) in organs.items():
        _ellipsoid(ref, label, c, r, rng, 0.0)
        _ellipsoid(pred, label, np.add(c, rng.normal(0, 2, 3)), np.multiply(r, rng.uniform(0.95, 1.05, 3)), rng, 0.15)
    return pred, ref


def _best(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def _monai(pred: np.ndarray, ref: np.ndarray, labels) -> dict[int, tuple[float, float, float]]:
    """MONAI's HD95, ASSD and surface Dice (1 mm) of each label: what a MONAI user would run."""
    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

    out = {}
    for label in labels:
        p = torch.as_tensor(pred == label)[None, None].float()
        r = torch.as_tensor(ref == label)[None, None].float()
        kw = {"include_background": True, "spacing": SPACING}
        out[label] = (
            float(compute_hausdorff_distance(p, r, percentile=95, **kw)[0, 0]),
            float(compute_average_surface_distance(p, r, symmetric=True, **kw)[0, 0]),
            float(compute_surface_dice(p, r, [1.0], **kw)[0, 0]),
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--monai", action="store_true", help="also time MONAI's surface metrics on the same pair")
    args = parser.parse_args()
    pred, ref = make_pair()
    seconds, result = _best(lambda: compute_metrics(pred, ref, SPACING), args.repeat)
    for label, m in result.items():
        print(
            f"label {label}: dice {m.dice:.4f}  hd95 {m.hd95_mm:.2f} mm  assd {m.assd_mm:.2f} mm  "
            f"surface dice {m.surface_dice:.4f}  vol_ref {m.vol_ref_ml:.1f} mL"
        )
    print(f"compute_metrics on {SHAPE} with {len(result)} labels: {seconds:.2f} s (best of {args.repeat})")
    seconds, thumbs = _best(lambda: case_thumbnails(pred, ref, SPACING, labels=sorted(result)), args.repeat)
    print(f"case_thumbnails ({len(thumbs)} overlays): {seconds:.2f} s (best of {args.repeat})")
    if args.monai:
        t0 = time.perf_counter()
        monai = _monai(pred, ref, sorted(result))
        seconds = time.perf_counter() - t0
        diff = max(
            abs(a - b)
            for label, m in result.items()
            for a, b in zip((m.hd95_mm, m.assd_mm, m.surface_dice), monai[label], strict=True)
        )
        print(f"MONAI HD95 + ASSD + surface Dice: {seconds:.2f} s (once); largest difference {diff:.2e}")


if __name__ == "__main__":
    main()
