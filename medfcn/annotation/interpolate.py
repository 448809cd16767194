"""Fill between annotated slices: every label of a label map interpolated between the slices that hold it.

The rules (``medfcn interpolate`` and the napari dock's "Fill between slices" both come here):

- **Along one axis** of the map's own grid (index axis 0, 1 or 2; a plane name picks the index axis nearest to it,
  as the napari display does; ``auto`` picks the axis along which the labels leave empty slices between slices that
  hold them). The output has exactly the input's grid: nothing is resampled.
- **Each label between the slices that hold it**, with ITK's MorphologicalContourInterpolator (Albu et al. 2008;
  the filter of 3D Slicer's "Fill between slices") given those slices as its custom slice positions. ITK's own
  slice detection is not used: it takes a slice only where a voxel has the label all around it in-plane and empty
  voxels on both sides across it, so two adjacent painted slices, or a structure one voxel thin, stop it filling
  (measured: both leave the gap empty).
- **Nothing beyond** a label's first and last slice.
- **Checked slices** (``key_slices``): slices a person looked at and finished. A checked slice that lies between a
  label's first and last slice but does not hold it ends that label there: ITK closes the shape on each side
  towards the centre of the last contour (its extrapolation), and the checked slice stays as painted.
- **Overlaps** (ITK's rule): painted voxels are never changed; where the fills of two labels meet, the higher
  label number wins.

ITK runs in a child process (:mod:`medfcn.annotation.itk_process`); its first use in a session takes 12-21 s.

>>> parse_key_slices("4, 10-12")
(4, 10, 11, 12)
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np

from medfcn.choices import parse_choice
from medfcn.errors import OutputError, UnsupportedScanError, UsageError

from .itk_process import ItkInterpolator

__all__ = [
    "Plane",
    "Interpolation",
    "parse_key_slices",
    "as_label_map",
    "slice_labels",
    "drawn_axis",
    "plane_axis",
    "interpolate_labels",
    "interpolate_file",
]

log = logging.getLogger(__name__)

_MAX_LABELS = 65535  # ITK's filter is wrapped for uint8 and uint16 maps


class Plane(StrEnum):
    """The slices a person painted: a named plane, or ``auto`` (see :func:`drawn_axis`)."""

    AUTO = "auto"
    AXIAL = "axial"
    CORONAL = "coronal"
    SAGITTAL = "sagittal"


@dataclass(frozen=True)
class Interpolation:
    """What :func:`interpolate_labels` did.

    ``labels``: the filled map (X, Y, Z), the input's integer type; ``axis``: the index axis filled along (``None``:
    nothing to fill); ``slices``: for each label, the slices it was filled between; ``added``: voxels added per label;
    ``plane``: the plane those slices are nearest to (axial, coronal, sagittal), where the grid was known.
    """

    labels: np.ndarray
    axis: int | None
    slices: dict[int, tuple[int, ...]] = field(default_factory=dict)
    added: dict[int, int] = field(default_factory=dict)
    plane: str | None = None

    def summary(self) -> str:
        if self.axis is None:
            return "nothing to fill: no label leaves an empty slice between slices that hold it"
        plane = f" ({self.plane} slices)" if self.plane else ""
        return (
            f"filled {len(self.slices)} label(s) along index axis {self.axis}{plane} between the slices that hold "
            f"them: {sum(self.added.values()):,} voxels added"
        )


def parse_key_slices(text: str | None) -> tuple[int, ...]:
    """``"4,10-12"`` -> ``(4, 10, 11, 12)``: comma-separated slice indices and inclusive ranges, sorted, each once.
    Raises :class:`UsageError` naming the part that is not a slice number or range."""
    if text is None or not text.strip():
        return ()
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi if dash else lo)
        except ValueError:
            raise UsageError(f"--key-slices: {part!r} is not a slice number or a range such as 10-14") from None
        if first < 0 or last < first:
            raise UsageError(f"--key-slices: {part!r} is not a slice number or a range such as 10-14")
        out.update(range(first, last + 1))
    return tuple(sorted(out))


def as_label_map(array: np.ndarray, source: object = "labels") -> np.ndarray:
    """``array`` as an integer label map (a float map holding whole numbers becomes int32). Raises
    :class:`UnsupportedScanError` naming ``source`` for fractions, negative values or too many labels."""
    array = np.asarray(array)
    if array.dtype == bool:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        whole = array.astype(np.int32)
        if not np.array_equal(whole, array):
            raise UnsupportedScanError(f"{source}: not a label map (voxel values are not whole numbers)")
        array = whole
    elif not np.issubdtype(array.dtype, np.integer):
        raise UnsupportedScanError(f"{source}: not a label map (voxel type {array.dtype})")
    if array.size and int(array.min()) < 0:
        raise UnsupportedScanError(f"{source}: not a label map (negative voxel values)")
    return array


def _compact(labels: np.ndarray, source: object) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, values)``: the labels renumbered ``1..N`` in increasing order (uint8 or uint16), 0 kept, and the
    original value of each code (``values[code]``). The order is kept, so ITK's "higher label wins" still holds."""
    top = int(labels.max()) if labels.size else 0
    if top <= 1 << 20:
        values = np.flatnonzero(np.bincount(labels.ravel(), minlength=1))
    else:
        values = np.unique(labels)
    if values[0] != 0:
        values = np.concatenate([[0], values])
    if len(values) - 1 > _MAX_LABELS:
        raise UnsupportedScanError(f"{source}: {len(values) - 1} labels; at most {_MAX_LABELS} can be filled")
    dtype = np.uint8 if len(values) <= 256 else np.uint16
    if top <= 1 << 20:
        table = np.zeros(top + 1, dtype)
        table[values] = np.arange(len(values), dtype=dtype)
        codes = table[labels]
    else:
        codes = np.searchsorted(values, labels).astype(dtype)
    return codes, values


