"""What a one-scan run costs, start-up included: processes timed end to end, this checkout against another revision.

Each measurement is a fresh process, run ``--repeat`` times with the variants interleaved (so other work on the
machine slows them alike); wall and CPU seconds and peak resident memory come from ``os.wait4``:

    import reader   ``python -c "import medfcn.data.reader"``: torch, MONAI and the readers, the fixed cost of a run
    segment 1 mm    ``python -m medfcn.cli segment sample_data/images/colin27.nii.gz -o OUT --device cpu --quiet
                    --overwrite``: one 1 mm head, as a user's first run

``--compare REV`` runs the same commands on the ``medfcn`` package of a git revision (``git archive REV medfcn``
into a temporary folder, first on ``PYTHONPATH``); the child checks which copy it imported. ``--importtime``
prints the largest imports of the segment command (``python -X importtime``), grouped under their importer.

Run: ``python benchmarks/bench_startup.py [--compare REV] [--repeat 5] [--threads N] [--json OUT.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_IMAGE = ROOT / "sample_data" / "images" / "colin27.nii.gz"


def export_revision(rev: str, into: Path) -> Path:
    """The ``medfcn`` package of git revision ``rev`` extracted under ``into``; returns the folder to put on
    ``PYTHONPATH``."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "medfcn"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def run(argv: list[str], env: dict[str, str]) -> dict:
    """Wall and CPU seconds and peak RSS (MB) of one process; raises SystemExit if it fails."""
    t0 = time.perf_counter()
    # cwd: a neutral folder, so `python -c` does not import the medfcn of the current directory
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tempfile.gettempdir())
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{out[-2000:]}")
    return {
        "wall": time.perf_counter() - t0,
        "cpu": usage.ru_utime + usage.ru_stime,
        "peak_mb": usage.ru_maxrss / 1024,
        "out": out,
    }


def commands(out: Path) -> dict[str, list[str]]:
    py = sys.executable
    return {
        "import reader": [py, "-c", "import medfcn, medfcn.data.reader; print('FROM', medfcn.__file__)"],
        "segment 1 mm": [
            py,
            "-c",
            "import sys, medfcn; print('FROM', medfcn.__file__); from medfcn.cli import main; sys.exit(main())",
            "segment",
            str(SAMPLE_IMAGE),
            "-o",
            str(out),
            "--device",
            "cpu",
            "--quiet",
            "--overwrite",
        ],
    }


def import_breakdown(env: dict[str, str], out: Path, top: int = 15) -> list[tuple[float, str, str]]:
    """(seconds, module, importer) of the largest third-party imports made by a MONAI or medfcn module."""
    argv = [sys.executable, "-X", "importtime", *commands(out)["segment 1 mm"][1:]]
    text = subprocess.run(
        argv, capture_output=True, encoding="utf-8", errors="replace", env=env, check=True, cwd=tempfile.gettempdir()
    ).stderr
    rows = [re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line) for line in text.splitlines()]
    rows = [(int(m[2]) / 1e6, len(m[3]), m[4]) for m in rows if m]
    found = []
    for i, (cum, depth, name) in enumerate(rows):
        if name.startswith(("monai", "medfcn")):
            continue
        parent = next((n for _, d, n in rows[i + 1 :] if d < depth), "")  # children print before their parent
        if parent.startswith(("monai", "medfcn")) or depth <= 1:
            found.append((cum, name, parent))
    return sorted(found, reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", metavar="REV", help="also time the medfcn package of this git revision")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS for the children (0: unset)")
    parser.add_argument("--importtime", action="store_true", help="print the largest imports of each variant")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_startup_"))
    base = dict(os.environ)
    if args.threads:
        base["OMP_NUM_THREADS"] = str(args.threads)
    variants = {"this checkout": {**base, "PYTHONPATH": str(ROOT)}}
    if args.compare:
        src = export_revision(args.compare, tmp / "rev")
        variants[args.compare] = {**base, "PYTHONPATH": str(src)}
    samples: dict[str, dict[str, list[dict]]] = {v: {} for v in variants}
    for _ in range(args.repeat):
        for variant, env in variants.items():
            for name, argv in commands(tmp / "out").items():
                row = run(argv, env)
                origin = next(line for line in row.pop("out").splitlines() if line.startswith("FROM"))
                if not origin.removeprefix("FROM ").startswith(env["PYTHONPATH"]):
                    raise SystemExit(f"{variant}: imported {origin}, not from {env['PYTHONPATH']}")
                samples[variant].setdefault(name, []).append(row)
    print(f"{args.repeat} runs each, interleaved; load average now {os.getloadavg()[0]:.1f}")
    head = ("variant", "command", "wall min", "wall med", "CPU min", "CPU med", "peak MB")
    print("{:<16} {:<14} {:>9} {:>9} {:>8} {:>8} {:>8}".format(*head))
    summary: dict = {}
    for variant, by_command in samples.items():
        for name, rows in by_command.items():
            wall, cpu = [r["wall"] for r in rows], [r["cpu"] for r in rows]
            s = {
                "wall_min": min(wall),
                "wall_median": statistics.median(wall),
                "cpu_min": min(cpu),
                "cpu_median": statistics.median(cpu),
                "peak_mb": max(r["peak_mb"] for r in rows),
            }
            summary.setdefault(variant, {})[name] = {k: round(v, 2) for k, v in s.items()}
            print(
                f"{variant:<16} {name:<14} {s['wall_min']:>9.2f} {s['wall_median']:>9.2f} {s['cpu_min']:>8.2f} "
                f"{s['cpu_median']:>8.2f} {s['peak_mb']:>8.0f}"
            )
    if args.importtime:
        for variant, env in variants.items():
            print(f"\nlargest imports of `medfcn segment` ({variant}), seconds cumulative:")
            for seconds, name, parent in import_breakdown(env, tmp / "out"):
                print(f"  {seconds:6.2f}  {name:<28} <- {parent or '(top level)'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"repeat": args.repeat, "results": summary}, indent=1))


if __name__ == "__main__":
    main()
