"""A brain-extraction model on the sample against both of its masks, and on contrast renderings of the sample.

Usage: python benchmarks/bench_label_model.py [--model MODEL] [--json OUT.json] [--threads N]

Cases, all of the training subject (Colin27), so they measure fit and contrast robustness, not anatomy:

- ``sample`` / ``sample_bet``: ``sample_data/images/colin27.nii.gz`` against the training label (brain + CSF,
  ``sample_data/labels/``) and against BET's tighter mask (``sample_data/labels_bet/``);
- ``dicom``: the sample DICOM series (1.5 x 1.5 x 2 mm) against the label on its grid;
- ``t2`` / ``pd`` / ``flair``: renderings of the sample's own tissue classes (:func:`medfcn.training.synth.render`, 3
  brain + 4 non-brain k-means classes, half of the within-class texture kept), against the training label.

Dice from SimpleITK's ``LabelOverlapMeasuresImageFilter`` (independent of medfcn), HD95 and surface Dice at 1 mm
from ``medfcn.evaluation.metrics``, volume ratio prediction / reference, seconds of ``Segmenter.segment``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medfcn.data.reader import read_scan
from medfcn.evaluation.metrics import hd95, surface_dice
from medfcn.inference.frame import normalise_intensity
from medfcn.inference.pipeline import Segmenter
from medfcn.inference.settings import InferenceSettings
from medfcn.training.synth import render, tissue_map

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data"


def score(scan, pred: np.ndarray, ref_path: Path) -> dict[str, float]:
    ref_img = sitk.ReadImage(str(ref_path), sitk.sitkUInt8)
    ref = sitk.GetArrayFromImage(ref_img).transpose(2, 1, 0) > 0
    pred_img = sitk.GetImageFromArray((pred > 0).astype(np.uint8).transpose(2, 1, 0))
    pred_img.CopyInformation(ref_img)
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(ref_img > 0, pred_img)
    return {
        "dice": round(overlap.GetDiceCoefficient(), 4),
        "hd95_mm": round(hd95(pred > 0, ref, scan.spacing), 2),
        "surface_dice_1mm": round(surface_dice(pred > 0, ref, scan.spacing, 1.0), 4),
        "volume_ratio": round(float((pred > 0).sum() / ref.sum()), 4),
    }


def cases() -> list[tuple[str, object, Path]]:
    image = read_scan(SAMPLE / "images" / "colin27.nii.gz")
    label = SAMPLE / "labels" / "colin27.nii.gz"
    out = [
        ("sample", image, label),
        ("sample_bet", image, SAMPLE / "labels_bet" / "colin27.nii.gz"),
        ("dicom", read_scan(SAMPLE / "dicom" / "colin27_dicom"), SAMPLE / "labels" / "colin27_dicom.nii.gz"),
    ]
    norm = normalise_intensity(image.array)
    lab = read_scan(label).array > 0
    tissue = tissue_map(norm, lab.astype(np.uint8), per_label=3, outside=4)
    for contrast in ("t2", "pd", "flair"):
        out.append((contrast, image.with_array(render(tissue, norm, contrast)), label))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model file (default: the bundled model)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    segmenter = Segmenter(args.model, InferenceSettings(device="cpu"))
    results: dict[str, dict] = {}
    done: dict[int, np.ndarray] = {}
    for name, scan, ref in cases():
        t0 = time.perf_counter()
        pred = done.get(id(scan))
        if pred is None:
            pred = done[id(scan)] = segmenter.segment(scan)
        seconds = time.perf_counter() - t0
        results[name] = {**score(scan, pred, ref), "seconds": round(seconds, 2)}
        r = results[name]
        print(
            f"{name:11s} Dice {r['dice']:.4f}  HD95 {r['hd95_mm']:6.2f} mm  surface Dice {r['surface_dice_1mm']:.4f}"
            f"  volume x{r['volume_ratio']:.3f}  {seconds:5.1f} s",
            flush=True,
        )
    if args.json:
        meta = {"model": str(args.model or "bundled"), "sha256": segmenter.model.sha256}
        Path(args.json).write_text(json.dumps({"model": meta, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
