"""Reviewing and correcting in a real viewer (run under ``xvfb-run -a``): edits survive a second Segment, undo and
redo recompute the Dice, "next error" goes to the largest error blob, hand-drawn layers save on a DICOM series'
grid, the overlay and the orientation read right, the report names the layers, and the plugin imports light."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from napari import save_layers

from medfcn.data.reader import read_scan
from medfcn.evaluation.metrics import compute_metrics
from napari_plugin._layers import from_display
from napari_plugin._widgets.review import OVERLAP_NAMES, ReviewWidget
from napari_plugin._widgets.segment import is_unedited
from tests.support.napari import TIMEOUT_MS, computed, gui, open_review, segment_widget
from tests.support.scans import affine_from_codes, assert_same_grid, head_volume, voxels_on, write_scan_file


@pytest.fixture
def blobs(tmp_path):
    """A reference cube and a prediction with three known errors: a missed 6 x 6 x 6 corner (216 voxels), a
    spurious 3 x 3 x 3 blob (27) and a spurious speck (1), on an LPS-stored grid (i to the left, j to the back,
    k up; displayed as k reversed, j, i)."""
    aff = affine_from_codes("LPS", spacing=(1.0, 1.0, 2.0))
    ref = np.zeros((40, 36, 30), np.uint8)
    ref[8:30, 8:28, 5:25] = 1
    pred = ref.copy()
    pred[8:14, 8:14, 5:11] = 0
    pred[33:36, 30:33, 12:15] = 1
    pred[2, 2, 2] = 1
    return write_scan_file(tmp_path / "pred.nii.gz", pred, aff), write_scan_file(tmp_path / "ref.nii.gz", ref, aff)


# -- edits are never lost ------------------------------------------------------------------------------------------
@gui
def test_a_second_segment_keeps_an_edited_layer_and_records_its_provenance(viewer, qtbot, tiny_model, tmp_path):
    scan_file = write_scan_file(tmp_path / "head.nii.gz", head_volume(), affine_from_codes("LSA"))
    (image,) = viewer.open(str(scan_file), plugin="medfcn")
    widget = segment_widget(viewer, image, tiny_model)
    widget.run()
    qtbot.waitUntil(lambda: "head_labels" in viewer.layers and widget.run_button.enabled, timeout=TIMEOUT_MS)
    labels = viewer.layers["head_labels"]
    meta = labels.metadata
    assert meta["model"] == "tiny" and meta["device"] == "cpu" and meta["segmented_at"].endswith("+00:00")
    assert meta["label_names"] == {0: "background", 1: "brain"}  # from the model card
    assert list(labels.features["label"]) == ["background", "brain"]  # shown on hover
    assert is_unedited(labels)

    widget.run()  # unedited: replaced in place
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=TIMEOUT_MS)
    assert [la.name for la in viewer.layers] == ["head", "head_labels"]

    labels.brush_size = 3
    labels.paint((10, 10, 10), 7)  # a correction
    edited = labels.data.copy()
    assert not is_unedited(labels)
    widget.run()
    qtbot.waitUntil(lambda: "head_labels [2]" in viewer.layers and widget.run_button.enabled, timeout=TIMEOUT_MS)
    np.testing.assert_array_equal(viewer.layers["head_labels"].data, edited)  # the correction survived
    assert 7 not in viewer.layers["head_labels [2]"].data
    assert "was edited, so it is kept" in widget.status.value


@gui
def test_undo_and_redo_recompute_the_dice_shown(viewer, qtbot, blobs):
    pred, ref, widget = open_review(viewer, *blobs)
    original = computed(widget, qtbot).metrics[1].dice
    pred.brush_size = 5
    pred.paint((27, 3, 3), 1)  # two strokes in the background: spurious voxels
    pred.paint((3, 33, 3), 1)
    qtbot.waitUntil(lambda: widget.result.metrics[1].dice != original and not widget.stale, timeout=TIMEOUT_MS)
    painted = widget.result.metrics[1].dice
    r = read_scan(blobs[1])
    now = from_display(pred.data, pred.metadata["display_axes"], pred.metadata["display_flip"])
    assert painted == pytest.approx(compute_metrics(now, r.array, r.spacing)[1].dice, abs=1e-12)
    assert widget.table.data.to_list()[0][0] == pytest.approx(painted, abs=1e-4)

    pred.undo()
    qtbot.waitUntil(lambda: widget.result.metrics[1].dice != painted and not widget.stale, timeout=TIMEOUT_MS)
    pred.undo()
    qtbot.waitUntil(
        lambda: not widget.stale and widget.result.metrics[1].dice == pytest.approx(original, abs=1e-12),
        timeout=TIMEOUT_MS,
    )
    assert widget.table.data.to_list()[0][0] == pytest.approx(original, abs=1e-4)
    pred.redo()
    pred.redo()
    qtbot.waitUntil(
        lambda: not widget.stale and widget.result.metrics[1].dice == pytest.approx(painted, abs=1e-12),
        timeout=TIMEOUT_MS,
    )

    widget.auto.value = False  # without recomputation the numbers are marked stale
    pred.undo()
    assert widget.stale and "stale" in widget.status.value


# -- errors are findable -------------------------------------------------------------------------------------------
@gui
def test_next_error_goes_to_the_largest_blob_centred_and_zoomed(viewer, qtbot, blobs):
    pred, ref, widget = open_review(viewer, *blobs)
    result = computed(widget, qtbot)
    assert [(b.kind, b.voxels) for b in result.errors] == [("missed", 216), ("spurious", 27), ("spurious", 1)]
    assert not any(b.edge for b in result.errors)  # a speck on its own is not a rim along the boundary
    assert len(widget.error_list.choices) == 2 and widget.hidden == 1  # the 2 mm³ speck: under 10 mm³
    widget.min_mm3.value = 0
    assert len(widget.error_list.choices) == 3
    zoom = viewer.camera.zoom

    blob = widget.next_error()
    assert blob is result.errors[0]
    # the missed corner pred[8:14, 8:14, 5:11] of the file, displayed as (k reversed, j, i)
    centre_display = (pred.data.shape[0] - 1 - 7.5, 10.5, 10.5)
    np.testing.assert_allclose(blob.centroid, centre_display)
    assert np.abs(np.subtract(blob.anchor, centre_display)).max() <= 0.5  # the blob's voxel nearest its centre
    world = pred.data_to_world(blob.anchor)
    assert viewer.dims.current_step[0] == blob.anchor[0]
    np.testing.assert_allclose(viewer.camera.center[-2:], world[-2:], atol=1e-6)
    assert viewer.camera.zoom > zoom  # zoomed in on a 6 x 6 mm blob
    assert viewer.layers["pred vs ref"].data[blob.anchor] == 3  # a missed voxel there

    assert widget.next_error() is result.errors[1]
    assert widget.previous_error() is result.errors[0]
    assert widget.previous_error() is result.errors[-1]  # wraps around


@gui
def test_worst_slice_has_the_most_wrong_voxels_and_is_centred(viewer, qtbot, blobs):
    pred, ref, widget = open_review(viewer, *blobs)
    computed(widget, qtbot)
    wrong = np.count_nonzero(pred.data != ref.data, axis=(1, 2))
    k = widget.go_to_worst_slice()
    assert k == int(np.argmax(wrong)) and wrong[k] == 36  # a 6 x 6 plane of the missed corner, not the speck
    assert viewer.dims.current_step[0] == k


# -- clear pictures ------------------------------------------------------------------------------------------------
@gui
def test_overlay_reads_right_and_the_dock_does_not_widen(viewer, qtbot, blobs):
    pred_path, ref_path = blobs
    (pred,) = viewer.open(str(pred_path), plugin="medfcn")
    (ref,) = viewer.open(str(ref_path), plugin="medfcn")
    widget = ReviewWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.prediction.value is not widget.reference.value  # opens on two different layers
    widget.prediction.value, widget.reference.value = pred, ref
    computed(widget, qtbot)
    overlay = viewer.layers["pred vs ref"]
    assert ref.contour >= 1 and viewer.layers[-1] is ref  # the reference outlined, on top
    assert pred.contour == 0 and pred.opacity == pytest.approx(0.7)  # the layer the user paints: as it was
    colours = overlay.colormap.color_dict
    assert colours[1][3] == 0 and 0.3 < colours[2][3] == colours[3][3] < 1.0  # the anatomy shows through errors
    fn = tuple(int(v) for v in np.argwhere(overlay.data == 3)[0])
    viewer.dims.set_point(0, overlay.data_to_world(fn)[0])
    status = overlay.get_status(overlay.data_to_world(fn), world=True)
    assert OVERLAP_NAMES[3] in str(status)
    assert "missed (FN)" in widget.legend.value and "contour" in widget.legend.value

    width = widget.native.sizeHint().width()
    widget.status.value = "a long message that would widen the dock " * 12
    qtbot.wait(10)
    assert widget.native.sizeHint().width() <= width


@gui
def test_orientation_letters_follow_the_displayed_plane(viewer, tmp_path):
    """Hand-worked from the display convention (rows and columns of the view run along inferior, posterior, left)."""
    path = write_scan_file(tmp_path / "x.nii.gz", head_volume(), affine_from_codes("RAS"))
    (image,) = viewer.open(str(path), plugin="medfcn")
    assert viewer.text_overlay.visible
    assert viewer.text_overlay.text == "axial: top A, bottom P, left R, right L"
    viewer.dims.order = (1, 0, 2)
    assert viewer.text_overlay.text == "coronal: top S, bottom I, left R, right L"
    viewer.dims.order = (2, 0, 1)
    assert viewer.text_overlay.text == "sagittal: top S, bottom I, left A, right P"
    lo, hi = image.contrast_limits  # percentile auto-contrast: inside the data's range, not its extremes
    assert image.data.min() <= lo < hi < image.data.max()
    assert np.mean(image.data > hi) == pytest.approx(0.005, abs=0.002)


@gui
def test_status_bar_shows_the_ras_point_and_scan_voxel_under_the_cursor(viewer, tmp_path):
    """Hovering a known voxel of an oblique LSA-like scan: napari's status names its RAS point (SimpleITK's
    physical point, x and y negated) and its index in the file."""
    from napari_plugin._layers import LPS_TO_DISPLAY
    from tests.support.scans import oblique_lsa_affine

    path = write_scan_file(tmp_path / "x.nrrd", head_volume((12, 14, 9)), oblique_lsa_affine())
    (image,) = viewer.open(str(path), plugin="medfcn")
    voxel = (4, 11, 6)
    x, y, z = sitk.ReadImage(str(path)).TransformIndexToPhysicalPoint(voxel)
    viewer.mouse_over_canvas = True
    viewer.cursor.position = tuple((LPS_TO_DISPLAY @ np.array([x, y, z])).tolist())
    assert viewer.layers.selection.active is image
    # a Qt viewer computes the status in its status thread (once its event loop runs), with this same call:
    viewer.update_status_from_cursor()  # (napari's _calc_status_from_cursor -> the layer's get_status)
    shown = viewer.status["coordinates"]
    assert shown.startswith(f"RAS {-x:.1f}, {-y:.1f}, {z:.1f} mm  voxel (4, 11, 6): "), shown  # not napari's triple
    viewer.cursor.position = tuple(np.asarray(viewer.cursor.position) + 1000.0)  # off the scan: napari's text only
    viewer.update_status_from_cursor()
    assert "RAS" not in viewer.status["coordinates"]


# -- grid-safe labels ----------------------------------------------------------------------------------------------
@gui
@pytest.mark.parametrize("how", ["napari's New labels", "the Segment dock's button"])
def test_labels_drawn_on_a_dicom_series_save_on_its_grid(viewer, tmp_path, tiny_model, how):
    series = write_scan_file(tmp_path / "series", head_volume(), affine_from_codes("LPS", spacing=(0.9, 0.9, 2.0)))
    (image,) = viewer.open(str(series), plugin="medfcn")
    if how == "napari's New labels":
        viewer.layers.selection.active = image
        viewer._new_labels()
        drawn = viewer.layers[-1]
    else:
        drawn = segment_widget(viewer, image, tiny_model).new_labels()
    drawn.data[3:6, 10:20, 4:9] = 2
    out = tmp_path / "drawn.nii.gz"
    save_layers(str(out), [drawn], plugin="medfcn")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series)))
    dicom = reader.Execute()
    written = sitk.ReadImage(str(out))
    assert written.GetSize() == dicom.GetSize() == (33, 37, 34)  # the series' (columns, rows, slices)
    assert_same_grid(written, read_scan(series))
    expected = np.zeros(image.data.shape, np.uint8)
    expected[3:6, 10:20, 4:9] = 2
    meta = image.metadata
    np.testing.assert_array_equal(
        voxels_on(written, read_scan(series)), from_display(expected, meta["display_axes"], meta["display_flip"])
    )


# -- the report from the dock --------------------------------------------------------------------------------------
@gui
def test_report_from_the_dock_names_the_layers_and_scans(viewer, qtbot, tmp_path, blobs):
    pred, ref, widget = open_review(viewer, *blobs)
    widget.report_dir.value = tmp_path / "report"
    assert widget.export_report() is not None
    qtbot.waitUntil(lambda: widget.report_button.enabled, timeout=TIMEOUT_MS)
    text = (tmp_path / "report" / "report.html").read_text()
    pred_path, ref_path = blobs
    assert f"layer &#x27;pred&#x27; ({pred_path})" in text and f"layer &#x27;ref&#x27; ({ref_path})" in text
    assert "medfcn-review" not in text  # no temporary files
    r, p = read_scan(ref_path), read_scan(pred_path)
    dice = compute_metrics(p.array, r.array, r.spacing)[1].dice
    assert f"{dice:.4f}" in text


# -- a light plugin ------------------------------------------------------------------------------------------------
def test_reader_writer_and_manifest_modules_import_without_torch_or_monai():
    code = (
        "import sys, napari_plugin, napari_plugin._reader, napari_plugin._writer, napari_plugin._sample_data\n"
        "heavy = sorted(m for m in ('torch', 'monai', 'napari', 'qtpy') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, encoding="utf-8", errors="replace", check=True, timeout=120
    )
    assert out.stdout.strip() == ""


# -- a supported Qt ------------------------------------------------------------------------------------------------
@gui
def test_the_viewer_runs_on_a_qt6_binding_without_the_pyqt5_deprecation(viewer):
    import qtpy

    assert qtpy.API_NAME in ("PyQt6", "PySide6") and qtpy.QT6 and not qtpy.QT5  # napari warns only on Qt 5
    viewer.window._qt_window.show()
