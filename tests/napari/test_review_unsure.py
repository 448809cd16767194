"""The Review dock without a reference, in a real viewer (run under ``xvfb-run -a``): it lists where the bundled model
is unsure over more than a thin band (medfcn.evaluation.components.unsure_regions, checked there against its
definition computed pair by pair) and Next / Previous visit them, worded for it (the buttons, the verdicts: no
"reference wrong here" without a reference) and back to errors once a reference is chosen, the dock no wider."""

from __future__ import annotations

import numpy as np

from medfcn.evaluation.components import unsure_regions
from napari_plugin._widgets.review import UNSURE_VERDICTS, VERDICTS, ReviewWidget
from tests.support.napari import TIMEOUT_MS, empty_labels_on, gui, segment_widget

SAMPLE = "sample_data/images/robex_head.nii.gz"


def _review_dock(viewer) -> ReviewWidget:
    widget = ReviewWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return widget


def _words(review: ReviewWidget) -> tuple:
    """What the dock says of its list: the two buttons' texts, the verdicts offered, the list's label."""
    return review.previous_button.text, review.next_button.text, tuple(review.verdict.choices), review.error_list.label


def _widths(review: ReviewWidget) -> tuple[int, int]:
    """The dock's narrowest and preferred widths (what its docking area must give it), in pixels."""
    native = review.native
    return native.minimumSizeHint().width(), native.sizeHint().width()


UNSURE_WORDS = ("< Previous unsure region", "Next unsure region >", UNSURE_VERDICTS, "Regions")
ERROR_WORDS = ("< Previous error", "Next error >", VERDICTS, "Regions")


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
    assert _words(review) == UNSURE_WORDS and "reference wrong here" not in review.verdict.choices
    assert "error" not in " ".join(map(str, _words(review))).lower()
    unsure_widths = _widths(review)

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
    review.judge(1, "reference wrong here")  # no reference to be wrong: not recorded
    assert second.anchor not in review.verdicts

    reference = viewer.add_labels(labels.data.copy(), name="ref", scale=labels.scale, translate=labels.translate)
    review.reference.value = reference  # a reference chosen: the unsure list goes, Compute scores the pair
    assert not review.shown and "press Compute" in review.status.value
    assert review.compute() is not None
    qtbot.waitUntil(lambda: review.result is not None and not review._computing, timeout=TIMEOUT_MS)
    assert all(e.kind != "unsure" for e in review.shown) and "Dice 1.0000" in review.status.value
    assert _words(review) == ERROR_WORDS  # a reference: errors again, and the reference may be wrong
    error_widths = _widths(review)
    assert unsure_widths <= error_widths, (unsure_widths, error_widths)

    review.reference.value = None  # back to no reference: the unsure wording, the dock no wider
    assert _words(review) == UNSURE_WORDS and _widths(review) <= error_widths
