"""The AAL atlas drawn on Colin27: 116 hand-drawn structures on the sample head's own grid.

Debian's ``mricron-data`` package ships it (Tzourio-Mazoyer et al. 2002, "Automated anatomical labeling of
activations in SPM using a macroscopic anatomical parcellation of the MNI MRI single-subject brain", NeuroImage 15:
the single subject is Colin27): ``/usr/share/mricron/templates/aal.nii.gz`` (labels 1-116, uint8) and
``aal.nii.txt`` (``index name code`` per line). Install it with ``apt install mricron-data``, or without root::

    apt-get download mricron-data && dpkg -x mricron-data_*.deb /tmp/mricron

and pass ``--aal /tmp/mricron/usr/share/mricron/templates/aal.nii.gz``. Its ``ch2.nii.gz`` is voxel for voxel the
sample's ``colin27.nii.gz`` (checked by :func:`check_overlay`). Read with nibabel only: a benchmark that runs ITK
in its own process must not import SimpleITK (the two crash together at exit).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_AAL = Path("/usr/share/mricron/templates/aal.nii.gz")
SAMPLE_IMAGE = ROOT / "sample_data" / "images" / "colin27.nii.gz"
SAMPLE_LABEL = ROOT / "sample_data" / "labels" / "colin27.nii.gz"

__all__ = ["DEFAULT_AAL", "load_aal", "check_overlay", "dice_per_label"]


def load_aal(path: str | Path = DEFAULT_AAL) -> tuple[np.ndarray, dict[int, str], np.ndarray]:
    """``(labels (X, Y, Z) uint8, {label: name}, RAS affine)`` of the AAL atlas file and its ``.txt`` beside it."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"{path}: no AAL atlas there (see benchmarks/support/aal.py for how to get it)")
    image = nib.load(str(path))
    labels = np.asanyarray(image.dataobj).astype(np.uint8)
    names = {}
    table = path.with_name(path.name.replace(".nii.gz", ".nii.txt"))
    if table.is_file():
        for line in table.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0].isdigit():
                names[int(parts[0])] = parts[1]
    return labels, names, image.affine


def check_overlay(labels: np.ndarray, affine: np.ndarray) -> dict[str, float | bool]:
    """Whether the atlas lies on the sample Colin27's grid (same shape and affine) and how much of it lies inside
    the sample's brain mask (brain + CSF inside the skull)."""
    import nibabel as nib

    head = nib.load(str(SAMPLE_IMAGE))
    mask = np.asanyarray(nib.load(str(SAMPLE_LABEL)).dataobj) > 0
    same = labels.shape == head.shape and np.allclose(affine, head.affine, atol=1e-4)
    inside = float(((labels > 0) & mask).sum() / max(1, (labels > 0).sum())) if same else float("nan")
    return {"same_grid_as_sample_colin27": bool(same), "fraction_inside_brain_mask": round(inside, 4)}


def dice_per_label(pred: np.ndarray, ref: np.ndarray, n_labels: int) -> np.ndarray:
    """Dice of every label ``1..n_labels`` at once, from one joint histogram: shape ``(n_labels + 1,)``, entry 0
    unused; 1 where a label is absent from both."""
    width = n_labels + 1
    joint = np.bincount(pred.astype(np.int64).ravel() * width + ref.ravel(), minlength=width * width)
    joint = joint.reshape(width, width)
    both = np.diag(joint).astype(float)
    total = joint.sum(axis=1) + joint.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2 * both / np.maximum(total, 1), 1.0)
