"""The Segment and Review dock widgets in a real viewer (run under ``xvfb-run -a``).

Segment's result is checked against :meth:`medfcn.inference.pipeline.Segmenter.segment` called directly on the file read
with :func:`medfcn.data.reader.read_scan`; Review's numbers against :mod:`medfcn.evaluation.metrics` on the
source-ordered arrays and a per-slice Dice written out here slice by slice.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from medfcn.data.reader import read_scan
from medfcn.evaluation.metrics import compute_metrics
from medfcn.inference.pipeline import Segmenter
from medfcn.inference.settings import InferenceSettings
from napari_plugin._layers import from_display, to_display
from napari_plugin._widgets.review import ReviewWidget
from tests.support.napari import TIMEOUT_MS, gui, segment_widget
from tests.support.scans import affine_from_codes, head_labels, write_scan_file


# -- Segment -------------------------------------------------------------------------------------------------------
@gui
def test_segment_runs_in_a_worker_and_adds_labels_on_the_image_grid(viewer, qtbot, tiny_model, scan_file):
    (image,) = viewer.open(str(scan_file), plugin="medfcn")
    widget = segment_widget(viewer, image, tiny_model)
    assert not widget.checkpoint.native.isHidden()  # shown for a checkpoint file
    seen: list[int] = []
    widget.progress.changed.connect(seen.append)
    worker = widget.run()
    assert worker is not None
    assert "head_labels" not in viewer.layers  # run() returned at once: the work is in the worker thread
    qtbot.waitUntil(lambda: "head_labels" in viewer.layers, timeout=TIMEOUT_MS)
    labels = viewer.layers["head_labels"]
    assert labels._type_string == "labels" and labels.data.shape == image.data.shape
    np.testing.assert_allclose(labels.scale, image.scale)
    np.testing.assert_allclose(labels.translate, image.translate)
    assert labels.metadata["grid"] == image.metadata["grid"] and labels.metadata["model"] == "tiny"
    expected = Segmenter(tiny_model, InferenceSettings(device="cpu")).segment(read_scan(scan_file))
    np.testing.assert_array_equal(
        from_display(labels.data, image.metadata["display_axes"], image.metadata["display_flip"]), expected
    )
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=TIMEOUT_MS)
    assert widget.progress.value == 100 and any(0 < v < 100 for v in seen)
    assert "head_labels" in widget.status.value


@gui
def test_segment_cancel_stops_the_worker(viewer, qtbot, tiny_model, scan_file):
    (image,) = viewer.open(str(scan_file), plugin="medfcn")
    widget = segment_widget(viewer, image, tiny_model)
    assert widget.run() is not None
    widget.cancel()
    assert widget.run() is None  # one run at a time
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=TIMEOUT_MS)
    assert widget.status.value == "Cancelled." and widget.progress.value == 0
    assert "head_labels" not in viewer.layers
    widget.run()  # a new run after a cancel is not cancelled
    qtbot.waitUntil(lambda: "head_labels" in viewer.layers, timeout=TIMEOUT_MS)


@gui
def test_segment_reports_a_bad_model_file(viewer, qtbot, tmp_path, scan_file):
    (image,) = viewer.open(str(scan_file), plugin="medfcn")
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"not a model")
    widget = segment_widget(viewer, image, bad)
    widget.run()
    qtbot.waitUntil(lambda: "not a medfcn model" in widget.status.value, timeout=TIMEOUT_MS)
    assert "head_labels" not in viewer.layers


@gui
def test_segment_with_the_bundled_model(viewer, qtbot, scan_file):
    (image,) = viewer.open(str(scan_file), plugin="medfcn")
    widget = segment_widget(viewer, image)
    assert widget.checkpoint.native.isHidden()  # hidden for the bundled model
    widget.run()
    qtbot.waitUntil(lambda: "head_labels" in viewer.layers, timeout=TIMEOUT_MS)
    assert set(np.unique(viewer.layers["head_labels"].data)) <= {0, 1}


@gui
def test_segment_dock_runs_the_chosen_backend_and_records_it(viewer, qtbot, tmp_path, monkeypatch):
    """The Backend choice lists auto and what is installed; ONNX Runtime's labels on the sample head are torch's
    (float32, the same arithmetic) and the result layer says which backend made them."""
    from medfcn.inference.settings import InferenceSettings

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    sample = "sample_data/images/robex_head.nii.gz"
    (image,) = viewer.open(sample, plugin="medfcn")
    widget = segment_widget(viewer, image, backend="onnxruntime")
    assert widget.backend.choices[:2] == ("auto", "torch") and "onnxruntime" in widget.backend.choices
    widget.run()
    qtbot.waitUntil(lambda: "robex_head_labels" in viewer.layers, timeout=120_000)
    layer = viewer.layers["robex_head_labels"]
    assert layer.metadata["backend"] == "onnxruntime" and "onnxruntime" in widget.status.value
    expected = Segmenter(None, InferenceSettings(device="cpu", amp=False)).segment(read_scan(sample))
    shown = from_display(layer.data, image.metadata["display_axes"], image.metadata["display_flip"])
    np.testing.assert_array_equal(shown, expected)


# -- Review --------------------------------------------------------------------------------------------------------
def slice_dice_min(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per slice along axis 0, the lowest Dice of any label present in the slice (NaN if none), one by one."""
    out = np.full(pred.shape[0], np.nan)
    for s in range(pred.shape[0]):
        values = []
        for label in (1, 2):
            p, r = pred[s] == label, ref[s] == label
            if p.any() or r.any():
                values.append(2 * np.sum(p & r) / (np.sum(p) + np.sum(r)))
        if values:
            out[s] = min(values)
    return out


