"""Does a model generalise? Dice, HD95 and volume error on the test heads of ``heads.py``.

Usage: python benchmarks/bench_generalisation.py [--model MODEL] [--workdir DIR] [--json OUT.json] [--only a,b] [--tta]
[--peers-venv DIR] [--field-ref MASK]

The cases (``heads.py``, which says what each row measures): the sample itself; transformed copies of it
(``copies.py``: the training subject, so robustness to orientation, resolution, intensity and field of view, not
to anatomy); held-out MNI152 anatomy inside Colin27's head rendered T1/T2/PD/FLAIR-like; the training subject's
own tissue classes in T2/PD/FLAIR-like contrast; the sample with widened CSF spaces. For each: read with medfcn,
segment with the full pipeline (``medfcn.inference.pipeline.Segmenter``), then Dice (SimpleITK
``LabelOverlapMeasuresImageFilter``, independent of medfcn), HD95 (``medfcn.evaluation.metrics``) and the volume error
against each reference the case defines (``field``: brain + CSF inside the skull; ``bet``: BET's ``ch2bet``), and
the seconds the segmentation took. The peers' interpreter (``bench_peers.py``) supplies nilearn's MNI152
templates and, until the sample's label is the brain + CSF one, deepbet's mask of the sample as a stand-in.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_peers import peers_python  # noqa: E402
from support.heads import SAMPLE_IMAGE, Case, build_cases, colin_references  # noqa: E402

from medfcn.data.reader import read_scan  # noqa: E402
from medfcn.evaluation.metrics import hd95  # noqa: E402
from medfcn.inference.pipeline import Segmenter  # noqa: E402
from medfcn.inference.settings import InferenceSettings  # noqa: E402

CASES = (
    "lsa oblique thick_2x2x3 fine_0.5mm remapped bias noise cropped combined "
    "mni_t1 mni_t2 mni_pd mni_flair colin_t2 colin_pd colin_flair widened_csf"
).split()


def evaluate_cases(
    model: str | None,
    cases: dict[str, Case],
    device: str = "cpu",
    axes: tuple[int, ...] | None = None,
    tta: bool = False,
) -> dict[str, dict]:
    """{case: {"group", "seconds", "shape", "spacing", reference: {"dice", "hd95_mm", "volume_error_pct"}}}.

    ``axes``: slice axes of the model's frame to average over instead of the card's (a speed/quality trade-off).
    ``tta``: also average over in-plane flips (``medfcn segment --tta``).
    """
    segmenter = Segmenter(model, InferenceSettings(device=device, tta=tta))
    if axes is not None:
        segmenter.model.card.slice_axes = tuple(axes)
    results = {}
    for name, case in cases.items():
        scan = read_scan(case.image)
        t0 = time.perf_counter()
        labels = segmenter.segment(scan)
        seconds = time.perf_counter() - t0
        row: dict = {"group": case.group, "seconds": round(seconds, 2), "shape": list(scan.shape)}
        row["spacing"] = [round(s, 3) for s in scan.spacing]
        for ref_name, ref_path in case.references.items():
            ref = sitk.ReadImage(str(ref_path), sitk.sitkUInt8)
            pred = scan.to_sitk((labels > 0).astype(np.uint8))
            pred.CopyInformation(ref)
            overlap = sitk.LabelOverlapMeasuresImageFilter()
            overlap.Execute(ref > 0, pred)
            ref_arr = sitk.GetArrayFromImage(ref).transpose(2, 1, 0) > 0
            row[ref_name] = {
                "dice": round(overlap.GetDiceCoefficient(), 4),
                "hd95_mm": round(hd95(labels > 0, ref_arr, scan.spacing), 2),
                "volume_error_pct": round(100.0 * (int((labels > 0).sum()) - int(ref_arr.sum())) / ref_arr.sum(), 1),
            }
        results[name] = row
        scores = "  ".join(
            f"{r}: Dice {row[r]['dice']:.4f} HD95 {row[r]['hd95_mm']:5.2f} vol {row[r]['volume_error_pct']:+5.1f}%"
            for r in case.references
        )
        print(f"{name:14s} {scores}  {seconds:6.2f} s  {tuple(scan.shape)}", flush=True)
    return results


def evaluate_model(model: str | None, copies: dict[str, tuple[Path, Path]], device: str = "cpu") -> dict[str, dict]:
    """Dice and HD95 on ``copies`` ({name: (image, reference mask)}), flat rows (as ``bench_ablation.py`` uses)."""
    cases = {n: Case(image, {"ref": label}) for n, (image, label) in copies.items()}
    rows = evaluate_cases(model, cases, device)
    return {
        n: {**r["ref"], "seconds": r["seconds"], "shape": r["shape"], "spacing": r["spacing"]} for n, r in rows.items()
    }


def markdown(results: dict[str, dict]) -> str:
    """A table: one row per case and reference."""
    lines = [
        "| case | what it measures | reference | Dice | HD95 mm | volume error % |",
        "|---|---|---|---:|---:|---:|",
    ]
    for name, row in results.items():
        for ref in ("field", "bet"):
            if ref in row:
                r = row[ref]
                lines.append(
                    f"| {name} | {row['group']} | {ref} | {r['dice']:.3f} | {r['hd95_mm']:.1f} | "
                    f"{r['volume_error_pct']:+.1f} |"
                )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model file (default: the bundled model)")
    parser.add_argument("--workdir", default="/tmp/medfcn_bench_peers", help="cases (shared with bench_peers.py)")
    parser.add_argument("--only", default="", help="comma-separated case names")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--markdown", default=None, help="write the table here")
    parser.add_argument("--device", default="cpu")
    default_venv = os.environ.get("MEDFCN_PEERS_VENV", str(Path(__file__).resolve().parent / ".peers-venv"))
    parser.add_argument("--peers-venv", default=default_venv, help="the peers' environment (see bench_peers.py)")
    parser.add_argument("--field-ref", default=None, help="Colin27 mask, brain + CSF (default: see heads.py)")
    parser.add_argument("--axes", default=None, help="slice axes to use instead of the model's, e.g. 2 or 0,2")
    parser.add_argument("--tta", action="store_true", help="average over in-plane flips (medfcn segment --tta)")
    args = parser.parse_args()
    axes = tuple(int(a) for a in args.axes.split(",")) if args.axes else None
    names = [n for n in args.only.split(",") if n] or ["original", *CASES]
    work = Path(args.workdir)
    python = peers_python(Path(args.peers_venv))
    refs = colin_references(work, python, args.field_ref)
    cases = {"original": Case(SAMPLE_IMAGE, dict(refs), "training subject itself")} if "original" in names else {}
    cases.update(build_cases(work / "cases", refs, python, [n for n in names if n != "original"]))
    results = evaluate_cases(args.model, cases, args.device, axes, tta=args.tta)
    for ref in ("field", "bet"):
        dice = [r[ref]["dice"] for r in results.values() if ref in r]
        if dice:
            print(f"{ref}: min Dice {min(dice):.4f}, mean {np.mean(dice):.4f} over {len(dice)} cases")
    table = markdown(results)
    print(table)
    if args.json:
        out = {"model": args.model or "bundled", "axes": args.axes or "the model's", "tta": args.tta}
        out["results"] = results
        out["references"] = {k: str(v) for k, v in refs.items()}
        Path(args.json).write_text(json.dumps(out, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(table)


if __name__ == "__main__":
    main()
