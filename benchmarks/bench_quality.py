"""Does the quality verdict say which results to check? Score against Dice on scans the model was not tuned on.

    python benchmarks/bench_quality.py --work runs/quality [--model MODEL] [--json benchmarks/results_quality.json]

The cases (:func:`support.quality_cases.test_cases`): clinical renderings of the two heads (issue 22's test set),
degraded copies (noise 4-32 %, ghosts, bias, cut-off coverage, wrong headers, reoriented/thick/remapped copies),
other contrasts, and volumes that are not head MRI (noise, a phantom, a microscopy stack, a CT slice stacked into
a series, a CT-like head, a real EPI). None of them set a threshold: the thresholds are the model's own, recorded
from its training data (``support/record_expectations.py``).

Per case: Dice against the reference (numpy on the scan's grid; a foreign volume's reference is empty, so any mask
scores 0 and an empty one 1), the verdict, and the seconds of :meth:`Segmenter.segment` and
:meth:`Segmenter.segment_and_check` on the same scan, run alternately (which goes first alternates by case) so that
the machine's load falls on both alike (``--timed N``: N cases spread over the set are timed both ways, the rest
only checked). Summary: the AUROC of (1 - score) for Dice < 0.90 (Mann-Whitney U from
scipy, checked against a direct count of pairs), the share of Dice >= 0.95 cases flagged, Spearman between score and
Dice, foreign volumes flagged, and the median and total extra time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import mannwhitneyu, spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from support.quality_cases import test_cases  # noqa: E402
from support.record import write_result  # noqa: E402

from medfcn.data.reader import read_scan  # noqa: E402
from medfcn.inference.pipeline import Segmenter  # noqa: E402
from medfcn.inference.quality import EVIDENCE_VERSION, Evidence  # noqa: E402
from medfcn.inference.settings import InferenceSettings  # noqa: E402
from medfcn.inference.verdict import judge  # noqa: E402
from medfcn.model.checkpoint import DEFAULT_MODEL_PATH, load_model  # noqa: E402


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    p, r = pred > 0, ref > 0
    total = int(p.sum()) + int(r.sum())
    return 1.0 if total == 0 else 2.0 * int((p & r).sum()) / total


def reference_on_grid(path: str, scan) -> np.ndarray:
    """The reference as an array on the scan's index grid (read as medfcn reads the scan)."""
    ref = read_scan(path)
    if ref.shape != scan.shape:
        raise SystemExit(f"{path}: reference shape {ref.shape} differs from the scan's {scan.shape}")
    return ref.array


def auroc(positive: list[float], negative: list[float]) -> float | None:
    """P(a positive outranks a negative), ties half: Mann-Whitney U / (n1 n0), checked by counting pairs."""
    if not positive or not negative:
        return None
    u = mannwhitneyu(positive, negative, alternative="two-sided").statistic / (len(positive) * len(negative))
    pairs = sum((p > n) + 0.5 * (p == n) for p in positive for n in negative) / (len(positive) * len(negative))
    assert abs(u - pairs) < 1e-9, (u, pairs)
    return round(float(u), 4)


