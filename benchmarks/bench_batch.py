"""How much reading and writing add to inference in a batch: sequential vs background reading vs 2 local workers.

N copies of the Colin27 sample (181 x 217 x 181, 1 mm) are segmented four ways:

- ``inference``: :meth:`Segmenter.segment` on scans already in memory (the floor: no reading, no writing);
- ``sequential``: read, segment, write one case after another (what a plain loop does);
- ``background``: :func:`run_batch` (the next case read, the last one written, while the current one runs);
- ``2 workers``: :func:`run_batch` with ``workers=2`` (a local Dask cluster of 2 processes; its start-up is
  timed separately and reported beside the per-case figure).

The modes run in turn, ``--rounds`` times (best of the rounds reported), so a machine whose load changes hurts
them alike. Target: ``background`` within 10% of ``inference`` per case. Run:
``python benchmarks/bench_batch.py [--cases 6] [--rounds 2] [--model M] [--device cpu]`` (default model: the
bundled one, or an untrained network of the default architecture when it is absent: same cost).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data" / "images" / "colin27.nii.gz"


def _model(path: str | None, tmp: Path) -> Path:
    from medfcn.model.checkpoint import DEFAULT_MODEL_PATH, ModelCard, save_model
    from medfcn.model.network import FCN

    if path:
        return Path(path)
    if DEFAULT_MODEL_PATH.is_file():
        return DEFAULT_MODEL_PATH
    net = FCN(in_channels=3, num_classes=2).eval()
    print("(bundled model absent: timing an untrained network of the default architecture)")
    return save_model(tmp / "untrained.safetensors", net, ModelCard(network=net.config.to_dict(), name="untrained"))


def _labels(path: Path) -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.load(str(path)).dataobj)


def _mean(manifest, key: str) -> float:
    return float(np.mean([c.timing.get(key, 0.0) for c in manifest.cases]))


def _inference(seg, scans) -> tuple[float, str]:
    t0 = time.perf_counter()
    for scan in scans:
        seg.segment(scan)
    return time.perf_counter() - t0, "Segmenter.segment on scans already in memory"


def _sequential(seg, paths: list[Path], out: Path) -> tuple[float, str]:
    from medfcn.data.reader import read_scan
    from medfcn.data.writer import write_labels

    reads, writes = [], []
    t0 = time.perf_counter()
    for path in paths:
        a = time.perf_counter()
        scan = read_scan(path)
        b = time.perf_counter()
        labels = seg.segment(scan)
        c = time.perf_counter()
        write_labels(labels, scan, out / path.name)
        reads.append(b - a)
        writes.append(time.perf_counter() - c)
    wall = time.perf_counter() - t0
    return wall, f"read {np.mean(reads):.2f} s + write {np.mean(writes):.2f} s per case, one after the other"


def _batch(inputs: Path, out: Path, model, device: str, workers: int) -> tuple[float, str]:
    from medfcn.batch.cluster import ClusterSettings
    from medfcn.batch.run import run_batch
    from medfcn.inference.settings import InferenceSettings

    t0 = time.perf_counter()
    m = run_batch(
        [inputs],
        out,
        model=model,
        settings=InferenceSettings(device=device),
        cluster=ClusterSettings(workers=workers),
        overwrite=True,
        progress=False,
    )
    wall = time.perf_counter() - t0
    if m.exit_code:
        raise SystemExit(f"batch failed: {[c.error for c in m.cases if c.error]}")
    n = len(m.cases)
    stages = f"read {_mean(m, 'read'):.2f} / segment {_mean(m, 'segment'):.2f} / write {_mean(m, 'write'):.2f} s"
    if workers:
        return wall, f"{stages} per case on a worker (1 torch thread each)"
    hidden = 100 * (wall / n - _mean(m, "segment")) / _mean(m, "segment")
    return wall, f"{stages} per case; wall/case {hidden:+.1f}% over its own segment time"


def _row(name: str, wall: float, n: int, floor: float, detail: str = "") -> str:
    per = wall / n
    extra = f"{100 * (per - floor) / floor:+6.1f}%" if floor else "      -"
    return f"{name:<12} {wall:8.2f} {per:8.2f} {extra:>9}   {detail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--image", default=str(SAMPLE))
    args = parser.parse_args()

    from distributed import LocalCluster

    from medfcn.data.reader import read_scan
    from medfcn.inference.pipeline import Segmenter
    from medfcn.inference.settings import InferenceSettings

    tmp = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    try:
        inputs = tmp / "in"
        inputs.mkdir()
        for i in range(args.cases):
            shutil.copy(args.image, inputs / f"case{i:02d}.nii.gz")
        paths = sorted(inputs.iterdir())
        model = _model(args.model, tmp)
        seg = Segmenter(model, InferenceSettings(device=args.device))
        n = args.cases
        print(
            f"{n} cases of {Path(args.image).name}, model {seg.model.name}, device {seg.device}, "
            f"{len(os.sched_getaffinity(0))} cores, load average {os.getloadavg()[0]:.1f}, best of {args.rounds}"
        )
        scans = [read_scan(p) for p in paths]
        seg.segment(scans[0])  # warm-up: first-call allocations are not part of any mode

        t0 = time.perf_counter()
        with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None):
            pass
        startup = time.perf_counter() - t0

        modes = {
            "inference": lambda r: _inference(seg, scans),
            "sequential": lambda r: _sequential(seg, paths, tmp / f"seq{r}"),
            "background": lambda r: _batch(inputs, tmp / f"bg{r}", seg.model, args.device, 0),
            "2 workers": lambda r: _batch(inputs, tmp / f"w2{r}", model, args.device, 2),
        }
        best: dict[str, tuple[float, str]] = {}
        for r in range(args.rounds):
            for name, run in modes.items():
                wall, detail = run(r)
                print(f"  round {r + 1}: {name:<11} {wall:7.2f} s (load {os.getloadavg()[0]:.1f})", flush=True)
                if name not in best or wall < best[name][0]:
                    best[name] = (wall, detail)
        same = all(np.array_equal(_labels(tmp / "bg0" / p.name), _labels(tmp / "w20" / p.name)) for p in paths)

        floor = best["inference"][0] / n
        print(f"\n{'mode':<12} {'wall s':>8} {'s/case':>8} {'vs infer':>9}   detail")
        for name, (wall, detail) in best.items():
            if name == "2 workers":
                detail += f"; incl. {startup:.1f} s cluster start-up; outputs equal to background: {same}"
            print(_row(name, wall, n, 0.0 if name == "inference" else floor, detail))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
