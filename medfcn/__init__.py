"""medfcn: medical image segmentation with slice-wise fully convolutional networks."""

from __future__ import annotations

__version__ = "0.1.0"
