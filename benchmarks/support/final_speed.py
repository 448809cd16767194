"""The two Python steps of ``benchmarks/final_speed.sh`` (issue 36's figures in one run).

    importtime  ``python -X importtime`` of ``medfcn segment`` on the 1 mm sample head as one process (the
                backend ``auto`` takes, from the run's cache): the total import time, the big packages' times
                with what they import (the interpreter's cumulative column) and each package's own time (the sum
                of its modules' self column, whoever imported them)
    summary     reads what the run wrote (bench_peers' JSON, bench_segment's JSON, the importtime JSON, the
                backend ``auto`` chose), scores each backend's batch masks against torch's (Dice, here with numpy:
                bench_peers scores them against the references with SimpleITK), writes the summary through
                ``record.py`` and prints the table with the issue's three "done when" ratios

Run by the shell script; by hand: ``python benchmarks/support/final_speed.py importtime --out DIR --json OUT`` and
``python benchmarks/support/final_speed.py summary --peers P.json --segment S.json --importtime I.json --auto
MANIFEST --peers-out DIR --json OUT.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.record import write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_IMAGE = ROOT / "sample_data" / "images" / "colin27.nii.gz"
PACKAGES = (
    "torch",
    "scipy",
    "SimpleITK",
    "nibabel",
    "onnxruntime",
    "openvino",
    "medfcn.inference.pipeline",
    "medfcn.data.reader",
)
BACKENDS = ("torch", "onnxruntime", "openvino")
TARGETS = {"batch": 3.0, "single": 0.5, "speedup_05mm": 40.0, "memory_05mm": 0.2, "dice_delta": 0.0005}


def importtime(out: Path, backend: str) -> dict:
    """Wall seconds of one ``medfcn segment`` process under ``-X importtime`` and its import times (s)."""
    code = "import sys; from medfcn.cli import main; sys.exit(main())"
    argv = [sys.executable, "-X", "importtime", "-c", code, "segment", str(SAMPLE_IMAGE), "-o", str(out)]
    argv += ["--device", "cpu", "--quiet", "--overwrite", "--backend", backend]
    t0 = time.perf_counter()
    run = subprocess.run(argv, capture_output=True, encoding="utf-8", errors="replace", cwd=tempfile.gettempdir())
    wall = time.perf_counter() - t0
    if run.returncode != 0:
        raise SystemExit(f"medfcn segment under -X importtime failed:\n{run.stderr[-3000:]}")
    rows = [re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line) for line in run.stderr.splitlines()]
    rows = [(int(m[1]) / 1e6, int(m[2]) / 1e6, len(m[3]) // 2, m[4]) for m in rows if m]
    top = [(cum, name) for _, cum, depth, name in rows if depth == 0]  # the imports made at the top level
    own: dict[str, float] = {}  # each package's modules' own time (their imports of other packages not counted)
    for self_s, _, _, name in rows:
        package = name.split(".")[0]
        own[package] = own.get(package, 0.0) + self_s
    cumulative = {name: round(cum, 3) for _, cum, _, name in rows if name in PACKAGES}
    return {
        "wall_s": round(wall, 2),
        "imports_s": round(sum(c for c, _ in top), 3),
        "packages_s": {p: cumulative.get(p, 0.0) for p in PACKAGES},  # cumulative: with what they import
        "own_s": {p: round(t, 3) for p, t in sorted(own.items(), key=lambda kv: -kv[1])[:10]},
        "largest_top_level": [[name, round(c, 3)] for c, name in sorted(top, reverse=True)[:8]],
        "manifest_backend": json.loads((out / "manifest.json").read_text(encoding="utf-8")).get("backend"),
    }


def mask_dice(a: Path, b: Path) -> float:
    import nibabel as nib

    x, y = np.asarray(nib.load(str(a)).dataobj) > 0, np.asarray(nib.load(str(b)).dataobj) > 0
    if x.shape != y.shape:
        raise SystemExit(f"{a} and {b} differ in shape: {x.shape} vs {y.shape}")
    total = x.sum() + y.sum()
    return 1.0 if total == 0 else float(2 * (x & y).sum() / total)


def backend_quality(peers: dict, peers_out: Path) -> dict:
    """Per backend on the batch: the largest |Dice - torch's Dice| against any case's reference (bench_peers'
    scores) and the lowest Dice of its masks against torch's masks (numpy, here)."""
    quality = {}
    for backend in BACKENDS:
        tool = f"medfcn_{backend}"
        deltas, agreement = [], []
        for case, info in peers["cases"].items():
            ours, theirs = info["scores"].get(tool, {}), info["scores"].get("medfcn_torch", {})
            deltas += [abs(ours[r]["dice"] - theirs[r]["dice"]) for r in ours if r in theirs and "dice" in ours[r]]
            a, b = (
                peers_out / "batch" / tool / f"{case}.nii.gz",
                peers_out / "batch" / "medfcn_torch" / f"{case}.nii.gz",
            )
            if case in peers["runs"].get("batch", {}).get(tool, {}).get("per_case_s", {}) and a.exists() and b.exists():
                agreement.append(mask_dice(a, b))
        if deltas:
            quality[backend] = {
                "max_dice_delta": round(max(deltas), 4),
                "min_dice_vs_torch": round(min(agreement), 5) if agreement else None,
            }
    return quality


