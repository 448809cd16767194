"""One self-contained HTML report of an evaluation: every image embedded as a base64 PNG, no script, no link.

Sections: the problems (failed and unmatched cases), a summary table per label (mean +- std, median, min, max, n),
the per-label distributions of Dice, HD95, surface Dice and ASSD (box plots from five cases on, the cases as dots
below that), and the cases sorted worst first, each with its metrics and overlay thumbnails of its worst slices
(green: in both, red: predicted only, blue: missed; a yellow box around the slice's errors). Thumbnails show the
whole slice as napari shows it (:mod:`medfcn.data.display`): named by plane and by the slice number napari's slider
shows, with the patient's directions at the edges. Worst slices are the ones with the most wrong voxels
(:func:`medfcn.evaluation.components.worst_slices`, the rule of the napari Review dock too).

The thumbnails themselves are drawn by :mod:`medfcn.evaluation.thumbnails`; this module only lays out an
:class:`medfcn.evaluation.results.Evaluation` (it never scores or reads anything).

Every name that comes from a file (cases, labels, paths) is escaped with :func:`html.escape`; plots name labels
by id. Figures are drawn with matplotlib's Agg canvas (no display, no global pyplot state).
"""

from __future__ import annotations

import base64
import datetime
import html
import io

import numpy as np

from medfcn import __version__
from medfcn.evaluation.results import Evaluation, Thumbnail
from medfcn.evaluation.thumbnails import OVERLAY_COLOURS

__all__ = ["render_html", "distribution_png", "COLUMN_TITLES", "MIN_CASES_FOR_BOXES"]

MIN_CASES_FOR_BOXES = 5  # below this many cases a box plot says less than the dots themselves
COLUMN_TITLES = {
    "dice": "Dice",
    "iou": "IoU",
    "hd95_mm": "HD95 (mm)",
    "assd_mm": "mean surface distance (mm)",
    "surface_dice": "surface Dice",
    "vol_ref_ml": "reference volume (mL)",
    "vol_pred_ml": "predicted volume (mL)",
    "vol_diff_ml": "volume difference (mL)",
}
"""How the report titles each metric (the CSV and JSON keep the field names)."""
_PLOTTED = ("dice", "hd95_mm", "surface_dice", "assd_mm")


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


# --- figures and HTML ------------------------------------------------------------------------------------------


def distribution_png(ev: Evaluation) -> str:
    """Dice, HD95, surface Dice and mean surface distance per label, every case a dot; box plots from
    :data:`MIN_CASES_FOR_BOXES` cases on. A base64 PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = ev.labels
    boxes = len(ev.cases) >= MIN_CASES_FOR_BOXES
    fig = Figure(figsize=(3.1 * len(_PLOTTED), 2.9), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    rng = np.random.default_rng(0)
    for k, metric in enumerate(_PLOTTED):
        ax = fig.add_subplot(1, len(_PLOTTED), k + 1)
        data = [[getattr(r, metric) for r in ev.rows if r.label == label] for label in labels]
        if data:
            if boxes:
                ax.boxplot(data, widths=0.5, showfliers=False)
            jitter = 0.12 if boxes or len(ev.cases) > 1 else 0.0
            for i, values in enumerate(data, 1):
                ax.plot(i + rng.uniform(-jitter, jitter, len(values)), values, "o", ms=4, alpha=0.7, color="#1f5fa8")
            ax.set_xticks(range(1, len(labels) + 1), [ev.label_name(label) for label in labels], fontsize=8)
            ax.set_xlim(0.4, len(labels) + 0.6)
        ax.set_title(f"{COLUMN_TITLES[metric]}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:.5em 0 1.2em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f2f2f2}td.name,th.name{text-align:left}tr.bad td{background:#fde8e6}.note{color:#666}
.case{border-top:2px solid #ddd;padding-top:.6em;margin-top:1em}figure{display:inline-block;margin:4px 10px 4px 0}
figcaption{font-size:85%;color:#444;max-width:260px}.key span{padding:0 6px;margin-right:8px;color:#fff}
.thumb{position:relative;display:inline-block;padding:14px;background:#111;line-height:0}
.thumb b{position:absolute;color:#ffd600;font:bold 12px/12px monospace}.thumb .t{top:1px;left:50%}
.thumb .b{bottom:1px;left:50%}.thumb .l{left:2px;top:50%}.thumb .r{right:2px;top:50%}"""


