"""One self-contained HTML report of an evaluation: every image embedded as a base64 PNG, no script, no link.

Sections: the problems (failed and unmatched cases), a summary table per label (mean +- std, median, min, max, n),
the per-label distributions of Dice, HD95, surface Dice and ASSD, and the cases sorted worst first, each with its
metrics and overlay thumbnails of its worst slices (green: in both, red: predicted only, blue: missed).

Every name that comes from a file (cases, labels, paths) is escaped with :func:`html.escape`; plots name labels
by id. Figures are drawn with matplotlib's Agg canvas (no display, no global pyplot state).
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from medfcn import __version__
from medfcn.metrics import Overlap, dice_per_slice, overlap_map

if TYPE_CHECKING:
    from medfcn.evaluate import Evaluation

__all__ = ["Thumbnail", "case_thumbnails", "render_html", "slice_axis", "worst_slices", "OVERLAY_COLOURS"]

OVERLAY_COLOURS = {Overlap.TP: (40, 200, 90), Overlap.FP: (235, 60, 50), Overlap.FN: (40, 130, 240)}
_PLOTTED = (("dice", "Dice"), ("hd95_mm", "HD95 (mm)"), ("surface_dice", "surface Dice"), ("assd_mm", "ASSD (mm)"))


@dataclass(frozen=True)
class Thumbnail:
    """An overlay of one slice: ``index`` across array ``axis``, the Dice of each label in it, a base64 PNG."""

    axis: int
    index: int
    dice: dict[int, float]
    errors: int  # voxels predicted but not in the reference, or missed, in this slice
    png_base64: str


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _png_base64(rgb: np.ndarray) -> str:
    from matplotlib.image import imsave

    buf = io.BytesIO()
    imsave(buf, rgb, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def slice_axis(spacing: Sequence[float]) -> int:
    """The axis thumbnails slice across: the one with the coarsest spacing (the last of equals)."""
    sp = np.asarray(spacing, float)
    return int(np.flatnonzero(sp >= sp.max() - 1e-6)[-1])


def worst_slices(codes: np.ndarray, axis: int, n: int = 3) -> list[int]:
    """Up to ``n`` slices across ``axis`` of an :func:`overlap_map`, the worst first, kept apart from each other.

    A slice scores ``wrong x (1 - its Dice)`` with ``wrong`` its FP + FN voxels, so a small structure missed
    outright outranks a thin rim of disagreement around a large one. When nothing disagrees: the slice with the
    most agreeing voxels; ``[]`` when both maps are empty.
    """
    others = tuple(a for a in range(codes.ndim) if a != axis)
    wrong = np.count_nonzero(codes >= Overlap.FP, axis=others).astype(np.float64)
    agree = np.count_nonzero(codes == Overlap.TP, axis=others)
    if not wrong.any():
        return [int(np.argmax(agree))] if agree.any() else []
    score = wrong * wrong / np.maximum(2 * agree + wrong, 1)
    gap = max(1, codes.shape[axis] // (4 * n))
    chosen: list[int] = []
    for i in np.argsort(-score, kind="stable"):
        if wrong[i] == 0 or len(chosen) == n:
            break
        if all(abs(int(i) - c) >= gap for c in chosen):
            chosen.append(int(i))
    return chosen


def _crop_box(fg: np.ndarray, margin: float) -> tuple[slice, slice]:
    rows, cols = np.nonzero(fg)
    if rows.size == 0:
        return slice(0, fg.shape[0]), slice(0, fg.shape[1])
    out = []
    for idx, n in ((rows, fg.shape[0]), (cols, fg.shape[1])):
        lo, hi = int(idx.min()), int(idx.max()) + 1
        pad = max(4, int(margin * (hi - lo)), (24 - (hi - lo)) // 2)
        out.append(slice(max(0, lo - pad), min(n, hi + pad)))
    return out[0], out[1]


def _to_display(plane: np.ndarray, sp_rows: float, sp_cols: float, size_px: int) -> np.ndarray:
    """Nearest-neighbour resampling of a 2-D array to square pixels, the longer side ``size_px``."""
    h_mm, w_mm = plane.shape[0] * sp_rows, plane.shape[1] * sp_cols
    scale = size_px / max(h_mm, w_mm)
    out_h, out_w = max(1, round(h_mm * scale)), max(1, round(w_mm * scale))
    ri = np.minimum(((np.arange(out_h) + 0.5) * plane.shape[0] / out_h).astype(int), plane.shape[0] - 1)
    ci = np.minimum(((np.arange(out_w) + 0.5) * plane.shape[1] / out_w).astype(int), plane.shape[1] - 1)
    return plane[np.ix_(ri, ci)]


def _overlay_rgb(codes: np.ndarray, image: np.ndarray | None) -> np.ndarray:
    """An RGB uint8 picture of a 2-D overlap map, over a grey image when one is given."""
    if image is not None:
        lo, hi = np.percentile(image, (1, 99)) if image.size else (0.0, 1.0)
        grey = np.clip((image.astype(np.float64) - lo) / max(hi - lo, 1e-9), 0, 1) * 255
        rgb, alpha = np.repeat(grey[..., None], 3, axis=-1), 0.45
    else:
        rgb, alpha = np.full(codes.shape + (3,), 25.0), 0.9
    for code, colour in OVERLAY_COLOURS.items():
        where = codes == code
        rgb[where] = (1 - alpha) * rgb[where] + alpha * np.asarray(colour, float)
    return rgb.round().astype(np.uint8)


# (rows, cols) of a slice as LPS world directions (axis, sign), radiological display, by the slice's normal axis
_SCREEN = {2: ((1, 1), (0, 1)), 1: ((2, -1), (0, 1)), 0: ((2, -1), (1, 1))}


def _screen_axes(direction: np.ndarray, axis: int) -> tuple[tuple[int, bool], tuple[int, bool]]:
    """The array axes shown as rows and as columns of a slice across ``axis``, each with whether to flip it, so
    that slices look as radiologists show them (axial: anterior up, the patient's left on the right)."""
    dom = np.argmax(np.abs(direction), axis=0)  # the world axis each array axis mostly runs along
    sign = np.sign(direction[dom, range(3)])
    keep = [a for a in range(3) if a != axis]
    (row_world, row_sign), (_, col_sign) = _SCREEN[int(dom[axis])]
    rows = next((a for a in keep if dom[a] == row_world), keep[1])
    cols = keep[0] if rows == keep[1] else keep[1]
    return (rows, bool(sign[rows] != row_sign)), (cols, bool(sign[cols] != col_sign))


def _orient(plane: np.ndarray, transpose: bool, flip_rows: bool, flip_cols: bool) -> np.ndarray:
    plane = plane.T if transpose else plane
    return plane[:: -1 if flip_rows else 1, :: -1 if flip_cols else 1]


def case_thumbnails(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    *,
    direction: np.ndarray | None = None,
    image: np.ndarray | None = None,
    labels: Sequence[int] | None = None,
    n: int = 3,
    size_px: int = 200,
) -> list[Thumbnail]:
    """Overlays of the worst slices of a case (see :func:`worst_slices`), zoomed on the labels, square pixels.

    Args:
        pred, ref: label maps ``(X, Y, Z)`` of the same shape.
        spacing: mm along the array axes.
        direction: the 3 x 3 LPS direction of the grid (``Scan.direction``) to orient the slices; default identity.
        image: the scan ``(X, Y, Z)`` to draw under the overlay, or ``None`` for the masks alone.
        labels: the labels whose slice Dice the captions give (default: every nonzero id in either map).
        n: the most thumbnails.
        size_px: the longer side of a thumbnail, in pixels.
    """
    codes = overlap_map(pred, ref)
    axis = slice_axis(spacing)
    (rows, flip_rows), (cols, flip_cols) = _screen_axes(np.eye(3) if direction is None else direction, axis)
    if labels is None:
        labels = sorted(int(v) for v in np.union1d(np.unique(pred), np.unique(ref)) if v != 0)
    per_label = {label: dice_per_slice(pred, ref, label, axis) for label in labels}
    out = []
    for index in worst_slices(codes, axis, n):
        planes = [
            _orient(np.take(a, index, axis=axis), rows > cols, flip_rows, flip_cols)
            for a in (codes, image)
            if a is not None
        ]
        plane, img = planes[0], planes[1] if image is not None else None
        box = _crop_box(plane != Overlap.NONE, 0.25 if img is not None else 0.1)
        rgb = _overlay_rgb(plane[box], None if img is None else img[box])
        rgb = _to_display(rgb, spacing[rows], spacing[cols], size_px)
        dice = {k: float(v[index]) for k, v in per_label.items() if not math.isnan(v[index])}
        out.append(Thumbnail(axis, index, dice, int(np.count_nonzero(plane >= Overlap.FP)), _png_base64(rgb)))
    return out


# --- figures and HTML ------------------------------------------------------------------------------------------


def distribution_png(ev: Evaluation) -> str:
    """Box plots (with every case as a dot) of Dice, HD95, surface Dice and ASSD per label: a base64 PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = ev.labels
    fig = Figure(figsize=(3.1 * len(_PLOTTED), 2.9), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    rng = np.random.default_rng(0)
    for k, (metric, title) in enumerate(_PLOTTED):
        ax = fig.add_subplot(1, len(_PLOTTED), k + 1)
        data = [[getattr(r, metric) for r in ev.rows if r.label == label] for label in labels]
        if data:
            ax.boxplot(data, widths=0.5, showfliers=False)
            for i, values in enumerate(data, 1):
                ax.plot(i + rng.uniform(-0.12, 0.12, len(values)), values, "o", ms=3, alpha=0.6, color="#1f5fa8")
            ax.set_xticks(range(1, len(labels) + 1), [str(label) for label in labels])
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("label", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:.5em 0 1.2em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f2f2f2}td.name,th.name{text-align:left}tr.bad td{background:#fde8e6}.note{color:#666}
.case{border-top:2px solid #ddd;padding-top:.6em;margin-top:1em}figure{display:inline-block;margin:4px 10px 4px 0}
figcaption{font-size:85%;color:#444;max-width:220px}.key span{padding:0 6px;margin-right:8px;color:#fff}"""


def _fmt(metric: str, value: float) -> str:
    return f"{value:.4f}" if metric in ("dice", "iou", "surface_dice") else f"{value:.2f}"


def _summary_table(ev: Evaluation) -> list[str]:
    cols = ("dice", "iou", "hd95_mm", "assd_mm", "surface_dice", "vol_ref_ml", "vol_pred_ml", "vol_diff_ml")
    out = ["<table><tr><th class=name>label</th><th>n</th>" + "".join(f"<th>{c}</th>" for c in cols) + "</tr>"]
    for label, stats in ev.label_stats().items():
        cells = []
        for c in cols:
            s = stats[c]
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
        "</table><p class=note>mean &plusmn; sample std; below: median [min, max]. Distances in mm, "
        f"volumes in mL; surface Dice at {ev.tolerance_mm:g} mm. A missed or spurious structure counts "
        "Dice 0 and the grid's diagonal as its distances.</p>"
    )
    return out


