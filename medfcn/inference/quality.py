"""What a segmentation shows about its own trustworthiness: the evidence a quality verdict is made from.

Everything here is measured from what inference already holds, while it holds it (never a C x D x H x W array per
slice direction):

- **Slice directions** (:class:`AxisVotes`): the engine runs the 2-D network along up to three axes of the model's
  frame; the labels each direction would give alone are compared batch by batch, keeping one uint8 label volume
  and one boolean "differs" volume on the head's box. ``disagreement`` counts the voxels on which the directions do
  not all agree *where the result is at stake*: inside the delivered (post-processed) mask or within
  :data:`STAKE_MM` of it, per voxel of that mask.
- **Boundary uncertainty**: on the summed probabilities, voxels whose winning class holds less than
  :data:`CONFIDENT` of the sum, counted in the same place and per voxel of the mask (a clean mask has a thin
  uncertain shell; a confused one a thick one).

  Why only near the delivered mask: what lies farther out was decided against by the result, and doubt there does
  not make the mask doubtful. A ghosted scan (a copy of the head shifted by half the field of view) shows it: one
  slice direction finds a second "brain" in the ghost, the post-processing drops it, and the mask is as good as on
  a clean scan (Dice 0.97-0.99), yet counted everywhere the directions disagreed on a volume 37-74 % of the mask's
  (0.11-0.15 on clean scans); counted near the mask, 0.07-0.14. A wrong mask is doubted where it lies.
- **The mask**: volume per label (mL, on the scan's own grid), the share of the raw prediction outside its largest
  6-connected piece, where its centre lies in the object's box (fractions along R, A, S of the model's frame), and
  whether it touches the edge of the scan's field of view (contact area in cm2 on each of the six faces).
- **The input**: quantiles of the normalised intensities inside the object (the head and what lies above
  ``OBJECT_LEVEL``) and inside the mask, to compare with those of the model's training inputs.

>>> votes = AxisVotes((4, 4, 4), n_axes=2)
>>> votes.add(0, axis=0, start=0, labels=np.ones((4, 4, 4), np.uint8))
>>> votes.add(1, axis=2, start=0, labels=np.zeros((4, 4, 4), np.uint8))
>>> int(votes.differs.sum())
64
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from medfcn.model.expectations import Expectations

log = logging.getLogger(__name__)

__all__ = [
    "CONFIDENT",
    "EVIDENCE_VERSION",
    "STAKE_MM",
    "PROFILE_VOXELS",
    "OBJECT_LEVEL",
    "QUANTILES",
    "AxisVotes",
    "FrameEvidence",
    "Evidence",
    "measure_frame",
    "at_stake",
    "uncertain_voxels",
    "measure_labels",
    "intensity_quantiles",
    "mask_spread",
    "object_mask",
    "face_names",
    "record_expectations",
]

EVIDENCE_VERSION = 2  # raised when a measure changes meaning (2: doubt counted near the delivered mask), so that
# evidence kept by benchmarks under an older version is measured again
PROFILE_VOXELS = 1000  # fewer mask voxels than this: its profile is taken whole, and its spread is not judged
STAKE_MM = 3.0  # disagreement and uncertainty count inside the delivered mask and this far around it
CONFIDENT = 0.75  # a voxel is uncertain when its winning class holds less than this share of the summed probabilities
OBJECT_LEVEL = 0.1  # normalised intensity above which a voxel belongs to the object (as the engine's foreground box)
QUANTILES = tuple(round(q, 2) for q in np.linspace(0.05, 0.95, 19))  # the intensity profile's points
_SAMPLE = 2  # every 2nd voxel along each axis for the intensity profile: 1/8 of the voxels, same quantiles +- 0.005


class AxisVotes:
    """The labels of each slice direction, compared as they stream out of the engine.

    ``shape``: the volume the engine runs on (X', Y', Z'); ``n_axes``: how many directions will be added. The first
    direction's labels are kept (uint8); each later one marks the voxels where it differs (bool). 2 bytes a voxel.
    """

    def __init__(self, shape: tuple[int, ...], n_axes: int) -> None:
        self.first = np.zeros(shape, dtype=np.uint8)
        self.differs = np.zeros(shape, dtype=bool)
        self.n_axes = n_axes

    def add(self, n: int, *, axis: int, start: int, labels: np.ndarray) -> None:
        """Labels (B, H, W) of direction number ``n`` (0 first) for slices ``start..start+B-1`` along ``axis``."""
        first = np.moveaxis(self.first, axis, 0)[start : start + labels.shape[0]]
        if n == 0:
            first[...] = labels
        else:
            differs = np.moveaxis(self.differs, axis, 0)[start : start + labels.shape[0]]
            differs |= first != labels


def object_mask(volume: np.ndarray) -> np.ndarray:
    """Boolean (X', Y', Z'): the voxels of a normalised ``volume`` above :data:`OBJECT_LEVEL` of its range from the
    1st to the 99th percentile (the head, or whatever the scan holds, without the air)."""
    sample = volume[::4, ::4, ::4]
    lo, hi = np.percentile(sample, [1.0, 99.0]) if sample.size else (0.0, 0.0)
    if not hi > lo:
        return np.zeros(volume.shape, dtype=bool)
    return volume > lo + OBJECT_LEVEL * (hi - lo)


def intensity_quantiles(values: np.ndarray) -> list[float]:
    """:data:`QUANTILES` of ``values`` (empty: all 0), rounded to 4 decimals."""
    if values.size == 0:
        return [0.0] * len(QUANTILES)
    return [round(float(v), 4) for v in np.quantile(values, QUANTILES)]


@dataclass(frozen=True)
class FrameEvidence:
    """What the model's frame shows (see the module docstring). Shares are of the raw mask's voxels."""

    mask_voxels: int
    disagreement: float | None  # None with a single slice direction
    uncertain: float
    outside_largest: float
    pieces: int  # raw pieces larger than 1 % of the mask
    centre: tuple[float, float, float] | None  # of the mask, in fractions of the object's box along R, A, S
    object_ml: float
    object_quantiles: list[float]
    mask_quantiles: list[float]


@dataclass(frozen=True)
class Evidence:
    """Everything a verdict is made from: the frame's evidence and the label map's on the scan's own grid."""

    frame: FrameEvidence
    volume_ml: dict[str, float]  # per foreground label
    contact_cm2: dict[str, float] = field(default_factory=dict)  # per face of the scan's field of view, where > 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Evidence:
        frame = dict(data["frame"])
        frame["centre"] = None if frame.get("centre") is None else tuple(frame["centre"])
        return cls(FrameEvidence(**frame), dict(data["volume_ml"]), dict(data.get("contact_cm2", {})))


def measure_frame(
    volume: np.ndarray,
    probabilities: np.ndarray,
    box: tuple[slice, slice, slice],
    votes: AxisVotes | None,
    spacing: tuple[float, float, float],
    delivered: np.ndarray | None = None,
) -> FrameEvidence:
    """The frame's evidence.

    ``volume`` (X', Y', Z') normalised intensities; ``probabilities`` (C, X', Y', Z') summed over directions (any
    numeric type), *before* post-processing; ``box``: where the engine ran (outside it every voxel is background,
    certainly); ``votes``: the directions' labels on that box; ``spacing`` (mm) of the frame; ``delivered``: bool on
    the box, the mask after post-processing (default: the raw mask), near which disagreement and uncertainty are
    counted (:func:`at_stake`).
    """
    from medfcn.inference.postprocess import argmax_classes, mask_box

    inner = probabilities[(slice(None), *box)]
    raw = argmax_classes(inner)
    mask = raw > 0
    n = int(mask.sum())
    delivered = mask if delivered is None else delivered
    n_delivered = int(np.count_nonzero(delivered))
    # doubt counts only near the delivered mask: computed on its bounding box grown by the stake's reach
    near = mask_box(delivered, pad=_stake_steps(spacing))
    stake = at_stake(delivered[near], spacing)
    uncertain = int(np.count_nonzero(_unsure(inner[(slice(None), *near)]) & stake))
    obj = object_mask(volume)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    obj_values = volume[::_SAMPLE, ::_SAMPLE, ::_SAMPLE][obj[::_SAMPLE, ::_SAMPLE, ::_SAMPLE]]
    sub = volume[box]
    mask_values = sub[::_SAMPLE, ::_SAMPLE, ::_SAMPLE][mask[::_SAMPLE, ::_SAMPLE, ::_SAMPLE]]
    if mask_values.size < PROFILE_VOXELS:  # a small mask: every voxel of it (a sample of a few says nothing)
        mask_values = sub[mask]
    disagreement = None
    if votes is not None and votes.n_axes > 1:
        disagreement = float(np.count_nonzero(votes.differs[near] & stake)) / max(n_delivered, 1)
    outside, pieces, centre = 0.0, 0, None
    if n:
        around = mask_box(mask)  # the raw mask's pieces lie inside its bounding box
        components, count = ndimage.label(mask[around])
        if count == 1:  # the usual case: no sizes to count
            sizes, largest = np.array([n]), mask
        else:
            sizes = np.bincount(components.ravel())[1:]
            largest = np.zeros(mask.shape, dtype=bool)
            largest[around] = components == (int(sizes.argmax()) + 1)
        outside = 1.0 - float(sizes.max()) / n
        pieces = int(np.count_nonzero(sizes > 0.01 * n))
        centre = _centre(largest, box, obj)
    return FrameEvidence(
        mask_voxels=n,
        disagreement=None if disagreement is None else round(disagreement, 4),
        uncertain=round(uncertain / max(n_delivered, 1), 4),
        outside_largest=round(outside, 4),
        pieces=pieces,
        centre=centre,
        object_ml=round(float(obj.sum()) * voxel_ml, 1),
        object_quantiles=intensity_quantiles(obj_values),
        mask_quantiles=intensity_quantiles(mask_values),
    )


def _stake_steps(spacing: tuple[float, ...]) -> tuple[int, ...]:
    """How many voxels :data:`STAKE_MM` is along each axis of a grid of ``spacing`` (at least 1)."""
    return tuple(max(1, int(round(STAKE_MM / float(s)))) for s in spacing)


def at_stake(mask: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Bool, the voxels where a doubt would change ``mask``: the mask and the voxels a 6-connected dilation reaches
    from it in :data:`STAKE_MM` / voxel size steps, rounded, along each axis (an axis takes part in that many of the
    steps): on an isotropic 1.5 mm frame, every voxel within a city-block distance of 2 voxels (3 mm); on a frame of
    1 x 1 x 5 mm, 3 voxels in-plane but 1 (5 mm) across.

    >>> at_stake(np.eye(1, 9, 4, dtype=bool), (1.5, 1.5, 1.5)).astype(int).tolist()
    [[0, 0, 1, 1, 1, 1, 1, 0, 0]]
    """
    steps = _stake_steps(tuple(spacing)[: mask.ndim])
    out = np.array(mask, dtype=bool)
    for step in range(max(steps)):  # a 6-connected step: each voxel ORed with its neighbours along the axes in it
        before = out.copy()
        for axis in (a for a in range(out.ndim) if step < steps[a]):
            lo = [slice(None)] * out.ndim
            hi = [slice(None)] * out.ndim
            lo[axis], hi[axis] = slice(None, -1), slice(1, None)
            out[tuple(hi)] |= before[tuple(lo)]
            out[tuple(lo)] |= before[tuple(hi)]
    return out


def mask_spread(quantiles: list[float] | tuple[float, ...]) -> float:
    """The spread of a mask's intensity profile (:data:`QUANTILES`): its 95th minus its 5th percentile."""
    return float(quantiles[-1] - quantiles[0]) if len(quantiles) else 0.0


def _unsure(probabilities: np.ndarray) -> np.ndarray:
    """Bool (X', Y', Z'): where the winning class of ``probabilities`` (C, X', Y', Z') holds less than
    :data:`CONFIDENT` of their sum."""
    total = probabilities.sum(axis=0, dtype=np.float32)
    best = probabilities.max(axis=0).astype(np.float32)
    return best < CONFIDENT * np.maximum(total, 1e-6)


def uncertain_voxels(probabilities: np.ndarray, box: tuple[slice, slice, slice], votes: AxisVotes | None) -> np.ndarray:
    """Bool (X', Y', Z'), the per-voxel form of the verdict's two uncertainty measures: the voxels of ``box`` whose
    winning class holds less than :data:`CONFIDENT` of the summed ``probabilities`` (C, X', Y', Z'), or on which the
    slice directions disagree (``votes``, on ``box``); none outside ``box`` (air, certain background).

    >>> p = np.array([[510, 300, 0], [0, 210, 510]], np.uint16).reshape(2, 3, 1, 1)  # 510: sure, 300 of 510: unsure
    >>> uncertain_voxels(p, (slice(None),) * 3, None).ravel().tolist()
    [False, True, False]
    """
    out = np.zeros(probabilities.shape[1:], dtype=bool)
    unsure = _unsure(probabilities[(slice(None), *box)])
    if votes is not None and votes.n_axes > 1:
        unsure |= votes.differs
    out[box] = unsure
    return out


def _centre(largest: np.ndarray, box: tuple[slice, ...], obj: np.ndarray) -> tuple[float, float, float] | None:
    """The centre of mass of ``largest`` (on ``box``) in fractions of the object's extent along each frame axis."""
    out = []
    across = obj.any(axis=2)  # one pass over the object for all three extents
    extents = (across.any(axis=1), across.any(axis=0), obj.any(axis=(0, 1)))
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        rows = np.flatnonzero(extents[axis])
        if rows.size < 2:
            return None
        counts = np.count_nonzero(largest, axis=other)  # the centre of mass from the mask's projection on this axis
        position = float(np.dot(np.arange(counts.size), counts)) / max(int(counts.sum()), 1) + (box[axis].start or 0)
        out.append(round(float((position - rows[0]) / (rows[-1] - rows[0])), 3))
    return tuple(out)  # type: ignore[return-value]


def face_names(direction: np.ndarray) -> list[str]:
    """Names of the six faces of a scan's grid (axis 0 low, axis 0 high, axis 1 low, ...) from its ``direction``
    (3 x 3, column n the LPS unit vector of index axis n): the side of the body each face lies on."""
    words = (("right", "left"), ("anterior", "posterior"), ("inferior", "superior"))  # -/+ along L, P, S
    names = []
    for n in range(3):
        column = np.asarray(direction, dtype=float)[:, n]
        k = int(np.abs(column).argmax())
        up = column[k] > 0
        names += [words[k][0 if up else 1], words[k][1 if up else 0]]
    return names


def _label_counts(labels: np.ndarray, n: int) -> np.ndarray:
    """Voxels of each label ``0 .. n - 1``: ``np.bincount`` slab by slab along the array's slowest axis in memory
    (one ``bincount`` of a 0.5 mm head cast all its 57 M voxels to int64 first: 460 MB and 2.8 s; by slabs 0.1 s).

    >>> _label_counts(np.asfortranarray(np.arange(24).reshape(2, 3, 4) % 3), 3).tolist()
    [8, 8, 8]
    """
    axis = 2 if labels.flags.f_contiguous and not labels.flags.c_contiguous else 0
    counts = np.zeros(n, np.int64)
    for start in range(0, labels.shape[axis], 8):
        slab = labels[start : start + 8] if axis == 0 else labels[..., start : start + 8]
        counts += np.bincount(slab.ravel(order="K"), minlength=n)[:n]
    return counts


def measure_labels(
    labels: np.ndarray, spacing: tuple[float, float, float], names: dict[str, int], face_names: list[str]
) -> tuple[dict[str, float], dict[str, float]]:
    """``(volume_ml per foreground label, contact_cm2 per face)`` of a label map (X, Y, Z) on its scan's grid.

    ``spacing`` (mm) of the scan; ``names``: label name -> id; ``face_names``: the six faces' names in the order
    axis 0 low, axis 0 high, axis 1 low, ... (e.g. "left", "right", ...). A face appears in the contact only when
    some foreground voxel lies on it.
    """
    counts = _label_counts(labels, max(names.values()) + 1)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    volume = {name: round(float(counts[i]) * voxel_ml, 1) for name, i in names.items() if i > 0}
    contact = {}
    for axis in range(3):
        area_cm2 = float(np.prod([s for a, s in enumerate(spacing) if a != axis])) / 100.0
        for k, end in enumerate((0, -1)):
            face = labels[(slice(None),) * axis + (end,)]  # a view: np.take would copy the face
            touching = int(np.count_nonzero(face))
            if touching:
                contact[face_names[2 * axis + k]] = round(touching * area_cm2, 2)
    return volume, contact


def record_expectations(results: list[tuple[Evidence, dict[str, float]]], source: str = "") -> Expectations:
    """A model's :class:`~medfcn.model.expectations.Expectations` from its own runs on its training inputs.

    ``results``: per training case, the :class:`Evidence` of the model's segmentation of it and the volume (mL)
    of each foreground label in its reference. Volumes come from the references, the rest from the evidence:
    ranges widened by :data:`~medfcn.model.expectations.VOLUME_MARGIN` and
    :data:`~medfcn.model.expectations.CENTRE_MARGIN`, the intensity profile's median over the cases, and the largest
    disagreement, uncertainty and share outside the largest piece the model showed.
    """
    from medfcn.model.expectations import CENTRE_MARGIN, VOLUME_MARGIN

    if not results:
        return Expectations(source=source)
    frames = [e.frame for e, _ in results if e.frame.mask_voxels]
    if not frames:  # the model segmented nothing in any case (a new structure after a few steps): nothing to expect
        log.warning("the model segmented nothing in %d case(s): no expectations recorded", len(results))
        return Expectations(source=source)
    names = sorted({n for _, v in results for n in v})
    volumes = {
        n: (
            round(VOLUME_MARGIN[0] * min(v[n] for _, v in results if n in v), 1),
            round(VOLUME_MARGIN[1] * max(v[n] for _, v in results if n in v), 1),
        )
        for n in names
    }
    centres = np.array([f.centre for f in frames if f.centre is not None])
    centre = (
        tuple(
            (round(float(lo) - CENTRE_MARGIN, 3), round(float(hi) + CENTRE_MARGIN, 3))
            for lo, hi in zip(centres.min(0), centres.max(0), strict=True)
        )
        if len(centres)
        else ()
    )
    obj = np.median([f.object_quantiles for f in frames], axis=0)
    inside = np.median([f.mask_quantiles for f in frames], axis=0)
    distance = max(
        max(
            float(np.mean(np.abs(np.subtract(f.object_quantiles, obj)))),
            float(np.mean(np.abs(np.subtract(f.mask_quantiles, inside)))),
        )
        for f in frames
    )
    disagreement = [f.disagreement for f in frames if f.disagreement is not None]
    return Expectations(
        mask_spread=min(
            (round(mask_spread(f.mask_quantiles), 4) for f in frames if f.mask_voxels >= PROFILE_VOXELS), default=None
        ),
        volume_ml=volumes,
        centre=centre,
        pieces=max(f.pieces for f in frames),
        object_quantiles=tuple(round(float(q), 4) for q in obj),
        mask_quantiles=tuple(round(float(q), 4) for q in inside),
        profile_distance=round(distance, 4),
        disagreement=round(max(disagreement), 4) if disagreement else None,
        uncertain=round(max(f.uncertain for f in frames), 4),
        outside_largest=round(max(f.outside_largest for f in frames), 4),
        source=source,
    )
