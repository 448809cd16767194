"""Into the model's frame and back.

A model sees every scan the same way: axes reordered to the nearest RAS orientation (MONAI ``Orientation``),
resampled to the model's spacing (MONAI ``Spacing``, which keeps any residual rotation of an oblique scan in the
affine, so nothing is rotated by interpolation), and intensities normalised. Its output, probabilities on that
frame, returns to the scan's own grid by the exact inverse mapping of voxel centres, resampled slab by slab
(:func:`probabilities_to_labels`), so a label map for a 0.5 mm scan never needs a float volume of its size.

>>> import numpy as np
>>> from medfcn.scan import Scan
>>> scan = Scan(np.random.rand(20, 30, 12).astype(np.float32), (2.0, 2.0, 3.0), (0, 0, 0), np.diag([-1, 1, 1]))
>>> frame = to_model_frame(scan, spacing=(1.5, 1.5, 1.5))
>>> frame.volume.shape
(26, 40, 23)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch
import torch.nn.functional as F

from medfcn.scan import Scan

__all__ = [
    "ModelFrame",
    "Normalisation",
    "to_model_frame",
    "normalise_intensity",
    "probabilities_to_labels",
    "frame_to_scan_coordinates",
]


class Normalisation(StrEnum):
    """How intensities are normalised before a model sees them."""

    PERCENTILE = "percentile"  # (x - p0.5) / (p99.5 - p0.5), clipped to [0, 1]
    ZSCORE = "zscore"  # (x - mean) / std over voxels above the volume's mean (the head, not the air)

    @classmethod
    def parse(cls, value: str | Normalisation) -> Normalisation:
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"unknown normalisation {value!r}; choose one of {[m.value for m in cls]}") from None


@dataclass
class ModelFrame:
    """A scan brought into a model's frame.

    Attributes:
        volume: (X', Y', Z') float32 voxels on the model's grid (RAS-ordered axes, the model's spacing).
        affine: 4 x 4 RAS voxel-to-world matrix of that grid.
        scan_affine: the source scan's RAS affine, for the way back.
        scan_shape: the source scan's size (X, Y, Z).
    """

    volume: np.ndarray
    affine: np.ndarray
    scan_affine: np.ndarray
    scan_shape: tuple[int, int, int]


def _orientation(axcodes: str):
    import warnings

    from monai.transforms import Orientation

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return Orientation(axcodes=axcodes, labels=(("L", "R"), ("P", "A"), ("I", "S")))


def to_model_frame(
    scan: Scan,
    spacing: tuple[float, float, float],
    *,
    orientation: str = "RAS",
    mode: str = "bilinear",
    array: np.ndarray | None = None,
) -> ModelFrame:
    """Reorient ``scan`` to ``orientation`` and resample it to ``spacing`` (mm) with MONAI transforms.

    Args:
        array: voxels to bring instead of the scan's own, on the same grid (e.g. a label map, ``mode="nearest"``).
    """
    from monai.data import MetaTensor
    from monai.transforms import Spacing

    data = scan.array if array is None else array
    x = MetaTensor(
        torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))[None],
        affine=torch.as_tensor(scan.affine, dtype=torch.float64),
    )
    x = _orientation(orientation)(x)
    x = Spacing(pixdim=tuple(float(s) for s in spacing), mode=mode, padding_mode="border")(x)
    return ModelFrame(
        volume=np.ascontiguousarray(x[0].numpy()),
        affine=x.affine.numpy().astype(np.float64),
        scan_affine=scan.affine,
        scan_shape=scan.shape,
    )


def normalise_intensity(volume: np.ndarray, method: str | Normalisation = Normalisation.PERCENTILE) -> np.ndarray:
    """Normalised float32 copy of ``volume`` (any shape). Constant volumes give zeros."""
    method = Normalisation.parse(method)
    v = np.asarray(volume, dtype=np.float32)
    if method is Normalisation.PERCENTILE:
        sample = v.ravel()[:: max(1, v.size // 2_000_000)]
        lo, hi = np.percentile(sample, [0.5, 99.5])
        if hi - lo < 1e-8:
            return np.zeros_like(v)
        return np.clip((v - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    head = v[v > v.mean()]
    if head.size < 2 or head.std() < 1e-8:
        return np.zeros_like(v)
    return ((v - head.mean()) / head.std()).astype(np.float32)


def frame_to_scan_coordinates(frame: ModelFrame) -> np.ndarray:
    """4 x 4 matrix taking scan voxel indices (i, j, k, 1) to the model frame's voxel indices."""
    return np.linalg.inv(frame.affine) @ frame.scan_affine


def probabilities_to_labels(
    probabilities: np.ndarray | torch.Tensor,
    frame: ModelFrame,
    *,
    slab: int = 16,
    progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """Labels on the scan's grid from class probabilities on the model's frame.

    Probabilities (not labels) are resampled trilinearly at the scan's voxel centres, then the arg-max is taken,
    one slab of ``slab`` scan slices at a time: only the block of the model frame a slab needs is ever converted
    to float.

    Args:
        probabilities: (C, X', Y', Z') on the model frame; uint8 (probability x 255) or float.

    Returns:
        uint8 labels (X, Y, Z) on the scan's grid (class index of the highest probability).
    """
    probs = torch.as_tensor(probabilities)
    n_classes, *fshape = probs.shape
    nx, ny, nz = frame.scan_shape
    m = torch.as_tensor(frame_to_scan_coordinates(frame), dtype=torch.float64)
    out = np.empty((nx, ny, nz), dtype=np.uint8)
    i = torch.arange(nx, dtype=torch.float64)
    j = torch.arange(ny, dtype=torch.float64)
    base = m[:3, 0, None, None] * i[None, :, None] + m[:3, 1, None, None] * j[None, None, :]  # (3, X, Y)
    limits = torch.tensor(fshape, dtype=torch.float64) - 1
    for k0 in range(0, nz, slab):
        k = torch.arange(k0, min(k0 + slab, nz), dtype=torch.float64)
        coords = base[..., None] + (m[:3, 2, None] * k[None, :] + m[:3, 3, None])[:, None, None, :]  # (3,X,Y,K)
        coords = torch.minimum(torch.clamp(coords, min=0), limits[:, None, None, None])
        lo = torch.floor(coords.reshape(3, -1).amin(1)).long()
        hi = torch.ceil(coords.reshape(3, -1).amax(1)).long()
        block = probs[:, lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1].float()
        size = (hi - lo).double().clamp(min=1)
        rel = (coords - lo.double()[:, None, None, None]) / size[:, None, None, None] * 2 - 1
        # grid_sample takes (x, y, z) = (W, H, D) order: the block's last axis first.
        grid = torch.stack([rel[2], rel[1], rel[0]], dim=-1)[None].float()  # (1, X, Y, K, 3)
        sampled = F.grid_sample(block[None], grid, mode="bilinear", padding_mode="border", align_corners=True)
        out[:, :, k0 : k0 + len(k)] = sampled[0].argmax(0).to(torch.uint8).numpy()
        if progress is not None:
            progress(min(1.0, (k0 + len(k)) / nz))
    return out
