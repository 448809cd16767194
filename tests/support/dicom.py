"""DICOM test series of several geometries, a two-label map on them, and the outputs written for it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pydicom

from medfcn.batch.outputs import OutputFormat, output_files, write_outputs
from tests.support.scans import (
    affine_from_codes,
    head_volume,
    oblique_affine,
    shuffled_names,
    write_dicom_pydicom,
    write_dicom_sitk,
)

SHAPE = (24, 24, 10)  # square slices: rt-utils 1.2.7 builds (Columns, Rows) masks, wrong for other shapes
LABELS = {"background": 0, "brain": 1, "lesion": 2}
ALL = (OutputFormat.NIFTI, OutputFormat.DICOM_SEG, OutputFormat.RTSTRUCT)


def synthetic_labels(scan) -> np.ndarray:
    """Two labels on the scan's grid: a blob with a hole (1) and a block inside it (2); some slices empty."""
    i, j, k = np.meshgrid(*[np.linspace(-1, 1, n) for n in scan.shape], indexing="ij")
    r = np.sqrt(i**2 + (j * 1.2) ** 2 + (k * 0.9) ** 2)
    out = ((r < 0.75) & ~((np.abs(i - 0.1) < 0.12) & (np.abs(j) < 0.12))).astype(np.uint8)
    out[(np.abs(i + 0.3) < 0.15) & (np.abs(j - 0.2) < 0.2) & (r < 0.75)] = 2
    out[:, :, 0] = 0
    return out


def make_series(kind: str, folder: Path) -> Path:
    vol = np.round(head_volume(SHAPE))
    if kind == "lps_shuffled":
        aff = affine_from_codes("LPS", spacing=(1.1, 1.1, 2.0))
        write_dicom_pydicom(folder, vol, aff, names=shuffled_names(SHAPE[2]))
    elif kind == "oblique_slope":
        aff = oblique_affine(spacing=(1.0, 1.0, 1.4))
        write_dicom_pydicom(folder, vol, aff, slope=2.5, intercept=-10.0, names=shuffled_names(SHAPE[2]))
    elif kind == "non_square_pixels":  # 1.1 x 0.9 mm pixels, 24 x 20 slices, oblique
        write_dicom_pydicom(folder, np.round(head_volume((24, 20, 8))), oblique_affine())
    elif kind == "sitk_lpi":  # GDCM's files; GDCM writes no FrameOfReferenceUID unless given one
        for f in write_dicom_sitk(folder, vol, affine_from_codes("LPI", spacing=(0.9, 0.9, 1.5))):
            ds = pydicom.dcmread(f)
            ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.10.9.7"
            ds.save_as(f)
    return folder


def write_all(scan, labels, out: Path, formats=ALL) -> dict:
    files = output_files(out, scan.case, formats)
    model = type("M", (), {"card": type("C", (), {"labels": LABELS, "label_codes": {}})(), "name": "test-model"})
    model.sha256 = "ab" * 32
    write_outputs(labels, scan, files, model)
    return files


def dciodvfy_errors(path: Path) -> list[str]:
    v = subprocess.run(["dciodvfy", str(path)], capture_output=True, encoding="utf-8", errors="replace")
    return [line for line in (v.stdout + v.stderr).splitlines() if line.startswith("Error")]


def element(line: str) -> str | None:
    m = re.search(r"Element=<(\w+)>", line)
    return m.group(1) if m else None
