"""Clinical acquisitions simulated on a labelled head, so that a model trained on research scans holds on clinical ones.

A clinical brain MRI is not a 1 mm research T1: it has thick slices (3-7 mm, often with gaps) along any axis, often
covers only part of the head (15-30 slices), may be taken after contrast agent (bright vessels, dural sinuses,
choroid plexus, enhancing lesion rims) and shows disease (a lesion that pushes the brain aside, oedema around it),
with ghosting along the phase-encoding direction. :class:`Clinical` draws these on a volume already on the model's
isotropic frame; the label (brain + CSF inside the skull) is carried through every step:

* :meth:`Clinical.lesion` and :meth:`Clinical.enhance` change the image only (the skull is rigid: a mass moves the
  brain inside the intracranial space, whose outline, the label, stays);
* :func:`slab_matrix` / :func:`thick_slices` average the volume over slabs of the slice thickness, spaced by the
  slice pitch (thickness + gap), and interpolate back linearly between slice centres, clamped at the ends, as the
  inference frame's resampler does (:mod:`medfcn.inference.frame`);
* :func:`coverage` crops image and label together to the slices acquired.

>>> import numpy as np
>>> m = slab_matrix(n=6, spacing=1.0, thickness=2.0, pitch=2.0, offset=0.5)
>>> (m @ np.arange(6.0)).round(3).tolist()  # slabs {0,1} {2,3} {4,5}: 0.5, 2.5, 4.5 at 0.5, 2.5, 4.5 mm
[0.5, 1.0, 2.0, 3.0, 4.0, 4.5]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Clinical", "slab_weights", "slab_matrix", "thick_slices", "coverage", "ghost", "dilate"]


def slab_weights(
    n: int, spacing: float, thickness: float, pitch: float, offset: float
) -> tuple[np.ndarray, np.ndarray]:
    """(slices, n) weights that average a profile of ``n`` voxels (centres at ``i * spacing`` mm, each covering
    ``spacing`` mm) over slabs ``thickness`` mm thick centred at ``offset + k * pitch`` mm (k = 0, 1, ... while the
    centre lies inside the frame), and those centres (mm). Each slab is the overlap-weighted mean of the voxels it
    covers (what lies outside the frame does not count). A ``pitch`` larger than ``thickness`` leaves gaps."""
    edges = np.arange(n + 1) * spacing - spacing / 2  # voxel i covers [edges[i], edges[i + 1])
    centres = np.arange(offset, (n - 0.5) * spacing + 1e-9, pitch)
    if centres.size == 0:
        centres = np.array([min(offset, (n - 1) * spacing)])
    lo = np.maximum(edges[None, :-1], centres[:, None] - thickness / 2)
    hi = np.minimum(edges[None, 1:], centres[:, None] + thickness / 2)
    w = np.clip(hi - lo, 0, None)  # (slices, voxels) overlap in mm
    return w / np.maximum(w.sum(1, keepdims=True), 1e-12), centres


def slab_matrix(n: int, spacing: float, thickness: float, pitch: float, offset: float) -> np.ndarray:
    """(n, n) matrix that turns a profile of ``n`` voxels into what a scan of the slabs of :func:`slab_weights`
    shows after linear interpolation back onto the voxels (clamped before the first and after the last slice
    centre), as the inference frame's resampler brings a thick-slice scan onto the model's grid."""
    w, centres = slab_weights(n, spacing, thickness, pitch, offset)
    pos = np.interp(np.arange(n) * spacing, centres, np.arange(centres.size))
    k0 = np.floor(pos).astype(int)
    k1 = np.minimum(k0 + 1, centres.size - 1)
    frac = pos - k0
    r = np.zeros((n, centres.size))
    r[np.arange(n), k0] += 1 - frac
    r[np.arange(n), k1] += frac
    return r @ w


def thick_slices(img: torch.Tensor, axis: int, matrix: np.ndarray) -> torch.Tensor:
    """``img`` (X, Y, Z) with the (n, n) ``matrix`` of :func:`slab_matrix` applied along ``axis``."""
    m = torch.as_tensor(matrix, dtype=img.dtype)
    return torch.tensordot(img, m, dims=([axis], [1])).movedim(-1, axis).contiguous()


def coverage(n: int, extent: tuple[int, int], n_voxels: int, rng: np.random.Generator) -> slice:
    """The voxels (along one axis of ``n``) that a scan of ``n_voxels`` covers: a window placed at random so that
    it cuts off the top or the bottom of the object spanning voxels ``extent`` (first, last), or neither."""
    n_voxels = min(max(n_voxels, 1), n)
    first, last = extent
    lo = max(0, min(first - n_voxels // 4, n - n_voxels))
    hi = max(lo, min(last + n_voxels // 4 - n_voxels + 1, n - n_voxels))
    start = int(rng.integers(lo, hi + 1))
    return slice(start, start + n_voxels)


def ghost(img: torch.Tensor, axis: int, fraction: float, copies: int = 2) -> torch.Tensor:
    """``img`` plus ``fraction`` of itself shifted by ``n / copies`` voxels along ``axis`` (cyclically): the N/2
    ghost of an interleaved or unstable phase encoding."""
    return img + fraction * torch.roll(img, img.shape[axis] // copies, dims=axis)


def dilate(mask: torch.Tensor, voxels: int) -> torch.Tensor:
    """Boolean ``mask`` (X, Y, Z) grown by ``voxels`` with a 3 x 3 x 3 cube each time (max pooling)."""
    x = mask[None, None].float()
    for _ in range(voxels):
        x = F.max_pool3d(x, 3, stride=1, padding=1)
    return x[0, 0] > 0


def _smooth_field(shape: tuple[int, ...], rng: np.random.Generator, nodes: int = 5) -> torch.Tensor:
    """A smooth random field in [0, 1] of ``shape``: a ``nodes``^3 grid of uniform values, trilinearly upsampled."""
    coarse = torch.as_tensor(rng.uniform(0, 1, (1, 1, nodes, nodes, nodes)), dtype=torch.float32)
    return F.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)[0, 0]


def _inside_distance(lab: torch.Tensor, spacing: float) -> torch.Tensor:
    """Distance (mm) of each voxel inside ``lab`` from its outside, at half resolution then upsampled (fast)."""
    from scipy import ndimage

    half = lab[::2, ::2, ::2].numpy() > 0
    d = ndimage.distance_transform_edt(half) * 2 * spacing
    up = F.interpolate(torch.as_tensor(d, dtype=torch.float32)[None, None], size=lab.shape, mode="trilinear")
    return up[0, 0] * (lab > 0)


@dataclass(frozen=True)
class Clinical:
    """A clinical acquisition drawn at random on a volume of the model's frame (``spacing`` mm, isotropic).

    ``__call__(img, lab, rng)``: img (X, Y, Z) float with the head's intensities in about [0, 1], lab (X, Y, Z) uint8;
    returns both, maybe cropped to the slices acquired (never resampled: each voxel of the label is the input's)."""

    spacing: float = 1.5
    p_lesion: float = 0.4
    lesion_mm: tuple[float, float] = (6.0, 22.0)
    p_enhance: float = 0.5
    p_slab: float = 0.9
    slab_mm: tuple[float, float] = (3.0, 7.0)
    p_gap: float = 0.4
    gap: tuple[float, float] = (0.1, 0.4)  # of the thickness
    p_partial: float = 0.4
    partial_slices: tuple[int, int] = (15, 30)
    min_covered: float = 0.6  # of the brain's extent along the slice axis
    p_ghost: float = 0.2
    ghost_fraction: tuple[float, float] = (0.03, 0.15)

    def anatomy(self, img: torch.Tensor, lab: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """The image with a lesion (mass effect, oedema) and/or contrast enhancement; the label does not change."""
        return self.anatomy_and_lesion(img, lab, rng)[0]

    def anatomy_and_lesion(
        self, img: torch.Tensor, lab: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`anatomy`'s image and its lesion (bool, empty without one; see :meth:`lesion_and_mask`)."""
        lesion = torch.zeros(img.shape, dtype=torch.bool)
        brain = lab > 0
        if not brain.any():
            return img, lesion
        inside = _inside_distance(lab, self.spacing)
        white = float(torch.quantile(img[brain][:: max(1, int(brain.sum()) // 200000)], 0.9))
        enhanced = rng.random() < self.p_enhance
        if rng.random() < self.p_lesion:
            img, lesion = self.lesion_and_mask(img, brain, inside, white, enhanced, rng)
        if enhanced:
            img = self.enhance(img, brain, inside, white, rng)
        return img, lesion

    def lesion(self, img, brain, inside, white: float, enhanced: bool, rng: np.random.Generator) -> torch.Tensor:
        """A lesion of radius 6-22 mm inside the brain: the tissue around it pushed outward (a radial map that leaves
        the label's outline in place), then a core, a rim (bright after contrast) and oedema (darker) painted."""
        return self.lesion_and_mask(img, brain, inside, white, enhanced, rng)[0]

    def lesion_and_mask(
        self, img, brain, inside, white: float, enhanced: bool, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`lesion`'s image and the lesion itself (bool: its core and rim, without the oedema; what a tumour
        annotation holds), from the same draws."""
        radius = float(rng.uniform(*self.lesion_mm))
        candidates = torch.nonzero(inside > 0.6 * radius)
        if len(candidates) == 0:
            return img, torch.zeros(img.shape, dtype=torch.bool)
        centre = candidates[int(rng.integers(len(candidates)))].to(torch.float32)
        axes = [torch.arange(n, dtype=torch.float32) for n in img.shape]
        p = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # (X, Y, Z, 3) voxel indices
        rel = (p - centre) * self.spacing  # mm
        q = rel.norm(dim=-1).clamp(min=1e-3)
        reach = radius + float(rng.uniform(10, 30))
        gamma = float(rng.uniform(1.2, 2.0))
        s = torch.where(q < reach, reach * (q / reach) ** gamma, q)  # source radius <= q: tissue pushed outward
        taper = (inside / 5.0).clamp(0, 1)  # no displacement at the intracranial outline
        src = p + (rel * (s / q - 1)[..., None] / self.spacing) * taper[..., None]
        shape = torch.as_tensor(img.shape, dtype=torch.float32)
        g = (src / (shape - 1) * 2 - 1).flip(-1)[None]
        img = F.grid_sample(img[None, None], g, mode="bilinear", padding_mode="border", align_corners=True)[0, 0]
        # the lesion itself, with an irregular outline
        r = q / (radius * (0.8 + 0.4 * _smooth_field(tuple(img.shape), rng)))
        rim = float(rng.uniform(0.15, 0.4))
        oedema = 1 + float(rng.uniform(0.3, 1.5))
        core_value = white * float(rng.uniform(0.05, 0.6))
        rim_value = white * float(rng.uniform(1.0, 1.5) if enhanced else rng.uniform(0.4, 0.9))
        out = img.clone()
        out = torch.where(brain & (r < oedema) & (r >= 1), img * float(rng.uniform(0.55, 0.85)), out)
        out = torch.where(brain & (r < 1) & (r >= 1 - rim), torch.full_like(img, rim_value), out)
        out = torch.where(brain & (r < 1 - rim), torch.full_like(img, core_value), out)
        return out, brain & (r < 1)

    def enhance(self, img, brain, inside, white: float, rng: np.random.Generator) -> torch.Tensor:
        """Post-contrast brightness: patchy dura along the skull's inner surface, the superior sagittal sinus,
        cortical vessels near the brain's surface, choroid plexus in the ventricles (at 1.0-1.5x white matter)."""
        bright = white * float(rng.uniform(1.0, 1.5))
        shape = tuple(img.shape)
        paint = torch.zeros(shape)
        shell = dilate(brain, int(rng.integers(1, 3))) & ~brain  # dura, just outside the intracranial outline
        paint = torch.where(shell, float(rng.uniform(0.3, 1.0)) * _smooth_field(shape, rng, 7), paint)
        xs = torch.nonzero(brain)
        mid = float(xs[:, 0].float().mean())  # midsagittal plane (RAS frame: axis 0 is left-right)
        top = float(xs[:, 2].float().quantile(0.5))
        x = torch.arange(shape[0], dtype=torch.float32)[:, None, None]
        z = torch.arange(shape[2], dtype=torch.float32)[None, None, :]
        sinus = (
            dilate(brain, max(1, round(4 / self.spacing))) & ~brain & ((x - mid).abs() * self.spacing < 4) & (z > top)
        )
        paint = torch.where(sinus, torch.ones(shape), paint)
        points = np.zeros(shape, np.float32)
        surface = torch.nonzero((inside > 0) & (inside < 8)).numpy()
        for _ in range(int(rng.integers(3, 13)) if len(surface) else 0):  # vessels: smooth random walks
            pos = surface[int(rng.integers(len(surface)))].astype(np.float64)
            direction = rng.normal(size=3)
            for _ in range(int(rng.integers(15, 60))):
                direction = direction / np.linalg.norm(direction) + rng.normal(scale=0.3, size=3)
                pos = np.clip(pos + 0.7 * direction / np.linalg.norm(direction), 0, np.array(shape) - 1)
                points[tuple(np.round(pos).astype(int))] = 1
        dark = brain & (img < 0.5 * white) & (inside > 25)  # ventricular CSF, deep in the brain
        choroid = torch.nonzero(dark).numpy()
        for _ in range(int(rng.integers(1, 5)) if len(choroid) else 0):
            points[tuple(choroid[int(rng.integers(len(choroid)))])] = 3
        from scipy import ndimage

        sigma = float(rng.uniform(0.5, 1.0)) / self.spacing * 1.5
        blobs = torch.as_tensor(ndimage.gaussian_filter(points, sigma) * (2 * math.pi * sigma**2) ** 1.5)
        paint = torch.maximum(paint, blobs.clamp(0, 1))
        return img + paint * (bright - img).clamp(min=0)

    def acquire(self, img: torch.Tensor, lab: torch.Tensor, rng: np.random.Generator):
        """Thick slices along a random axis (with or without gaps), maybe only part of the head covered, maybe a
        ghost along an in-plane axis. Returns (img, lab), both cropped alike."""
        axis = int(rng.integers(3))
        thickness = float(rng.uniform(*self.slab_mm))
        pitch = thickness * (1 + (float(rng.uniform(*self.gap)) if rng.random() < self.p_gap else 0.0))
        if rng.random() < self.p_slab:
            n = img.shape[axis]
            m = slab_matrix(n, self.spacing, thickness, pitch, float(rng.uniform(0, pitch)))
            img = thick_slices(img, axis, m)
        if rng.random() < self.p_ghost:
            in_plane = [a for a in range(3) if a != axis]
            img = ghost(img, in_plane[int(rng.integers(2))], float(rng.uniform(*self.ghost_fraction)))
        if rng.random() < self.p_partial and lab.any():
            other = tuple(a for a in range(3) if a != axis)
            present = torch.nonzero(lab.amax(dim=other)).flatten()
            extent = (int(present[0]), int(present[-1]))
            slices = int(rng.integers(self.partial_slices[0], self.partial_slices[1] + 1))
            least = self.min_covered * (extent[1] - extent[0] + 1)  # at most 40 % of the brain cut off
            n_voxels = round(max(slices * pitch / self.spacing, least))
            keep = coverage(img.shape[axis], extent, n_voxels, rng)
            index = [slice(None)] * 3
            index[axis] = keep
            img, lab = img[tuple(index)], lab[tuple(index)]
        return img, lab