def weights_key(model) -> str:
    """A short hash of the model's weights and of the card fields inference uses (not its expectations)."""
    import hashlib

    h = hashlib.sha256()
    for key, tensor in sorted(model.network.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    card = model.card
    h.update(repr((card.spacing, card.orientation, card.slice_axes, card.postprocess, card.class_weights)).encode())
    return h.hexdigest()[:12]


def measure(segmenter: Segmenter, case: dict, k: int, every: int) -> dict:
    """Segment one case (timed both ways when ``k`` is a multiple of ``every``, alternating which goes first) and
    score it against its reference."""
    times, result = {}, None
    order = ("plain", "check") if (k // every) % 2 == 0 else ("check", "plain")
    for which in order if k % every == 0 else ("check",):
        scan = read_scan(case["image"])
        t0 = time.perf_counter()
        found = segmenter.segment(scan) if which == "plain" else segmenter.segment_and_check(scan)
        times[which] = time.perf_counter() - t0
        if which == "check":
            result = found
    scan = read_scan(case["image"])
    ref = reference_on_grid(case["label"], scan) if case["label"] else np.zeros(scan.shape, np.uint8)
    return {
        "shape": list(scan.shape),
        "dice": round(dice(result.labels, ref), 4),
        "seconds": round(times["plain"], 3) if "plain" in times else None,
        "seconds_checked": round(times["check"], 3),
        "evidence": result.evidence.to_dict(),
    }


CPU_CASES = ("colin_thick_2x2x3", "robex_noise8", "colin27_t1c_ax6.5", "ct_like_head")


def cpu_time(segmenter: Segmenter, cases: dict, repeat: int) -> dict:
    """Extra time of the check on a few cases in this process's CPU seconds (``time.process_time``: what other
    processes on a shared machine do not inflate), ``repeat`` times each way, alternating; also wall seconds."""
    out = {}
    for name in CPU_CASES:
        if name not in cases:
            continue
        totals = {"plain": [0.0, 0.0], "check": [0.0, 0.0]}
        for r in range(repeat):
            for which in ("plain", "check") if r % 2 == 0 else ("check", "plain"):
                scan = read_scan(cases[name]["image"])
                c0, w0 = time.process_time(), time.perf_counter()
                segmenter.segment(scan) if which == "plain" else segmenter.segment_and_check(scan)
                totals[which][0] += time.process_time() - c0
                totals[which][1] += time.perf_counter() - w0
        out[name] = {
            "cpu_s_plain": round(totals["plain"][0] / repeat, 3),
            "cpu_s_checked": round(totals["check"][0] / repeat, 3),
            "cpu_extra": round(totals["check"][0] / totals["plain"][0] - 1, 4),
            "wall_extra": round(totals["check"][1] / totals["plain"][1] - 1, 4),
        }
    if out:
        out["mean_cpu_extra"] = round(float(np.mean([v["cpu_extra"] for v in out.values()])), 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True)
    parser.add_argument("--model", default=str(DEFAULT_MODEL_PATH))
    parser.add_argument("--json", default=str(Path(__file__).parent / "results_quality.json"))
    parser.add_argument("--only", default="", help="comma-separated case names")
    parser.add_argument("--cached-only", action="store_true", help="judge only the cases measured before (no run)")
    parser.add_argument(
        "--cpu-repeat", type=int, default=0, help="also time a few cases N times each way in CPU seconds (cpu_time)"
    )
    parser.add_argument(
        "--timed", type=int, default=12, help="cases timed both ways (every k-th; the rest checked only)"
    )
    args = parser.parse_args()
    model = load_model(args.model)
    segmenter = Segmenter(model, InferenceSettings(device="cpu"))
    expectations = segmenter.expectations
    cases = test_cases(Path(args.work))
    first = ("foreign", "degraded", "contrast", "clinical")  # the groups in this order (a slow machine gets far)
    cases = dict(sorted(cases.items(), key=lambda kv: first.index(kv[1]["group"])))
    if args.only:
        cases = {k: v for k, v in cases.items() if k in args.only.split(",")}
    # The evidence depends on the weights and the frame, not on the card's expectations: it is kept per case in
    # WORK/evidence_<weights>.json, so the verdicts of a re-recorded card are judged again without segmenting again.
    cache = Path(args.work) / f"evidence_{weights_key(model)}_v{EVIDENCE_VERSION}.json"
    known = json.loads(cache.read_text()) if cache.exists() else {}
    every = max(1, len(cases) // max(args.timed, 1))
    warm = False
    rows = []
    for k, (name, case) in enumerate(cases.items()):
        if name not in known and args.cached_only:
            continue
        if name not in known:
            if not warm:
                segmenter.segment(read_scan(case["image"]))  # warm-up, not timed
                warm = True
            known[name] = measure(segmenter, case, k, every)
            cache.write_text(json.dumps(known, indent=1))
        seen = known[name]
        evidence = Evidence.from_dict(seen["evidence"])
        v = judge(evidence, expectations, axes=len(model.card.slice_axes))
        row = {
            "case": name,
            "group": case["group"],
            **{k: seen[k] for k in ("shape", "dice", "seconds", "seconds_checked")},
            "review": v.review,
            "score": v.score,
            "reasons": v.reasons,
            "risks": v.risks,
            "volume_ml": evidence.volume_ml,
        }
        rows.append(row)
        plain = float("nan") if row["seconds"] is None else row["seconds"]
        print(
            f"{name:34s} {case['group']:9s} dice {row['dice']:.4f} score {v.score:.3f} "
            f"{'FLAG' if v.review else '    '} {plain:.2f}s/{row['seconds_checked']:.2f}s  "
            f"{'; '.join(v.reasons)[:150]}",
            flush=True,
        )
    referenced = [r for r in rows if r["group"] != "foreign"]
    poor = [1 - r["score"] for r in referenced if r["dice"] < 0.90]
    fine = [1 - r["score"] for r in referenced if r["dice"] >= 0.90]
    good = [r for r in referenced if r["dice"] >= 0.95]
    foreign = [r for r in rows if r["group"] == "foreign"]
    timed = [r for r in rows if r["seconds"] is not None]
    plain, checked = sum(r["seconds"] for r in timed), sum(r["seconds_checked"] for r in timed)
    ratios = [r["seconds_checked"] / r["seconds"] for r in timed]
    rho = spearmanr([r["score"] for r in referenced], [r["dice"] for r in referenced]).statistic
    summary = {
        "cases": len(rows),
        "referenced_cases": len(referenced),
        "auroc_dice_below_0.90": auroc(poor, fine),
        "auroc_with_foreign_as_poor": auroc(poor + [1 - r["score"] for r in foreign], fine),
        "poor_cases": len(poor),
        "poor_flagged": sum(r["review"] for r in referenced if r["dice"] < 0.90),
        "good_cases": len(good),
        "good_flagged": sum(r["review"] for r in good),
        "good_flagged_share": round(sum(r["review"] for r in good) / max(len(good), 1), 4),
        "middling_cases": sum(0.90 <= r["dice"] < 0.95 for r in referenced),
        "middling_flagged": sum(r["review"] for r in referenced if 0.90 <= r["dice"] < 0.95),
        "spearman_score_dice": round(float(rho), 4),
        "foreign_cases": len(foreign),
        "foreign_flagged": sum(r["review"] for r in foreign),
        "extra_time_total": round(checked / plain - 1, 4),
        "extra_time_median": round(float(np.median(ratios)) - 1, 4),
        "timed_cases": len(timed),
        "seconds_plain_total": round(plain, 2),
        "seconds_checked_total": round(checked, 2),
    }
    for key, value in summary.items():
        print(f"{key}: {value}")
    if args.cpu_repeat:
        summary["cpu_time"] = cpu_time(segmenter, cases, args.cpu_repeat)
        print("cpu_time:", summary["cpu_time"])
    note = "timings on a 2-core machine shared with other jobs: noisy; plain and checked runs alternate per case"
    write_result(args.json, {"summary": summary, "note": note, "cases": rows}, {"model": args.model})


if __name__ == "__main__":
    main()
