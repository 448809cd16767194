"""Few-slice fine-tuning (issue 23): slices annotated vs Dice gained vs minutes, and what is forgotten elsewhere.

The scans, all visible (``benchmarks/support/thick.py`` renders them from ``sample_data/``):

    target      robex_head at 6.5 mm axial slabs (0.9 mm in-plane): a head the bundled model gets wrong
    other       colin27 at 6.5 mm slabs: another head in the same protocol
    research    the Colin27 sample itself (1 mm T1; the research scan the bundled model was trained on)
    target_5mm  robex_head at 5 mm slabs: the same head in another protocol

The correction a user would make: ``K`` axial slices of the target, those where the bundled model is most wrong
(most voxels differing from the reference), get the reference label; every other voxel is 255 (not annotated).
Each run is the real command, ``medfcn train --init <bundled> --images ... --labels ... -o ... --max-minutes M``
(or from scratch without ``--init``), then ``medfcn segment`` of the four scans; Dice is computed here with
numpy on arrays read by nibabel (not medfcn's metrics). Results go to ``benchmarks/results_finetune.json`` after
every run (a run already there is skipped: rerun with ``--again``).

    python benchmarks/bench_finetune.py WORK [--runs NAME ...] [--again]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).parent))
from support.thick import render_thick  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results_finetune.json"
SAMPLE = ROOT / "sample_data"
BUNDLED = ROOT / "medfcn" / "models" / "default.safetensors"
EVAL = {"target": ("robex_head", 6.5), "other": ("colin27", 6.5), "target_5mm": ("robex_head", 5.0)}

# name: (K slices annotated, minutes, extra train options; None = from scratch)
RUNS = {
    "plain_k3": (3, 4.0, ["--distill", "0"]),
    "distill_k3": (3, 4.0, ["--distill", "1"]),
    "replay_k3": (3, 4.0, ["--distill", "0", "--replay", "0.3"]),
    "distill_replay_k3": (3, 4.0, ["--distill", "1", "--replay", "0.3"]),
    "scratch_k3": (3, 4.0, None),
    "chosen_k1": (1, 4.0, []),
    "chosen_k6": (6, 4.0, []),
    "chosen_k3_2min": (3, 2.0, []),
}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return float(2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b)))


def prepare(work: Path) -> dict[str, tuple[Path, Path]]:
    """The evaluation scans (image, reference) under WORK/eval."""
    scans = {"research": (SAMPLE / "images" / "colin27.nii.gz", SAMPLE / "labels" / "colin27.nii.gz")}
    for name, (head, mm) in EVAL.items():
        img, lab = work / "eval" / "images" / f"{name}.nii.gz", work / "eval" / "labels" / f"{name}.nii.gz"
        if not img.exists():
            rendered = render_thick(
                sitk.ReadImage(str(SAMPLE / "images" / f"{head}.nii.gz")),
                sitk.ReadImage(str(SAMPLE / "labels" / f"{head}.nii.gz")),
                mm,
            )
            for image, path in zip(rendered, (img, lab), strict=True):
                path.parent.mkdir(parents=True, exist_ok=True)
                sitk.WriteImage(image, str(path))
        scans[name] = (img, lab)
    return scans


def segment(model: Path | None, scans: dict[str, tuple[Path, Path]], out: Path) -> dict[str, float]:
    """Dice of ``model`` (None: bundled) on each scan, through ``medfcn segment``."""
    images = out / "in"
    images.mkdir(parents=True, exist_ok=True)
    for name, (img, _) in scans.items():
        link = images / f"{name}.nii.gz"
        if not link.exists():
            link.symlink_to(img.resolve())
    cmd = ["medfcn", "segment", str(images), "-o", str(out / "pred"), "--quiet"]
    subprocess.run([*cmd, *(["--model", str(model)] if model else [])], check=True)
    return {
        name: round(
            dice(np.asarray(nib.load(out / "pred" / f"{name}.nii.gz").dataobj), np.asarray(nib.load(lab).dataobj)), 4
        )
        for name, (_, lab) in scans.items()
    }


def wrong_voxels(run_dir: Path, reference: Path, annotated: list[int]) -> dict[str, int]:
    """Voxels of the target predicted wrong by the run in ``run_dir``, on the annotated axial slices and the rest:
    does the correction reach the slices nobody corrected?"""
    pred = np.asarray(nib.load(run_dir / "pred" / "target.nii.gz").dataobj) > 0
    wrong = (pred != (np.asarray(nib.load(reference).dataobj) > 0)).sum(axis=(0, 1))
    rest = [k for k in range(wrong.size) if k not in annotated]
    return {"annotated_slices": int(wrong[annotated].sum()), "other_slices": int(wrong[rest].sum())}


def correction(work: Path, scans, k: int) -> tuple[Path, Path, list[int]]:
    """WORK/train_k{k}: the target image and a label with the ``k`` axial slices the bundled model gets most
    wrong annotated (the reference there), 255 elsewhere."""
    folder = work / f"train_k{k}"
    img, ref = scans["target"]
    pred = np.asarray(nib.load(work / "bundled" / "pred" / "target.nii.gz").dataobj) > 0
    ref_img = nib.load(ref)
    ref_arr = np.asarray(ref_img.dataobj).astype(np.uint8)
    wrong = (pred != (ref_arr > 0)).sum(axis=(0, 1))  # axial slices: the image's third axis (thick.py)
    slices: list[int] = []
    for i in np.argsort(-wrong, kind="stable"):  # the worst slices, no two within 2 of each other (a user spreads them)
        if all(abs(int(i) - j) > 2 for j in slices) and len(slices) < k:
            slices.append(int(i))
    slices.sort()
    label = np.full(ref_arr.shape, 255, np.uint8)
    label[:, :, slices] = ref_arr[:, :, slices]
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    link = folder / "images" / "target.nii.gz"
    if not link.exists():
        link.symlink_to(img.resolve())
    nib.save(nib.Nifti1Image(label, ref_img.affine), folder / "labels" / "target.nii.gz")
    return folder / "images", folder / "labels", slices


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", type=Path)
    ap.add_argument("--runs", nargs="*", default=list(RUNS))
    ap.add_argument("--again", action="store_true")
    ap.add_argument("--rescore", action="store_true", help="only recount the wrong voxels of the runs already there")
    args = ap.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    scans = prepare(args.work)
    results.setdefault("machine", f"{os.cpu_count()} cores (shared with other sessions), no GPU")
    if "bundled" not in results or args.again:
        results["bundled"] = {"dice": segment(None, scans, args.work / "bundled")}
    base = results["bundled"]["dice"]
    if args.rescore:
        for name in [n for n in RUNS if n in results]:
            annotated = results[name]["slices_annotated"]
            results[name]["wrong_voxels"] = wrong_voxels(args.work / name, scans["target"][1], annotated)
            results[name]["bundled_wrong_voxels"] = wrong_voxels(args.work / "bundled", scans["target"][1], annotated)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        return
    for name in args.runs:
        if name in results and not args.again:
            continue
        k, minutes, extra = RUNS[name]
        images, labels, slices = correction(args.work, scans, k)
        model = args.work / name / "model.safetensors"
        model.unlink(missing_ok=True)
        cmd = ["medfcn", "train", "--images", str(images), "--labels", str(labels), "-o", str(model)]
        cmd += ["--max-minutes", str(minutes), "--quiet", "--val-cases", "0"]
        cmd += ["--init", str(BUNDLED), *extra] if extra is not None else []
        t0 = time.monotonic()
        subprocess.run(cmd, check=True)
        wall = time.monotonic() - t0
        scores = segment(model, scans, args.work / name)
        card = json.loads(__import__("medfcn.model.checkpoint", fromlist=["x"]).load_model(model).card.to_json())
        results[name] = {
            "command": " ".join(cmd),
            "slices_annotated": slices,
            "train_wall_minutes": round(wall / 60, 2),
            "card_minutes": card["training"]["minutes"],
            "epochs": card["training"]["epochs"],
            "dice": scores,
            "change": {n: round(scores[n] - base[n], 4) for n in scores},
            "wrong_voxels": wrong_voxels(args.work / name, scans["target"][1], slices),
            "bundled_wrong_voxels": wrong_voxels(args.work / "bundled", scans["target"][1], slices),
        }
        print(name, results[name]["change"], flush=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
