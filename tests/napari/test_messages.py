"""What the docks say when the input is wrong, in a real viewer (run under ``xvfb-run -a``): what is wrong and what
to do, in the viewer's terms: no grid fields compared with ``!=``, no command-line option."""

from __future__ import annotations

import numpy as np

from napari_plugin._widgets.review import ReviewWidget
from tests.support.napari import TIMEOUT_MS, gui, segment_widget
from tests.support.scans import affine_from_codes, head_labels, head_volume, write_scan_file


@gui
def test_a_reference_on_another_grid_is_said_in_voxels_and_millimetres(viewer, tmp_path):
    a = write_scan_file(tmp_path / "pred.nii.gz", head_labels(), affine_from_codes("LSA", spacing=(0.9, 0.9, 6.5)))
    b = write_scan_file(tmp_path / "ref.nii.gz", head_labels()[:, :, :30], affine_from_codes("LSA"))
    (pred,) = viewer.open(str(a), plugin="medfcn")
    (ref,) = viewer.open(str(b), plugin="medfcn")
    review = ReviewWidget(viewer)
    viewer.window.add_dock_widget(review)
    review.prediction.value, review.reference.value = pred, ref
    assert review.compute() is None
    text = review.status.value
    assert "!=" not in text and "size (" not in text and "\n" not in text, text
    assert "does not lie on the grid of ref" in text and "choose a layer made on ref" in text
    shape = pred.data.shape
    assert f"{shape[0]} x {shape[1]} x {shape[2]} voxels" in text  # as napari shows the layer, not the file

    c = write_scan_file(tmp_path / "moved.nii.gz", head_labels(), affine_from_codes("LSA", origin=(0.0, 0.0, 0.0)))
    (moved,) = viewer.open(str(c), plugin="medfcn")
    d = write_scan_file(tmp_path / "ref2.nii.gz", head_labels(), affine_from_codes("LSA"))
    (ref2,) = viewer.open(str(d), plugin="medfcn")
    review.prediction.value, review.reference.value = moved, ref2
    assert review.compute() is None
    assert "mm away" in review.status.value and "!=" not in review.status.value, review.status.value


@gui
def test_saving_a_seg_of_a_nifti_scan_says_to_save_nifti_not_a_command_line_option(viewer, qtbot, tmp_path, tiny_model):
    path = write_scan_file(tmp_path / "head.nii.gz", head_volume(), affine_from_codes("LSA"))
    (image,) = viewer.open(str(path), plugin="medfcn")
    segment = segment_widget(viewer, image, tiny_model)
    segment.run()
    qtbot.waitUntil(lambda: "head_labels" in viewer.layers and segment.run_button.enabled, timeout=TIMEOUT_MS)
    review = ReviewWidget(viewer)
    viewer.window.add_dock_widget(review)
    review.prediction.value = viewer.layers["head_labels"]
    review.save_path.value = tmp_path / "out.seg.dcm"
    assert review.save() is None
    text = review.status.value
    assert "--" not in text and "save it as .nii.gz instead" in text, text
    assert not (tmp_path / "out.seg.dcm").exists()
    assert np.any(viewer.layers["head_labels"].data >= 0)
