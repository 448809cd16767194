"""Training volumes synthesised from a tissue map, so that a model learns shapes rather than one scanner's contrast.

The idea of SynthSeg (Billot et al., Medical Image Analysis 2023) and SynthStrip (Hoopes et al., NeuroImage 2022),
on the labelled scans a user already has:

1. :func:`tissue_map`: each labelled head split into tissue classes once: air (outside the head), ``per_label``
   intensity classes inside each label of the label map (for a brain mask: CSF, grey and white matter) and
   ``outside`` classes between the labels and the air (skull, scalp, fat, muscle, eyes...), by 1-D k-means
   (:func:`kmeans_1d`) of the scan's intensities.
2. :class:`Synthesiser`: a strong spatial deformation of the tissue map and the scan together (the
   :class:`medfcn.training.augment.Augmenter`'s single resampling pass with a larger elastic displacement), then a new
   intensity per class drawn at random (:func:`draw_contrast`), so that T1-, T2-, PD- and FLAIR-like contrasts
   occur, inverted ones included. Each class keeps the scan's own within-class texture, rescaled by a random gain
   (:func:`paint`), so the result does not look like a flat cartoon; then blur (:func:`blur`), lower resolution,
   bias field, gamma, noise and the usual normalisation (the Augmenter's own steps).

The label map of a synthesised volume is the deformed tissue map mapped back to labels, so image and label never
disagree. ``medfcn train --synth FRACTION`` draws that fraction of its training volumes this way.

>>> image = np.linspace(0, 1, 8 * 8 * 8, dtype=np.float32).reshape(8, 8, 8)
>>> label = np.zeros((8, 8, 8), np.uint8); label[2:6, 2:6, 2:6] = 1
>>> tissue = tissue_map(image, label, per_label=2, outside=2)
>>> tissue.n_classes, tissue.to_label.tolist()
(5, [0, 1, 1, 0, 0])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage

from medfcn.errors import MedfcnError
from medfcn.inference.frame import normalise_intensity
from medfcn.training.augment import Augmenter

__all__ = ["TissueMap", "kmeans_1d", "tissue_map", "draw_contrast", "paint", "blur", "render", "Synthesiser"]


def kmeans_1d(values: np.ndarray, k: int, bins: int = 256, refine: int = 10) -> np.ndarray:
    """Centres (k,) of a 1-D k-means of ``values``, ascending: the optimal partition (dynamic programming, as in
    Jenks' natural breaks) of the distinct values, or of ``bins`` histogram bins for more than 4096 values, then
    ``refine`` Lloyd iterations on the values themselves. Deterministic; never stuck with an empty class while
    there are at least ``k`` distinct values.

    >>> kmeans_1d(np.array([0.0, 0.1, 0.9, 1.0]), 2).round(2).tolist()
    [0.05, 0.95]
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return np.zeros(k)
    if v.size > 4096:
        counts, edges = np.histogram(v, bins)
        sums = np.histogram(v, edges, weights=v)[0]
        keep = counts > 0
        points, weights = sums[keep] / counts[keep], counts[keep].astype(np.float64)
    else:
        points, counts = np.unique(v, return_counts=True)
        weights = counts.astype(np.float64)
    n = points.size
    cw, cx, cxx = (np.r_[0.0, np.cumsum(weights * points**p)] for p in (0, 1, 2))
    i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    with np.errstate(divide="ignore", invalid="ignore"):
        w = cw[j] - cw[i]
        sse = np.where(i < j, (cxx[j] - cxx[i]) - (cx[j] - cx[i]) ** 2 / w, np.inf)  # cost of points[i:j]
    k_eff = min(k, n)
    cost, cuts = sse[0].copy(), []
    for _ in range(k_eff - 1):
        total = cost[:, None] + sse  # total[i, j]: best split of points[:i] plus one class points[i:j]
        cuts.append(np.argmin(total, axis=0))
        cost = total[cuts[-1], np.arange(n + 1)]
    bounds, end = [n], n
    for back in reversed(cuts):
        end = int(back[end])
        bounds.append(end)
    bounds = [0, *reversed(bounds)][: k_eff + 1] if cuts else [0, n]
    centres = np.array([(cx[b] - cx[a]) / (cw[b] - cw[a]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
    for _ in range(refine):
        idx = _assign(v, centres)
        sums = np.bincount(idx, weights=v, minlength=k_eff)
        found = np.bincount(idx, minlength=k_eff)
        centres = np.where(found > 0, sums / np.maximum(found, 1), centres)
    return np.sort(np.r_[centres, np.full(k - k_eff, centres[-1])])


def _assign(values: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre (centres ascending)."""
    return np.searchsorted((centres[1:] + centres[:-1]) / 2, values)


@dataclass
class TissueMap:
    """Tissue classes of one head: ``classes`` (X, Y, Z) uint8, class 0 the air; ``to_label[c]`` the label of
    class ``c``; ``mean``/``std`` (n_classes,) of the scan's normalised intensities per class (its texture)."""

    classes: np.ndarray
    to_label: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    @property
    def n_classes(self) -> int:
        return int(self.to_label.size)


def head_mask(image: np.ndarray) -> np.ndarray:
    """The head: voxels above a threshold a quarter of the way from the darker to the brighter 2-means centre of
    the intensities, closed and with holes filled, so that dark tissue inside (skull, CSF) counts as head.
    (X, Y, Z) bool."""
    lo, hi = kmeans_1d(image[::2, ::2, ::2], 2)
    mask = image > lo + 0.25 * (hi - lo)
    mask = ndimage.binary_closing(mask, structure=np.ones((3, 3, 3)), iterations=2)
    for axis in range(3):  # 2-D fills too: a head cut by the field of view is open on one side
        mask = np.stack([ndimage.binary_fill_holes(s) for s in np.moveaxis(mask, axis, 0)], axis=0)
        mask = np.moveaxis(mask, 0, axis)
    return ndimage.binary_fill_holes(mask)


def tissue_map(image: np.ndarray, label: np.ndarray, per_label: int = 3, outside: int = 4) -> TissueMap:
    """Split a labelled head (image normalised to [0, 1], label (X, Y, Z) integer) into tissue classes.

    Class 0: air (outside :func:`head_mask` and every label); then ``per_label`` k-means classes of the intensities
    inside each label value > 0, in ascending label order; then ``outside`` classes of the head outside every label.
    """
    image = np.asarray(image, dtype=np.float32)
    label = np.asarray(label)
    classes = np.zeros(image.shape, np.uint8)
    to_label = [0]
    head = head_mask(image) | (label > 0)
    regions = [(label == v, int(v), per_label) for v in np.unique(label) if v > 0]
    most = np.iinfo(np.uint8).max  # tissue maps are uint8
    if 1 + per_label * len(regions) + outside > most:
        raise MedfcnError(f"{len(regions)} labels x {per_label} tissue classes do not fit {most} classes: use fewer")
    regions.append((head & (label == 0), 0, outside))
    for region, value, k in regions:
        vals = image[region]
        centres = kmeans_1d(vals, k)
        classes[region] = len(to_label) + _assign(vals, centres)
        to_label += [value] * k
    n = len(to_label)
    flat = classes.ravel()
    counts = np.bincount(flat, minlength=n)
    mean = np.bincount(flat, weights=image.ravel(), minlength=n) / np.maximum(counts, 1)
    sq = np.bincount(flat, weights=image.ravel().astype(np.float64) ** 2, minlength=n) / np.maximum(counts, 1)
    std = np.sqrt(np.maximum(sq - mean**2, 0))
    return TissueMap(classes, np.array(to_label, np.uint8), mean.astype(np.float32), std.astype(np.float32))


def draw_contrast(n_classes: int, rng: np.random.Generator, p_dark_air: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """Random intensity per class: means (n,) uniform in [0, 1], air (class 0) dark (< 0.1) with probability
    ``p_dark_air``; texture gains (n,) log-uniform in [0.25, 2]: how much of the scan's within-class variation
    each class keeps."""
    means = rng.uniform(0, 1, n_classes)
    if rng.random() < p_dark_air:
        means[0] = rng.uniform(0, 0.1)
    gains = np.exp(rng.uniform(np.log(0.25), np.log(2.0), n_classes))
    return means.astype(np.float32), gains.astype(np.float32)


def paint(
    classes: np.ndarray, image: np.ndarray, tissue: TissueMap, means: np.ndarray, gains: np.ndarray
) -> np.ndarray:
    """A new contrast: each voxel of class ``c`` becomes ``means[c] + gains[c] * (image - tissue.mean[c])``,
    i.e. the class's new mean plus the scan's own within-class variation, rescaled. (X, Y, Z) float32."""
    c = classes.astype(np.int64)
    return (means[c] + gains[c] * (image - tissue.mean[c])).astype(np.float32)


def blur(volume: np.ndarray, sigma: tuple[float, float, float]) -> np.ndarray:
    """Gaussian blur with per-axis ``sigma`` in voxels (0: none), edges reflected (scipy)."""
    if max(sigma) <= 0:
        return volume
    return ndimage.gaussian_filter(volume, sigma=sigma, mode="reflect").astype(np.float32)


# Tissue intensities (0-1) of fixed renderings of a head's own tissue classes, for evaluation: per class group
# (air, brain classes from dark to bright on T1, then non-brain classes from dark to bright on T1).
RENDERINGS: dict[str, dict[str, tuple[float, ...]]] = {
    # T2: CSF bright, grey above white matter; skull dark, fat and scalp medium.
    "t2": {"air": (0.02,), "brain": (0.95, 0.55, 0.4), "outside": (0.08, 0.7, 0.45, 0.35)},
    # PD: CSF bright-ish, grey a little above white matter, little contrast overall.
    "pd": {"air": (0.02,), "brain": (0.8, 0.7, 0.6), "outside": (0.1, 0.75, 0.65, 0.6)},
    # FLAIR: CSF dark, grey above white matter, fat bright.
    "flair": {"air": (0.02,), "brain": (0.1, 0.6, 0.45), "outside": (0.05, 0.2, 0.5, 0.8)},
}


def render(tissue: TissueMap, image: np.ndarray, contrast: str, texture: float = 0.5) -> np.ndarray:
    """A fixed T2-, PD- or FLAIR-like rendering of the head's own tissue classes (one label, 3 + 4 classes),
    keeping ``texture`` of the scan's within-class variation; normalised like any input. (X, Y, Z) float32."""
    table = RENDERINGS[contrast]
    means = np.array(table["air"] + table["brain"] + table["outside"], np.float32)
    if means.size != tissue.n_classes:
        raise ValueError(f"the {contrast} rendering needs 8 tissue classes (3 brain, 4 outside), got {means.size}")
    gains = np.full(means.size, texture, np.float32)
    return normalise_intensity(paint(tissue.classes, image, tissue, means, gains))


@dataclass
class Synthesiser:
    """``__call__(image, tissue, rng)`` -> (synthesised image, label map), both (X, Y, Z) on the same grid,
    the image normalised as at inference. ``image`` is the normalised scan the tissue map was made from."""

    spacing: float = 1.5
    blur_sigma: tuple[float, float] = (0.0, 1.2)  # voxels, per axis
    augmenter: Augmenter = field(default_factory=lambda: Augmenter(elastic_mm=8.0, rotate_deg=25.0, p_spatial=1.0))

    def __post_init__(self) -> None:
        self.augmenter.spacing = self.spacing

    def __call__(self, image: np.ndarray, tissue: TissueMap, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        def restyle(img: torch.Tensor, cls: torch.Tensor, rng: np.random.Generator):
            classes = cls.numpy()  # the tissue classes, deformed with the image
            means, gains = draw_contrast(tissue.n_classes, rng)
            out = blur(paint(classes, img.numpy(), tissue, means, gains), tuple(rng.uniform(*self.blur_sigma, 3)))
            return torch.from_numpy(out), torch.from_numpy(tissue.to_label[classes])

        return self.augmenter(image, tissue.classes, rng, restyle=restyle)