def _fmt(metric: str, value: float) -> str:
    return f"{value:.4f}" if metric in ("dice", "iou", "surface_dice") else f"{value:.2f}"


def _title(ev: Evaluation, metric: str) -> str:
    title = COLUMN_TITLES[metric]
    return f"{title} @ {ev.tolerance_mm:g} mm" if metric == "surface_dice" else title


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def _summary_table(ev: Evaluation) -> list[str]:
    cols = ("dice", "iou", "hd95_mm", "assd_mm", "surface_dice", "vol_ref_ml", "vol_pred_ml", "vol_diff_ml")
    out = [
        "<table><tr><th class=name>label</th><th>cases</th>"
        + "".join(f"<th>{_e(_title(ev, c))}</th>" for c in cols)
        + "</tr>"
    ]
    for label, stats in ev.label_stats().items():
        cells = []
        for c in cols:
            s = stats[c]
            if s["n"] == 1:  # one case: its value, no spread
                cells.append(f"<td>{_fmt(c, s['mean'])}</td>")
                continue
            cells.append(
                f"<td title='median {_fmt(c, s['median'])}, min {_fmt(c, s['min'])}, max "
                f"{_fmt(c, s['max'])}'>{_fmt(c, s['mean'])} &plusmn; {_fmt(c, s['std'])}<br>"
                f"<span class=note>{_fmt(c, s['median'])} [{_fmt(c, s['min'])}, {_fmt(c, s['max'])}]"
                "</span></td>"
            )
        out.append(
            f"<tr><td class=name>{_e(ev.label_title(label))}</td><td>{stats['dice']['n']}</td>"
            + "".join(cells)
            + "</tr>"
        )
    out.append(
        "</table><p class=note>mean &plusmn; sample std; below: median [min, max]. HD95: the 95th percentile "
        "of the distances between the two surfaces; surface Dice: the share of both surfaces within "
        f"{ev.tolerance_mm:g} mm of the other. A missed or spurious structure counts Dice 0 and the grid's "
        "diagonal as its distances.</p>"
    )
    return out


_CASE_COLUMNS = ("dice", "iou", "hd95_mm", "assd_mm", "surface_dice", "vol_ref_ml", "vol_pred_ml")


