"""What the napari plugin's tests share: the ``gui`` marker, which skips a test when there is no display.

(The ``viewer`` fixture they use is in ``conftest.py``.)
"""

from __future__ import annotations

import os
import sys

import pytest

NO_DISPLAY = sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def gui(test):
    """Mark a test that opens a viewer; skip it with no display (a marker, not a fixture: Qt aborts the process
    when an application is made with no display)."""
    skip = pytest.mark.skipif(NO_DISPLAY, reason="a napari viewer needs a display: run under xvfb-run -a")
    return pytest.mark.gui(skip(test))
