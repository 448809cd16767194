"""Where medfcn's docks sit in the napari window, and what tells a dock it has gone.

- One tab group: napari stacks every plugin dock of the right-hand area one under the other, and with Segment,
  Review and Train open the main window grew to 1,566 px on a 1,080 px screen (Train's buttons off it). medfcn's
  docks (any dock whose widget comes from this package, today's and tomorrow's) are tabbed together instead, the
  one opened last in front, as napari tabs docks with ``add_dock_widget(..., tabify=True)``; each dock's content
  sits in a scroll area, so a dock taller than a small screen scrolls rather than pushing the window off it.
- Gone: napari's close button on a dock unparents the dock's widget and deletes the dock, but leaves the widget
  connected to the viewer's events (it would keep recomputing); closing the viewer deletes the window. A medfcn
  widget with a ``dock_closed()`` method has it called once, when its dock is closed or the viewer's window closes
  (a close event followed by the window hiding: a close that napari's confirmation dialog cancels calls nothing).

Installed once per viewer by :func:`napari_plugin._widgets._scan_views.install`.
"""

from __future__ import annotations

import logging
import weakref

from qtpy.QtCore import QEvent, QObject, Qt, QTimer
from qtpy.QtWidgets import QDockWidget, QScrollArea

__all__ = ["install_dock_layout", "arrange_docks", "medfcn_docks", "is_medfcn_widget", "find_dock"]

log = logging.getLogger(__name__)

_PACKAGE = __name__.split(".")[0]  # "napari_plugin"


def is_medfcn_widget(widget) -> bool:
    """Whether ``widget`` (a magicgui or Qt widget) is one of this package's docks."""
    return type(widget).__module__.split(".")[0] == _PACKAGE


def find_dock(viewer, kind: type, name: str, *, create: bool):
    """The widget of ``viewer``'s medfcn dock ``name`` (an instance of ``kind``), that dock opened when ``create``
    and there is none; else ``None``. How one dock hands work to another (Train to Segment, the Review queue to
    Train)."""
    for widget in viewer.window.dock_widgets.values():
        if isinstance(widget, kind):
            return widget
    if not create:
        return None
    return viewer.window.add_plugin_dock_widget("medfcn", name)[1]


def _inner(dock: QDockWidget):
    """The widget a napari dock holds (the magicgui widget when it is one), through medfcn's scroll area."""
    content = dock.widget()
    if isinstance(content, QScrollArea) and getattr(content, "_medfcn_scroll", False):
        content = content.widget()
    return getattr(content, "_magic_widget", content)


def medfcn_docks(window) -> list[QDockWidget]:
    """The docks of a napari main window (``QMainWindow``) that hold a medfcn widget, in the order added."""
    docks = [d for d in window.findChildren(QDockWidget) if d.widget() is not None and is_medfcn_widget(_inner(d))]
    return sorted(docks, key=lambda d: getattr(d, "_medfcn_order", 1 << 30))


class _Scroll(QScrollArea):
    """A vertical scroll area as wide as its content needs (so nothing is clipped) and as short as a screen allows."""

    _medfcn_scroll = True

    def event(self, event) -> bool:
        """napari closes a dock by taking its widget out (``setParent(None)``) before deleting the dock: the
        widget's ``dock_closed`` is called then, whether or not an event loop runs to delete the dock."""
        if event.type() == QEvent.Type.ParentChange and self.parent() is None:
            _call_dock_closed(weakref.ref(getattr(self.widget(), "_magic_widget", self.widget())))
        return super().event(event)

    def minimumSizeHint(self):  # noqa: N802 (Qt's name)
        hint = super().minimumSizeHint()
        content = self.widget()
        if content is not None:
            bar = self.verticalScrollBar().sizeHint().width()
            hint.setWidth(content.minimumSizeHint().width() + bar + 2 * self.frameWidth())
        return hint


def _scrollable(dock: QDockWidget) -> None:
    """Put the dock's content in a vertical scroll area (once); napari still finds the widget in it."""
    content = dock.widget()
    if content is None or getattr(content, "_medfcn_scroll", False):
        return
    scroll = _Scroll()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QScrollArea.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    if hasattr(content, "_magic_widget"):  # napari's dock_widgets mapping looks for it on the dock's widget
        scroll._magic_widget = content._magic_widget
    scroll.setWidget(content)
    content._medfcn_scroll_area = scroll  # napari unparents a closed dock's widget: it lives on, as without us
    dock.setWidget(scroll)


def arrange_docks(window) -> None:
    """Tab every medfcn dock of ``window`` into one group per dock area (the newest in front) and make each one's
    content scrollable; connect each one's ``dock_closed``."""
    newest, groups = None, {}
    for dock in medfcn_docks(window):
        if not hasattr(dock, "_medfcn_order"):
            dock._medfcn_order = _next_order()
            newest = dock
            _on_dock_gone(dock)
        _scrollable(dock)
        if dock.isFloating():
            continue
        area = window.dockWidgetArea(dock)
        first = groups.setdefault(area, dock)
        if first is not dock and dock not in window.tabifiedDockWidgets(first):
            window.tabifyDockWidget(first, dock)
    if newest is not None:
        newest.show()
        newest.raise_()


_ORDER = [0]


def _next_order() -> int:
    _ORDER[0] += 1
    return _ORDER[0]


def _call_dock_closed(ref) -> None:
    widget = ref()
    closed = getattr(widget, "dock_closed", None)
    if closed is not None and not getattr(widget, "_medfcn_dock_closed", False):
        widget._medfcn_dock_closed = True
        try:
            closed()
        except Exception:  # a dock's cleanup must not break napari's own
            log.exception("medfcn: %s did not close cleanly", type(widget).__name__)


def _on_dock_gone(dock: QDockWidget) -> None:
    ref = weakref.ref(_inner(dock))
    dock.destroyed.connect(lambda *_: _call_dock_closed(ref))


class _WindowWatch(QObject):
    """Event filter on napari's main window: new docks are arranged; a close that hides the window closes the
    medfcn docks."""

    def __init__(self, window) -> None:
        super().__init__(window)
        self._window = window
        self._closing = False

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt's name)
        kind = event.type()
        if kind == QEvent.Type.ChildAdded and isinstance(event.child(), QDockWidget):
            QTimer.singleShot(0, self._arrange)
        elif kind == QEvent.Type.Close:
            self._closing = True
        elif kind == QEvent.Type.Hide and self._closing:
            self._closing = False
            for dock in medfcn_docks(self._window):
                _call_dock_closed(weakref.ref(_inner(dock)))
        elif kind == QEvent.Type.Show:
            self._closing = False
        return False

    def _arrange(self) -> None:
        try:
            arrange_docks(self._window)
        except RuntimeError:  # the window went in the meantime
            log.debug("medfcn: no window to arrange", exc_info=True)


def install_dock_layout(viewer) -> None:
    """Arrange medfcn's docks in ``viewer``'s window now and whenever a dock is added (once per window)."""
    window = getattr(getattr(viewer, "window", None), "_qt_window", None)
    if window is None or getattr(window, "_medfcn_docks", None) is not None:
        return
    window._medfcn_docks = _WindowWatch(window)
    window.installEventFilter(window._medfcn_docks)
    QTimer.singleShot(0, window._medfcn_docks._arrange)
