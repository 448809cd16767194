"""medfcn: medical image segmentation with slice-wise fully convolutional networks."""

from __future__ import annotations

import logging
import warnings

__version__ = "0.3.0"  # the one source: pyproject.toml reads it (dynamic version), and so do --version,
# the manifest, a model card, the report and a DICOM SEG's software version

# MONAI announces, on every import, that a GPU DICOM decoder plugin is absent: irrelevant to medfcn's readers.
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
