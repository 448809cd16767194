"""A training label map on the model's frame, with no painted slice lost.

Training brings each case's label map onto the model's frame (RAS, the card's spacing) by nearest-neighbour
sampling, which keeps only two 1 mm slices in three at 1.5 mm: a slice painted between two samples of the frame
would teach nothing, silently. A partial map (voxels marked "not annotated" with the ignore value) is therefore
sampled along each axis of the frame in turn (nearest-neighbour sampling of a grid parallel to the frame's is
separable): frame slice ``i`` takes the scan slice nearest its centre and, where that holds the ignore value, the
scan slices whose own nearest frame slice is ``i``, nearest first (:func:`axis_table`). So:

- every painted slice reaches the frame slice nearest to it, at most half a frame voxel from where it was painted
  (it is *snapped* there when the nearest-neighbour sample missed it); slices nobody painted stay unannotated;
- an annotated voxel is never overwritten: a snap fills only voxels that would be unannotated. Where two painted
  slices share their nearest frame slice (painted closer together than the frame's spacing), the one sampled there
  keeps it and the other is *left out*: the run says so (:meth:`FrameLabels.note`), with the slices snapped;
- a fully annotated map is sampled by MONAI's nearest neighbour as before, bit for bit.

The slices counted in the note are those annotated whole (what the napari Train dock writes); a partly annotated
slice (brush strokes, the rest not annotated) is snapped the same way, voxel by voxel, without being counted.
The frame keeps an oblique scan's rotation (:func:`medfcn.inference.frame.to_model_frame`), so its painted slices
are parallel to the frame's slices and snap the same way; a grid whose axes are not parallel to the frame's (no frame
medfcn makes has one) would be sampled by nearest neighbour alone.

>>> axis_table(1.5, 0.0, 4, 6)  # a 1 mm axis of 6 slices onto 4 slices 1.5 mm apart: slices 1 and 4 snap
array([[ 0,  2,  3,  5],
       [-1,  1, -1,  4]])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from medfcn.data.scan import Scan
    from medfcn.inference.frame import ModelFrame
    from medfcn.model.card import ModelCard

__all__ = ["FrameLabels", "labels_on_frame", "axis_table", "whole_slices"]


@dataclass(frozen=True)
class FrameLabels:
    """A label map on the model's frame: ``label`` (X', Y', Z') uint8, and per plane of the scan whose painted
    slices moved (axial, coronal, sagittal, as the viewer names the scan's axes) ``{"snapped": n, "left_out": n,
    "frame_mm": spacing, "snapped_mm": farthest snap}``: the slices annotated whole that reach the frame only by a
    snap, and those that share their frame slice with a nearer painted slice and are not learnt."""

    label: np.ndarray
    moved: dict[str, dict[str, float]] = field(default_factory=dict)

    def note(self, case: str) -> str:
        """One line saying what happened to the painted slices of ``case``; empty when nothing moved."""
        parts = []
        for plane, m in self.moved.items():
            mm, snapped, left = f"{m['frame_mm']:g}", int(m["snapped"]), int(m["left_out"])
            if snapped:
                parts.append(
                    f"{_slices(snapped, plane)} fell between the samples of the model's {mm} mm frame: snapped to "
                    f"the nearest frame slice ({'at most ' if snapped > 1 else ''}{m['snapped_mm']:g} mm away)"
                )
            if left:
                one = left == 1
                parts.append(
                    f"{_slices(left, plane)} {'is' if one else 'are'} not learnt: the "
                    f"{'slice' if one else 'slices'} of the model's {mm} mm frame nearest to {'it' if one else 'them'} "
                    f"{'holds another painted slice' if one else 'hold other painted slices'}, less than {mm} mm away"
                )
        return f"case {case}: " + "; ".join(parts) if parts else ""


def whole_slices(annotated: np.ndarray, axis: int) -> np.ndarray:
    """Per slice of ``annotated`` (bool, X Y Z) along ``axis``: whether it is annotated whole (a painted slice)."""
    return annotated.all(axis=tuple(a for a in range(3) if a != axis))


def _slices(n: int, plane: str) -> str:
    return f"{n} painted {plane} slice{'s' if n != 1 else ''}"


def _round(x: np.ndarray) -> np.ndarray:
    """The nearest integers (int64), halves up: a position within 1e-4 of a half counts as one, so that float noise
    in a header (1.2 mm stored as float32 puts 1.5 / 1.2 * 22 at 27.4999989) never decides a tie."""
    return np.floor(x + (0.5 + 1e-4)).astype(np.int64)


def axis_table(scale: float, offset: float, n_out: int, n_in: int) -> np.ndarray:
    """For one axis of the frame, whose slice ``i`` lies at scan index ``scale * i + offset``: the scan slices
    each frame slice takes, (rows, ``n_out``) int64. Row 0: the nearest-neighbour sample (clamped to the scan, as
    the frame's border padding is); further rows, nearest first: the other scan slices whose nearest frame slice it
    is (-1: none), which fill what the rows above leave unannotated. Ties go to the higher index."""
    centres = scale * np.arange(n_out, dtype=np.float64) + offset
    nearest = np.clip(_round(centres), 0, n_in - 1)
    k = np.arange(n_in)
    home = _round((k - offset) / scale)  # each scan slice's nearest frame slice
    inside = (home >= 0) & (home < n_out)
    extra = k[inside & (k != nearest[np.clip(home, 0, n_out - 1)])]
    extra = extra[np.argsort(np.abs(extra - centres[home[extra]]), kind="stable")]
    rows = [nearest]
    for s in extra.tolist():
        i = int(home[s])
        free = next((r for r in rows[1:] if r[i] < 0), None)
        if free is None:
            free = np.full(n_out, -1, np.int64)
            rows.append(free)
        free[i] = s
    return np.stack(rows)


def _take(values: np.ndarray, axis: int, table: np.ndarray, ignore: int) -> np.ndarray:
    """``values`` sampled along ``axis`` by an :func:`axis_table`: row 0, then each further row where the rows
    above left ``ignore``."""
    v = np.moveaxis(values, axis, 0)
    out = v[table[0]]
    for row in table[1:]:
        cols = np.flatnonzero(row >= 0)
        held = out[cols]
        out[cols] = np.where(held == ignore, v[row[cols]], held)
    return np.moveaxis(out, 0, axis)


def _fate(table: np.ndarray, painted: np.ndarray, centres: np.ndarray) -> tuple[int, int, float]:
    """Among the ``painted`` scan slices (bool per slice) that row 0 of ``table`` misses: how many reach the frame
    by a snap, how many are left out (a nearer painted slice holds their frame slice, or none lies within half a
    frame voxel), and the farthest snap (in scan slices) from the centre of the frame slice (``centres``) it
    reached."""
    sampled = np.zeros(painted.size, bool)
    sampled[table[0]] = True
    snapped = left = 0
    farthest = 0.0
    for s in np.flatnonzero(painted & ~sampled).tolist():
        found = np.argwhere(table[1:] == s)
        if found.size == 0:  # beyond the frame's ends
            left += 1
            continue
        row, i = int(found[0, 0]) + 1, int(found[0, 1])
        above = table[:row, i]
        if painted[above[above >= 0]].any():
            left += 1
        else:
            snapped += 1
            farthest = max(farthest, abs(float(centres[i]) - s))
    return snapped, left, farthest


def labels_on_frame(scan: Scan, labels: np.ndarray, frame: ModelFrame, card: ModelCard, ignore: int) -> FrameLabels:
    """``labels`` (class ids, or ``ignore`` where not annotated, on the grid of ``scan``) on ``frame``, the frame of
    the model ``card`` describes that ``scan`` was brought onto; painted slices snapped as the module says."""
    from medfcn.data.display import AXIS_LABELS, display_order
    from medfcn.inference.frame import axis_sources, frame_to_scan_coordinates
    from medfcn.inference.pipeline import frame_for_model

    annotated = labels != ignore
    m = np.linalg.inv(frame_to_scan_coordinates(frame))  # frame indices -> scan indices
    sources = axis_sources(m)
    if annotated.all() or sources is None:
        lab = frame_for_model(scan, card, array=labels, mode="nearest").volume
        return FrameLabels(np.rint(lab).astype(np.uint8))
    values = labels if labels.dtype == np.uint8 else np.rint(labels).astype(np.uint8)
    values = values.transpose(sources)  # the scan's axes in the frame's order (a view)
    planes = dict(zip(display_order(scan.direction)[0], AXIS_LABELS, strict=True))  # scan axis -> its plane
    moved = {}
    for o, s in enumerate(sources):
        n = frame.volume.shape[o]
        table = axis_table(m[s, o], m[s, 3], n, scan.shape[s])
        values = _take(values, o, table, ignore)
        painted = whole_slices(annotated, s)
        snapped, left, farthest = _fate(table, painted, m[s, o] * np.arange(n) + m[s, 3])
        if snapped or left:
            moved[planes[s]] = {
                "snapped": snapped,
                "left_out": left,
                "frame_mm": float(card.spacing[o]),
                "snapped_mm": round(farthest * float(scan.spacing[s]), 2),
            }
    return FrameLabels(np.ascontiguousarray(values), moved)
