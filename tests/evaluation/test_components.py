"""medfcn.evaluation.components: error blobs by size, wrong voxels per slice; cross-checked by a flood fill written
here."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from medfcn.evaluation.components import error_components, worst_slices, wrong_per_slice
from medfcn.evaluation.metrics import Overlap, overlap_map


def flood_components(mask: np.ndarray) -> list[set[tuple[int, ...]]]:
    """26-connected components by breadth-first search, voxel by voxel (independent of scipy)."""
    seen = np.zeros(mask.shape, bool)
    steps = [d for d in np.ndindex(3, 3, 3) if d != (1, 1, 1)]
    out = []
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        blob, queue = set(), deque([start])
        seen[start] = True
        while queue:
            v = queue.popleft()
            blob.add(tuple(int(c) for c in v))
            for d in steps:
                w = tuple(v[a] + d[a] - 1 for a in range(3))
                if all(0 <= w[a] < mask.shape[a] for a in range(3)) and mask[w] and not seen[w]:
                    seen[w] = True
                    queue.append(w)
        out.append(blob)
    return out


def test_hand_worked_blobs_sizes_volumes_centroids_boxes():
    ref = np.zeros((10, 12, 8), np.uint8)
    ref[2:6, 2:6, 2:6] = 1  # 64 voxels
    pred = ref.copy()
    pred[2:6, 2:6, 5] = 0  # missed: a 4 x 4 plate, 16 voxels
    pred[8, 10, 1] = 1  # spurious: one voxel
    pred[8, 0:3, 6] = 1  # spurious: a 3-voxel bar
    pred[9, 3, 7] = 1  # touches the bar only by a corner? no: (9,3,7) vs (8,2,6) is a corner neighbour
    blobs = error_components(pred, ref, spacing=(1.0, 2.0, 0.5))
    assert [(b.kind, b.voxels) for b in blobs] == [("missed", 16), ("spurious", 4), ("spurious", 1)]
    assert blobs[0].volume_ml == pytest.approx(16 * 1.0 / 1000)
    assert blobs[0].centroid == pytest.approx((3.5, 3.5, 5.0))
    assert blobs[0].box == ((2, 6), (2, 6), (5, 6))
    assert blobs[2].box == ((8, 9), (10, 11), (1, 2))
    assert "missed 16 voxels" in blobs[0].describe(("axial", "coronal", "sagittal"))
    assert error_components(ref, ref, (1, 1, 1)) == []
    assert len(error_components(pred, ref, (1, 1, 1), limit=2)) == 2


def test_blobs_match_a_flood_fill_on_random_maps():
    rng = np.random.default_rng(3)
    ref = (rng.random((14, 13, 11)) < 0.3).astype(np.uint8) * 2
    pred = (rng.random(ref.shape) < 0.3).astype(np.uint8) * 2
    codes = overlap_map(pred, ref)
    blobs = error_components(pred, ref, (1, 1, 1))
    for code, kind in ((Overlap.FP, "spurious"), (Overlap.FN, "missed")):
        expected = sorted(len(b) for b in flood_components(codes == code))
        assert sorted(b.voxels for b in blobs if b.kind == kind) == expected
    sizes = [b.voxels for b in blobs]
    assert sizes == sorted(sizes, reverse=True)
    assert sum(sizes) == np.count_nonzero(codes >= Overlap.FP)


def test_worst_slice_counts_wrong_voxels_not_dice():
    """A speck alone at the edge has slice Dice 0; a rim of 30 wrong voxels around 400 right ones wins."""
    ref = np.zeros((30, 30, 12), np.uint8)
    ref[5:25, 5:25, 1:10] = 1
    pred = ref.copy()
    pred[4, 5:25, 6] = 1  # 20 spurious voxels on slice 6
    pred[5:15, 5, 6] = 0  # 10 missed on slice 6
    pred[0, 0, 11] = 1  # a speck on an otherwise empty edge slice: Dice 0 there
    assert wrong_per_slice(pred, ref, axis=2).tolist() == [0] * 6 + [30] + [0] * 4 + [1]
    assert worst_slices(overlap_map(pred, ref), axis=2, n=1) == [6]
    assert worst_slices(overlap_map(pred, ref), axis=2, n=2) == [6, 11]


def test_the_anchor_of_a_shell_is_on_the_shell_not_at_its_empty_centre():
    ref = np.zeros((21, 21, 21), np.uint8)
    ref[5:16, 5:16, 5:16] = 1
    pred = np.zeros_like(ref)
    pred[4:17, 4:17, 4:17] = 1  # a one-voxel rim all round: one spurious shell
    (shell,) = error_components(pred, ref, (1, 1, 1))
    assert shell.centroid == pytest.approx((10.0, 10.0, 10.0)) and ref[10, 10, 10] == 1  # the centre is not wrong
    assert overlap_map(pred, ref)[shell.anchor] == Overlap.FP
    assert min(abs(a - 10) for a in shell.anchor) == 0 and max(abs(a - 10) for a in shell.anchor) == 6


def test_thin_rims_are_edge_noise_and_regions_are_not():
    """Hand-worked on a 0.9 x 0.9 x 6.5 mm grid: a rim one voxel thick lies 0.9 mm deep at most (edge: under
    1.5 x 0.9 mm); a missed 5 x 5 x 3 chunk 2.7 mm (its centre 3 voxels in-plane from its side); a spurious patch
    one thick slice deep but 4 x 4 voxels wide 1.8 mm (two in-plane voxels): a region, not noise."""
    import numpy as np

    from medfcn.evaluation.components import error_components

    ref = np.zeros((20, 20, 10), np.uint8)
    ref[4:16, 4:16, 2:8] = 1
    pred = ref.copy()
    pred[3, 4:16, 2:8] = 1
    pred[4:9, 4:9, 2:5] = 0
    pred[10:14, 10:14, 8] = 1
    got = [(c.kind, c.voxels, round(c.depth_mm, 3), c.edge) for c in error_components(pred, ref, (0.9, 0.9, 6.5))]
    assert got == [("missed", 75, 2.7, False), ("spurious", 72, 0.9, True), ("spurious", 16, 1.8, False)]


def _brute_unsure_regions(unsure: np.ndarray, spacing, depth_mm: float) -> list[set[tuple[int, ...]]]:
    """The regions of ``unsure_regions`` from their definition, by distances between every pair of voxels: a
    voxel's depth is its distance (mm) to the nearest sure voxel, the array's outside counting as sure; the core lies
    deeper than ``depth_mm``; a region is a flood-filled component of the unsure voxels within ``depth_mm`` of it."""
    padded = np.pad(unsure, 1)
    s = np.asarray(spacing, float)
    inside = (np.argwhere(padded) * s)[:, None, :]
    sure = (np.argwhere(~padded) * s)[None, :, :]
    depth = np.sqrt(((inside - sure) ** 2).sum(-1)).min(1)
    coords = np.argwhere(padded)
    core = coords[depth > depth_mm]
    if not len(core):
        return []
    near = np.sqrt((((coords[:, None, :] - core[None, :, :]) * s) ** 2).sum(-1)).min(1) <= depth_mm
    grown = np.zeros(padded.shape, bool)
    grown[tuple((coords[near]).T)] = True
    return flood_components(grown[1:-1, 1:-1, 1:-1])


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 0.8, 2.5)])
def test_unsure_regions_match_their_definition_computed_pair_by_pair(spacing):
    """Two thick unsure places on a thin band, on an anisotropic grid too: the regions, their voxels, volumes and
    boxes equal a brute-force computation of the definition; the anchor lies in the core; the band lists nothing."""
    from medfcn.evaluation.components import unsure_regions

    rng = np.random.default_rng(4)
    unsure = np.zeros((22, 20, 12), bool)
    unsure[1:21, 1:19, 1:3] = True  # a thin band along a boundary
    unsure[3:13, 3:12, 2:9] = True  # a thick place on it
    unsure[15:21, 12:19, 5:11] = rng.random((6, 7, 6)) < 0.9  # a ragged one apart
    found = unsure_regions(unsure, spacing, depth_mm=2.0)
    expected = sorted(_brute_unsure_regions(unsure, spacing, 2.0), key=len, reverse=True)
    assert [r.voxels for r in found] == [len(b) for b in expected] and found
    voxel_ml = float(np.prod(spacing)) / 1000
    for region, blob in zip(found, expected, strict=True):
        lo, hi = np.min(list(blob), 0), np.max(list(blob), 0) + 1
        assert region.box == tuple(zip(lo.tolist(), hi.tolist(), strict=True))
        assert region.kind == "unsure" and region.anchor in blob
        assert region.volume_ml == pytest.approx(len(blob) * voxel_ml)
        assert region.depth_mm > 2.0
    band = np.zeros_like(unsure)
    band[1:21, 1:19, 1:3] = True
    assert unsure_regions(band, spacing, depth_mm=3.0) == []  # 2 voxels thick: at most 2.5 mm deep
    assert unsure_regions(np.zeros_like(unsure), spacing) == []
