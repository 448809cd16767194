"""Where a segmentation's time goes: one case and a 12-scan batch broken into the pipeline's stages.

The stages are :class:`medfcn.inference.pipeline.Segmenter`'s, called one by one in one process with the model
loaded once (the bundled model unless ``--model``), each timed on its own:

    read          ``read_scan`` (NIfTI through nibabel, geometry through SimpleITK and MONAI's ``LoadImage``)
    to_frame      reorient and resample onto the model's frame (``Segmenter.to_frame``)
    normalise     intensity normalisation (``Segmenter.normalise``)
    network a0..  the network's forward passes along each slice axis (the backend's runner, softmax included)
    blend a0..    the rest of ``Segmenter.probabilities`` per axis: stacking slices, tiling, summing into uint16
    largest_component, fill_slices   each post-processing step of the card (``apply_to_probabilities``, one step
                  at a time: the same labels as the card's steps together, checked)
    to_scan       probabilities resampled back onto the scan's grid (``Segmenter.to_scan``)
    write         ``write_labels`` (gzip level 1, read back whole and compared)

The labels of the staged run are compared with ``Segmenter.segment``'s on every case (they must be identical).
``import`` is a fresh process importing what ``medfcn segment`` imports before its first case (wall seconds, best
of 3). The batch is the 12 scans of ``bench_peers.py --runs batch`` (made by ``support/heads.py``, which needs
the peers' venv for the MNI152 template), in one process, stage sums over the scans; ``single`` is the sample
1 mm head (Colin27, 181 x 217 x 181), each stage the median of ``--repeat`` runs. Absolute seconds depend on what
else runs on the machine; the shares are the point.

Run: ``python benchmarks/bench_profile.py [--backend torch|onnxruntime|openvino] [--repeat 3]
[--workdir /tmp/medfcn_bench_peers] [--json benchmarks/results_profile_<backend>.json]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from support.record import REPO, write_result  # noqa: E402

SAMPLE_IMAGE = REPO / "sample_data" / "images" / "colin27.nii.gz"
BATCH = "lsa oblique thick_2x2x3 remapped bias noise cropped combined mni_t1 mni_t2 mni_pd mni_flair".split()
IMPORTS = "import medfcn.batch.run, medfcn.inference.pipeline, medfcn.data.reader, medfcn.data.writer"


def import_seconds(repeat: int = 3) -> float:
    """Best wall seconds of a fresh process importing what ``medfcn segment`` needs before its first case."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", IMPORTS], check=True, cwd=tempfile.gettempdir())
        times.append(time.perf_counter() - t0)
    return min(times)


def profile_case(segmenter, path: Path, out: Path) -> dict[str, float]:
    """Seconds per stage for one scan; raises SystemExit when the staged labels differ from ``segment``'s."""
    from medfcn.data.reader import read_scan
    from medfcn.data.writer import write_labels
    from medfcn.inference.postprocess import apply_to_probabilities

    seconds: dict[str, float] = defaultdict(float)
    engine = segmenter.engine
    axis_of_call = {"axis": None}
    run = engine.runner

    def timed_runner(x):
        t = time.perf_counter()
        y = run(x)
        seconds[f"network a{axis_of_call['axis']}"] += time.perf_counter() - t
        return y

    t = time.perf_counter()
    scan = read_scan(path)
    seconds["read"] = time.perf_counter() - t
    t = time.perf_counter()
    frame = segmenter.to_frame(scan)
    seconds["to_frame"] = time.perf_counter() - t
    t = time.perf_counter()
    volume = segmenter.normalise(frame)
    seconds["normalise"] = time.perf_counter() - t
    card = segmenter.model.card
    engine.runner = timed_runner
    try:
        n_axes = len(card.slice_axes)
        t = time.perf_counter()
        axis_of_call["axis"] = card.slice_axes[0]
        starts: dict[int, float] = {}

        def staged(fraction: float) -> None:  # called with (n + f) / len(axes): n / len(axes) where axis n starts
            n = round(fraction * n_axes)
            if abs(fraction * n_axes - n) < 1e-9 and n < n_axes and n not in starts:
                starts[n] = time.perf_counter()
                axis_of_call["axis"] = card.slice_axes[n]

        probs = segmenter.probabilities(volume, progress=staged)
        end = time.perf_counter()
    finally:
        engine.runner = run
    bounds = [starts.get(i, t) for i in range(n_axes)] + [end]
    for i, axis in enumerate(card.slice_axes):
        total = bounds[i + 1] - bounds[i]
        seconds[f"blend a{axis}"] = total - seconds[f"network a{axis}"]
    staged_probs = probs.copy()
    for step in card.postprocess:
        t = time.perf_counter()
        apply_to_probabilities(staged_probs, (step,))
        seconds[step] = time.perf_counter() - t
    t = time.perf_counter()
    labels = segmenter.to_scan(staged_probs, frame)
    seconds["to_scan"] = time.perf_counter() - t
    t = time.perf_counter()
    write_labels(labels, scan, out / f"{scan.case}.nii.gz")
    seconds["write"] = time.perf_counter() - t
    reference = segmenter.segment(read_scan(path))
    if not np.array_equal(reference, labels):
        raise SystemExit(f"{path.name}: the staged labels differ from Segmenter.segment's")
    return dict(seconds)


