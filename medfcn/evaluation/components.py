"""Where a prediction is wrong: its error components (connected blobs of false positives and false negatives),
largest first, and the slices with the most wrong voxels; without a reference, where the model is unsure over more
than the thin band every boundary has (:func:`unsure_regions`).

A reviewer correcting a segmentation wants the biggest mistakes first: 3D Slicer's Segment Statistics and
micro-sam's annotators list objects by size for the same reason. Both the napari Review dock (next / previous
error, worst slice) and the HTML report (its thumbnails) take their rules from here, so they agree.

Components are 26-connected (voxels touching by a face, an edge or a corner are one blob), found separately in
the FP and the FN voxels of :func:`medfcn.evaluation.metrics.overlap_map`.

>>> import numpy as np
>>> ref = np.zeros((8, 8, 8), np.uint8); ref[1:4, 1:4, 1:4] = 1
>>> pred = np.zeros_like(ref); pred[1:4, 1:4, 1:3] = 1; pred[6, 6, 6] = 1
>>> [(c.kind, c.voxels) for c in error_components(pred, ref, spacing=(1, 1, 2))]
[('missed', 9), ('spurious', 1)]
>>> wrong_per_slice(pred, ref, axis=2).tolist()
[0, 0, 0, 9, 0, 0, 1, 0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medfcn.evaluation.metrics import Overlap, overlap_map

__all__ = [
    "worst_slice_box",
    "ErrorComponent",
    "error_components",
    "large_errors",
    "MIN_ERROR_MM3",
    "wrong_per_slice",
    "worst_slices",
    "KIND_NAMES",
    "EDGE_DEPTH",
    "edge_voxels",
    "unsure_regions",
    "UNSURE_DEPTH_MM",
]

MIN_ERROR_MM3 = 10.0
"""The smallest error blob a reviewer is shown by default (mm^3): a 2 x 2 x 2.5 mm speck. Single stray voxels at a
boundary are most of a brain mask's blobs (1,588 blobs on the sample head, mostly one voxel) and no one corrects
them one by one."""

EDGE_DEPTH = 1.5
"""A blob none of whose voxels lies deeper than 1.5 of the finest voxel spacings from its surface, touching voxels both
maps agree on, is a rim at most two voxels thick along the boundary: where two careful raters disagree too (201
blobs for one clinical brain mask, most of them one voxel). Such blobs are summarised, not listed; a blob one thick
slice deep but wide in-plane is a region that matters (its depth is the in-plane distance)."""

UNSURE_DEPTH_MM = 3.0
"""A region the model is unsure of is listed where its unsure voxels lie more than 3 mm deep, i.e. more than 6 mm
across. Every mask has an unsure band along its whole boundary (the slice directions blend there): on the two sample
heads 159 and 161 mL of unsure voxels, half of them at most one voxel deep, 99 % at most 4.1-4.5 mm; deeper than 3 mm,
grown back and merged, leaves 4 and 13 places, the largest where the band widens (the skull base, the cerebellum)."""

KIND_NAMES = {Overlap.FP: "spurious", Overlap.FN: "missed"}
"""How each error code is named: ``spurious`` (predicted, not in the reference), ``missed`` (in the reference)."""


@dataclass(frozen=True)
class ErrorComponent:
    """One connected blob of wrong voxels.

    ``centroid``, ``anchor`` and ``box`` are in array indices (``box``: ``(start, stop)`` per axis, stop
    exclusive); ``anchor`` is the blob's voxel nearest its centroid (the centroid of a shell, e.g. a rim around an
    organ, lies outside the blob: the anchor is where to look); ``volume_ml`` = voxels x voxel volume.
    """

    kind: str  # "spurious" (FP) or "missed" (FN); "unsure" for a region of :func:`unsure_regions`
    voxels: int
    volume_ml: float
    centroid: tuple[float, ...]
    box: tuple[tuple[int, int], ...]
    anchor: tuple[int, ...] = ()
    depth_mm: float = 0.0  # how far its deepest voxel lies from the blob's surface (0: not measured)
    edge: bool = False  # a thin rim along the boundary (see EDGE_DEPTH): edge noise, not a region that matters

    @property
    def volume_mm3(self) -> float:
        return self.volume_ml * 1000.0

    def describe(self, axis_names: Sequence[str] | None = None) -> str:
        """``"missed 1,234 voxels (1.23 mL) at (12, 40, 33)"``: the voxel a viewer goes to (the anchor; the rounded
        centroid when there is none), named by ``axis_names``."""
        at = self.anchor or tuple(round(c) for c in self.centroid)
        where = ", ".join(f"{c}" for c in at)
        if axis_names:
            where = ", ".join(f"{n} {c}" for n, c in zip(axis_names, at, strict=True))
        return f"{self.kind} {self.voxels:,} voxels ({self.volume_ml:.3g} mL) at ({where})"


def error_components(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    *,
    codes: np.ndarray | None = None,
    limit: int | None = None,
) -> list[ErrorComponent]:
    """The FP and FN blobs of ``pred`` against ``ref``, largest first (ties: missed before spurious, then by
    position).

    Args:
        pred, ref: label maps of one shape (any integer ids; all labels together, as :func:`overlap_map`).
        spacing: mm along the array axes.
        codes: their :func:`overlap_map`, when already computed.
        limit: the most components returned (the largest), or all.

    Raises:
        ValueError: shapes differ.
    """
    codes = overlap_map(pred, ref) if codes is None else codes
    voxel_ml = float(np.prod(np.asarray(spacing, float))) / 1000.0
    out: list[ErrorComponent] = []
    for code in (Overlap.FN, Overlap.FP):
        found = _blobs(codes, code, spacing)
        if found is None:
            continue
        labelled, mask, index, depths, rim = found
        sizes = ndimage.sum_labels(mask, labelled, index).astype(np.int64)
        centroids = ndimage.center_of_mass(mask, labelled, index)
        boxes = ndimage.find_objects(labelled)
        for i, (size, centroid, box, deep) in enumerate(zip(sizes, centroids, boxes, depths, strict=True), 1):
            out.append(
                ErrorComponent(
                    KIND_NAMES[code],
                    int(size),
                    int(size) * voxel_ml,
                    tuple(float(c) for c in centroid),
                    tuple((int(s.start), int(s.stop)) for s in box),
                    _nearest_voxel(labelled[box] == i, box, centroid),
                    float(deep),
                    bool(rim[i - 1]),
                )
            )
    out.sort(key=lambda c: (-c.voxels, c.kind != "missed", c.centroid))
    return out[:limit] if limit is not None else out


def _blobs(codes: np.ndarray, code: int, spacing: Sequence[float]):
    """The 26-connected blobs of ``codes == code``: ``(labelled, mask, ids, depth of each in mm, whether each is
    edge noise)``, or ``None`` when there are none. Depth: the largest distance (mm) of a blob's voxel from outside
    the blob; edge noise: no deeper than :data:`EDGE_DEPTH` finest spacings and touching voxels both maps agree on
    (a rim along the boundary, not a thin sheet or a speck on its own)."""
    mask = codes == code
    if not mask.any():
        return None
    cube = np.ones((3,) * mask.ndim, bool)
    labelled, n = ndimage.label(mask, structure=cube)  # 26-connected in 3-D
    index = np.arange(1, n + 1)
    depth = ndimage.distance_transform_edt(np.pad(mask, 1), sampling=spacing)[(slice(1, -1),) * mask.ndim]
    depths = np.asarray(ndimage.maximum(depth, labelled, index), float)
    along = ndimage.binary_dilation(codes == Overlap.TP, structure=cube)
    touches = np.asarray(ndimage.maximum(along, labelled, index), bool)
    return labelled, mask, index, depths, (depths <= EDGE_DEPTH * float(np.min(spacing)) + 1e-9) & touches


def edge_voxels(codes: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """The wrong voxels of an overlap map that belong to edge-noise blobs (the rule of :data:`EDGE_DEPTH`), bool.

    >>> codes = np.zeros((6, 6, 3), np.uint8); codes[2:5, 2:5, :] = Overlap.TP; codes[1, 1:5, 1] = Overlap.FP
    >>> codes[5, 0, 0] = Overlap.FN  # a speck on its own: not a rim
    >>> int(edge_voxels(codes, (1.0, 1.0, 1.0)).sum())  # the one-voxel rim along the agreed block
    4
    """
    out = np.zeros(codes.shape, bool)
    for code in (Overlap.FN, Overlap.FP):
        found = _blobs(codes, code, spacing)
        if found is not None:
            labelled, _, index, _, rim = found
            out |= np.isin(labelled, index[rim])
    return out


def large_errors(errors: Sequence[ErrorComponent], min_mm3: float = MIN_ERROR_MM3) -> tuple[list[ErrorComponent], int]:
    """``(the blobs of at least min_mm3 mm^3, in their order; how many smaller ones are left out)``."""
    kept = [e for e in errors if e.volume_mm3 >= min_mm3 - 1e-9]
    return kept, len(errors) - len(kept)


def unsure_regions(
    unsure: np.ndarray, spacing: Sequence[float], depth_mm: float = UNSURE_DEPTH_MM
) -> list[ErrorComponent]:
    """The places where the model is unsure over more than a thin band, largest first (kind ``"unsure"``).

    ``unsure``: bool, the voxels the model is unsure of (:func:`medfcn.inference.quality.uncertain_voxels` on the
    scan's grid); ``spacing``: mm along its axes. A region is a 26-connected core of unsure voxels lying more than
    ``depth_mm`` from any sure voxel, grown back by ``depth_mm`` into the unsure voxels around it (cores whose growth
    meets are one region): its ``voxels`` and ``volume_ml`` count the grown region, its ``anchor`` is the core's voxel
    nearest the region's centroid, ``depth_mm`` the deepest voxel's distance. A band of uniform width along a
    boundary lists nothing.

    >>> u = np.zeros((20, 20, 20), bool); u[2:18, 2:18, 2:4] = True  # a band 2 mm thick: nothing listed
    >>> u[5:14, 5:14, 8:17] = True  # a 9 mm cube: listed, its core the 3 x 3 x 3 centre, grown back to 389 of its
    >>> [(r.kind, r.voxels, r.anchor) for r in unsure_regions(u, (1.0, 1.0, 1.0))]  # 729 voxels (corners rounded)
    [('unsure', 389, (9, 9, 12))]
    """
    unsure = np.asarray(unsure, bool)
    spacing = tuple(float(s) for s in spacing)
    if not unsure.any():
        return []
    crop = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in np.nonzero(unsure))
    u = unsure[crop]
    depth = ndimage.distance_transform_edt(np.pad(u, 1), sampling=spacing)[(slice(1, -1),) * u.ndim]
    depth = depth.astype(np.float32)  # half the memory of a 0.5 mm head's crop while the second transform runs
    core = depth > depth_mm
    if not core.any():
        return []
    reach = [int(np.ceil(depth_mm / s)) + 1 for s in spacing]  # the growth stays within this many voxels of a core
    near = tuple(
        slice(max(int(i.min()) - r, 0), int(i.max()) + r + 1) for i, r in zip(np.nonzero(core), reach, strict=True)
    )
    crop = tuple(slice(c.start + n.start, c.start + n.stop) for c, n in zip(crop, near, strict=True))
    u, core, depth = u[near], core[near], depth[near]
    grown = (ndimage.distance_transform_edt(~core, sampling=spacing) <= depth_mm) & u
    cube = np.ones((3,) * u.ndim, bool)
    labelled, n = ndimage.label(grown, structure=cube)
    index = np.arange(1, n + 1)
    sizes = np.bincount(labelled.ravel(), minlength=n + 1)[1:]
    centroids = ndimage.center_of_mass(grown, labelled, index)
    deepest = np.asarray(ndimage.maximum(depth, labelled, index), float)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    offset = np.array([c.start for c in crop])
    out = []
    for i, (box, centroid) in enumerate(zip(ndimage.find_objects(labelled), centroids, strict=True)):
        whole = tuple(slice(int(b.start + o), int(b.stop + o)) for b, o in zip(box, offset, strict=True))
        centre = tuple(float(c + o) for c, o in zip(centroid, offset, strict=True))
        anchor = _nearest_voxel(core[box] & (labelled[box] == i + 1), whole, centre)
        size = int(sizes[i])
        out.append(
            ErrorComponent(
                "unsure",
                size,
                size * voxel_ml,
                centre,
                tuple((s.start, s.stop) for s in whole),
                anchor,
                float(deepest[i]),
            )
        )
    out.sort(key=lambda c: (-c.voxels, c.centroid))
    return out


def _nearest_voxel(mask: np.ndarray, box: tuple[slice, ...], point) -> tuple[int, ...]:
    """The voxel of ``mask`` (a crop at ``box``) nearest ``point`` (full-array indices)."""
    voxels = np.argwhere(mask) + np.array([s.start for s in box])
    return tuple(int(v) for v in voxels[np.argmin(((voxels - np.asarray(point)) ** 2).sum(axis=1))])


def wrong_per_slice(pred: np.ndarray, ref: np.ndarray, axis: int, *, codes: np.ndarray | None = None) -> np.ndarray:
    """The number of wrong voxels (FP + FN) in every slice across ``axis``: int64, ``(shape[axis],)``."""
    codes = overlap_map(pred, ref) if codes is None else codes
    others = tuple(a for a in range(codes.ndim) if a != axis)
    return np.count_nonzero(codes >= Overlap.FP, axis=others).astype(np.int64)


def worst_slices(codes: np.ndarray, axis: int, n: int = 3) -> list[int]:
    """Up to ``n`` slices across ``axis`` of an :func:`overlap_map`, the most wrong voxels first, kept apart.

    Slices are ranked by their wrong (FP + FN) voxels, the count a reviewer has to fix, so a speck at the edge of
    the volume never outranks a large disagreement; ties go to the lower index. Chosen slices are at least
    ``shape[axis] // (4 n)`` apart. When nothing disagrees: the slice with the most agreeing voxels; ``[]`` when
    both maps are empty.
    """
    others = tuple(a for a in range(codes.ndim) if a != axis)
    wrong = np.count_nonzero(codes >= Overlap.FP, axis=others)
    if not wrong.any():
        agree = np.count_nonzero(codes == Overlap.TP, axis=others)
        return [int(np.argmax(agree))] if agree.any() else []
    gap = max(1, codes.shape[axis] // (4 * n))
    chosen: list[int] = []
    for i in np.argsort(-wrong, kind="stable"):
        if wrong[i] == 0 or len(chosen) == n:
            break
        if all(abs(int(i) - c) >= gap for c in chosen):
            chosen.append(int(i))
    return chosen


def worst_slice_box(codes: np.ndarray, axis: int, k: int) -> tuple[list[tuple[int, int]], int]:
    """The box (start, stop) per axis that frames the wrong voxels of slice ``k`` across ``axis`` of an overlap
    map ``codes`` (:func:`medfcn.evaluation.metrics.overlap_map`), the whole labelled slice when it has none, and
    the number of wrong voxels in it.

    >>> codes = np.zeros((4, 5, 6), np.uint8); codes[1, 2:4, 3] = Overlap.FN
    >>> worst_slice_box(codes, 0, 1)
    ([(1, 2), (2, 4), (3, 4)], 2)
    """
    plane = np.take(codes, k, axis=axis)
    wrong = plane >= Overlap.FP
    others = iter(np.nonzero(wrong) if wrong.any() else np.nonzero(plane >= 0))
    box = []
    for a in range(codes.ndim):
        if a == axis:
            box.append((k, k + 1))
        else:
            idx = next(others)
            box.append((int(idx.min()), int(idx.max()) + 1))
    return box, int(np.count_nonzero(wrong))
