"""Drive one whole correction session in a real napari viewer, as the clinical researcher of issue 33 did, and take
its screenshots: ``docs/images/session_*.png`` and ``napari_train.png``.

The scan is the second sample head rendered as a 6.5 mm axial thick-slice scan (``benchmarks/support/thick.py``),
which the bundled model gets wrong; its reference mask stands for the user's corrections. The session: open the
scan, Segment (cancelled once, then to the end, with the map of where the model is unsure), Review with no reference
(the places where the model is unsure, the first visited), Review against the reference (one region judged), layers
added and
removed, the 3 axial slices the model gets most wrong painted as a user paints them, a coronal view on screen when
the Train dock opens (it must still say "3 corrected axial slices"), training cancelled early and then run, the model
saved, the scan segmented with it; then the window made a laptop's (1366 x 768) and every control of every dock
scrolled to; last, training started again and the viewer closed mid-run (the child process must end and the
temporary copies of the scan go). Each step is checked and printed; the script exits 1 if a check fails.

Run from the repository root on a virtual screen (the window is set to the screen's size, as a maximised one)::

    xvfb-run -a -s "-screen 0 1920x1080x24" python docs/images/make_session_screenshots.py [--minutes 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import napari
import numpy as np
import SimpleITK as sitk
from qtpy.QtCore import QPoint, QRect
from qtpy.QtWidgets import QApplication, QDockWidget, QScrollArea

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.support.qt import wait  # noqa: E402
from benchmarks.support.thick import render_thick  # noqa: E402

FAILED: list[str] = []


def check(ok: bool, what: str) -> None:
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    if not ok:
        FAILED.append(what)


def settle(seconds: float = 0.6) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        QApplication.processEvents()
        time.sleep(0.02)


def dock_of(widget) -> QDockWidget:
    parent = widget.native
    while not isinstance(parent, QDockWidget):
        parent = parent.parent()
    return parent


def reachable(widget, window) -> bool:
    """Whether ``widget`` can be brought wholly inside ``window`` (scrolling its dock's scroll area to it)."""
    dock = dock_of(widget)
    dock.raise_()
    settle(0.2)
    scroll = dock.widget()
    if isinstance(scroll, QScrollArea):
        scroll.ensureWidgetVisible(widget.native, 0, 0)
        settle(0.2)
    if not widget.native.isVisible():
        return False
    top_left = widget.native.mapTo(window, QPoint(0, 0))
    inside_window = QRect(QPoint(0, 0), window.size()).contains(QRect(top_left, widget.native.size()))
    viewport = scroll.viewport() if isinstance(scroll, QScrollArea) else dock
    corner = widget.native.mapTo(viewport, QPoint(0, 0))
    visible = QRect(QPoint(0, 0), viewport.size()).contains(QRect(corner, widget.native.size()))
    return inside_window and visible


def shot(viewer, name: str) -> None:
    settle()
    out = HERE / name
    viewer.screenshot(str(out), canvas_only=False)
    print(f"wrote {out.relative_to(ROOT)}", flush=True)


def thick_head(work: Path) -> tuple[Path, np.ndarray]:
    sample = ROOT / "sample_data"
    image, label = render_thick(
        sitk.ReadImage(str(sample / "images" / "robex_head.nii.gz")),
        sitk.ReadImage(str(sample / "labels" / "robex_head.nii.gz")),
        6.5,
    )
    path = work / "thick_head.nii.gz"
    sitk.WriteImage(image, str(path))
    return path, np.transpose(sitk.GetArrayFromImage(label), (2, 1, 0))  # (X, Y, Z) as the reader's scan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="training time of the run that is kept")
    args = parser.parse_args()
    from napari_plugin._layers import labels_to_display

    work = Path(tempfile.mkdtemp(prefix="medfcn-session-"))
    scan_path, reference = thick_head(work)
    viewer = napari.Viewer(title="medfcn session")
    window = viewer.window._qt_window
    screen = QApplication.primaryScreen().availableGeometry()
    window.setGeometry(screen)
    settle()

    # open, Segment (cancelled, then to the end)
    (image,) = viewer.open(str(scan_path), plugin="medfcn")
    _, segment = viewer.window.add_plugin_dock_widget("medfcn", "Segment")
    segment.image.value, segment.device.value = image, "cpu"
    segment.run()
    wait(lambda: segment.progress.value > 0)
    segment.cancel()
    wait(lambda: segment.run_button.enabled)
    check("thick_head_labels" not in viewer.layers, f"Segment cancelled: {segment.status.value}")
    segment.uncertainty.value = True
    segment.run()
    wait(lambda: "thick_head_labels" in viewer.layers and segment.run_button.enabled)
    labels = viewer.layers["thick_head_labels"]
    print("segment:", segment.status.value)

    # Review with no reference yet: where the model is unsure, largest first
    _, review = viewer.window.add_plugin_dock_widget("medfcn", "Review")
    check(review.prediction.value is labels and review.reference.value is None, "Review: a prediction, no reference")
    review.compute()
    wait(lambda: not review._computing)
    print("review, no reference:", review.status.value)
    check(bool(review.shown) and review.shown[0].kind == "unsure", "places where the model is unsure listed")
    review.next_error()
    check(review.status.value.startswith("Unsure region 1"), review.status.value)
    shot(viewer, "session_unsure.png")
    segment.uncertainty.value = False  # hides the map; the next runs make none

    # Review against the reference; a region judged; layers come and go
    truth = labels_to_display(reference, image.as_layer_data_tuple()[1])
    ref = viewer.add_labels(truth, name="thick_head_reference", metadata=dict(image.metadata), opacity=0.5)
    review.prediction.value, review.reference.value = labels, ref
    review.compute()
    wait(lambda: review.result is not None and not review._computing)
    print("review:", review.status.value)
    review.next_error()
    review.verdict.value = "accepted"
    marks = viewer.add_points(name="marks")
    viewer.add_shapes(name="notes")
    viewer.layers.remove(marks)
    check(sum("overlap_codes" in la.metadata for la in viewer.layers) == 1, "one Review overlay")
    check(window.frameGeometry().height() <= screen.height(), f"window {window.frameGeometry().height()} px tall")
    settle()  # Qt lays out the grown table's row on its next pass
    table = review.table.native
    seen = table.visibleRegion().boundingRect().height()  # what its row and the dock's scroll area leave visible
    check(seen >= table.verticalHeader().length(), f"Review table rows shown ({seen} of {table.height()} px)")
    shot(viewer, "session_review.png")

    # the 3 axial slices the model gets most wrong, painted as a user paints them (one stroke per slice)
    axis = int(np.argmax(image.scale))  # the 6.5 mm axis: the scan's axial one, wherever the layer puts it
    wrong = (labels.data != truth).sum(axis=tuple(a for a in range(3) if a != axis))
    slices: list[int] = []
    for k in np.argsort(-wrong):
        if len(slices) < 3 and all(abs(int(k) - j) > 2 for j in slices):
            slices.append(int(k))
    others = tuple(a for a in range(3) if a != axis)
    viewer.dims.order = (axis, *others)
    for k in slices:
        viewer.dims.set_current_step(axis, k)
        index = list(np.nonzero(np.ones(np.delete(truth.shape, axis), bool)))
        index.insert(axis, np.full(index[0].size, k))
        labels.data_setitem(tuple(index), truth[tuple(index)])
        settle(0.2)
    viewer.dims.order = (others[0], axis, others[1])  # another view on screen when Train opens
    _, train = viewer.window.add_plugin_dock_widget("medfcn", "Train")
    train.minutes.value = args.minutes
    settle()
    want = "3 corrected axial slices: " + ", ".join(str(k) for k in sorted(slices))
    check(train.label_layer.value is labels, f"Train learns from {train.label_layer.value.name}")
    check(want in train.plan.value, f"Train's plan: {train.plan.value!r}")

    # training cancelled early, then to the end
    train.run()
    wait(lambda: train._loss)
    train.cancel()
    wait(lambda: train.worker is None)
    print("cancelled:", train.status.value)
    train.run()
    wait(lambda: train.worker is None)
    print("trained:", train.status.value)
    check(train.trained is not None, "a tuned model")
    shot(viewer, "napari_train.png")
    saved = train.save(work / "tuned.safetensors")
    check(saved is not None and train.trained == saved, f"saved: {train.status.value}")
    train.segment_with_model()
    wait(lambda: segment.run_button.enabled and "fine-tuned" in segment.status.value, 600)
    in_use = segment.model_in_use()
    check(in_use is not None and in_use.resolve() == saved.resolve(), f"Segment uses the saved file: {in_use}")
    made = viewer.layers[-1].metadata.get("model_path")
    check(made is not None and Path(made).resolve() == saved.resolve(), f"the new layer names the saved file: {made}")
    print("segment with it:", segment.status.value)

    # a laptop's window: every control of every dock reachable by scrolling, the window within the screen
    window.setGeometry(0, 0, 1366, 768)
    settle()
    check(window.frameGeometry().height() <= 768, f"laptop window {window.frameGeometry().height()} px tall")
    for widget in (segment, review, train):
        missing = [w.label or w.name for w in widget if w.visible and not reachable(w, window)]
        check(not missing, f"{type(widget).__name__}: every control reachable at 1366 x 768 {missing or ''}")
    dock_of(train).raise_()
    dock_of(train).widget().verticalScrollBar().setValue(0)
    viewer.reset_view()  # napari keeps the zoom of the larger window
    shot(viewer, "session_laptop.png")

    # quitting mid-training
    train.label_layer.value, train.minutes.value = labels, 5.0  # the painted layer again (the newest result is offered)
    check(train.run() is not None, f"training again: {train.status.value}")
    wait(lambda: train.child_pid is not None and any(train.folder.rglob("images/*.nii.gz")))
    folder, pid = train.folder, train.child_pid
    viewer.close()
    settle(1.0)
    try:
        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    check(not alive, "the training child ended with the viewer")
    check(not folder.exists(), "the temporary copies of the scan removed")
    shutil.rmtree(work, ignore_errors=True)
    print("FAILED: " + "; ".join(FAILED) if FAILED else "every check passed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
