"""Regenerate docs/images/napari_review.png (the Review dock on the sample, at its largest error) and
docs/images/report.png (the top of the HTML report the dock exports). ``napari_review_before.png`` is the same
script's picture before issue 24 (commit 59cb1e3), kept for comparison.

Run from the repository root on a display (or a virtual one)::

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python docs/images/make_review_screenshots.py

The report is rendered with Qt WebEngine (``pip install PyQt6-WebEngine``, a documentation tool only, not a
dependency of medfcn); without it only the napari screenshot is made.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")  # root in a container
try:  # Qt WebEngine must be imported before the application exists
    from qtpy.QtWebEngineWidgets import QWebEngineView
except ImportError:
    QWebEngineView = None

import napari  # noqa: E402
from qtpy.QtWidgets import QApplication  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
from benchmarks.support.qt import wait  # noqa: E402


def settle(n: int = 20) -> None:
    for _ in range(n):
        QApplication.processEvents()
        time.sleep(0.05)


def render_html(html: Path, out: Path, size=(1400, 1500)) -> bool:
    """Screenshot an HTML file with Qt WebEngine; ``False`` when it is not installed."""
    if QWebEngineView is None:
        print("Qt WebEngine is not installed: no report screenshot")
        return False
    from qtpy.QtCore import QUrl

    view = QWebEngineView()
    view.resize(*size)
    done = []
    view.loadFinished.connect(done.append)
    view.load(QUrl.fromLocalFile(str(html)))
    view.show()
    wait(lambda: done, 120)
    settle(40)
    view.grab().save(str(out))
    view.close()
    return True


def main() -> int:
    viewer = napari.Viewer(title="medfcn")
    viewer.window._qt_window.resize(1800, 1150)
    t1, mask = viewer.open_sample("medfcn", "colin27")
    segment_dock, segment = viewer.window.add_plugin_dock_widget("medfcn", "Segment")
    review_dock, review = viewer.window.add_plugin_dock_widget("medfcn", "Review")
    segment.image.value, segment.device.value = t1, "cpu"
    segment.run()
    wait(lambda: "colin27_labels" in viewer.layers and segment.run_button.enabled)
    print(segment.status.value)

    labels = viewer.layers["colin27_labels"]
    review.prediction.value, review.reference.value = labels, mask
    review.compute()
    wait(lambda: review.result is not None and review.compute_button.enabled)
    print(review.status.value)
    viewer.window.remove_dock_widget(segment_dock)  # its work done: the column is the Review's
    settle()
    blob = review.next_error()  # the largest error blob, centred and zoomed
    print(review.status.value, blob)
    settle()
    viewer.screenshot(str(HERE / "napari_review.png"), canvas_only=False)
    print(f"wrote {HERE / 'napari_review.png'}")

    with tempfile.TemporaryDirectory() as tmp:
        review.report_dir.value = Path(tmp)
        review.export_report()
        wait(lambda: review.report_button.enabled and "Report written" in review.status.value)
        if render_html(Path(tmp) / "report.html", HERE / "report.png"):
            print(f"wrote {HERE / 'report.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
