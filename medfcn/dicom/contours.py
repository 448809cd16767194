"""Planar contours of a slice's mask, and back: the one contour convention of medfcn's RT Structure Sets.

Contours (:func:`mask_contours`): the outline of each 4-connected region of a slice, traced along pixel edges with
the region on its right, then moved half a pixel inwards, so each polygon passes through the centres of the
region's boundary pixels (the convention of OpenCV's ``findContours``, which rt-utils and many planning systems
use). A hole gives a contour of its own, inside its region's. Filling the contours of a slice (:func:`fill_contours`:
even-odd rule, pixels on a contour included) gives back the slice's mask exactly.

Filling is bounded by the slice, whatever the contours say: each edge is clipped to the slice's rows and columns
before it is walked, so a contour whose corners lie 10^9 pixels away costs what one across the slice costs, and
the work of a slice is bounded by :data:`MAX_CROSSINGS_PER_PIXEL` row crossings (and as many pixel centres passed) per
pixel (a slice's real outlines cross each row at most once per pixel edge): more is refused with
:class:`medfcn.errors.MedfcnError`.
"""

from __future__ import annotations

import numpy as np

from medfcn.errors import MedfcnError

__all__ = ["MAX_CROSSINGS_PER_PIXEL", "mask_contours", "fill_contours"]

MAX_CROSSINGS_PER_PIXEL = 4
"""How many times, per pixel of a slice, its contours may cross the slice's rows before filling refuses them."""


def _edges(mask: np.ndarray) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """Boundary edges between pixel corners ``(x, y)`` (corner ``(x, y)`` at pixel coordinate ``(x - .5, y - .5)``),
    directed with the foreground on the right (y points down), keyed by start corner."""
    p = np.pad(mask.astype(bool), 1)
    fg = p[1:-1, 1:-1]
    out: dict[tuple[int, int], list[tuple[int, int]]] = {}

    def add(rows, cols, start, end):
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            out.setdefault((c + start[0], r + start[1]), []).append((c + end[0], r + end[1]))

    add(*np.nonzero(fg & ~p[:-2, 1:-1]), (0, 0), (1, 0))  # top edge, going right
    add(*np.nonzero(fg & ~p[1:-1, 2:]), (1, 0), (1, 1))  # right edge, going down
    add(*np.nonzero(fg & ~p[2:, 1:-1]), (1, 1), (0, 1))  # bottom edge, going left
    add(*np.nonzero(fg & ~p[1:-1, :-2]), (0, 1), (0, 0))  # left edge, going up
    return out


def mask_contours(mask: np.ndarray) -> list[np.ndarray]:
    """The contours of a 2-D mask ``(rows, cols)``: each ``(K, 2)`` float ``(col, row)`` pixel coordinates."""
    edges = _edges(mask)
    loops = []
    while edges:
        start = next(iter(edges))
        corners, here, direction = [], start, None
        while True:
            outs = edges.get(here)
            if not outs:
                break
            if len(outs) == 1 or direction is None:
                nxt = outs[0]
            else:  # a corner two regions touch diagonally: turn right, which keeps them apart
                right = (-direction[1], direction[0])
                nxt = next((o for o in outs if (o[0] - here[0], o[1] - here[1]) == right), outs[0])
            outs.remove(nxt)
            if not outs:
                del edges[here]
            step = (nxt[0] - here[0], nxt[1] - here[1])
            if step != direction:
                corners.append((here, direction, step))
            here, direction = nxt, step
            if here == start and start not in edges:
                break
        if corners and corners[0][1] is None:  # the first corner's incoming direction is the loop's last step
            corners[0] = (corners[0][0], direction, corners[0][2])
            if corners[0][1] == corners[0][2]:
                corners.pop(0)
        points = []
        for (x, y), d_in, d_out in corners:  # half a pixel inwards: to the right of both edges
            points.append((x - 0.5 + 0.5 * (-d_in[1] - d_out[1]), y - 0.5 + 0.5 * (d_in[0] + d_out[0])))
        pts = np.asarray(points, float)
        if len(pts) > 1:
            keep = np.any(pts != np.roll(pts, 1, axis=0), axis=1)
            pts = pts[keep] if keep.any() else pts[:1]
        loops.append(pts)
    return loops


