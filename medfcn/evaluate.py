"""Scoring predicted label maps against references, case by case: ``metrics.csv``, ``metrics.json``, ``report.html``.

Pairing: ``pred`` and ``ref`` are files or folders of anything :func:`medfcn.reader.read_scan` reads, found with
:func:`medfcn.discovery.find_cases`; cases pair by case name (file name without its extension). Two single files
always pair, under the prediction's name. Cases on one side only are listed in :attr:`Evaluation.unmatched_pred`
and :attr:`Evaluation.unmatched_ref`; a case that cannot be read, or whose grids differ, is one line in
:attr:`Evaluation.failed` and the others go on. A prediction stored in another index order on the same voxels (axes
permuted or flipped, e.g. a DICOM series read in reverse) is reordered exactly, not refused.

Labels: every nonzero id found in any case, plus the ids of ``label_names``; every case has a row for every label
(a label neither map of a case holds scores as "both empty", see :mod:`medfcn.metrics`), so a structure missed in
one case can never drop out of its label's mean.

Images under the overlays: ``images`` (``{case: path}`` or a folder), else a folder beside a reference folder named
``labels*`` whose name has ``images`` in its place (``labelsTr`` -> ``imagesTr``), matched by case name or as
``CASE_0000``; an image on another grid than its reference is left out. Without one, the overlays are drawn on the
masks alone.

>>> ev = evaluate("seg/", "labels/", "report/")  # doctest: +SKIP
>>> print("\\n".join(ev.summary_lines()))  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import logging
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medfcn.discovery import CaseSpec, find_cases
from medfcn.errors import MedfcnError, NoScansError, UsageError
from medfcn.metrics import METRIC_NAMES, LabelMetrics, compute_metrics
from medfcn.reader import read_scan
from medfcn.report import Thumbnail, case_thumbnails, render_html
from medfcn.scan import Scan
from medfcn.writer import atomic_write_text

__all__ = ["evaluate", "Evaluation", "MetricRow", "aligned_to", "CSV_COLUMNS", "STAT_NAMES"]

log = logging.getLogger(__name__)

CSV_COLUMNS = ("case", "label", "dice", "iou", "hd95_mm", "assd_mm", "surface_dice", "vol_ref_ml", "vol_pred_ml")
STAT_NAMES = ("mean", "median", "std", "min", "max", "n")
_IMAGE_SUFFIXES = ("_0000",)  # nnU-Net names the first channel of case X "X_0000"
_SUMMARY_LABELS = 8  # the most labels summary_lines lists


@dataclass(frozen=True)
class MetricRow:
    """The metrics of one label in one case (distances in mm, volumes in mL; see :class:`LabelMetrics`)."""

    case: str
    label: int
    dice: float
    iou: float
    hd95_mm: float
    assd_mm: float
    surface_dice: float
    vol_ref_ml: float
    vol_pred_ml: float

    @classmethod
    def of(cls, case: str, label: int, m: LabelMetrics) -> MetricRow:
        return cls(case, int(label), *(float(getattr(m, c)) for c in CSV_COLUMNS[2:]))

    @property
    def metrics(self) -> LabelMetrics:
        return LabelMetrics(**{c: getattr(self, c) for c in CSV_COLUMNS[2:]})

    @property
    def vol_diff_ml(self) -> float:
        return self.vol_pred_ml - self.vol_ref_ml

    @property
    def status(self) -> str:
        """``ok``, ``missed``, ``spurious`` or ``absent`` (see :attr:`LabelMetrics.status`)."""
        return self.metrics.status

    def csv_values(self) -> list[str]:
        """The values of :data:`CSV_COLUMNS`, numbers with 10 significant digits."""
        return [spreadsheet_safe(self.case), str(self.label)] + [f"{getattr(self, c):.10g}" for c in CSV_COLUMNS[2:]]


def spreadsheet_safe(text: str) -> str:
    """``text`` with a leading ``'`` when it starts with ``= + - @``, a tab or a carriage return, so that a
    spreadsheet shows it as text instead of running it as a formula (OWASP's advice on CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _stats(values: list[float]) -> dict[str, float]:
    """:data:`STAT_NAMES` of a non-empty list: mean, median, sample std (0 for one value), min, max, n."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return dict(
        zip(
            STAT_NAMES,
            (statistics.fmean(values), statistics.median(values), std, min(values), max(values), len(values)),
            strict=True,
        )
    )


@dataclass
class Evaluation:
    """The outcome of :func:`evaluate`: one row per case and label, and what could not be scored."""

    rows: list[MetricRow]
    failed: list[str] = field(default_factory=list)
    unmatched_pred: list[str] = field(default_factory=list)
    unmatched_ref: list[str] = field(default_factory=list)
    label_names: dict[int, str] = field(default_factory=dict)
    tolerance_mm: float = 1.0
    thumbnails: dict[str, list[Thumbnail]] = field(default_factory=dict)
    pred_source: str = ""
    ref_source: str = ""
    out_dir: Path | None = None

    @property
    def labels(self) -> list[int]:
        return sorted({r.label for r in self.rows})

    @property
    def cases(self) -> list[str]:
        return list(dict.fromkeys(r.case for r in self.rows))

    def rows_by_case(self) -> dict[str, list[MetricRow]]:
        """``{case: its rows}``, in case order."""
        out: dict[str, list[MetricRow]] = {}
        for r in self.rows:
            out.setdefault(r.case, []).append(r)
        return out

    def label_name(self, label: int) -> str:
        """The label's name, or ``"label N"`` for an unnamed one."""
        return self.label_names.get(label, f"label {label}")

    def label_title(self, label: int) -> str:
        """``"liver (1)"`` for a named label, ``"label 1"`` for an unnamed one."""
        return f"{self.label_names[label]} ({label})" if label in self.label_names else f"label {label}"

    def label_stats(self) -> dict[int, dict[str, dict[str, float]]]:
        """``{label: {metric: {mean, median, std, min, max, n}}}`` over the cases, for every metric."""
        by_label: dict[int, list[MetricRow]] = {}
        for r in self.rows:
            by_label.setdefault(r.label, []).append(r)
        return {k: {m: _stats([getattr(r, m) for r in by_label[k]]) for m in METRIC_NAMES} for k in sorted(by_label)}

    def case_scores(self) -> dict[str, float]:
        """``{case: mean Dice over its labels}``, worst first (ties: the larger worst HD95 first)."""
        by_case = self.rows_by_case()
        score = {c: statistics.fmean(r.dice for r in rows) for c, rows in by_case.items()}
        hd = {c: max(r.hd95_mm for r in rows) for c, rows in by_case.items()}
        return dict(sorted(score.items(), key=lambda kv: (kv[1], -hd[kv[0]], kv[0])))

    def to_json(self) -> dict:
        """What ``metrics.json`` holds: per case and label, per label statistics, and the problems."""
        cases: dict[str, dict] = {}
        for r in self.rows:
            cases.setdefault(r.case, {})[str(r.label)] = {**r.metrics.as_dict(), "status": r.status}
        stats = {str(k): {"name": self.label_name(k), **v} for k, v in self.label_stats().items()}
        return {
            "tolerance_mm": self.tolerance_mm,
            "prediction": self.pred_source,
            "reference": self.ref_source,
            "labels": {str(k): self.label_name(k) for k in self.labels},
            "cases": cases,
            "per_label": stats,
            "failed": self.failed,
            "unmatched_pred": self.unmatched_pred,
            "unmatched_ref": self.unmatched_ref,
        }

    def to_csv(self) -> str:
        """What ``metrics.csv`` holds: :data:`CSV_COLUMNS`, one row per case and label."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows(r.csv_values() for r in self.rows)
        return buf.getvalue()

    def summary_lines(self) -> list[str]:
        """A few lines for a terminal: cases, mean Dice per label (the 8 worst of more), the worst case, and one
        line per failed case."""
        n = len(self.cases)
        extra = [f"{len(self.failed)} failed"] if self.failed else []
        extra += (
            [f"{len(self.unmatched_pred)} prediction(s) without a reference: {_few(self.unmatched_pred)}"]
            if self.unmatched_pred
            else []
        )
        extra += (
            [f"{len(self.unmatched_ref)} reference(s) without a prediction: {_few(self.unmatched_ref)}"]
            if self.unmatched_ref
            else []
        )
        lines = [f"evaluated {n} case{'s' * (n != 1)}" + (f" ({'; '.join(extra)})" if extra else "")]
        stats = sorted(self.label_stats().items(), key=lambda kv: kv[1]["dice"]["mean"])
        if len(stats) > _SUMMARY_LABELS:
            lines.append(f"the {_SUMMARY_LABELS} labels of lowest mean Dice ({len(stats)} in the report):")
        for label, st in sorted(stats[:_SUMMARY_LABELS]):
            d, h, s = st["dice"], st["hd95_mm"], st["surface_dice"]
            lines.append(
                f"{self.label_title(label)}: Dice {d['mean']:.4f} +- {d['std']:.4f} "
                f"(min {d['min']:.4f}), HD95 {h['mean']:.2f} mm, surface Dice @ {self.tolerance_mm:g} mm "
                f"{s['mean']:.4f}"
            )
        if n:
            case, score = next(iter(self.case_scores().items()))
            lines.append(f"worst case: {case} (mean Dice {score:.4f})")
        lines += [f"failed: {f}" for f in self.failed]
        return lines


def _few(names: list[str], k: int = 5) -> str:
    return ", ".join(names[:k]) + (f", ... ({len(names) - k} more)" if len(names) > k else "")


# --- pairing ---------------------------------------------------------------------------------------------------


def _pair(pred: Path, ref: Path) -> tuple[list[tuple[str, CaseSpec, CaseSpec]], list[str], list[str]]:
    preds, refs = find_cases(pred), find_cases(ref)
    if pred.is_file() and ref.is_file():
        return [(preds[0].case, preds[0], refs[0])], [], []
    by_ref = {c.case: c for c in refs}
    pairs = [(c.case, c, by_ref[c.case]) for c in preds if c.case in by_ref]
    paired = {name for name, _, _ in pairs}
    unmatched_pred = [c.case for c in preds if c.case not in paired]
    unmatched_ref = [c.case for c in refs if c.case not in paired]
    if not pairs:
        raise NoScansError(
            f"no case of {pred} has a reference in {ref} (predictions: {_few(unmatched_pred)}; "
            f"references: {_few(unmatched_ref)}); cases pair by file name without extension"
        )
    return sorted(pairs, key=lambda p: p[0]), unmatched_pred, unmatched_ref


def _read(spec: CaseSpec) -> Scan:
    if spec.error:
        raise MedfcnError(spec.error)
    return read_scan(spec.path, series_uid=spec.series_uid, case=spec.case, files=spec.files)


def _image_specs(images: Mapping[str, str | Path | CaseSpec] | str | Path | None, ref: Path) -> dict[str, CaseSpec]:
    if isinstance(images, Mapping):
        return {str(k): v if isinstance(v, CaseSpec) else CaseSpec(Path(v), str(k)) for k, v in images.items()}
    folder = Path(images) if images is not None else None
    if folder is None and ref.is_dir() and ref.name.lower().startswith("labels"):
        sibling = ref.parent / ("images" + ref.name[len("labels") :])
        folder = sibling if sibling.is_dir() else None
    if folder is None:
        return {}
    try:
        specs = find_cases(folder)
    except NoScansError:
        return {}
    out = {c.case: c for c in specs}
    out.update({c.case[: -len(s)]: c for c in specs for s in _IMAGE_SUFFIXES if c.case.endswith(s)})
    return out


def aligned_to(pred: Scan, ref: Scan) -> np.ndarray | None:
    """``pred``'s voxels on ``ref``'s grid when both grids hold the same voxel centres in another index order
    (axes permuted or flipped); ``None`` when they are different grids. No interpolation."""
    mp = pred.direction * np.asarray(pred.spacing)[None, :]
    mr = ref.direction * np.asarray(ref.spacing)[None, :]
    step = np.linalg.solve(mp, mr)  # column a: pred index change per ref index step along axis a
    start = np.linalg.solve(mp, np.subtract(ref.origin, pred.origin))  # pred index of ref voxel (0, 0, 0)
    r = np.round(step)
    if not (np.allclose(step, r, atol=1e-3) and np.allclose(start, np.round(start), atol=1e-2)):
        return None
    if not (np.abs(r).sum(0) == 1).all() or not (np.abs(r).sum(1) == 1).all():
        return None
    perm = [int(np.argmax(np.abs(r[:, a]))) for a in range(3)]
    array = np.transpose(pred.array, perm)
    for a, p in enumerate(perm):
        sign, n = r[p, a], pred.shape[p]
        if n != ref.shape[a] or round(start[p]) != (0 if sign > 0 else n - 1):
            return None
        if sign < 0:
            array = np.flip(array, a)
    return array


def _grid_error(case: str, pred: Scan, ref: Scan) -> str:
    diffs = ref.grid.differences(pred.grid)
    return f"{case}: the prediction's grid differs from the reference's: {'; '.join(diffs)} (prediction != reference)"


# --- the evaluation --------------------------------------------------------------------------------------------


def _label_map(label_names: Mapping | None) -> dict[int, str]:
    """``{id: name}`` from ``{id: name}`` or from a model card's ``{name: id}``."""
    if not label_names:
        return {}
    items = [(v, k) if isinstance(k, str) and not isinstance(v, str) else (k, v) for k, v in label_names.items()]
    return {int(k): str(v) for k, v in items}


def _score_case(case, pred_spec, ref_spec, image_spec, tolerance_mm) -> tuple[dict, list[Thumbnail]]:
    pred_scan, ref_scan = _read(pred_spec), _read(ref_spec)
    pred = pred_scan.array
    if ref_scan.grid.differences(pred_scan.grid):
        pred = aligned_to(pred_scan, ref_scan)
        if pred is None:
            raise MedfcnError(_grid_error(case, pred_scan, ref_scan))
        log.info("%s: the prediction stores the reference's voxels in another index order; reordered", case)
    try:
        metrics = compute_metrics(pred, ref_scan.array, ref_scan.spacing, tolerance_mm=tolerance_mm)
    except ValueError as e:
        raise MedfcnError(f"{case}: {e}") from None
    image = None
    if image_spec is not None:
        try:
            img = _read(image_spec)
            image = img.array if not ref_scan.grid.differences(img.grid) else None
            if image is None:
                log.warning("%s: the image %s is on another grid; overlays drawn on the masks", case, image_spec.path)
        except MedfcnError as e:
            log.warning("%s: image not used (%s)", case, e)
    return metrics, case_thumbnails(
        pred, ref_scan.array, ref_scan.spacing, direction=ref_scan.direction, image=image, labels=sorted(metrics)
    )


def evaluate(
    pred: str | Path,
    ref: str | Path,
    out_dir: str | Path,
    *,
    tolerance_mm: float = 1.0,
    label_names: Mapping[int, str] | Mapping[str, int] | None = None,
    images: Mapping[str, str | Path | CaseSpec] | str | Path | None = None,
) -> Evaluation:
    """Score every prediction against its reference and write ``out_dir``/``metrics.csv``, ``metrics.json`` and
    ``report.html`` (atomically).

    Args:
        pred, ref: label-map files or folders (any format :func:`medfcn.reader.read_scan` reads).
        out_dir: the report folder (created).
        tolerance_mm: the tolerance of the surface Dice, in mm.
        label_names: ``{id: name}`` (or a model card's ``{name: id}``); background 0 is never scored.
        images: the scans under the overlay thumbnails: ``{case: path or CaseSpec}`` (a CaseSpec names the series of
            a DICOM folder) or a folder (see the module docstring).

    Returns:
        An :class:`Evaluation`; cases that could not be scored are in ``.failed``, one line each.

    Raises:
        NoScansError: ``pred`` or ``ref`` does not exist or holds no scan, or no case pairs.
        OutputError: the report cannot be written.
        MedfcnError: ``tolerance_mm`` is negative or not finite.
    """
    if not (np.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise UsageError(f"the surface Dice tolerance must be a number of mm >= 0, got {tolerance_mm}")
    pred, ref, out_dir = Path(pred), Path(ref), Path(out_dir)
    names = _label_map(label_names)
    pairs, unmatched_pred, unmatched_ref = _pair(pred, ref)
    image_specs = _image_specs(images, ref)
    wanted = {k for k in names if k != 0}
    results: dict[str, dict[int, LabelMetrics]] = {}
    ev = Evaluation([], [], unmatched_pred, unmatched_ref, names, tolerance_mm, {}, str(pred), str(ref), out_dir)
    for i, (case, pred_spec, ref_spec) in enumerate(pairs, 1):
        log.info("evaluating %s (%d/%d)", case, i, len(pairs))
        try:
            scored = _score_case(case, pred_spec, ref_spec, image_specs.get(case), tolerance_mm)
            results[case], ev.thumbnails[case] = scored
        except MedfcnError as e:
            msg = str(e) if str(e).startswith(f"{case}:") else f"{case}: {e}"
            log.info("failed: %s", msg)  # reported in .failed, not logged twice
            ev.failed.append(msg)
    labels = sorted(wanted.union(*results.values()))
    ev.rows = [
        MetricRow.of(case, label, m.get(label) or LabelMetrics.both_empty())
        for case, m in results.items()
        for label in labels
    ]
    atomic_write_text(out_dir / "metrics.csv", ev.to_csv())
    atomic_write_text(out_dir / "metrics.json", json.dumps(ev.to_json(), indent=1) + "\n")
    atomic_write_text(out_dir / "report.html", render_html(ev))
    return ev
