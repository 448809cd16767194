"""The Annotate dock in a real viewer: paint a few slices, Fill between slices (a preview, the labels untouched),
Apply as one undo step, the shortcut on the layer, a stale preview computed again; the result saved on the scan's
grid is what ``medfcn interpolate`` writes from the same painted map.

``MEDFCN_SCREENSHOT=/tmp/annotate.png xvfb-run -a python -m pytest tests/napari/test_annotate_dock.py`` also writes
screenshots of the preview and of the applied fill.
"""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest

from medfcn.annotation.interpolate import interpolate_file
from medfcn.annotation.itk_process import shared_interpolator
from napari_plugin._layers import labels_to_display
from napari_plugin._writer import save_labels_layer
from tests.support.napari import TIMEOUT_MS, empty_labels_on, gui
from tests.support.scans import affine_from_codes, head_volume, write_scan_file

pytestmark = pytest.mark.slow  # ITK's first use in the dock's child process takes 10-40 s


def _painted(viewer, tmp_path):
    """A scan stored LSA (its display is reordered and flipped) and labels painted on display slices 3, 9 and 15
    across display axis 0 (the one the viewer slices through by default): label 1 a square growing, label 4 a
    bar on slices 3 and 9 only."""
    scan = write_scan_file(tmp_path / "head.nii.gz", head_volume((34, 30, 28)), affine_from_codes("LSA"))
    (image,) = viewer.open(str(scan), plugin="medfcn")
    labels = empty_labels_on(viewer, image)
    for k, half in ((3, 3), (9, 5), (15, 7)):
        labels.data[k, 14 - half : 14 + half, 13 - half : 13 + half] = 1
    labels.data[3, 2:5, 3:20] = 4
    labels.data[9, 2:5, 3:20] = 4
    labels.refresh()
    return image, labels


def _screenshot(viewer, name: str) -> None:
    target = os.environ.get("MEDFCN_SCREENSHOT")
    if target:
        viewer.dims.set_current_step(0, 6)
        viewer.screenshot(target.replace(".png", f"_{name}.png"), canvas_only=False)


@gui
def test_fill_preview_apply_undo_and_the_same_as_the_command(viewer, qtbot, tmp_path):
    image, labels = _painted(viewer, tmp_path)
    painted = labels.data.copy()
    _, widget = viewer.window.add_plugin_dock_widget("medfcn", "Annotate")
    widget.label_layer.value = labels
    assert widget.fill() is not None
    qtbot.waitUntil(lambda: widget.preview is not None, timeout=10 * TIMEOUT_MS)
    preview = widget.preview
    assert np.array_equal(labels.data, painted)  # a preview never touches the labels
    assert viewer.layers.selection.active is labels  # the person keeps painting on the labels
    added = preview.data
    assert not added[labels.data > 0].any() and added[4:9].any() and added[10:15].any()
    assert not added[:3].any() and not added[16:].any()  # nothing beyond the first and last painted slice
    assert set(np.unique(added[10:15])) == {0, 1} and 4 in added[4:9]  # label 4 ends at slice 9
    _screenshot(viewer, "preview")

    assert widget.apply()
    assert preview not in viewer.layers and widget.preview is None
    filled = labels.data.copy()
    assert np.array_equal(filled, np.where(added > 0, added, painted))
    _screenshot(viewer, "applied")

    # the same as the command line on the same painted map, on the scan's grid
    painted_file = tmp_path / "painted.nii.gz"
    labels.data = painted
    save_labels_layer(labels, painted_file)
    interpolate_file(painted_file, tmp_path / "cli.nii.gz", plane="axial", interpolator=shared_interpolator())
    labels.data = filled
    save_labels_layer(labels, tmp_path / "dock.nii.gz")
    cli, dock = (np.asanyarray(nib.load(tmp_path / f).dataobj) for f in ("cli.nii.gz", "dock.nii.gz"))
    assert np.array_equal(cli, dock)
    assert np.array_equal(nib.load(tmp_path / "dock.nii.gz").affine, nib.load(tmp_path / "cli.nii.gz").affine)


@gui
def test_apply_is_one_undo_step_and_the_shortcut_previews_then_applies(viewer, qtbot, tmp_path):
    _, labels = _painted(viewer, tmp_path)
    painted = labels.data.copy()
    _, widget = viewer.window.add_plugin_dock_widget("medfcn", "Annotate")
    widget.label_layer.value = labels
    viewer.layers.selection.active = labels
    key = labels.keymap  # the shortcut lives on the layer being painted
    assert any("I" in str(k) for k in key), key
    widget._on_key(labels)  # what Shift-I calls on the layer
    qtbot.waitUntil(lambda: widget.preview is not None, timeout=10 * TIMEOUT_MS)
    widget._on_key(labels)  # Shift-I again: apply
    assert widget.preview is None and (labels.data != painted).any()
    labels.undo()
    assert np.array_equal(labels.data, painted)  # one step takes the whole fill back
    labels.redo()
    assert (labels.data != painted).any()


@gui
def test_a_preview_of_labels_painted_on_since_is_computed_again(viewer, qtbot, tmp_path):
    _, labels = _painted(viewer, tmp_path)
    _, widget = viewer.window.add_plugin_dock_widget("medfcn", "Annotate")
    widget.label_layer.value = labels
    widget.fill()
    qtbot.waitUntil(lambda: widget.preview is not None, timeout=10 * TIMEOUT_MS)
    labels.data[21, 10:18, 10:18] = 1  # painted after the preview: label 1 now runs to slice 21
    labels.refresh()
    before = labels.data.copy()
    assert not widget.apply()
    assert np.array_equal(labels.data, before)  # nothing written from the stale preview
    qtbot.waitUntil(lambda: widget.preview is not None, timeout=10 * TIMEOUT_MS)
    assert widget.preview.data[16:21].any()  # the new preview reaches the new slice


@gui
def test_a_3d_view_or_nothing_to_fill_says_so(viewer, qtbot, tmp_path):
    _, labels = _painted(viewer, tmp_path)
    _, widget = viewer.window.add_plugin_dock_widget("medfcn", "Annotate")
    widget.label_layer.value = labels
    viewer.dims.ndisplay = 3
    assert widget.fill() is None and "2-D view" in widget.status.value
    viewer.dims.ndisplay = 2
    viewer.dims.order = (2, 0, 1)  # slicing across display axis 2: the painted slices leave no gap there
    widget.fill()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10 * TIMEOUT_MS)
    assert "nothing to fill" in widget.status.value and widget.preview is None


def test_the_display_axis_maps_to_the_scan_axis_it_shows():
    """Display axis 0 of an LSA-stored scan is its index axis 1 (superior): the fill runs along the file's axis."""
    from medfcn.data.scan import Scan
    from napari_plugin._layers import layer_geometry, scan_layer_data
    from tests.support.scans import lps_geometry

    spacing, origin, direction = lps_geometry(affine_from_codes("LSA"))
    scan = Scan(np.zeros((6, 7, 8), np.uint8), spacing, origin, direction)
    data, kwargs, _ = scan_layer_data(scan, layer_type="labels")
    _, axes, _ = layer_geometry(data.shape, kwargs)
    assert axes[0] == 1 and labels_to_display(scan.array, kwargs).shape == data.shape
