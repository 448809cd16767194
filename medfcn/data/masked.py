"""The input scan with everything outside a mask set to zero (``medfcn segment --masked-image``: the skull-stripped
image, as deepbet, SynthStrip ``-o`` and HD-BET write it).

- **A NIfTI input** (NIfTI-1 or -2, ``.nii`` or ``.nii.gz``) keeps its header: the same voxel type, byte order,
  dimensions (a 4-D file with one volume stays 4-D), qform and sform, and ``scl_slope``/``scl_inter``. The stored
  values inside the mask are the file's own, untouched; outside it they are the stored value that the scaling maps
  to 0 (0 itself unless ``scl_inter`` is not 0). When no stored value maps exactly to 0 (an intercept that is not a
  whole multiple of the slope in an integer type), the image is written as float32 physical values, unscaled, and a
  warning says so.
- **Any other input** (NRRD, MetaImage, a DICOM series) is written as NIfTI on the scan's grid with the voxels
  medfcn read (their type as read; DICOM rescaling applied).

Written atomically and read back before it is renamed into place (into a :class:`~medfcn.data.writer.FileSet` with
the rest of the case's outputs).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medfcn.data.scan import Scan
from medfcn.data.writer import FileSet, atomic_write
from medfcn.errors import OutputError

__all__ = ["write_masked_image"]

log = logging.getLogger(__name__)


def write_masked_image(scan: Scan, mask: np.ndarray, path: str | Path, *, into: FileSet | None = None) -> list[str]:
    """Write ``scan`` with the voxels outside ``mask`` (bool, X, Y, Z, on the scan's grid) set to zero to ``path``
    (``.nii.gz``); returns warnings (empty when the input's type and scaling were kept).

    ``scan.array`` is used only for an input that is not NIfTI. Raises :class:`OutputError` naming ``path``.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != scan.shape:
        raise ValueError(f"mask of shape {mask.shape} does not fit a grid of size {scan.shape}")
    source = Path(scan.source) if scan.source is not None else None
    warnings: list[str] = []
    if source is not None and source.is_file() and source.name.lower().endswith((".nii", ".nii.gz")):
        values, save = _from_nifti(source, mask, warnings)
    else:
        values, save = _from_scan(scan, mask)
    shown = Path(path)

    def write(tmp: Path) -> None:  # then read back whole: SimpleITK and gzip do not report a full disk
        save(tmp)
        try:
            same = np.array_equal(_stored(tmp), values)
        except Exception as e:  # nibabel raises many types for a short or damaged file
            raise OutputError(
                f"{shown}: the written file does not read back ({type(e).__name__}); is the disk full?"
            ) from None
        if not same:
            raise OutputError(f"{shown}: the written file does not hold the masked image written; is the disk full?")

    atomic_write(path, write, into=into)
    return warnings


def _stored(path: Path) -> np.ndarray:
    """The values a NIfTI file stores (before its scaling), read with nibabel."""
    import nibabel as nib

    return np.asanyarray(nib.load(str(path), mmap=False).dataobj.get_unscaled())


def _from_nifti(source: Path, mask: np.ndarray, warnings: list[str]) -> tuple[np.ndarray, Callable[[Path], None]]:
    """The stored values to write and how to save them, for a NIfTI input."""
    import nibabel as nib

    image = nib.load(str(source), mmap=False)
    stored = np.asanyarray(image.dataobj.get_unscaled())
    slope, inter = image.dataobj.slope, image.dataobj.inter
    inside = mask.reshape(mask.shape + (1,) * (stored.ndim - 3))  # a 4-D file of one volume: (X, Y, Z, 1)
    zero = _stored_zero(stored.dtype, slope, inter)
    if zero is None:
        text = (
            f"{source}: no {stored.dtype} value maps to 0 under scl_slope {slope} and scl_inter {inter}; the masked "
            "image is written as float32 physical values"
        )
        log.warning("%s", text)
        warnings.append(text)
        values = np.where(inside, image.get_fdata(dtype=np.float32), np.float32(0))
        header = image.header.copy()
        header.set_data_dtype(np.float32)
        out = type(image)(values, None, header=header)
        out.header.set_slope_inter(1.0, 0.0)
    else:
        values = np.where(inside, stored, stored.dtype.type(zero)).astype(stored.dtype, copy=False)
        out = type(image)(values, None, header=image.header.copy())
        if image.header.has_data_slope:  # nibabel resets the scaling of an image made from an array: restore it
            out.header.set_slope_inter(slope, inter)

    return values, lambda tmp: nib.save(out, str(tmp))


def _stored_zero(dtype: np.dtype, slope: float, inter: float) -> float | None:
    """The stored value ``v`` with ``v * slope + inter == 0`` that ``dtype`` holds exactly, or ``None``."""
    slope = 1.0 if not np.isfinite(slope) or slope == 0 else float(slope)
    inter = 0.0 if not np.isfinite(inter) else float(inter)
    value = -inter / slope
    if dtype.kind == "f":
        return value
    if value != round(value):
        return None
    info = np.iinfo(dtype)
    return value if info.min <= value <= info.max else None


def _from_scan(scan: Scan, mask: np.ndarray) -> tuple[np.ndarray, Callable[[Path], None]]:
    """The values to write and how to save them, for an input that is not NIfTI: the voxels as read."""
    import SimpleITK as sitk

    values = np.where(mask, scan.array, scan.array.dtype.type(0))
    return values, lambda tmp: sitk.WriteImage(scan.to_sitk(values), str(tmp), True)
