"""Thick-slice renderings of a labelled head: what a clinical 2-D protocol makes of it.

``render_thick(image, label, slab_mm, in_plane_mm)`` resamples a head onto a fine grid (``in_plane_mm`` in-plane,
0.5 mm along the superior axis, linear), then averages consecutive axial slabs of ``slab_mm`` (as a thick 2-D
acquisition integrates its slice profile); the reference label on the same slabs is the majority of the fine
label (nearest neighbour) inside each slab. The result keeps the head's physical position: each slab's centre.

    python benchmarks/support/thick.py IMAGE LABEL SLAB_MM OUT_IMAGE OUT_LABEL
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

FINE_Z = 0.5  # mm: the grid the slabs are averaged on


def _fine_grid(img: sitk.Image, in_plane_mm: float) -> sitk.Image:
    """A grid with the image's direction and physical box: ``in_plane_mm`` x ``in_plane_mm`` x 0.5 mm."""
    spacing = (in_plane_mm, in_plane_mm, FINE_Z)
    size = [
        int(np.floor((n - 1) * s / t)) + 1 for n, s, t in zip(img.GetSize(), img.GetSpacing(), spacing, strict=True)
    ]
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing(spacing)
    grid.SetDirection(img.GetDirection())
    grid.SetOrigin(img.GetOrigin())
    return grid


def render_thick(image: sitk.Image, label: sitk.Image, slab_mm: float, in_plane_mm: float = 0.9):
    """(image, label) as ``slab_mm`` axial slabs; the image's third index axis must be the superior one."""
    if abs(abs(image.GetDirection()[8]) - 1) > 1e-6:
        raise ValueError("the image's third axis must be superior-inferior")
    grid = _fine_grid(image, in_plane_mm)
    fine = sitk.GetArrayFromImage(
        sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), grid, sitk.Transform(), sitk.sitkLinear)
    )
    lab = sitk.GetArrayFromImage(sitk.Resample(label, grid, sitk.Transform(), sitk.sitkNearestNeighbor))
    k = int(round(slab_mm / FINE_Z))
    n = fine.shape[0] // k
    slabs = fine[: n * k].reshape(n, k, *fine.shape[1:]).mean(axis=1)
    labels = (lab[: n * k].reshape(n, k, *lab.shape[1:]).mean(axis=1) >= 0.5).astype(np.uint8)
    out, out_label = sitk.GetImageFromArray(slabs.astype(np.float32)), sitk.GetImageFromArray(labels)
    for img in (out, out_label):
        img.SetSpacing((in_plane_mm, in_plane_mm, k * FINE_Z))
        img.SetDirection(grid.GetDirection())
        img.SetOrigin(grid.TransformContinuousIndexToPhysicalPoint((0, 0, (k - 1) / 2)))
    return out, out_label


if __name__ == "__main__":
    img, lab = render_thick(sitk.ReadImage(sys.argv[1]), sitk.ReadImage(sys.argv[2]), float(sys.argv[3]))
    for image, path in ((img, sys.argv[4]), (lab, sys.argv[5])):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, path)
