"""Models on the real heads and their clinical renderings: Dice before and after each hole fill, and the holes left.

Usage: python benchmarks/bench_clinical.py --cases runs/clinical/cases.json --model NAME=FILE [--model ...]
[--json OUT.json] [--markdown OUT.md]

The cases are ``clinical_heads.py``'s (each real head as shipped and its 9 clinical renderings). For each model
and case the network runs once (``Segmenter.to_frame``, ``normalise``, ``probabilities``), then three clean-ups of
the same probabilities are taken back onto the scan's grid (``Segmenter.to_scan``) and scored against the case's
reference (Dice by SimpleITK's ``LabelOverlapMeasuresImageFilter``, independent of medfcn):

    none     the largest component only: what the network says
    fill3d   largest component + 3-D hole filling (the 0.2 model's card)
    slices   largest component + holes filled in every slice along each frame axis, then in 3-D (``fill_slices``)

and, on the scan's grid, ``holes_pct``: what a 2-D fill of each slice along the acquired axis (the largest spacing)
would add to each output, in % of its mask: the holes a radiologist would see scrolling through the slices.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medfcn.data.reader import read_scan
from medfcn.inference.pipeline import Segmenter
from medfcn.inference.postprocess import apply_to_probabilities, fill_slice_holes
from medfcn.inference.settings import InferenceSettings

CLEANUPS = {
    "none": ("largest_component",),
    "fill3d": ("largest_component", "fill_holes"),
    "slices": ("largest_component", "fill_slices"),
}


def dice(pred: np.ndarray, ref_img: sitk.Image) -> float:
    """Dice of ``pred`` (X, Y, Z) against the reference image (SimpleITK's overlap filter)."""
    p = sitk.GetImageFromArray(pred.astype(np.uint8).transpose(2, 1, 0))
    p.CopyInformation(ref_img)
    f = sitk.LabelOverlapMeasuresImageFilter()
    f.Execute(ref_img, p)
    return f.GetDiceCoefficient()


def evaluate(model: str, cases: dict) -> dict:
    segmenter = Segmenter(model, InferenceSettings(device="cpu"))
    out = {}
    for name, case in cases.items():
        scan = read_scan(case["image"], case=name)
        ref_img = sitk.ReadImage(case["label"], sitk.sitkUInt8) > 0
        frame = segmenter.to_frame(scan)
        probs = segmenter.probabilities(segmenter.normalise(frame))
        axis = int(np.argmax(scan.spacing))
        row: dict = {"head": case["head"], "rendering": case["rendering"]}
        for cleanup, steps in CLEANUPS.items():
            labels = segmenter.to_scan(apply_to_probabilities(probs.copy(), steps), frame) > 0
            holes = int(fill_slice_holes(labels, axis).sum() - labels.sum())
            row[cleanup] = {
                "dice": round(dice(labels, ref_img), 4),
                "voxels": int(labels.sum()),
                "holes_pct": round(100 * holes / max(int(labels.sum()), 1), 3),
            }
        row["fill_adds_pct"] = round(100 * (row["slices"]["voxels"] - row["none"]["voxels"]) / row["none"]["voxels"], 3)
        out[name] = row
        print(
            f"{Path(model).name[:24]:24s} {name:34s} "
            + " ".join(f"{c} {row[c]['dice']:.4f}" for c in CLEANUPS)
            + f" fill adds {row['fill_adds_pct']:.2f}% holes left {row['slices']['holes_pct']:.3f}%",
            flush=True,
        )
    return out


def markdown(results: dict) -> str:
    models = list(results)
    cases = list(next(iter(results.values())))
    lines = [
        "| case | " + " | ".join(f"{m}: none / fill3d / slices (fill adds %)" for m in models) + " |",
        "|---|" + "---|" * len(models),
    ]
    for c in cases:
        cells = []
        for m in models:
            r = results[m][c]
            cells.append(
                f"{r['none']['dice']:.3f} / {r['fill3d']['dice']:.3f} / {r['slices']['dice']:.3f} "
                f"({r['fill_adds_pct']:.2f})"
            )
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    for group, keep in (
        ("originals", lambda r: r["rendering"] == "original"),
        ("clinical renderings", lambda r: r["rendering"] != "original"),
    ):
        for head in sorted({r["head"] for r in results[models[0]].values()}):
            cells = []
            for m in models:
                d = [r["slices"]["dice"] for r in results[m].values() if keep(r) and r["head"] == head]
                cells.append(f"mean {np.mean(d):.3f}, min {min(d):.3f} (n={len(d)})" if d else "-")
            lines.append(f"| **{head}, {group}** | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", required=True, help="cases.json of clinical_heads.py")
    parser.add_argument("--model", action="append", required=True, help="NAME=FILE (repeat)")
    parser.add_argument("--only", default="", help="comma-separated heads to keep")
    parser.add_argument("--json", default=None)
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    cases = json.loads(Path(args.cases).read_text())
    if args.only:
        cases = {n: c for n, c in cases.items() if c["head"] in args.only.split(",")}
    saved = Path(args.json) if args.json else None
    results = json.loads(saved.read_text()) if saved is not None and saved.exists() else {}
    for spec in args.model:
        name, _, path = spec.partition("=")
        results[name] = {**results.get(name, {}), **evaluate(path, cases)}
        if saved is not None:
            saved.write_text(json.dumps(results, indent=1) + "\n")
    table = markdown({m: {c: r for c, r in rows.items() if c in cases} for m, rows in results.items()})
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table)


if __name__ == "__main__":
    main()
