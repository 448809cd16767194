"""The result model of an evaluation: one :class:`MetricRow` per case and label, gathered in an :class:`Evaluation`.

:func:`medfcn.evaluation.evaluate.evaluate` fills it; :mod:`medfcn.evaluation.report` renders it as HTML; the model
itself writes ``metrics.csv`` (:meth:`Evaluation.to_csv`) and ``metrics.json`` (:meth:`Evaluation.to_json`) and the
terminal summary (:meth:`Evaluation.summary_lines`). It holds numbers and names only: no reading, scoring or drawing.
"""

from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass, field, fields
from pathlib import Path

from medfcn.errors import few_names
from medfcn.evaluation.metrics import METRIC_NAMES, LabelMetrics

__all__ = [
    "Evaluation",
    "MetricRow",
    "Thumbnail",
    "spreadsheet_safe",
    "CSV_COLUMNS",
    "QUALITY_COLUMNS",
    "STAT_NAMES",
]

CSV_COLUMNS = ("case", "label", *(f.name for f in fields(LabelMetrics) if f.init))  # vol_diff_ml is derived
QUALITY_COLUMNS = ("review", "quality_score", "quality_reasons")  # from the batch's manifest, when it has verdicts
STAT_NAMES = ("mean", "median", "std", "min", "max", "n")
_SUMMARY_LABELS = 8  # the most labels summary_lines lists


@dataclass(frozen=True)
class Thumbnail:
    """An overlay of one whole slice: ``index`` across array ``axis``, the Dice of each label in it, a base64 PNG.

    ``plane`` and ``display_index`` name the slice as napari shows it (e.g. axial slice 90 on the slider);
    ``letters`` are the patient directions at its (top, bottom, left, right) edges.
    """

    axis: int
    index: int
    dice: dict[int, float]
    errors: int  # voxels predicted but not in the reference, or missed, in this slice
    png_base64: str
    plane: str = ""
    display_index: int = 0
    letters: tuple[str, str, str, str] = ("", "", "", "")


@dataclass(frozen=True)
class MetricRow:
    """The metrics of one label in one case: a :class:`LabelMetrics` (distances in mm, volumes in mL) under its case
    and label; ``row.dice`` and every other metric name read through to it."""

    case: str
    label: int
    metrics: LabelMetrics

    @classmethod
    def of(cls, case: str, label: int, m: LabelMetrics) -> MetricRow:
        """The row of ``m``, its values as Python floats."""
        measured = {f.name: float(getattr(m, f.name)) for f in fields(LabelMetrics) if f.init}
        return cls(case, int(label), LabelMetrics(**measured))

    def __getattr__(self, name: str) -> float:
        if name in METRIC_NAMES:  # only called for names the row itself lacks
            return getattr(self.metrics, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

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
    statistics: dict[str, dict[str, dict]] = field(default_factory=dict)  # case -> label -> segment --statistics
    quality: dict[str, dict] = field(default_factory=dict)  # {case: verdict} from the batch's manifest, if any

    def flags(self):
        """How well the quality verdicts matched the Dice (:class:`medfcn.evaluation.flags.FlagAgreement`), or
        None without verdicts."""
        from medfcn.evaluation.flags import flag_agreement

        return flag_agreement(self.case_scores(), self.quality) if self.quality else None

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
            **(
                {"quality": self.quality, "flags": self.flags().to_dict() if self.flags() else None}
                if self.quality
                else {}
            ),
        }

    def to_csv(self) -> str:
        """What ``metrics.csv`` holds: :data:`CSV_COLUMNS`, one row per case and label; with quality verdicts,
        :data:`QUALITY_COLUMNS` after them (empty for a case without one)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CSV_COLUMNS + (QUALITY_COLUMNS if self.quality else ()))
        for r in self.rows:
            extra = []
            if self.quality:
                q = self.quality.get(r.case) or {}
                extra = (
                    [
                        str(bool(q.get("review"))).lower(),
                        f"{float(q['score']):.3f}",
                        spreadsheet_safe("; ".join(q.get("reasons", []))),
                    ]
                    if q
                    else ["", "", ""]
                )
            writer.writerow(r.csv_values() + extra)
        return buf.getvalue()

    def summary_lines(self) -> list[str]:
        """A few lines for a terminal: cases, mean Dice per label (the 8 worst of more), the worst case, and one
        line per failed case."""
        n = len(self.cases)
        extra = [f"{len(self.failed)} failed"] if self.failed else []
        extra += (
            [f"{len(self.unmatched_pred)} prediction(s) without a reference: {few_names(self.unmatched_pred)}"]
            if self.unmatched_pred
            else []
        )
        extra += (
            [f"{len(self.unmatched_ref)} reference(s) without a prediction: {few_names(self.unmatched_ref)}"]
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
        flags = self.flags()
        if flags is not None:
            lines.append(flags.line())
        lines += [f"failed: {f}" for f in self.failed]
        return lines
