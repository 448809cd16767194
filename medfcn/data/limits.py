"""The bound on what one scan may make medfcn allocate, checked from its header before any voxel is read.

A header is a promise that costs nothing to forge: 348 bytes of NIfTI claiming 2000^3 voxels, a MetaImage header
pointing at ``/dev/urandom``, a DICOM series of small files whose Rows and Columns say 4096. Every reader checks
the voxel count its header gives against :func:`max_voxels` (and, where the data is stored uncompressed, the bytes
the file holds against what the header promises) before it allocates: a forged header is refused in milliseconds,
naming the file, instead of filling the memory.

The bound is 2^30 voxels (1.07 G: a whole-body CT at 0.5 mm is ~0.9 G), or the number in the environment variable
``MEDFCN_MAX_VOXELS`` (e.g. ``MEDFCN_MAX_VOXELS=4e9 medfcn segment ...`` for a bigger scan on a machine with the
memory for it: a scan needs about 6 bytes per voxel beside its own type while it is segmented).

>>> check_voxels("a.nii.gz", (512, 512, 300))
>>> check_voxels("b.nii.gz", (2000, 2000, 2000))
Traceback (most recent call last):
...
medfcn.errors.UnsupportedScanError: b.nii.gz: its header gives 2000 x 2000 x 2000 voxels (8e+09), more than ...
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from medfcn.errors import UnsupportedScanError, UsageError

__all__ = ["DEFAULT_MAX_VOXELS", "max_voxels", "check_voxels"]

DEFAULT_MAX_VOXELS = 1 << 30
_ENV = "MEDFCN_MAX_VOXELS"


def max_voxels() -> int:
    """The bound in force: ``MEDFCN_MAX_VOXELS`` when set (a positive number), else :data:`DEFAULT_MAX_VOXELS`."""
    text = os.environ.get(_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_VOXELS
    try:
        value = int(float(text))
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"{_ENV}={text!r}: give a positive number of voxels (default {DEFAULT_MAX_VOXELS})")
    return value


def check_voxels(path: str | Path, shape: Sequence[int]) -> None:
    """Refuse a scan whose header gives more voxels than :func:`max_voxels` (or a negative size), before anything is
    allocated for them. Raises :class:`UnsupportedScanError` naming ``path``."""
    dims = [int(n) for n in shape]
    if any(n < 0 for n in dims):
        raise UnsupportedScanError(f"{path}: its header gives a negative size {dims}")
    n = 1.0
    for d in dims:
        n *= d
    bound = max_voxels()
    if n > bound:
        raise UnsupportedScanError(
            f"{path}: its header gives {' x '.join(map(str, dims))} voxels ({n:.3g}), more than the {bound:.3g} "
            f"medfcn reads (set {_ENV} to raise the bound, if the header is right and the memory is there)"
        )
