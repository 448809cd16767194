"""Ablation: FCN variants (fcn32s / fcn16s / fcn8s) x upsampling (transpose / resize_conv), and MONAI's BasicUNet.

Each configuration is trained with ``medfcn train`` on the sample with the same recipe and the same budget
(epochs x steps, seed), then scored on transformed copies of the sample (``copies.py``: reoriented, resampled,
intensity-remapped, bias field, noise, cropped) with the full ``medfcn segment`` pipeline: Dice (SimpleITK) and
HD95 (medfcn.evaluation.metrics). Slices per second: the engine over 256 x 256 slices in batches of 16 on this machine.

Usage: python benchmarks/bench_ablation.py OUT_DIR [--epochs 10] [--steps 100] [--configs fcn8s:resize_conv,...]
Writes OUT_DIR/<config>.safetensors, OUT_DIR/<config>.log, OUT_DIR/ablation.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generalisation import evaluate_model  # noqa: E402
from support.copies import make_copies  # noqa: E402

from medfcn.inference.engine import SliceEngine  # noqa: E402
from medfcn.inference.settings import InferenceSettings  # noqa: E402
from medfcn.model.checkpoint import load_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ALL = [f"{v}:{u}" for v in ("fcn32s", "fcn16s", "fcn8s") for u in ("transpose", "resize_conv")] + ["basicunet"]
SCORED = ["lsa", "oblique", "thick_2x2x3", "remapped", "bias", "noise", "cropped", "combined"]


def slices_per_second(model_path: Path, n: int = 64) -> float:
    engine = SliceEngine(load_model(model_path).network, InferenceSettings(device="cpu", batch_size=16))
    volume = np.random.default_rng(0).random((256, 256, n), dtype=np.float32)
    engine.predict(volume[:, :, :16])  # warm-up
    t0 = time.perf_counter()
    engine.predict(volume)
    return n / (time.perf_counter() - t0)


def train(config: str, out: Path, epochs: int, steps: int, seed: int) -> tuple[Path, float]:
    model = out / f"{config.replace(':', '_')}.safetensors"
    args = [
        sys.executable,
        "-m",
        "medfcn.cli",
        "train",
        "--images",
        "sample_data/images",
        "--labels",
        "sample_data/labels",
        "-o",
        str(model),
        "--epochs",
        str(epochs),
        "--steps-per-epoch",
        str(steps),
        "--seed",
        str(seed),
        "--quiet",
        "--name",
        f"ablation-{config.replace(':', '-')}",
    ]
    if config == "basicunet":
        args += ["--architecture", "basicunet"]
    else:
        variant, upsampling = config.split(":")
        args += ["--variant", variant, "--upsampling", upsampling]
    t0 = time.perf_counter()
    with open(out / f"{config.replace(':', '_')}.log", "w") as log:
        subprocess.run(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)
    return model, (time.perf_counter() - t0) / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--configs", default=",".join(ALL))
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    copies = make_copies(out / "copies", SCORED)
    table_path = out / "ablation.json"
    table = json.loads(table_path.read_text()) if table_path.exists() else {}
    print(f"torch threads {torch.get_num_threads()}; {args.epochs} epochs x {args.steps} steps, seed {args.seed}")
    for config in args.configs.split(","):
        if config in table:
            continue
        model, minutes = train(config, out, args.epochs, args.steps, args.seed)
        results = evaluate_model(str(model), copies)
        dice = [r["dice"] for r in results.values()]
        hd = [r["hd95_mm"] for r in results.values()]
        table[config] = {
            "mean_dice": round(float(np.mean(dice)), 4),
            "min_dice": round(float(np.min(dice)), 4),
            "mean_hd95_mm": round(float(np.mean(hd)), 2),
            "slices_per_s": round(slices_per_second(model), 1),
            "train_minutes": round(minutes, 1),
            "per_copy": results,
        }
        table_path.write_text(json.dumps(table, indent=1))
        print(config, {k: v for k, v in table[config].items() if k != "per_copy"}, flush=True)
    print("\n| model | upsampling | mean Dice | min Dice | mean HD95 (mm) | slices/s (256x256, CPU) | train min |")
    print("|---|---|---|---|---|---|---|")
    for config, row in table.items():
        name, _, up = config.partition(":")
        print(
            f"| {name} | {up or '-'} | {row['mean_dice']:.4f} | {row['min_dice']:.4f} | {row['mean_hd95_mm']:.2f} | "
            f"{row['slices_per_s']:.1f} | {row['train_minutes']:.1f} |"
        )


if __name__ == "__main__":
    main()