def _case_section(ev: Evaluation, rank: int, case: str, score: float, rows: list) -> list[str]:
    out = [
        f"<div class=case><h3>{rank}. {_e(case)} <span class=note>mean Dice {score:.4f}</span></h3>",
        "<table><tr><th class=name>label</th><th>status</th><th>Dice</th><th>IoU</th><th>HD95 mm</th>"
        "<th>ASSD mm</th><th>surface Dice</th><th>ref mL</th><th>pred mL</th></tr>",
    ]
    for r in rows:
        bad = " class=bad" if r.status in ("missed", "spurious") else ""
        out.append(
            f"<tr{bad}><td class=name>{_e(ev.label_title(r.label))}</td><td>{r.status}</td>"
            + "".join(
                f"<td>{_fmt(c, getattr(r, c))}</td>"
                for c in ("dice", "iou", "hd95_mm", "assd_mm", "surface_dice", "vol_ref_ml", "vol_pred_ml")
            )
            + "</tr>"
        )
    out.append("</table>")
    for t in ev.thumbnails.get(case, []):
        worst = sorted(t.dice.items(), key=lambda kv: kv[1])
        dice = ", ".join(f"{_e(ev.label_title(k))} {v:.3f}" for k, v in worst[:4]) + (", ..." if len(worst) > 4 else "")
        caption = f"slice {t.index} across axis {t.axis}: {t.errors} voxels wrong; Dice {dice}"
        out.append(
            f"<figure><img src='data:image/png;base64,{t.png_base64}' alt='{_e(case)} slice {t.index}'>"
            f"<figcaption>{caption}</figcaption></figure>"
        )
    out.append("</div>")
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
        f" {len(ev.cases)} cases, {len(ev.labels)} labels. <span class=note>medfcn {_e(__version__)}, "
        f"{_e(when)}</span></p>",
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
            "<h2>Distributions over cases</h2>",
            f"<img src='data:image/png;base64,{distribution_png(ev)}' alt='distributions per label'>",
            f"<h2>Cases, worst first</h2><p class=key>{key}</p>",
        ]
        by_case = ev.rows_by_case()
        for rank, (case, score) in enumerate(ev.case_scores().items(), 1):
            parts += _case_section(ev, rank, case, score, by_case[case])
    else:
        parts.append("<p>No case could be scored.</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
