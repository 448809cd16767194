"""Waiting in a script that drives a real napari viewer (benchmarks and the documentation's screenshot scripts)."""

from __future__ import annotations

import time

__all__ = ["wait"]


def wait(condition, timeout_s: float = 900.0, step_s: float = 0.01) -> float:
    """Process Qt events until ``condition()`` holds (the docks work in threads); returns the seconds waited.
    Raises TimeoutError after ``timeout_s``."""
    from qtpy.QtWidgets import QApplication

    t0 = time.monotonic()
    while not condition():
        QApplication.processEvents()
        time.sleep(step_s)
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"still waiting after {timeout_s:g} s")
    return time.monotonic() - t0