def _row_crossings(s: np.ndarray, rows: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """``(row, x)`` of every crossing of a pixel-centre row ``r`` (``y0 <= r < y1`` or ``y1 <= r < y0``) by the edges
    ``s`` ``(E, 2 ends, xy)``, rows clipped to ``[0, rows)``; refuses more than ``limit`` crossings."""
    y0, y1 = s[:, 0, 1], s[:, 1, 1]
    lo = np.clip(np.ceil(np.minimum(y0, y1)), 0, rows)
    hi = np.clip(np.ceil(np.maximum(y0, y1)), 0, rows)  # rows lo .. hi-1 are crossed
    counts = (hi - lo).astype(np.int64)
    total = int(counts.sum())
    if total > limit:
        raise MedfcnError(f"its contours cross the slice's rows {total:,} times, more than the {limit:,} a slice holds")
    edge = np.repeat(np.arange(len(s)), counts)
    row = np.repeat(lo.astype(np.int64), counts) + (np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts))
    x0, y0e, x1, y1e = s[edge, 0, 0], s[edge, 0, 1], s[edge, 1, 0], s[edge, 1, 1]
    return row, x0 + (row - y0e) * (x1 - x0) / (y1e - y0e)


def _lattice_points(s: np.ndarray, rows: int, cols: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """``(row, col)`` of the pixel centres inside the slice that lie on an edge with whole-pixel ends; refuses more
    than ``limit`` of them."""
    whole = np.all(np.abs(s - np.round(s)) <= 1e-3, axis=(1, 2))
    e = np.round(s[whole]).astype(np.float64)
    if not len(e):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    ax, ay, bx, by = e[:, 0, 0], e[:, 0, 1], e[:, 1, 0], e[:, 1, 1]
    n = np.maximum(np.gcd(np.abs(bx - ax).astype(np.int64), np.abs(by - ay).astype(np.int64)), 1)
    sx, sy = (bx - ax) / n, (by - ay) / n  # whole steps between consecutive lattice points
    lo, hi = np.zeros(len(e)), n.astype(np.float64)
    for start, step, size in ((ax, sx, cols), (ay, sy, rows)):  # the t where start + step t lies in [0, size - 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            a, b = (0 - start) / step, (size - 1 - start) / step
        moving = step != 0
        lo = np.where(moving, np.maximum(lo, np.ceil(np.minimum(a, b) - 1e-9)), lo)
        hi = np.where(moving, np.minimum(hi, np.floor(np.maximum(a, b) + 1e-9)), hi)
        inside = (start >= 0) & (start <= size - 1)
        hi = np.where(~moving & ~inside, -1, hi)
    counts = np.maximum(hi - lo + 1, 0).astype(np.int64)  # at most max(rows, cols) each: clipped to the slice
    total = int(counts.sum())
    if total > limit:
        raise MedfcnError(f"its contours pass {total:,} pixel centres, more than the {limit:,} a slice holds")
    edge = np.repeat(np.arange(len(e)), counts)
    t = np.repeat(lo, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    return (ay[edge] + sy[edge] * t).astype(np.int64), (ax[edge] + sx[edge] * t).astype(np.int64)


def fill_contours(contours: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """A ``(rows, cols)`` mask of the pixels whose centres are inside the contours (even-odd rule) or on one.

    ``contours``: ``(K, 2)`` ``(col, row)`` pixel coordinates, as :func:`mask_contours` gives; anything outside the
    slice is clipped before it is walked. Raises :class:`MedfcnError` (without a file name: the caller adds it) when
    the contours cross the rows more than :data:`MAX_CROSSINGS_PER_PIXEL` times per pixel of the slice.
    """
    rows, cols = shape
    out = np.zeros(shape, bool)
    segs = [np.stack([a, np.roll(a, -1, axis=0)], axis=1) for a in (np.asarray(p, float) for p in contours)]
    if not segs:
        return out
    s = np.concatenate(segs)  # (E, 2 ends, xy)
    limit = MAX_CROSSINGS_PER_PIXEL * (rows + 1) * (cols + 1)
    row, x = _row_crossings(s, rows, limit)
    order = np.lexsort((x, row))
    row, x = row[order], x[order]
    first = np.r_[0, np.flatnonzero(np.diff(row)) + 1]  # where each row's crossings start
    rank = np.arange(len(row)) - np.repeat(first, np.diff(np.r_[first, len(row)]))
    starts = np.flatnonzero((rank % 2 == 0) & (np.r_[row[1:], -1] == row))  # even-odd: crossings 0-1, 2-3, ...
    lo = np.clip(np.ceil(x[starts] - 1e-6), 0, cols).astype(np.int64)
    hi = np.clip(np.floor(x[starts + 1] + 1e-6), -1, cols - 1).astype(np.int64)
    for r, a, b in zip(row[starts].tolist(), lo.tolist(), hi.tolist(), strict=True):
        if a <= b:
            out[r, a : b + 1] = True
    r, c = _lattice_points(s, rows, cols, limit)
    out[r, c] = True
    return out
