"""Which slices a user painted, recorded in a real viewer (run under ``xvfb-run -a``) in whatever view they painted:
the brush, the fill bucket and ``data_setitem`` in the axial and the coronal view each record their own slice; a
3-D brush and painting in the 3-D view record no slice (their voxels are counted off-plane); undo keeps the record
(the Train dock compares with the prediction); a new prediction written into the layer clears it."""

from __future__ import annotations

import numpy as np

from napari_plugin._widgets._edits import painted_planes
from tests.support.napari import gui
from tests.support.scans import affine_from_codes, head_volume, write_scan_file


@gui
def test_each_stroke_records_the_slice_it_was_painted_on_in_any_view(viewer, tmp_path):
    path = write_scan_file(tmp_path / "head.nii.gz", head_volume(), affine_from_codes("LSA"))
    (image,) = viewer.open(str(path), plugin="medfcn")
    labels = viewer.add_labels(np.zeros(image.data.shape, np.uint8), name="drawn", scale=image.scale)
    assert painted_planes(labels) == ({}, 0)
    labels.brush_size = 5

    viewer.dims.order = (0, 1, 2)  # axial: the slider steps through data axis 0
    viewer.dims.set_current_step(0, 12)
    labels.paint((12, 20, 20), 1)
    labels.paint((12, 22, 24), 1)  # the same slice again
    viewer.dims.set_current_step(0, 4)
    labels.fill((4, 20, 20), 2)  # the fill bucket paints the slice shown
    assert painted_planes(labels) == ({0: [4, 12]}, 0)

    viewer.dims.order = (1, 0, 2)  # coronal: data axis 1
    viewer.dims.set_current_step(1, 30)
    labels.paint((10, 30, 20), 1)
    index = np.meshgrid([5, 6, 7], [18], [10, 11], indexing="ij")
    labels.data_setitem(tuple(i.ravel() for i in index), 3)  # a plugin's or a script's edit of that slice
    assert painted_planes(labels) == ({0: [4, 12], 1: [18, 30]}, 0)

    labels.n_edit_dimensions = 3  # a 3-D brush paints a ball across slices: no slice is "the" one
    labels.paint((20, 30, 20), 1)
    planes, off = painted_planes(labels)
    assert planes == {0: [4, 12], 1: [18, 30]} and off > 0
    labels.n_edit_dimensions = 2
    viewer.dims.ndisplay = 3
    before = off
    labels.paint((25, 10, 10), 4)
    assert painted_planes(labels)[1] > before  # painted in the 3-D view: off-plane
    viewer.dims.ndisplay = 2

    labels.undo()  # the record stays: the Train dock compares the slices with the prediction
    assert painted_planes(labels)[0] == {0: [4, 12], 1: [18, 30]}
    labels.metadata = {**{k: v for k, v in labels.metadata.items() if k != "painted"}}  # a new prediction
    assert painted_planes(labels) == ({}, 0)
