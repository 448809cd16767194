"""A scan file's header checked before its voxels are read: every bound that keeps a lying header from
allocating gigabytes or placing voxels by a guess.

NIfTI (nibabel's header): the voxel bytes the file really holds (gzip members counted as a stream, never held), a
zero or non-finite voxel size as the file stores it, orientation matrices that can place voxels, and a qform and
sform that disagree (a warning). NRRD and MetaImage (SimpleITK's header): complex voxels, the voxel count, a
detached data file that is a device or pipe, lies outside the header's folder (a warning) or is too short.
:mod:`medfcn.data.reader` calls these before it reads; :mod:`medfcn.data.limits` owns the voxel bound.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import numpy as np

from medfcn.data.limits import check_voxels
from medfcn.data.writer import nifti_forms
from medfcn.errors import ScanReadError, UnsupportedScanError

__all__ = [
    "COMPLEX_REFUSAL",
    "check_nifti_size",
    "check_raw_pixdim",
    "check_nifti_geometry",
    "check_itk_header",
    "forms_disagree",
]

log = logging.getLogger(__name__)

COMPLEX_REFUSAL = "medfcn segments real-valued scans: save the magnitude (abs) as a real image first"


def check_nifti_size(path: Path, nii) -> None:
    """Refuse a NIfTI whose header promises more voxel bytes than the file holds, before any memory is allocated
    for them (a damaged header in a small file would otherwise allocate gigabytes, then fail)."""
    header = nii.header
    needed = int(np.prod(header.get_data_shape(), dtype=np.float64)) * header.get_data_dtype().itemsize
    needed += int(header.get_data_offset())
    if path.name.lower().endswith(".gz"):
        with open(path, "rb") as f:  # gzip's trailer: the last member's uncompressed size modulo 2**32
            f.seek(-4, os.SEEK_END)
            held = int.from_bytes(f.read(4), "little")
        if needed >= 1 << 32:  # the trailer wrapped: deflate compresses at most ~1032:1
            held = path.stat().st_size * 1032
        elif held < needed:  # several gzip members (bgzip, pigz -i, cat a.gz b.gz): count what they hold
            held = _gzip_bytes(path, needed)
    else:
        held = path.stat().st_size
    if held < needed:
        raise ScanReadError(
            f"{path}: truncated or a damaged header: its header promises {needed:,} bytes of voxels, the file holds "
            f"{held:,}"
        )


def _gzip_bytes(path: Path, enough: int) -> int:
    """The uncompressed bytes of every gzip member of ``path``, counted as a stream (never held) and no further than
    ``enough``; a damaged stream counts what decompressed before the damage."""
    import zlib

    total, d = 0, zlib.decompressobj(zlib.MAX_WBITS | 16)
    with open(path, "rb") as f:
        while total < enough:
            data = f.read(1 << 20)
            if not data:
                break
            try:
                while data and total < enough:
                    total += len(d.decompress(data, 1 << 24))
                    if d.eof:  # the next member starts in what is left
                        data, d = d.unused_data, zlib.decompressobj(zlib.MAX_WBITS | 16)
                    else:
                        data = d.unconsumed_tail
            except zlib.error:
                break
    return total


def check_raw_pixdim(path: Path, nii) -> None:
    """Refuse a zero voxel size as the file holds it: nibabel's checks replace it by 1 mm on load, and so does ITK,
    whose spacing comes from pixdim even beside an sform (a guess, never what the file says)."""
    import nibabel as nib

    with nib.openers.ImageOpener(str(path)) as f:
        raw = type(nii.header).from_fileobj(f, check=False)
    pixdim = [float(v) for v in raw["pixdim"][1 : 1 + max(1, min(3, int(raw["dim"][0])))]]
    if not all(np.isfinite(pixdim)) or min(pixdim) == 0:
        placed = "no sform or qform gives one" if not (raw["sform_code"] or raw["qform_code"]) else "ITK reads pixdim"
        raise ScanReadError(f"{path}: voxel size (pixdim) {pixdim} is not three non-zero numbers ({placed})")


def check_nifti_geometry(nii, path: Path) -> None:
    """Refuse headers whose geometry cannot place voxels: non-finite or non-positive voxel sizes, NaN matrices."""
    header = nii.header
    zooms = np.asarray(header.get_zooms()[:3], dtype=float)
    if not np.all(np.isfinite(zooms)) or np.any(zooms <= 0):
        raise ScanReadError(f"{path}: voxel size (pixdim) {zooms.tolist()} is not three positive numbers")
    for name, (matrix, code) in (("sform", header.get_sform(coded=True)), ("qform", header.get_qform(coded=True))):
        if matrix is not None and code and not np.all(np.isfinite(matrix)):
            raise ScanReadError(f"{path}: its {name} orientation matrix holds NaN or infinite numbers")
    if not np.all(np.isfinite(nii.affine)) or abs(np.linalg.det(nii.affine[:3, :3])) < 1e-12:
        raise ScanReadError(f"{path}: its orientation (sform/qform) is degenerate or not finite")


def check_itk_header(path: Path, reader) -> list[str]:
    """Bound an ITK-read file (NRRD, MetaImage) by its header before its voxels are read; returns warnings.

    Refuses complex voxels, more voxels than :func:`~medfcn.data.limits.max_voxels`, a data file that is not a
    regular file (``/dev/urandom``, a pipe), and uncompressed voxels the data file is too short to hold. A data
    file outside the header's folder is read, with a warning.
    """
    import SimpleITK as sitk

    if reader.GetPixelID() in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        raise UnsupportedScanError(f"{path}: complex voxels; {COMPLEX_REFUSAL}")
    size = reader.GetSize()
    check_voxels(path, size)
    data, compressed = _detached_data(path)
    target = path if data is None else data
    notes = []
    if data is not None:
        try:
            st = os.stat(data)
        except OSError as e:
            raise ScanReadError(
                f"{path}: its data file {data} is missing or cannot be read ({e.strerror or e})"
            ) from None
        if not stat.S_ISREG(st.st_mode):
            raise ScanReadError(f"{path}: its data file {data} is not a regular file (a device or pipe); refused")
        folder = path.resolve().parent
        if folder not in Path(os.path.realpath(data)).parents:
            notes.append(f"{path}: its voxels are read from {data}, outside the header's folder {path.parent}")
            log.warning(notes[-1])
    if not compressed:
        component = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID(), reader.GetNumberOfComponents())
        needed = float(np.prod(np.asarray(size, dtype=float))) * component.GetSizeOfPixelComponent()
        needed *= reader.GetNumberOfComponents()
        held = os.stat(target).st_size
        if held < needed:
            raise ScanReadError(
                f"{target}: truncated or a damaged header: {path.name} promises {needed:,.0f} bytes of voxels, "
                f"the file holds {held:,}"
            )
    return notes


def _detached_data(path: Path) -> tuple[Path | None, bool]:
    """``(data file or None when the voxels follow the header, compressed?)`` from a MetaImage or NRRD header.

    A list or pattern of data files (``LIST``, ``%d``) is returned as ``None``, compressed: bounded by the voxel
    count only."""
    with open(path, "rb") as f:
        head = f.read(1 << 16).decode("latin-1")
    fields: dict[str, str] = {}
    nrrd = head.startswith("NRRD")
    for line in head.splitlines()[1 if nrrd else 0 :]:
        if nrrd and not line.strip():
            break  # the blank line that ends a NRRD header
        key, sep, value = line.partition(":" if nrrd else "=")
        if sep and not (nrrd and line.startswith("#")):
            fields[key.strip().lower()] = value.strip()
        if not nrrd and key.strip().lower() == "elementdatafile":
            break  # MetaImage: the last field
    if nrrd:
        name = fields.get("data file", fields.get("datafile"))
        compressed = fields.get("encoding", "raw").lower() not in ("raw",)
    else:
        name = fields.get("elementdatafile")
        compressed = fields.get("compresseddata", "false").lower() == "true"
    if name is None or (not nrrd and name.upper() == "LOCAL"):
        return None, compressed
    if name.upper().startswith("LIST") or "%" in name or " " in name.strip():
        return None, True
    data = Path(name)
    return (data if data.is_absolute() else path.parent / data), compressed


def forms_disagree(nii, path: Path) -> list[str]:
    """A warning when the qform and sform place the voxels differently (tools disagree on which to use)."""
    forms = nifti_forms(path)
    if forms is None:
        return []
    qform, _, sform, _ = forms
    shape = nii.header.get_data_shape()[:3]
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in shape], indexing="ij")).reshape(3, -1)
    corners = np.vstack([corners, np.ones(corners.shape[1])])
    gap = float(np.max(np.linalg.norm(((qform - sform) @ corners)[:3], axis=0)))
    text = (
        f"{path}: its qform and sform disagree (up to {gap:.3g} mm apart at the grid's corners); read as ITK reads "
        "it, and the label map keeps both forms as the scan has them: check which one your viewer uses"
    )
    log.warning(text)
    return [text]
