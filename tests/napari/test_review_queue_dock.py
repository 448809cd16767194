"""The Review queue dock in a real viewer (run under ``xvfb-run -a``): a batch's output folder, flagged cases first;
open a case (scan and labels, overlaid), correct it, save the correction beside the outputs, and find every
decision again in a new dock (as after closing napari)."""

from __future__ import annotations

import json

import numpy as np

from medfcn.batch.run import run_batch
from medfcn.data.reader import read_scan
from medfcn.data.writer import file_sha256
from medfcn.inference.settings import InferenceSettings
from napari_plugin._layers import layer_scan
from napari_plugin._widgets.queue import QueueWidget
from tests.support.batch import write_cases
from tests.support.napari import TIMEOUT_MS, gui
from tests.support.scans import affine_from_codes, write_scan_file


def _batch(root, model_file):
    write_cases(root / "in", 2)
    write_scan_file(root / "in" / "blank.nii.gz", np.zeros((20, 22, 16), np.int16), affine_from_codes("LPS"))
    run_batch([root / "in"], root / "out", model=model_file, settings=InferenceSettings(device="cpu"), progress=False)
    return root / "out"


def _open(widget, qtbot, viewer, case):
    item = next(i for i in widget.items if i.case == case)
    assert widget.open(item) is not None
    qtbot.waitUntil(lambda: widget.current is not None and widget.current.case == case, timeout=TIMEOUT_MS)
    return viewer.layers[case], viewer.layers[f"{case}_labels"]


@gui
def test_the_queue_is_driven_in_a_viewer_and_survives_a_new_dock(viewer, qtbot, tmp_path, model_file):
    out = _batch(tmp_path, model_file)
    outputs = {p.name: file_sha256(p) for p in out.glob("*.nii.gz")}
    widget = QueueWidget(viewer)
    viewer.window.add_dock_widget(widget)
    items = widget.load(out)
    assert widget.cases.choices[0].startswith("! 0.00  blank  (")  # flagged, least trustworthy, first
    assert widget.status.value.startswith(f"{sum(i.review for i in items)} of 3 cases flagged for review")

    image, labels = _open(widget, qtbot, viewer, "case01")
    assert list(widget.cases.choices) == [i.line() for i in items]  # adding layers resets a docked widget's choices
    assert labels.data.shape == image.data.shape and (labels.scale == image.scale).all()
    assert (labels.translate == image.translate).all()
    scan = read_scan(tmp_path / "in" / "case01.nii.gz")
    shown = layer_scan(labels.data, labels.as_layer_data_tuple()[1])
    assert (shown.array == read_scan(out / "case01.nii.gz").array).all()  # the batch's labels, back on their grid
    assert widget.status.value.startswith("case01: ") and "quality score" in widget.status.value
    painted = labels.data.copy()
    painted[painted.shape[0] // 2] = 1  # the person paints a whole display slice
    labels.data = painted
    saved = widget.save_correction()
    assert saved == out / "corrected" / "case01.nii.gz"
    back = read_scan(saved)
    assert back.grid.differences(scan.grid) == []  # on the scan's own grid
    assert (back.array == layer_scan(painted, labels.as_layer_data_tuple()[1]).array).all()
    assert "Recorded: corrected" in widget.status.value

    _open(widget, qtbot, viewer, "blank")  # saved, so the previous case's layers go
    assert "case01" not in viewer.layers and "case01_labels" not in viewer.layers
    widget.decide("needs correction")
    assert {p.name: file_sha256(p) for p in out.glob("*.nii.gz")} == outputs  # no output touched

    again = QueueWidget(viewer)  # a new dock reads what the first recorded
    decided = {i.case: i.decision for i in again.load(out)}
    assert decided == {"blank": "needs correction", "case01": "corrected", "case00": None}
    review = json.loads((out / "review.json").read_text(encoding="utf-8"))["cases"]
    assert review["case01"]["corrected"] == "corrected/case01.nii.gz"

    listed = widget.corrected_pairs()  # one list, and the command that trains on it
    assert listed[:2] == (out / "corrected" / "pairs.csv", 1) and "medfcn train --pairs" in widget.status.value
    assert listed[2:] == (str(model_file), "")  # the batch's model, from its manifest
    assert widget.status.value.startswith("1 corrected cases listed")

    # painted on and not saved: opening another case keeps the layer
    blank_labels = viewer.layers["blank_labels"]
    blank_labels.data = np.ones_like(blank_labels.data)
    _open(widget, qtbot, viewer, "case00")
    assert "blank_labels" in viewer.layers and "was painted on and not saved: it is kept" in widget.status.value


@gui
def test_train_on_the_corrected_cases_is_one_run_in_the_train_dock(viewer, qtbot, tmp_path, model_file):
    """Two cases corrected in the queue; "Train on the corrected cases" fine-tunes the batch's model on both in
    one run of the Train dock (its plot, Save, Segment with this model): the model's card records both cases and the
    model it started from; no output and no correction is touched."""
    from medfcn.model.checkpoint import load_model
    from napari_plugin._widgets.train import TrainWidget

    out = _batch(tmp_path, model_file)
    widget = QueueWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.load(out)
    widget.train_button.clicked()  # nothing corrected yet: said, nothing started
    assert "no case recorded as corrected yet" in widget.status.value
    assert not any(isinstance(w, TrainWidget) for w in viewer.window.dock_widgets.values())
    for case in ("case00", "case01"):
        _, labels = _open(widget, qtbot, viewer, case)
        painted = labels.data.copy()
        painted[painted.shape[0] // 2] = 1
        labels.data = painted
        assert widget.save_correction() is not None
    kept = {p.relative_to(out): file_sha256(p) for p in out.rglob("*.nii.gz")}
    _, train = viewer.window.add_plugin_dock_widget("medfcn", "Train")
    train.minutes.value = 0.1
    assert train.train_on_cases(tmp_path / "gone.csv", model_file, 2) is None  # said at once, nothing started
    assert "gone.csv" in train.status.value and "\n" not in train.status.value and train.worker is None

    widget.train_button.clicked()
    assert train.worker is not None and widget.status.value.startswith("Training on the 2 corrected cases")
    assert "medfcn train --pairs" in widget.status.value
    widget.train_button.clicked()  # pressed again while it runs: refused, the run goes on
    assert widget.status.value.startswith("Not started: A training run is already going")
    qtbot.waitUntil(lambda: train.worker is None, timeout=120_000)
    assert train.trained is not None and "on the 2 corrected cases" in train.status.value, train.status.value
    assert train.save_button.enabled and train.segment_button.enabled
    card = load_model(train.trained).card
    assert card.name.startswith(f"{load_model(model_file).card.name} fine-tuned on 2 corrected cases")
    assert card.training["init"]["sha256"] == file_sha256(model_file)
    assert sorted(d["case"] for d in card.training["data"]) == ["case00", "case01"], card.training["data"]
    assert "napari Review queue: 2 corrected cases" in card.training["command"]
    assert {p.relative_to(out): file_sha256(p) for p in out.rglob("*.nii.gz")} == kept
