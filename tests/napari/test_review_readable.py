"""A review a person can read, in a real viewer (run under ``xvfb-run -a``): the error list survives layers added and
removed, colour-blind-safe colours with a swatch each, tables sized to their content, volumes in mL, small blobs
hidden and counted, the text naming the slice the view goes to, edits from code noticed, and the status bar in
patient terms only."""

from __future__ import annotations

import numpy as np
import pytest

from medfcn.evaluation.metrics import Overlap
from napari_plugin._widgets._overlay import OVERLAP_COLORS, REFERENCE_RGB
from tests.support.napari import TIMEOUT_MS, computed, gui, open_review
from tests.support.scans import affine_from_codes, write_scan_file

SPACING = (1.0, 1.0, 2.0)  # a voxel is 2 mm³


@pytest.fixture
def pair(tmp_path):
    """A reference cube and a prediction with a missed 6 x 6 x 6 corner (432 mm³), a spurious 3 x 3 x 3 blob
    (54 mm³), a spurious speck (2 mm³) and a spurious C-shaped blob whose centroid lies in a slice it does not
    touch; files in ``pred/`` and ``labels/`` folders, as a case and its reference are."""
    aff = affine_from_codes("LPS", spacing=SPACING)
    ref = np.zeros((40, 36, 30), np.uint8)
    ref[8:30, 8:28, 5:25] = 1
    pred = ref.copy()
    pred[8:14, 8:14, 5:11] = 0
    pred[33:36, 30:33, 12:15] = 1
    pred[2, 2, 2] = 1
    pred[2:6, 30:35, 29] = 1  # a C: a base at k = 29 and two arms along k at j = 30 and 34 (44 voxels)
    pred[2:6, 30, 26:29] = pred[2:6, 34, 26:29] = 1
    return (
        write_scan_file(tmp_path / "pred" / "case.nii.gz", pred, aff),
        write_scan_file(tmp_path / "labels" / "case.nii.gz", ref, aff),
    )


# -- 1. the error list survives layers added and removed -----------------------------------------------------------
@gui
def test_the_error_list_survives_layers_added_and_removed(viewer, qtbot, pair, tmp_path):
    pred, ref, widget = open_review(viewer, *pair)
    computed(widget, qtbot)
    first = widget.next_error()
    listed = list(widget.error_list.choices)
    assert len(listed) == len(widget.shown) >= 2

    points = viewer.add_points()  # any layer added: napari refreshes every dock's choices
    viewer.open(str(pair[0]), plugin="medfcn")
    qtbot.wait(50)
    assert list(widget.error_list.choices) == listed
    second = widget.next_error()  # no "is not a valid choice"
    assert second is widget.shown[1] and second is not first
    assert widget.status.value.startswith(f"Error 2 of {len(widget.shown)}")
    assert viewer.dims.current_step[0] == second.anchor[0]  # the view went where the status says
    viewer.layers.remove(points)
    qtbot.wait(50)
    assert list(widget.error_list.choices) == listed

    viewer.layers.remove(ref)  # the reference gone: its numbers and jumps go with it, without an error
    qtbot.wait(50)
    assert widget.result is None and list(widget.error_list.choices) == [] and widget.next_error() is None
    assert not widget.next_button.enabled


# -- 3. a picture a person can read ---------------------------------------------------------------------------------
_SIMULATIONS = {  # Machado, Oliveira & Fernandes (2009), severity 1.0, on linear RGB
    "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]],
    "deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]],
    "tritanopia": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]],
}


def _seen(rgb, matrix) -> np.ndarray:
    """sRGB (0-1) as seen with a colour-vision deficiency, in sRGB (0-255)."""
    c = np.asarray(rgb, float)
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    out = np.clip(np.asarray(matrix) @ lin, 0, 1)
    return 255 * np.where(out <= 0.0031308, 12.92 * out, 1.055 * out ** (1 / 2.4) - 0.055)


@gui
def test_colours_are_told_apart_with_each_deficiency_and_each_has_a_swatch(viewer, qtbot, pair):
    pred, ref, widget = open_review(viewer, *pair)
    computed(widget, qtbot)
    overlay = viewer.layers[f"{pred.name} vs {ref.name}"]
    colours = {
        "missed": overlay.colormap.map(int(Overlap.FN))[:3],
        "spurious": overlay.colormap.map(int(Overlap.FP))[:3],
        "reference": ref.colormap.map(1)[:3],
    }
    np.testing.assert_allclose(colours["reference"], np.divide(REFERENCE_RGB, 255), atol=0.01)
    for matrix in [np.eye(3), *_SIMULATIONS.values()]:
        seen = {k: _seen(v, matrix) for k, v in colours.items()}
        names = list(seen)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                assert np.linalg.norm(seen[a] - seen[b]) > 40, (a, b, matrix)  # clearly different colours
    assert OVERLAP_COLORS[Overlap.TP] == "transparent" and ref.contour >= 1 and pred.contour == 0  # nothing mixes
    assert viewer.layers[-1] is ref  # the reference's contour on top
    assert widget.legend.value.count("<span") == 4  # missed, spurious, edge noise, reference
    assert "spurious (FP)" in widget.legend.value and "predicted only" not in widget.legend.value  # the list's words
    assert pred.name == "case" and ref.name == "case (labels)"  # not "case [1]"


