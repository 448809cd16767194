"""medfcn's docks in a real napari window of 1920 x 1080 (run under ``xvfb-run -a``): all of them open at once fit
the screen with every button on it, the layers' units raise no warning, and a closed dock stops listening."""

from __future__ import annotations

import numpy as np

from tests.support.napari import gui

SCREEN = (1920, 1080)


def _settle(qtbot, ms: int = 200) -> None:
    qtbot.wait(ms)


def _inside(widget, window) -> bool:
    """Whether ``widget`` is shown and lies wholly inside ``window``'s area."""
    from qtpy.QtCore import QPoint, QRect

    if not widget.isVisible():
        return False
    top_left = widget.mapTo(window, QPoint(0, 0))
    return QRect(QPoint(0, 0), window.size()).contains(QRect(top_left, widget.size()))


def _raise(widget) -> None:
    """Bring the dock holding ``widget`` to the front of its tab group."""
    from qtpy.QtWidgets import QDockWidget

    parent = widget.native
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parent()
    parent.raise_()


@gui
def test_three_docks_fit_a_1080_pixel_screen_with_every_button_on_it(make_napari_viewer, qtbot):
    from napari_plugin._sample_data import colin27

    viewer = make_napari_viewer(show=True)
    for data, kwargs, kind in colin27():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    window = viewer.window._qt_window
    window.setGeometry(0, 0, *SCREEN)  # a maximised window on a 1920 x 1080 display
    _settle(qtbot)
    docks = {name: viewer.window.add_plugin_dock_widget("medfcn", name)[1] for name in ("Segment", "Review", "Train")}
    _settle(qtbot, 400)
    assert window.frameGeometry().height() <= SCREEN[1], window.frameGeometry()
    assert window.minimumSizeHint().height() <= SCREEN[1]

    train = docks["Train"]  # the one opened last is in front
    for w in (train.train_button, train.cancel_button, train.save_button, train.segment_button, train.status):
        assert _inside(w.native, window), w
    assert _inside(train.plot, window)
    review = docks["Review"]
    _raise(review)
    _settle(qtbot)
    for w in (review.compute_button, review.table, review.error_list, review.report_button):
        assert _inside(w.native, window), w
    assert not _inside(train.train_button.native, window)  # one tab at a time (Qt moves the others away)
    segment = docks["Segment"]
    _raise(segment)
    _settle(qtbot)
    assert _inside(segment.run_button.native, window) and _inside(segment.status.native, window)

    # the docks find each other as before (napari's mapping of dock widgets sees through the scroll areas)
    assert {type(w).__name__ for w in viewer.window.dock_widgets.values()} >= {
        "SegmentWidget",
        "ReviewWidget",
        "TrainWidget",
    }
    assert train._segment_widget(create=False) is segment

    window.setGeometry(0, 0, 1366, 768)  # a laptop: the docks scroll, the window keeps to the screen
    _settle(qtbot)
    assert window.frameGeometry().height() <= 768
    for dock in docks.values():  # every control of every dock can be scrolled to and seen whole
        hidden = [w.label or w.name for w in dock if w.visible and not _scrolled_to(w, window, qtbot)]
        assert not hidden, (type(dock).__name__, hidden)


def _scrolled_to(widget, window, qtbot) -> bool:
    """Whether ``widget`` lies wholly inside ``window`` and its dock's visible area once its dock is in front and
    its scroll area scrolled to it (as a person would)."""
    from qtpy.QtCore import QPoint, QRect
    from qtpy.QtWidgets import QScrollArea

    _raise(widget)
    _settle(qtbot, 100)
    dock = widget.native
    while dock.parent() is not None and not isinstance(dock, QScrollArea):
        dock = dock.parent()
    if isinstance(dock, QScrollArea):
        dock.ensureWidgetVisible(widget.native, 0, 0)
        _settle(qtbot, 100)
    view = dock.viewport() if isinstance(dock, QScrollArea) else window
    corner = widget.native.mapTo(view, QPoint(0, 0))
    seen = QRect(QPoint(0, 0), view.size()).contains(QRect(corner, widget.native.size()))
    return seen and _inside(widget.native, window)


@gui
def test_layers_medfcn_did_not_open_raise_no_units_warning(viewer, tmp_path, qtbot):
    from napari.utils.notifications import notification_manager

    from tests.support.scans import affine_from_codes, head_volume, write_scan_file

    path = write_scan_file(tmp_path / "head.nii.gz", head_volume(), affine_from_codes("LPS"))
    seen = []
    notification_manager.notification_ready.connect(lambda n: seen.append(str(n.message)))
    (image,) = viewer.open(str(path), plugin="medfcn")
    viewer.add_points(np.zeros((0, 3)), name="marks")
    viewer.add_shapes(name="notes")
    viewer.add_image(np.zeros((4, 5, 6)), name="other")
    viewer.window._qt_viewer.canvas._scene_canvas.update()
    qtbot.wait(300)
    viewer.window._qt_viewer.canvas.on_draw(None)
    assert not [m for m in seen if "units" in m.lower()], seen
    assert all(str(u) == "millimeter" for layer in viewer.layers for u in layer.units)  # one world, in mm