def slice_labels(codes: np.ndarray, axis: int, n_labels: int) -> np.ndarray:
    """``held[s, c]``: whether slice ``s`` across index ``axis`` holds label code ``c``; bool (slices, N + 1)."""
    width = n_labels + 1
    n = codes.shape[axis]
    moved = np.moveaxis(codes, axis, 0)
    held = np.zeros((n, width), bool)
    step = max(1, (1 << 22) // max(1, moved[0].size))  # about 4 M voxels at a time
    for s in range(0, n, step):
        block = moved[s : s + step].reshape(min(step, n - s), -1).astype(np.int64)
        block += (np.arange(block.shape[0], dtype=np.int64) * width)[:, None]
        held[s : s + step] = np.bincount(block.ravel(), minlength=block.shape[0] * width).reshape(-1, width) > 0
    return held


def _gaps(held: np.ndarray) -> int:
    """Empty slices between each label's first and last slice, summed over labels (code 0 not counted)."""
    total = 0
    for c in range(1, held.shape[1]):
        where = np.flatnonzero(held[:, c])
        if where.size:
            total += int(where[-1] - where[0] + 1 - where.size)
    return total


def drawn_axis(labels: np.ndarray) -> int | None:
    """The index axis the labels were painted on: the one along which they leave the most empty slices between
    slices that hold them (an axial slice every 4th leaves gaps axially, none coronally or sagittally); ``None``
    if they leave none. Raises :class:`UsageError` when two axes leave as many."""
    codes, values = _compact(as_label_map(labels), "labels")
    gaps = [_gaps(slice_labels(codes, a, len(values) - 1)) for a in range(3)]
    best = max(gaps)
    if best == 0:
        return None
    if gaps.count(best) > 1:
        raise UsageError(
            f"cannot tell which axis the labels were painted on (empty slices between labelled ones per index axis: "
            f"{gaps}); give --axis"
        )
    return gaps.index(best)


def plane_axis(plane: Plane | str, direction: np.ndarray) -> int:
    """The index axis nearest to the normal of ``plane`` (axial, coronal, sagittal) for a grid with LPS
    ``direction`` (3 x 3, column ``n``: index axis ``n``): the axis napari slices through for that plane."""
    from medfcn.data.display import AXIS_LABELS, display_order

    plane = parse_choice(Plane, plane, "--axis", UsageError)
    if plane is Plane.AUTO:
        raise ValueError("plane_axis needs a named plane")
    axes, _ = display_order(direction)
    return axes[AXIS_LABELS.index(plane.value)]


def interpolate_labels(
    labels: np.ndarray,
    axis: int,
    *,
    key_slices=(),
    spacing=(1.0, 1.0, 1.0),
    interpolator: ItkInterpolator | None = None,
) -> Interpolation:
    """Fill every label of ``labels`` (X, Y, Z) along index ``axis`` between the slices that hold it (the rules are
    in the module docstring). ``key_slices``: checked slice indices along ``axis``; ``spacing`` in mm;
    ``interpolator``: a running :class:`ItkInterpolator` to use (default: one started and closed for this call).

    Raises :class:`UsageError` for an axis or checked slice outside the map, :class:`UnsupportedScanError` for a
    map that is not one of labels, ``RuntimeError`` if ITK fails.
    """
    labels = as_label_map(labels)
    if labels.ndim != 3:
        raise UsageError(f"a label map must be 3-D, got shape {labels.shape}")
    if axis not in (0, 1, 2):
        raise UsageError(f"axis {axis!r} is not an index axis (0, 1 or 2)")
    n = labels.shape[axis]
    outside = [k for k in key_slices if not 0 <= int(k) < n]
    if outside:
        raise UsageError(f"--key-slices {outside} outside the {n} slices (0-{n - 1}) along index axis {axis}")
    codes, values = _compact(labels, "labels")
    held = slice_labels(codes, axis, len(values) - 1)
    checked = np.asarray(sorted({int(k) for k in key_slices}), int)
    slices: dict[int, list[int]] = {}
    for c in range(1, len(values)):
        where = np.flatnonzero(held[:, c])
        if where.size:
            inside = checked[(checked > where[0]) & (checked < where[-1])]
            slices[c] = sorted({*where.tolist(), *inside.tolist()})
    if not any(np.diff(s).max(initial=1) > 1 for s in slices.values()):
        return Interpolation(labels.copy(), None, {int(values[c]): tuple(s) for c, s in slices.items()}, {})
    own = interpolator is None
    fill = ItkInterpolator() if own else interpolator
    try:
        filled = fill(codes, axis, slices, spacing)
    finally:
        if own:
            fill.close()
    if filled.shape != codes.shape:
        raise RuntimeError(f"ITK returned a map of shape {filled.shape} for one of shape {codes.shape}")
    before = np.bincount(codes.ravel(), minlength=len(values))
    after = np.bincount(filled.ravel(), minlength=len(values))
    out = values.astype(labels.dtype)[filled]
    return Interpolation(
        out,
        axis,
        {int(values[c]): tuple(s) for c, s in slices.items()},
        {int(values[c]): int(after[c] - before[c]) for c in slices},
    )


def _check_output(source: Path, output: Path, overwrite: bool) -> None:
    if not output.name.lower().endswith((".nii.gz", ".nii")):
        raise UsageError(f"{output}: the output must be a NIfTI file (.nii.gz or .nii)")
    if output.is_dir():
        raise OutputError(f"{output}: is a folder; give the output file's name")
    if output.exists() or output.is_symlink():
        if source.exists() and (output.resolve() == source.resolve() or os.path.samefile(output, source)):
            raise OutputError(f"{output}: is the input label map; write the filled map to another file")
        if not overwrite:
            raise OutputError(f"{output}: exists; give --overwrite to replace it")


def interpolate_file(
    path: str | Path,
    output: str | Path,
    *,
    plane: Plane | str = Plane.AUTO,
    key_slices=(),
    overwrite: bool = False,
    interpolator: ItkInterpolator | None = None,
) -> Interpolation:
    """Read the label map ``path`` (NIfTI, NRRD, MetaImage), fill it (:func:`interpolate_labels`) along ``plane``
    and write it to ``output`` (``.nii.gz``) on exactly its grid, atomically. ``key_slices`` (indices along that
    plane's index axis, as the file counts them) need a named plane.

    Raises :class:`UsageError` (options), :class:`OutputError` (the input itself, an existing file without
    ``overwrite``, an unwritable place), the reader's errors naming the file.
    """
    from medfcn.data.reader import read_scan
    from medfcn.data.writer import write_labels

    path, output = Path(path), Path(output)
    plane = parse_choice(Plane, plane, "--axis", UsageError)
    if key_slices and plane is Plane.AUTO:
        raise UsageError("--key-slices needs --axis axial, coronal or sagittal (the slice numbers count along it)")
    _check_output(path, output, overwrite)
    scan = read_scan(path)
    labels = as_label_map(scan.array, path)
    axis = drawn_axis(labels) if plane is Plane.AUTO else plane_axis(plane, scan.direction)
    if axis is None:
        result = Interpolation(labels, None)
    else:
        result = interpolate_labels(
            labels, axis, key_slices=key_slices, spacing=scan.spacing, interpolator=interpolator
        )
        result = dataclasses.replace(result, plane=_plane_of(axis, scan.direction))
    write_labels(result.labels, scan, output)
    return result


def _plane_of(axis: int, direction: np.ndarray) -> str:
    from medfcn.data.display import AXIS_LABELS, display_order

    axes, _ = display_order(direction)
    return AXIS_LABELS[list(axes).index(axis)]
