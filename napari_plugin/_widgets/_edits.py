"""Noticing every change to a Labels layer's data, including those napari makes without an event."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ._scan_views import unwrap

__all__ = ["EditWatch"]


class EditWatch:
    """Calls ``on_edit()`` whenever a watched layer's data change: a paint, fill or erase (napari's ``paint``
    event), a new array (``data`` event), undo and redo (which change the data without an event), and
    ``layer.data[...] = ...; layer.refresh()`` from code, when ``changed(layer)`` says the array differs from the
    one last scored (napari refreshes layers for other reasons too)."""

    _WRAPPED = ("undo", "redo", "refresh")

    def __init__(self, on_edit: Callable[..., None], changed: Callable[[object], bool]) -> None:
        self._on_edit, self._changed = on_edit, changed
        self._layers: list = []

    def watch(self, layers: Iterable) -> None:
        """Watch ``layers`` (``None`` entries skipped, each once) instead of those watched before."""
        for layer in self._layers:
            layer.events.paint.disconnect(self._on_edit)
            layer.events.data.disconnect(self._on_edit)
            for name in self._WRAPPED:
                unwrap(layer).__dict__.pop(name, None)
        self._layers = [la for la in dict.fromkeys(layers) if la is not None]
        for layer in self._layers:
            layer.events.paint.connect(self._on_edit)
            layer.events.data.connect(self._on_edit)
            real = unwrap(layer)
            for name in ("undo", "redo"):
                setattr(real, name, self._notifying(getattr(type(real), name).__get__(real)))
            real.refresh = self._notifying(type(real).refresh.__get__(real), check=real)

    def _notifying(self, method, check=None):
        def run(*args, **kwargs):
            out = method(*args, **kwargs)
            if check is None or self._changed(check):
                self._on_edit()
            return out

        return run
