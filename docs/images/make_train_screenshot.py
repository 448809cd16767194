"""Regenerate docs/images/napari_train.png: the Train dock after fine-tuning the bundled model on 3 corrected slices.

The scan is the second sample head rendered as a 6.5 mm axial thick-slice scan (``benchmarks/support/thick.py``), which
the bundled model gets wrong (Dice 0.935); its reference mask replaces the prediction on the 3 axial slices the
model gets most wrong (as a user would paint them), then the dock trains for 1 minute from the model that made the
prediction. Run from the repository root on a display (or a virtual one)::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/images/make_train_screenshot.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import napari
import numpy as np
import SimpleITK as sitk
from qtpy.QtWidgets import QApplication

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from thick import render_thick  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_review_screenshots import wait  # noqa: E402


def main() -> None:
    from napari_plugin._layers import labels_to_display

    work = Path(tempfile.mkdtemp())
    sample = ROOT / "sample_data"
    image, label = render_thick(
        sitk.ReadImage(str(sample / "images" / "robex_head.nii.gz")),
        sitk.ReadImage(str(sample / "labels" / "robex_head.nii.gz")),
        6.5,
    )
    sitk.WriteImage(image, str(work / "thick_head.nii.gz"))
    reference = np.transpose(sitk.GetArrayFromImage(label), (2, 1, 0))  # (X, Y, Z) as the reader's scan
    viewer = napari.Viewer()
    viewer.window._qt_window.resize(1500, 950)
    (layer,) = viewer.open(str(work / "thick_head.nii.gz"), plugin="medfcn")
    _, segment = viewer.window.add_plugin_dock_widget("medfcn", "Segment")
    segment.image.value = layer
    segment.device.value = "cpu"
    segment.run()
    wait(lambda: "thick_head_labels" in viewer.layers and segment.run_button.enabled)
    labels = viewer.layers["thick_head_labels"]
    truth = labels_to_display(reference, layer.as_layer_data_tuple()[1])
    axis = viewer.dims.not_displayed[-1]
    wrong = (labels.data != truth).sum(axis=tuple(a for a in range(3) if a != axis))
    slices = [int(i) for i in np.argsort(-wrong)[:1]]
    for i in np.argsort(-wrong):  # the 3 worst slices, not neighbours
        if len(slices) < 3 and all(abs(int(i) - j) > 2 for j in slices):
            slices.append(int(i))
    for k in slices:
        index = [slice(None)] * 3
        index[axis] = k
        labels.data[tuple(index)] = truth[tuple(index)]
    labels.refresh()
    viewer.dims.set_current_step(axis, slices[0])
    _, train = viewer.window.add_plugin_dock_widget("medfcn", "Train", tabify=False)
    train.image.value, train.label_layer.value = layer, labels
    train.minutes.value = 1.0
    train.run()
    wait(lambda: train.worker is None)
    print(train.status.value)
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.05)
    out = Path(__file__).with_name("napari_train.png")
    viewer.screenshot(str(out), canvas_only=False)
    print("written", out)
    viewer.close()


if __name__ == "__main__":
    main()
