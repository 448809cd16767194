"""The Review dock over a day of use (issue 33), in a real viewer (run under ``xvfb-run -a``): Compute after
Compute keeps one overlay; the user's layer keeps its style; edge noise is one line, regions are listed and judged;
the verdicts go with the report; a closed dock stops recomputing; a reopened one shows the review again."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from scipy import ndimage

from napari_plugin._widgets.review import VERDICTS, ReviewWidget
from tests.support.napari import computed, gui, open_review
from tests.support.scans import affine_from_codes, write_scan_file


@pytest.fixture
def mask_pair(tmp_path):
    """A brain-like ball and a prediction that disagrees along much of its edge by one voxel (edge noise) and in one
    region that matters (a missed 6 x 6 x 6 corner)."""
    aff = affine_from_codes("LPS", spacing=(1.0, 1.0, 1.0))
    x, y, z = np.ogrid[:40, :40, :40]
    ref = (((x - 20) ** 2 + (y - 20) ** 2 + (z - 20) ** 2) < 15**2).astype(np.uint8)
    pred = ref.copy()
    grown = ndimage.binary_dilation(ref, iterations=1) & (x < 20)  # a one-voxel rim added on half the edge
    pred[grown] = 1
    pred[8:14, 17:23, 17:23] = 0  # a missed chunk at the ball's side
    return write_scan_file(tmp_path / "pred.nii.gz", pred, aff), write_scan_file(tmp_path / "ref.nii.gz", ref, aff)


def _overlays(viewer) -> list:
    return [la for la in viewer.layers if "overlap_codes" in la.metadata]


@gui
def test_review_keeps_one_overlay_summarises_edge_noise_judges_regions_and_survives_reopening(
    viewer, qtbot, mask_pair, tmp_path
):
    pred, ref, review = open_review(viewer, *mask_pair)
    pred.opacity, pred.contour = 0.6, 0
    result = computed(review, qtbot)
    computed(review, qtbot)
    review.compute_button.clicked.emit()  # as a person presses Compute again
    qtbot.waitUntil(lambda: not review._computing, timeout=30_000)
    assert len(_overlays(viewer)) == 1  # one overlay, however often Compute is pressed
    assert pred.opacity == pytest.approx(0.6) and pred.contour == 0  # the user's layer as the user styled it
    assert _overlays(viewer)[0].rendering == "iso_categorical"  # surfaces in 3-D, no stacked contours

    edge = [e for e in result.errors if e.edge]
    regions = [e for e in result.errors if not e.edge]
    assert edge and [r.kind for r in review.shown][:1] == ["missed"]
    assert all(not e.edge for e in review.shown)
    assert f"{len(edge):,} thin blob" in review.status.value and "not listed" in review.status.value
    assert (regions[0].kind, regions[0].voxels) == ("missed", 6 * 6 * 6)  # the region that matters, listed first

    review.go_to_error(0)
    review.verdict.value = "reference wrong here"
    assert review.verdicts[review.shown[0].anchor] == "reference wrong here"
    assert "[reference wrong here]" in review.error_list.choices[0]
    review.report_dir.value = tmp_path / "report"
    assert review.export_report() is not None
    qtbot.waitUntil(lambda: review.report_button.enabled, timeout=30_000)
    with open(tmp_path / "report" / "verdicts.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["verdict"] == "reference wrong here" and rows[0]["kind"] == "missed"

    # the dock closed as napari's close button does: no more recomputing on edits, and the reference's style back
    from qtpy.QtWidgets import QDockWidget

    dock = review.native
    while not isinstance(dock, QDockWidget):
        dock = dock.parent()
    dock.destroyOnClose()
    qtbot.wait(100)
    before = review.result
    pred.brush_size = 3
    pred.paint((30, 30, 30), 1)
    qtbot.wait(800)  # past the recompute delay
    assert review.result is before and not review._computing
    assert ref.contour == 0  # given back

    again = ReviewWidget(viewer)  # reopened: the review is there again, with its verdicts
    viewer.window.add_dock_widget(again)
    assert again.result is before and again.prediction.value is pred and again.reference.value is ref
    assert again.verdicts and "[reference wrong here]" in again.error_list.choices[0]
    assert len(_overlays(viewer)) == 1 and VERDICTS[2] == "reference wrong here"