def _thumbnail_html(case: str, t: Thumbnail, caption: str) -> str:
    top, bottom, left, right = t.letters
    letters = "".join(f"<b class={c}>{_e(v)}</b>" for c, v in zip("tblr", (top, bottom, left, right), strict=True) if v)
    return (
        f"<figure><div class=thumb><img src='data:image/png;base64,{t.png_base64}' "
        f"alt='{_e(case)} {_e(t.plane)} slice {t.display_index}'>{letters}</div>"
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _verdict_html(q: dict | None) -> str:
    """A case's quality verdict: flagged or not, its score, and its reasons."""
    if not q:
        return ""
    head = "flagged for review" if q.get("review") else "not flagged"
    reasons = "".join(f"<li>{_e(r)}</li>" for r in q.get("reasons", []))
    cls = " class=bad" if q.get("review") else ""
    return f"<p{cls}>quality: {head}, score {float(q.get('score', 0)):.2f}</p>" + (
        f"<ul>{reasons}</ul>" if reasons else ""
    )


def _case_section(ev: Evaluation, rank: int, case: str, score: float, rows: list) -> list[str]:
    out = [
        f"<div class=case><h3>{rank}. {_e(case)} <span class=note>mean Dice {score:.4f}</span></h3>",
        _verdict_html(ev.quality.get(case)),
        "<table><tr><th class=name>label</th><th>status</th>"
        + "".join(f"<th>{_e(_title(ev, c))}</th>" for c in _CASE_COLUMNS)
        + "</tr>",
    ]
    for r in rows:
        bad = " class=bad" if r.status in ("missed", "spurious") else ""
        out.append(
            f"<tr{bad}><td class=name>{_e(ev.label_title(r.label))}</td><td>{r.status}</td>"
            + "".join(f"<td>{_fmt(c, getattr(r, c))}</td>" for c in _CASE_COLUMNS)
            + "</tr>"
        )
    out.append("</table>")
    for t in ev.thumbnails.get(case, []):
        worst = sorted(t.dice.items(), key=lambda kv: kv[1])
        dice = ", ".join(f"{_e(ev.label_title(k))} {v:.3f}" for k, v in worst[:4]) + (", ..." if len(worst) > 4 else "")
        caption = (
            f"{_e(t.plane)} slice {t.display_index} (napari's slider; array index {t.index} along axis {t.axis}): "
            f"{t.errors:,} voxels wrong, boxed; Dice {dice}"
        )
        out.append(_thumbnail_html(case, t, caption))
    out.append("</div>")
    return out


_STATISTICS = ("volume_ml", "mean", "std", "p5", "p50", "p95")


def _statistics_table(ev: Evaluation) -> list[str]:
    """Each case's label volumes and intensities (``medfcn segment --statistics``), when the evaluation has them."""
    if not ev.statistics:
        return []
    head = "".join(f"<th>{'volume (mL)' if c == 'volume_ml' else c}</th>" for c in _STATISTICS)
    out = [
        "<h2>Volumes and intensities of the predictions</h2>",
        f"<table><tr><th class=name>case</th><th class=name>label</th>{head}</tr>",
    ]
    for case, labels in ev.statistics.items():
        for label, row in labels.items():
            cells = "".join(f"<td>{'' if row.get(c) is None else f'{row[c]:.6g}'}</td>" for c in _STATISTICS)
            out.append(f"<tr><td class=name>{_e(case)}</td><td class=name>{_e(label)}</td>{cells}</tr>")
    out.append("</table>")
    return out


def render_html(ev: Evaluation) -> str:
    """The report of an evaluation as one HTML document (UTF-8 text)."""
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    key = "".join(
        f"<span style='background:rgb{c}'>{n}</span>"
        for n, c in zip(("in both", "predicted only", "missed"), OVERLAY_COLOURS.values(), strict=True)
    )
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>medfcn evaluation: {_e(ev.pred_source)}</title><style>{_CSS}</style></head><body>",
        "<h1>Segmentation evaluation</h1>",
        f"<p>prediction <code>{_e(ev.pred_source)}</code> against reference <code>{_e(ev.ref_source)}</code>:"
        f" {_plural(len(ev.cases), 'case')}, {_plural(len(ev.labels), 'label')}. "
        f"<span class=note>medfcn {_e(__version__)}, {_e(when)}</span></p>",
    ]
    problems = [
        ("failed", ev.failed),
        ("predictions without a reference", ev.unmatched_pred),
        ("references without a prediction", ev.unmatched_ref),
    ]
    for title, items in problems:
        if items:
            parts.append(f"<h2>{len(items)} {title}</h2><ul>" + "".join(f"<li>{_e(i)}</li>" for i in items) + "</ul>")
    if ev.rows:
        parts += [
            "<h2>Summary per label</h2>",
            *_summary_table(ev),
            *([f"<p>{_e(ev.flags().line())}</p>"] if ev.flags() else []),
            "<h2>Distributions over cases</h2>" if len(ev.cases) >= MIN_CASES_FOR_BOXES else "<h2>Per case</h2>",
            f"<img src='data:image/png;base64,{distribution_png(ev)}' alt='distributions per label'>",
            f"<h2>Cases, worst first</h2><p class=key>{key}</p>",
        ]
        by_case = ev.rows_by_case()
        for rank, (case, score) in enumerate(ev.case_scores().items(), 1):
            parts += _case_section(ev, rank, case, score, by_case[case])
    else:
        parts.append("<p>No case could be scored.</p>")
    parts += _statistics_table(ev)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
