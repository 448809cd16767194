"""How much reading and writing add to inference in a batch: sequential vs background reading vs 2 local workers.

N copies of the Colin27 sample (181 x 217 x 181, 1 mm) are segmented four ways:

- ``inference``: :meth:`Segmenter.segment` on scans already in memory (the floor: no reading, no writing);
- ``sequential``: read, segment, write one case after another (what a plain loop does);
- ``background``: :func:`run_batch` (the next case read, the last one written, while the current one runs);
- ``2 workers``: :func:`run_batch` with ``workers=2`` (a local Dask cluster of 2 processes; its start-up is
  timed separately and reported beside the per-case figure).

Target: ``background`` within 10% of ``inference`` per case. Run:
``python benchmarks/bench_batch.py [--cases 6] [--model M] [--device cpu]`` (default model: the bundled one, or
an untrained network of the default architecture when it is absent: same cost, meaningless labels).
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
    from medfcn.checkpoint import DEFAULT_MODEL_PATH, ModelCard, save_model
    from medfcn.network import FCN

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


def _row(name: str, wall: float, n: int, floor: float, detail: str = "") -> str:
    per = wall / n
    extra = f"{100 * (per - floor) / floor:+6.1f}%" if floor else "      -"
    return f"{name:<12} {wall:8.2f} {per:8.2f} {extra:>9}   {detail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--image", default=str(SAMPLE))
    args = parser.parse_args()

    from medfcn.batch import run_batch
    from medfcn.pipeline import Segmenter
    from medfcn.reader import read_scan
    from medfcn.writer import write_labels

    tmp = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    try:
        inputs = tmp / "in"
        inputs.mkdir()
        for i in range(args.cases):
            shutil.copy(args.image, inputs / f"case{i:02d}.nii.gz")
        model = _model(args.model, tmp)
        seg = Segmenter(model, device=args.device)
        n = args.cases
        print(
            f"{n} cases of {Path(args.image).name}, model {seg.model.name}, device {seg.device}, "
            f"{len(os.sched_getaffinity(0))} cores, load average {os.getloadavg()[0]:.1f}"
        )

        scans = [read_scan(p) for p in sorted(inputs.iterdir())]
        seg.segment(scans[0])  # warm-up: first-call allocations are not part of any mode
        t0 = time.perf_counter()
        for scan in scans:
            seg.segment(scan)
        inference = time.perf_counter() - t0
        floor = inference / n
        del scans

        reads, writes = [], []
        t0 = time.perf_counter()
        for path in sorted(inputs.iterdir()):
            a = time.perf_counter()
            scan = read_scan(path)
            b = time.perf_counter()
            labels = seg.segment(scan)
            c = time.perf_counter()
            write_labels(labels, scan, tmp / "seq" / path.name)
            reads.append(b - a)
            writes.append(time.perf_counter() - c)
        sequential = time.perf_counter() - t0

        t0 = time.perf_counter()
        local = run_batch([inputs], tmp / "bg", model=seg.model, device=args.device, progress=False)
        background = time.perf_counter() - t0
        assert local.exit_code == 0

        from distributed import LocalCluster

        t0 = time.perf_counter()
        with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None):
            pass
        startup = time.perf_counter() - t0
        t0 = time.perf_counter()
        dist = run_batch([inputs], tmp / "w2", model=model, device=args.device, workers=2, progress=False)
        workers = time.perf_counter() - t0
        assert dist.exit_code == 0
        same = all(
            np.array_equal(_labels(tmp / "bg" / name), _labels(tmp / "w2" / name))
            for name in (f"{c.case}.nii.gz" for c in local.cases)
        )

        def mean(key: str, manifest) -> float:
            return float(np.mean([c.timing.get(key, 0.0) for c in manifest.cases]))

        print(f"\n{'mode':<12} {'wall s':>8} {'s/case':>8} {'vs infer':>9}   detail")
        print(_row("inference", inference, n, 0.0, "Segmenter.segment on scans in memory"))
        print(
            _row(
                "sequential",
                sequential,
                n,
                floor,
                f"read {np.mean(reads):.2f} s + write {np.mean(writes):.2f} s per case, in line",
            )
        )
        print(
            _row(
                "background",
                background,
                n,
                floor,
                f"read {mean('read', local):.2f} / segment {mean('segment', local):.2f} / write "
                f"{mean('write', local):.2f} s per case, read and write in threads",
            )
        )
        print(
            _row(
                "2 workers",
                workers,
                n,
                floor,
                f"incl. ~{startup:.1f} s cluster start; per worker segment {mean('segment', dist):.2f} s "
                f"(1 torch thread); outputs equal to background: {same}",
            )
        )
        print(_row("2 w, started", workers - startup, n, floor, "the same without the cluster start-up"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
