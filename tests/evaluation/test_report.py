"""medfcn.evaluation.report: the HTML parses, embeds its images, escapes every name; thumbnails show the worst
slices."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from matplotlib.image import imread

from medfcn.evaluation.evaluate import evaluate
from medfcn.evaluation.metrics import Overlap, compute_metrics
from medfcn.evaluation.report import render_html
from medfcn.evaluation.results import Evaluation, MetricRow
from medfcn.evaluation.thumbnails import OVERLAY_COLOURS, case_thumbnails, slice_axis, worst_slices

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.srcs: list[str] = []
        self.text: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs
        self.srcs += [v for k, v in attrs if k in ("src", "href")]

    def handle_data(self, data):
        self.text.append(data)


def _parse(text: str) -> _Collect:
    p = _Collect()
    p.feed(text)
    p.close()
    return p


def _decode(src: str) -> np.ndarray:
    assert src.startswith("data:image/png;base64,")
    raw = base64.b64decode(src.split(",", 1)[1], validate=True)
    assert raw.startswith(PNG_MAGIC)
    return imread(io.BytesIO(raw), format="png")


def _pair(shape=(30, 26, 12)) -> tuple[np.ndarray, np.ndarray]:
    ref = np.zeros(shape, np.uint8)
    ref[8:22, 6:20, 2:10] = 1
    pred = ref.copy()
    pred[8:22, 6:20, 7] = 0  # slice 7 missed entirely: the worst slice
    pred[3:6, 3:6, 4] = 1  # a spurious blob in slice 4
    return pred, ref


def _evaluation(case: str, label_name: str) -> Evaluation:
    pred, ref = _pair()
    spacing = (1.0, 1.0, 3.0)
    m = compute_metrics(pred, ref, spacing)
    return Evaluation(
        rows=[MetricRow.of(case, 1, m[1]), MetricRow.of("other", 1, m[1])],
        failed=[f"{case}: broken"],
        unmatched_pred=[case],
        label_names={1: label_name},
        thumbnails={case: case_thumbnails(pred, ref, spacing)},
        pred_source=f"/data/{case}",
    )


def test_names_are_escaped_no_script_runs():
    case, label = "<script>alert(1)</script>", "<img src=x onerror=alert(2)>"
    text = render_html(_evaluation(case, label))
    parsed = _parse(text)
    assert "script" not in parsed.tags
    assert not any(k.startswith("on") for k, _ in parsed.attrs)  # no event handler attribute was injected
    assert all(s.startswith("data:image/png;base64,") for s in parsed.srcs)  # the fake img's "x" is not a src
    assert case in "".join(parsed.text) and label in "".join(parsed.text)  # shown, as text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_report_is_self_contained_and_its_images_decode():
    text = render_html(_evaluation("case1", "liver"))
    parsed = _parse(text)
    assert parsed.tags[0] == "html" and {"table", "img", "h2"} <= set(parsed.tags)
    assert "link" not in parsed.tags and "script" not in parsed.tags
    assert len(parsed.srcs) == 1 + 2  # the distributions and a thumbnail of each of the two wrong slices
    for src in parsed.srcs:
        assert _decode(src).ndim == 3


def test_evaluate_writes_a_report_that_parses_and_embeds_its_images(tmp_path):
    pred, ref = _pair()
    for folder, arr in (("p", pred), ("r", ref)):
        for case in ("x<b>", "y"):
            img = sitk.GetImageFromArray(np.ascontiguousarray((arr if case == "y" else ref).T))
            img.SetSpacing((1.0, 1.0, 3.0))
            (tmp_path / folder).mkdir(exist_ok=True)
            sitk.WriteImage(img, str(tmp_path / folder / f"{case}.nii.gz"))
    ev = evaluate(tmp_path / "p", tmp_path / "r", tmp_path / "out")
    text = Path(tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    parsed = _parse(text)
    assert len(parsed.srcs) == 1 + sum(len(t) for t in ev.thumbnails.values())
    for src in parsed.srcs:
        _decode(src)
    assert "x&lt;b&gt;" in text and "<b>" not in text
    assert text.index("2. x&lt;b&gt;") > text.index("1. y")  # worst first: y is imperfect, x is perfect


def test_worst_slices_are_the_most_wrong_and_apart():
    codes = np.zeros((10, 10, 40), np.uint8)
    codes[2:8, 2:8, :] = Overlap.TP
    codes[:, :, 20] = Overlap.FN  # 100 wrong
    codes[:, :5, 21] = Overlap.FP  # 50 wrong, next to 20: skipped (closer than the gap)
    codes[:3, :, 5] = Overlap.FP  # 30 wrong
    codes[:2, :, 33] = Overlap.FN  # 20 wrong
    assert worst_slices(codes, axis=2, n=3) == [20, 5, 33]
    rim = np.zeros((30, 30, 10), np.uint8)
    rim[5:25, 5:25, :6] = Overlap.TP
    rim[4, 5:25, 3] = Overlap.FP  # a thin rim of 20 wrong voxels around 400 right ones
    rim[10:15, 10:15, 8] = Overlap.FN  # a small structure missed outright: 25 wrong, none right
    assert worst_slices(rim, axis=2, n=2) == [8, 3]
    perfect = np.zeros((4, 4, 6), np.uint8)
    perfect[:, :, 4] = Overlap.TP
    assert worst_slices(perfect, axis=2) == [4]
    assert worst_slices(np.zeros((4, 4, 6), np.uint8), axis=2) == []
    assert slice_axis((0.8, 0.8, 3.0)) == 2 and slice_axis((3.0, 1.0, 1.0)) == 0 and slice_axis((1, 1, 1)) == 2


def test_thumbnails_show_the_missed_slice_in_the_missed_colour_with_square_pixels():
    pred, ref = _pair()
    thumbs = case_thumbnails(pred, ref, (1.0, 2.0, 3.0), n=2, size_px=120)
    assert [t.index for t in thumbs] == [7, 4] and thumbs[0].axis == 2
    assert thumbs[0].dice == {1: 0.0} and thumbs[0].errors == 14 * 14
    rgb = (_decode("data:image/png;base64," + thumbs[0].png_base64)[..., :3] * 255).round().astype(int)
    assert max(rgb.shape[:2]) == 120
    # rows are the y axis at 2 mm, columns x at 1 mm: the 14 x 14 voxel square is twice as tall as wide
    blue = np.all(np.abs(rgb - np.asarray(OVERLAY_COLOURS[Overlap.FN]) * 0.9 - 2.5) <= 3, axis=-1)
    rows, cols = np.nonzero(blue)
    assert (rows.max() - rows.min() + 1) / (cols.max() - cols.min() + 1) == pytest.approx(2.0, rel=0.1)
    image = np.random.default_rng(0).normal(100, 20, pred.shape)
    over = case_thumbnails(pred, ref, (1.0, 2.0, 3.0), image=image, n=1)[0]
    assert over.png_base64 != case_thumbnails(pred, ref, (1.0, 2.0, 3.0), n=1)[0].png_base64


@pytest.mark.parametrize(
    ("direction", "spacing", "corner"),
    [
        (np.eye(3), (1.0, 1.0, 3.0), "top-left"),  # axial, LPS index axes: anterior (low j) up, right (low i) left
        (np.diag([-1.0, -1.0, 1.0]), (1.0, 1.0, 3.0), "bottom-right"),  # a RAS-stored file: the same patient view
        (np.eye(3), (1.0, 3.0, 1.0), "bottom-left"),  # coronal: superior (high k) up; the corner is at low k
    ],
)
def test_thumbnails_are_oriented_as_radiologists_show_slices(direction, spacing, corner):
    ref = np.zeros((20, 20, 20), np.uint8)
    ref[2:18, 2:18, 2:18] = 1
    pred = ref.copy()
    pred[2:6, 2:6, 2:6] = 0  # missed: the corner at low i, j and k
    thumb = case_thumbnails(pred, ref, spacing, direction=direction, n=1, size_px=64)[0]
    rgb = (_decode("data:image/png;base64," + thumb.png_base64)[..., :3] * 255).round().astype(int)
    blue = np.all(np.abs(rgb - np.asarray(OVERLAY_COLOURS[Overlap.FN]) * 0.9 - 2.5) <= 3, axis=-1)
    rows, cols = np.nonzero(blue)
    h, w = blue.shape
    where = ("top" if rows.mean() < h / 2 else "bottom") + "-" + ("left" if cols.mean() < w / 2 else "right")
    assert where == corner
