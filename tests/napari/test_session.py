"""A whole review session in one real viewer (run under ``xvfb-run -a``), docks open throughout: a DICOM series and a
hospital's SEG opened together, Segment, Review, layers added and removed, a second Segment, an edit, the edited
result saved as a SEG and opened again where it was drawn."""

from __future__ import annotations

import shutil

import highdicom as hd
import numpy as np

from medfcn.batch.outputs import OutputFormat
from medfcn.data.reader import read_scan
from napari_plugin._widgets.review import ReviewWidget
from tests.support.dicom import make_series, synthetic_labels, write_all
from tests.support.napari import TIMEOUT_MS, gui, segment_widget


@gui
def test_a_session_with_docks_open_while_layers_come_and_go(viewer, qtbot, tiny_model, tmp_path):
    series = make_series("oblique_slope", tmp_path / "case" / "series")
    scan = read_scan(series)
    files = write_all(scan, synthetic_labels(scan), tmp_path / "hospital", formats=(OutputFormat.DICOM_SEG,))
    shutil.copy(files[OutputFormat.DICOM_SEG], tmp_path / "case" / "reference.seg.dcm")

    layers = viewer.open(str(tmp_path / "case"), plugin="medfcn")  # the series and the SEG beside it
    image = next(la for la in layers if type(la).__name__ == "Image")
    reference = next(la for la in layers if la is not image)
    assert reference.name == "reference.seg" and reference.metadata["label_names"] == {1: "brain", 2: "lesion"}

    segment = segment_widget(viewer, image, tiny_model)
    review = ReviewWidget(viewer)
    viewer.window.add_dock_widget(review)

    def run_segment():
        assert segment.run() is not None
        qtbot.waitUntil(lambda: segment.run_button.enabled and "mL" in segment.status.value, timeout=TIMEOUT_MS)
        return viewer.layers[f"{image.name}_labels"]

    prediction = run_segment()
    review.prediction.value, review.reference.value = prediction, reference
    review.min_mm3.value = 0
    assert review.compute() is not None
    qtbot.waitUntil(lambda: review.result is not None and not review._computing, timeout=TIMEOUT_MS)
    listed = list(review.error_list.choices)
    if review.shown:
        review.next_error()

    points = viewer.add_points(name="marks")  # layers come and go with both docks open
    shapes = viewer.add_shapes(name="notes")
    viewer.layers.remove(points)
    qtbot.wait(50)
    assert list(review.error_list.choices) == listed
    assert review.prediction.value is prediction and review.reference.value is reference

    again = run_segment()  # unedited: replaced in place, and the review recomputes after the change
    assert again is prediction
    qtbot.waitUntil(lambda: not review.stale and not review._computing, timeout=TIMEOUT_MS)
    if review.shown:
        assert review.next_error() is review.shown[0]

    painted = np.asarray(prediction.data).copy()
    painted[1:3, 2:6, 2:6] = 2  # an edit, and a label the model does not make
    prediction.data = painted
    qtbot.waitUntil(lambda: not review.stale and not review._computing, timeout=TIMEOUT_MS)
    review.save_path.value = tmp_path / "corrected.seg.dcm"
    out = review.save()
    assert out is not None and out.is_file(), review.status.value
    types = {int(s.SegmentNumber): str(s.SegmentAlgorithmType) for s in hd.seg.segread(out).SegmentSequence}
    assert types == {1: "SEMIAUTOMATIC", 2: "MANUAL"}

    viewer.layers.remove(shapes)
    (back,) = viewer.open(str(out), plugin="medfcn")  # beside nothing: on its own frames' grid
    np.testing.assert_array_equal(back.data, painted)
    for t in ("scale", "translate", "rotate"):
        np.testing.assert_allclose(getattr(back, t), getattr(prediction, t), atol=1e-4)

    viewer.layers.remove(reference)  # the reference gone: the review lets go of it
    qtbot.wait(50)
    assert review.result is None and review.next_error() is None
