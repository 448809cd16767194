"""Training-time augmentation of a whole volume on the model's frame, so that one subject teaches many.

Everything a scan from another person, scanner and protocol may differ by:

* spatial, in one resampling pass (less blur than chaining): rotation about all three axes, scaling, shear,
  translation and a smooth elastic displacement, plus left-right flips (brains are roughly symmetric);
* resolution (MONAI ``RandSimulateLowResolution``, and thick slices along a random axis averaged then
  re-interpolated, as a 2 x 2 x 3 mm scan looks after resampling to the model's spacing);
* intensity with MONAI transforms: bias field, gamma, histogram shift, contrast and offset, noise, smoothing;
* field of view: part of the head cut off on one side;
* with probability ``p_clinical``, a clinical acquisition instead of the resolution and field-of-view steps
  (:class:`medfcn.training.clinical.Clinical`: a lesion with mass effect and oedema, contrast enhancement, thick
  slices with or without gaps along any axis, partial coverage, ghosting).

The result is normalised exactly as at inference (:func:`medfcn.inference.frame.normalise_intensity`).

>>> aug = Augmenter()
>>> img = np.random.rand(20, 24, 22).astype(np.float32); lab = (img > 0.5).astype(np.uint8)
>>> a, b = aug(img, lab, np.random.default_rng(0))
>>> a.dtype, b.dtype, a.shape == b.shape
(dtype('float32'), dtype('uint8'), True)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medfcn.inference.frame import normalise_intensity
from medfcn.training.clinical import Clinical

__all__ = ["Augmenter"]


def _rotation(angles: np.ndarray) -> np.ndarray:
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


# restyle(image, label, rng) -> (image, label), on the deformed volumes (see Augmenter.__call__)
Restyle = Callable[[torch.Tensor, torch.Tensor, np.random.Generator], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Augmenter:
    """Random volume augmentation; ``__call__(image, label, rng)`` with image (X, Y, Z) float normalised to
    [0, 1] and label (X, Y, Z) integer, on an isotropic frame of ``spacing`` mm. Probabilities and ranges below."""

    spacing: float = 1.5
    rotate_deg: float = 20.0
    scale: tuple[float, float] = (0.85, 1.18)
    anisotropy: float = 0.06
    shear: float = 0.06
    translate: float = 0.06  # fraction of the extent
    elastic_mm: float = 4.0
    p_spatial: float = 0.9
    p_flip: float = 0.5
    p_low_res: float = 0.2
    p_thick: float = 0.35
    thick_mm: tuple[float, float] = (2.5, 5.0)
    p_bias: float = 0.6
    p_gamma: float = 0.6
    p_histogram: float = 0.3
    p_noise: float = 0.6
    noise_std: float = 0.06
    p_smooth: float = 0.15
    p_crop: float = 0.3
    crop: tuple[float, float] = (0.1, 0.35)
    p_clinical: float = 0.0  # not drawn at 0: the random stream of other settings is unchanged

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator, *, restyle: Restyle | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(image, label) augmented: spatial, flip, then (``restyle``), resolution or clinical anatomy, intensity,
        crop or clinical acquisition, normalisation. ``restyle(img, lab, rng) -> (img, lab)`` replaces the deformed
        image and label map before the intensity steps (the synthesiser paints a new contrast from deformed tissue
        classes there); without it the random stream is the same as before it existed."""
        img = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        lab = torch.from_numpy(np.ascontiguousarray(label, dtype=label.dtype if restyle else np.uint8))
        if rng.random() < self.p_spatial:
            img, lab = self._spatial(img, lab, rng)
        if rng.random() < self.p_flip:
            img, lab = img.flip(0), lab.flip(0)
        if restyle is not None:
            img, lab = restyle(img, lab, rng)
        clinical = Clinical(spacing=self.spacing) if self.p_clinical > 0 and rng.random() < self.p_clinical else None
        if clinical is not None:
            img = clinical.anatomy(img, lab, rng)
        else:
            img = self._resolution(img, rng)
        img = self._intensity(img, rng)
        img, lab = clinical.acquire(img, lab, rng) if clinical is not None else self._crop(img, lab, rng)
        out = normalise_intensity(img.numpy())
        return np.ascontiguousarray(out), np.ascontiguousarray(lab.numpy())

    # -- parts ---------------------------------------------------------------------------------------------

    def _spatial(self, img: torch.Tensor, lab: torch.Tensor, rng: np.random.Generator):
        shape = np.array(img.shape, dtype=np.float64)
        centre = (shape - 1) / 2
        rot = _rotation(np.deg2rad(rng.uniform(-self.rotate_deg, self.rotate_deg, 3)))
        zoom = rng.uniform(*self.scale) * (1 + rng.uniform(-self.anisotropy, self.anisotropy, 3))
        shear = np.eye(3) + np.triu(rng.uniform(-self.shear, self.shear, (3, 3)), 1)
        m = rot @ shear @ np.diag(1.0 / zoom)  # output voxel offsets -> source voxel offsets
        shift = rng.uniform(-self.translate, self.translate, 3) * shape
        # Source voxel coordinates of every output voxel: m @ (p - c) + c + shift, plus a smooth displacement.
        axes = [torch.arange(n, dtype=torch.float32) - float(c) for n, c in zip(img.shape, centre, strict=True)]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # (X, Y, Z, 3)
        src = grid @ torch.as_tensor(m.T, dtype=torch.float32) + torch.as_tensor(centre + shift, dtype=torch.float32)
        if self.elastic_mm > 0:
            coarse = torch.as_tensor(rng.normal(0, 1, (1, 3, 5, 6, 5)), dtype=torch.float32)
            amp = rng.uniform(0, self.elastic_mm) / self.spacing
            disp = F.interpolate(coarse, size=img.shape, mode="trilinear", align_corners=True)[0]
            src += amp * disp.permute(1, 2, 3, 0)
        # grid_sample wants (x, y, z) = (last, middle, first) axis, normalised to [-1, 1] (align_corners=True).
        norm = src / torch.as_tensor(shape - 1, dtype=torch.float32).clamp(min=1) * 2 - 1
        g = norm.flip(-1)[None]
        out_img = F.grid_sample(img[None, None], g, mode="bilinear", padding_mode="zeros", align_corners=True)[0, 0]
        out_lab = F.grid_sample(lab[None, None].float(), g, mode="nearest", padding_mode="zeros", align_corners=True)
        return out_img, out_lab[0, 0].to(torch.uint8)

    def _resolution(self, img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if rng.random() < self.p_thick:
            axis = int(rng.integers(3))
            factor = rng.uniform(*self.thick_mm) / self.spacing
            size = list(img.shape)
            small = list(size)
            small[axis] = max(2, round(size[axis] / factor))
            low = F.interpolate(img[None, None], size=small, mode="area")
            img = F.interpolate(low, size=size, mode="trilinear", align_corners=False)[0, 0]
        if rng.random() < self.p_low_res:
            factor = rng.uniform(1.3, 2.0)
            small = [max(2, round(n / factor)) for n in img.shape]
            low = F.interpolate(img[None, None], size=small, mode="area")
            img = F.interpolate(low, size=list(img.shape), mode="trilinear", align_corners=False)[0, 0]
        return img

    def _intensity(self, img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        from medfcn._monai import import_monai

        import_monai()  # the one way medfcn imports MONAI
        from monai.transforms import RandBiasField, RandGaussianSmooth, RandHistogramShift

        seed = int(rng.integers(2**31))
        x = img[None]
        if rng.random() < self.p_bias:
            t = RandBiasField(prob=1.0, coeff_range=(0.1, 0.5), degree=3)
            t.set_random_state(seed)
            x = t(x)
        if rng.random() < self.p_gamma:
            x = x.clamp(min=0) ** float(math.exp(rng.uniform(-0.5, 0.5)))
        if rng.random() < self.p_histogram:
            t = RandHistogramShift(prob=1.0, num_control_points=(5, 10))
            t.set_random_state(seed + 1)
            x = t(x)
        if rng.random() < self.p_smooth:
            t = RandGaussianSmooth(prob=1.0, sigma_x=(0.4, 1.0), sigma_y=(0.4, 1.0), sigma_z=(0.4, 1.0))
            t.set_random_state(seed + 2)
            x = t(x)
        x = torch.as_tensor(x)[0] * float(rng.uniform(0.7, 1.4)) + float(rng.uniform(-0.05, 0.05))
        if rng.random() < self.p_noise:
            std = float(rng.uniform(0, self.noise_std))
            noise = torch.from_numpy(rng.normal(0, std, tuple(x.shape)).astype(np.float32))
            x = x + noise
        return x.float()

    def _crop(self, img: torch.Tensor, lab: torch.Tensor, rng: np.random.Generator):
        if rng.random() >= self.p_crop:
            return img, lab
        axis = int(rng.integers(3))
        n = img.shape[axis]
        cut = int(n * rng.uniform(*self.crop))
        keep = slice(cut, n) if rng.random() < 0.5 else slice(0, n - cut)
        index = [slice(None)] * 3
        index[axis] = keep
        return img[tuple(index)], lab[tuple(index)]