@pytest.fixture
def pair(tmp_path):
    """A reference label map and an imperfect prediction on an LSA grid, as NIfTI files."""
    aff = affine_from_codes("LSA", spacing=(0.8, 1.1, 1.6))
    ref = head_labels()
    pred = ref.copy()
    pred[ndimage.binary_erosion(ref == 1, iterations=1) ^ (ref == 1)] = 0  # a thinner brain
    pred[pred == 2] = 1
    pred[np.roll(ref == 2, 3, axis=0)] = 2  # the blob, shifted
    pred[:, :, 20:22] = 0  # two empty slices
    return (write_scan_file(tmp_path / "pred.nii.gz", pred, aff), write_scan_file(tmp_path / "ref.nii.gz", ref, aff))


@gui
def test_review_scores_overlays_jumps_recomputes_saves_and_reports(viewer, qtbot, tmp_path, pair):
    pred_path, ref_path = pair
    (pred,) = viewer.open(str(pred_path), plugin="medfcn")
    (ref,) = viewer.open(str(ref_path), plugin="medfcn")
    widget = ReviewWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.prediction.value, widget.reference.value = pred, ref
    assert widget.compute() is not None
    qtbot.waitUntil(lambda: widget.result is not None, timeout=TIMEOUT_MS)

    # per-label numbers equal medfcn.evaluation.metrics on the files' own arrays and spacing
    p_scan, r_scan = read_scan(pred_path), read_scan(ref_path)
    expected = compute_metrics(p_scan.array, r_scan.array, p_scan.spacing)
    assert list(widget.result.metrics) == [1, 2]
    columns = list(zip(*widget.table.data.to_list(), strict=True))  # one column per label: Dice, IoU, HD95, mL
    for row, (label, m) in zip(columns, expected.items(), strict=True):
        got = widget.result.metrics[label]
        assert got.dice == pytest.approx(m.dice, abs=1e-12) and got.iou == pytest.approx(m.iou, abs=1e-12)
        assert got.hd95_mm == pytest.approx(m.hd95_mm, abs=1e-9)
        assert row[0] == pytest.approx(m.dice, abs=1e-4) and row[2] == pytest.approx(m.hd95_mm, abs=1e-2)

    # the TP / FP / FN overlay
    overlay = viewer.layers["pred vs ref"]
    p, r = pred.data, ref.data
    assert np.count_nonzero(overlay.data == 1) == np.count_nonzero((p == r) & (r != 0))
    assert np.count_nonzero(overlay.data == 2) == np.count_nonzero((p != 0) & (r == 0))
    assert np.count_nonzero(overlay.data == 3) == np.count_nonzero((r != 0) & (p != r))
    np.testing.assert_allclose(overlay.scale, pred.scale)

    # the worst slice (axial, the slider's axis): the most wrong voxels, the report's rule; and the jump to it
    worst = int(np.argmax(np.count_nonzero(p != r, axis=(1, 2))))
    lowest = np.fmin.reduce(np.vstack(list(widget.result.per_slice.values())), axis=0)  # the plot's curves
    np.testing.assert_allclose(lowest, slice_dice_min(p, r), equal_nan=True)
    assert widget.go_to_worst_slice() == worst
    assert viewer.dims.current_step[0] == worst

    # a paint stroke triggers a recomputation
    before = widget.result
    pred.brush_size = 1
    spot = tuple(int(v) for v in np.argwhere((p == 0) & (r == 0))[0])
    pred.paint(spot, 1)
    qtbot.waitUntil(lambda: widget.result is not before, timeout=TIMEOUT_MS)
    p_now = from_display(pred.data, pred.metadata["display_axes"], pred.metadata["display_flip"])
    assert widget.result.metrics[1].dice == pytest.approx(
        compute_metrics(p_now, r_scan.array, p_scan.spacing)[1].dice, abs=1e-12
    )
    assert widget.result.metrics[1].dice < before.metrics[1].dice

    # save the corrected labels on the source grid
    widget.save_path.value = tmp_path / "corrected.nii.gz"
    out = widget.save()
    written, source = sitk.ReadImage(str(out)), sitk.ReadImage(str(pred_path))
    assert written.GetSize() == source.GetSize()
    np.testing.assert_allclose(written.GetDirection(), source.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(written.GetOrigin(), source.GetOrigin(), atol=1e-4)
    np.testing.assert_array_equal(np.transpose(sitk.GetArrayFromImage(written), (2, 1, 0)), p_now)

    # export the report through medfcn.evaluation.evaluate
    widget.report_dir.value = tmp_path / "report"
    assert widget.export_report() is not None
    qtbot.waitUntil(lambda: widget.report_button.enabled, timeout=TIMEOUT_MS)
    assert widget.status.value.startswith("Report written"), widget.status.value
    assert (tmp_path / "report" / "report.html").is_file()
    with open(tmp_path / "report" / "metrics.csv") as f:
        dice = {int(row["label"]): float(row["dice"]) for row in csv.DictReader(f)}
    assert dice[1] == pytest.approx(widget.result.metrics[1].dice, abs=1e-6)


@gui
def test_review_refuses_layers_on_different_grids(viewer, tmp_path):
    a = write_scan_file(tmp_path / "a.nii.gz", head_labels(), affine_from_codes("LSA"))
    b = write_scan_file(tmp_path / "b.nii.gz", head_labels(), affine_from_codes("LSA", origin=(0.0, 0.0, 0.0)))
    (la,) = viewer.open(str(a), plugin="medfcn")
    (lb,) = viewer.open(str(b), plugin="medfcn")
    widget = ReviewWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.prediction.value, widget.reference.value = la, lb
    assert widget.compute() is None
    assert "does not lie on the grid of" in widget.status.value and "mm away" in widget.status.value
    lb.data = to_display(head_labels()[:, :, :30], (1, 2, 0), (True, True, False))
    assert widget.compute() is None and "voxels against" in widget.status.value