@gui
def test_the_table_and_the_error_list_show_their_content(viewer, qtbot, pair):
    pred, ref, widget = open_review(viewer, *pair)
    viewer.window._qt_window.resize(1400, 900)
    viewer.window._qt_window.show()
    computed(widget, qtbot)
    widget.min_mm3.value = 0
    qtbot.wait(100)
    table = widget.table.native
    assert table.horizontalScrollBar().maximum() == 0  # every number shown in the dock, no horizontal scroll
    assert table.verticalScrollBar().maximum() == 0
    rows = widget.error_list.native
    assert rows.height() >= 8 * rows.fontMetrics().height()  # eight rows of errors
    assert rows.horizontalScrollBar().maximum() == 0  # each line whole


# -- 5. volumes in mL ---------------------------------------------------------------------------------------------
@gui
def test_review_table_gives_each_labels_volume_in_ml(viewer, qtbot, pair):
    pred, ref, widget = open_review(viewer, *pair)
    computed(widget, qtbot)
    table = widget.table.native
    rows = [table.verticalHeaderItem(i).text() for i in range(table.rowCount())]
    column = [row[0] for row in widget.table.data.to_list()]  # the one label's column
    by_hand = {
        "pred mL": np.count_nonzero(pred.data == 1) * 2.0 / 1000,  # voxels x 2 mm³
        "ref mL": (22 * 20 * 20) * 2.0 / 1000,
    }
    for name, value in by_hand.items():
        assert column[rows.index(name)] == pytest.approx(value, abs=0.005)


# -- 7. small blobs hidden and counted; the text names where the view goes -----------------------------------------
@gui
def test_small_blobs_are_hidden_and_counted_and_the_text_names_the_slice_shown(viewer, qtbot, pair):
    pred, ref, widget = open_review(viewer, *pair)
    result = computed(widget, qtbot)
    sizes = sorted(b.volume_mm3 for b in result.errors)
    assert sizes[0] == pytest.approx(2.0)  # the speck is found ...
    assert [b.volume_mm3 for b in widget.shown] == sorted([s for s in sizes if s >= 10], reverse=True)
    assert widget.hidden == 1 and "(1 smaller hidden)" in widget.status.value  # ... hidden below 10 mm³, and said
    widget.min_mm3.value = 0
    assert len(widget.shown) == len(result.errors) and widget.hidden == 0

    c_shape = next(b for b in widget.shown if b.voxels == 4 * 11)
    assert round(c_shape.centroid[0]) != c_shape.anchor[0]  # its centroid is not on it
    blob = widget.go_to_error(widget.shown.index(c_shape))
    shown_slice = viewer.dims.current_step[0]
    assert shown_slice == blob.anchor[0]
    assert f"axial {shown_slice}," in widget.status.value  # the slice named is the slice shown
    chosen = widget.error_list.value
    assert (chosen[0] if isinstance(chosen, list) else chosen).endswith(f"axial {shown_slice}")  # in the list too


# -- 8. edits from code, and the status bar in patient terms -------------------------------------------------------
@gui
def test_edits_from_code_are_noticed(viewer, qtbot, pair):
    pred, ref, widget = open_review(viewer, *pair)
    before = computed(widget, qtbot).metrics[1].dice
    pred.data[8:14, 8:14, :] = 1  # fill the missed corner from code (display order: k reversed, j, i)
    pred.refresh()
    assert widget.stale
    qtbot.waitUntil(lambda: not widget.stale and not widget._computing, timeout=TIMEOUT_MS)
    assert widget.result.metrics[1].dice != before
    dice = widget.result.metrics[1].dice
    pred.refresh()  # a refresh with no change is not an edit
    assert not widget.stale and widget.result.metrics[1].dice == dice


@gui
def test_the_status_bar_shows_patient_coordinates_instead_of_napari_indices(viewer, pair):
    (ref,) = viewer.open(str(pair[1]), plugin="medfcn")
    world = ref.data_to_world((20, 18, 15))
    viewer.dims.set_point(0, world[0])
    status = ref.get_status(world, world=True, view_direction=None, dims_displayed=[1, 2])
    text = status["coordinates"]
    assert text.startswith("RAS ") and "voxel (" in text
    assert "[" not in text  # napari's own triple (of the reordered display array) is gone
    assert text.endswith(": 1") or ": 1" in text  # the value stays