def table(rows: dict[str, dict[str, float]]) -> str:
    """Markdown: stage, seconds and share of the total for each column of ``rows`` ({column: {stage: s}})."""
    stages = list(dict.fromkeys(k for r in rows.values() for k in r))
    head = " | ".join(f"{c} s | {c} %" for c in rows)
    lines = [f"| stage | {head} |", "|---|" + "---:|---:|" * len(rows)]
    for stage in [*stages, "total"]:
        cells = []
        for r in rows.values():
            total = sum(r.values())
            v = total if stage == "total" else r.get(stage, 0.0)
            cells.append(f"{v:.3f} | {100 * v / total:.0f}")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model file (default: the bundled model)")
    parser.add_argument("--backend", default="torch", help="torch, onnxruntime, openvino or auto")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the single case (median per stage)")
    parser.add_argument("--workdir", default="/tmp/medfcn_bench_peers", help="bench_peers.py's cases (made if missing)")
    parser.add_argument("--peers-venv", default=str(REPO / "benchmarks" / ".peers-venv"))
    parser.add_argument("--runs", default="single,batch", help="comma-separated: single, batch")
    parser.add_argument("--json", default=None, help="result file (default: benchmarks/results_profile_<backend>.json)")
    args = parser.parse_args()

    from medfcn.inference.pipeline import Segmenter
    from medfcn.inference.settings import InferenceSettings
    from medfcn.model.checkpoint import DEFAULT_MODEL_PATH

    runs = [r for r in args.runs.split(",") if r]
    segmenter = Segmenter(args.model, InferenceSettings(device="cpu", backend=args.backend))
    backend = segmenter.engine.backend
    print(f"backend {backend}, {segmenter.engine.threads} threads; import", flush=True)
    result: dict = {"backend": backend, "threads": segmenter.engine.threads, "import_s": round(import_seconds(), 3)}
    out = Path(tempfile.mkdtemp(prefix="bench_profile_"))
    rows = {}
    if "single" in runs:
        profile_case(segmenter, SAMPLE_IMAGE, out)  # warm-up: first calls allocate and compile
        repeats = [profile_case(segmenter, SAMPLE_IMAGE, out) for _ in range(args.repeat)]
        single = {k: statistics.median(r[k] for r in repeats) for k in repeats[0]}
        result["single"] = {"case": "colin27 (1 mm)", "seconds": {k: round(v, 4) for k, v in single.items()}}
        rows["single"] = single
    if "batch" in runs:
        from bench_peers import peers_python
        from support.heads import build_cases, colin_references

        python = peers_python(Path(args.peers_venv))
        work = Path(args.workdir)
        cases = build_cases(work / "cases", colin_references(work, python), python, BATCH)
        batch: dict[str, float] = defaultdict(float)
        per_case = {}
        for name in BATCH:
            seconds = profile_case(segmenter, cases[name].image, out)
            per_case[name] = round(sum(seconds.values()), 3)
            for k, v in seconds.items():
                batch[k] += v
        result["batch"] = {"cases": per_case, "seconds": {k: round(v, 4) for k, v in batch.items()}}
        rows["batch (12 scans)"] = dict(batch)
    result["table"] = table(rows)
    print(f"import (fresh process): {result['import_s']:.2f} s")
    print(result["table"])
    path = args.json or REPO / "benchmarks" / f"results_profile_{backend}.json"
    write_result(path, result, {"model": args.model or DEFAULT_MODEL_PATH})
    print(f"written to {path}")
    for f in out.iterdir():
        f.unlink()
    os.rmdir(out)


if __name__ == "__main__":
    main()
