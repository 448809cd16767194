"""The Review dock without a reference, in a real viewer (run under ``xvfb-run -a``): it lists where the bundled model
is unsure over more than a thin band (medfcn.evaluation.components.unsure_regions, checked there against its
definition computed pair by pair) and Next / Previous visit them."""

from __future__ import annotations

import numpy as np

from medfcn.evaluation.components import unsure_regions
from napari_plugin._widgets.review import ReviewWidget
from tests.support.napari import TIMEOUT_MS, empty_labels_on, gui, segment_widget

SAMPLE = "sample_data/images/robex_head.nii.gz"


def _review_dock(viewer) -> ReviewWidget:
    widget = ReviewWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return widget


@gui
def test_without_a_reference_review_visits_where_the_model_is_unsure(viewer, qtbot):
    (image,) = viewer.open(SAMPLE, plugin="medfcn")
    segment = segment_widget(viewer, image)
    review = _review_dock(viewer)
    review.compute()  # nothing to review yet: says so, starts nothing
    assert review.worker is None and not review.shown

    drawn = empty_labels_on(viewer, image)  # labels with no map of where a model is unsure: the dock says how
    qtbot.waitUntil(lambda: review.prediction.value is drawn, timeout=TIMEOUT_MS)
    assert review.reference.value is None  # one labels layer: a prediction without a reference
    assert review.compute() is None and 'tick "Show where the model is unsure"' in review.status.value
    viewer.layers.remove(drawn)

    segment.uncertainty.value = True
    segment.run()
    qtbot.waitUntil(lambda: "robex_head_uncertain" in viewer.layers and segment.run_button.enabled, timeout=TIMEOUT_MS)
    labels, unsure = viewer.layers["robex_head_labels"], viewer.layers["robex_head_uncertain"]
    qtbot.waitUntil(lambda: review.prediction.value is labels, timeout=TIMEOUT_MS)
    assert unsure not in review.prediction.choices  # the map is not a labels layer to score
    assert review.prediction.value is labels and review.reference.value is None
    assert review.compute() is not None
    qtbot.waitUntil(lambda: not review._computing and bool(review.shown), timeout=TIMEOUT_MS)
    expected = unsure_regions(np.asarray(unsure.data) > 0, tuple(labels.scale))
    kept = [r for r in expected if r.volume_mm3 >= review.min_mm3.value]
    assert review.shown == kept and len(kept) >= 2 and review.result is None
    assert f"No reference. {len(kept)} places where the model is unsure" in review.status.value
    assert review.error_list.choices[0].startswith("1. unsure ")

    axis = review._unsure_of[1]
    first = review.next_error()
    assert first == kept[0] and review.status.value.startswith(f"Unsure region 1 of {len(kept)}: unsure ")
    step = viewer.dims.current_step[axis]
    assert step == first.anchor[axis] and unsure.data[first.anchor] == 1  # on the slice through a core voxel
    second = review.next_error()
    assert second == kept[1] and viewer.dims.current_step[axis] == second.anchor[axis]
    assert review.previous_error() == first
    review.judge(0, "model wrong")
    assert "[model wrong]" in review.error_list.choices[0]  # judged, still first

    reference = viewer.add_labels(labels.data.copy(), name="ref", scale=labels.scale, translate=labels.translate)
    review.reference.value = reference  # a reference chosen: the unsure list goes, Compute scores the pair
    assert not review.shown and "press Compute" in review.status.value
    assert review.compute() is not None
    qtbot.waitUntil(lambda: review.result is not None and not review._computing, timeout=TIMEOUT_MS)
    assert all(e.kind != "unsure" for e in review.shown) and "Dice 1.0000" in review.status.value