def summary(args: argparse.Namespace) -> None:
    peers = json.loads(Path(args.peers).read_text(encoding="utf-8"))
    segment = json.loads(Path(args.segment).read_text(encoding="utf-8")) if Path(args.segment).exists() else {}
    imports = json.loads(Path(args.importtime).read_text(encoding="utf-8"))
    auto = json.loads(Path(args.auto).read_text(encoding="utf-8"))["backend"]
    runs = peers["runs"]
    probe = Path(args.probe) if args.probe else None
    measured = json.loads(probe.read_text(encoding="utf-8")) if probe is not None and probe.exists() else {}
    result: dict = {"auto_backend": auto, "probe_seconds": [entry.get("seconds") for entry in measured.values()]}
    lines = [f"auto takes: {auto} (its probe, best seconds a round: {result['probe_seconds'] or 'not recorded'})", ""]
    lines.append("| run | tool | wall s median (min / max) | CPU s | peak MB | ratio | done when |")
    lines.append("|---|---|---|---:|---:|---:|---|")
    ratios: dict = {}
    for run, target, sense in (
        ("batch", TARGETS["batch"], "deepbet / medfcn >= 3"),
        ("single", TARGETS["single"], "medfcn / deepbet <= 0.5"),
    ):
        rows = runs.get(run, {})
        deepbet = rows.get("deepbet")
        for tool, row in rows.items():
            ratio = None
            if deepbet and tool != "deepbet":
                ratio = deepbet["wall_s"] / row["wall_s"] if run == "batch" else row["wall_s"] / deepbet["wall_s"]
                ratios.setdefault(run, {})[row.get("backend") or tool] = round(ratio, 3)
            is_auto = tool == f"medfcn_{auto}"
            verdict = (
                "" if ratio is None else ("yes" if (ratio >= target if run == "batch" else ratio <= target) else "no")
            )
            name = f"{tool} (= auto)" if is_auto else tool
            low, high = row.get("wall_min_s", row["wall_s"]), row.get("wall_max_s", row["wall_s"])
            shown = "-" if ratio is None else f"{ratio:.2f}"
            lines.append(
                f"| {run} ({row['n_cases']} scans, {row.get('repeats', 1)} runs) | {name} | "
                f"{row['wall_s']:.1f} ({low:.1f} / {high:.1f}) | {row['cpu_s']:.1f} | {row['peak_mb']} | {shown} | "
                f"{sense + ': ' + verdict if verdict else ''} |"
            )
    medfcn_rows = {t: r for t, r in runs.get("batch", {}).items() if t.startswith("medfcn_")}
    if f"medfcn_{auto}" in medfcn_rows:
        fastest = min(medfcn_rows, key=lambda t: medfcn_rows[t]["wall_s"])
        share = medfcn_rows[f"medfcn_{auto}"]["wall_s"] / medfcn_rows[fastest]["wall_s"]
        result["auto_vs_fastest_batch"] = {"fastest": fastest, "ratio": round(share, 3)}
        lines += ["", f"auto's backend against the fastest in the batch ({fastest}): {share:.2f}x its time"]
    quality = backend_quality(peers, Path(args.peers_out)) if "batch" in runs else {}
    result.update({"ratios": ratios, "quality": quality, "importtime": imports, "targets": TARGETS})
    lines.append("")
    for backend, q in quality.items():
        ok = "yes" if q["max_dice_delta"] <= TARGETS["dice_delta"] else "no"
        lines.append(
            f"batch quality {backend}: max |Dice - torch's Dice| {q['max_dice_delta']:.4f} (<= 0.0005: {ok}); "
            f"lowest Dice of its masks against torch's {q['min_dice_vs_torch']}"
        )
    lines.append(
        f"1 mm head under -X importtime ({imports['manifest_backend']}): {imports['wall_s']:.1f} s wall, imports "
        f"{imports['imports_s']:.2f} s; with what they import: "
        + ", ".join(f"{k} {v:.2f}" for k, v in imports["packages_s"].items() if v)
        + "; own time by package: "
        + ", ".join(f"{k} {v:.2f}" for k, v in imports["own_s"].items())
    )
    vs = segment.get("medfcn_vs_monai")
    if vs:
        rows = segment["rows"]
        result["ratios"]["0.5mm"] = vs
        lines.append(
            f"0.5 mm head: medfcn segment {rows['medfcn-cli']['wall']:.1f} s, {rows['medfcn-cli']['peak_mb']:.0f} MB; "
            f"MONAI {rows['monai']['wall']:.1f} s, {rows['monai']['peak_mb']:.0f} MB: {vs['speedup']:.1f}x faster "
            f"(>= 40: {'yes' if vs['speedup'] >= 40 else 'no'}) at {vs['memory']:.2f}x the memory "
            f"(<= 0.2: {'yes' if vs['memory'] <= 0.2 else 'no'})"
        )
    else:
        lines.append("0.5 mm head: the MONAI pipeline was not run (SKIP_MONAI)")
    loads = [r["load"] for rows in runs.values() for r in rows.values()]
    lines.append(f"load average at the end of each process: {min(loads)}-{max(loads)} (a quiet 2-core machine: < 1)")
    text = "\n".join(lines)
    print(text)
    result["table"] = text
    from medfcn.model.checkpoint import DEFAULT_MODEL_PATH

    write_result(args.json, result, {"medfcn model": DEFAULT_MODEL_PATH})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("importtime")
    p.add_argument("--out", required=True, help="output folder of the segment run")
    p.add_argument("--backend", default="auto")
    p.add_argument("--repeat", type=int, default=1, help="runs; the one with the median import time is kept")
    p.add_argument("--json", required=True)
    s = sub.add_parser("summary")
    for name in ("peers", "segment", "importtime", "auto", "peers-out", "json"):
        s.add_argument(f"--{name}", required=True)
    s.add_argument("--probe", default="", help="auto's measurement (the cache's backends.json)")
    args = parser.parse_args()
    if args.step == "importtime":
        runs = [importtime(Path(args.out), args.backend) for _ in range(args.repeat)]
        median = statistics.median_low([r["imports_s"] for r in runs])
        Path(args.json).write_text(json.dumps(next(r for r in runs if r["imports_s"] == median)), encoding="utf-8")
    else:
        summary(args)


if __name__ == "__main__":
    main()
