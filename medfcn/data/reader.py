"""Reading scans through MONAI's ``LoadImage`` with a SimpleITK-backed ``ImageReader``.

Formats: NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``), MetaImage (``.mha``, ``.mhd``) and DICOM
series (a folder of slice files; see :mod:`medfcn.data.dicom_series`). The geometry is what SimpleITK reads from the
file, so a label map written on it (:func:`medfcn.data.writer.write_labels`) overlays the scan in any viewer.

NIfTI voxels are read by nibabel, which detects truncated and corrupt gzip streams that SimpleITK reads
without complaint; their geometry comes from SimpleITK's reading of the same header.

Every read is bounded by its header before anything is allocated (:mod:`medfcn.data.limits`): the voxel count, and
where the voxels are stored uncompressed, the bytes the file holds. A MetaImage or NRRD header whose data file is a
device or pipe (``/dev/urandom``) is refused; one whose data file lies outside the header's folder is read, with a
warning in :attr:`Scan.warnings`. Complex voxels are refused (their phase is not a scan's intensity).

Non-finite voxels (NaN, +-inf) are *cleaned*, not refused: they are replaced by the lowest finite value of the
scan (background in MRI and CT) and a warning is recorded in :attr:`Scan.warnings` and logged. A scan with
no finite voxel is refused.

NIfTI voxels are read slab by slab straight into one C-ordered array of the file's voxel type, so that neither
gzip (which reads a whole stream into a temporary and copies it) nor ``LoadImage``'s conversion to a contiguous
tensor holds a second copy of them (114 MB each for a 0.5 mm int16 head).

>>> from medfcn.data.reader import read_scan
>>> scan = read_scan("sample_data/images/colin27.nii.gz")  # from the repository's root
>>> scan.shape, tuple(float(s) for s in scan.spacing)
((181, 217, 181), (1.0, 1.0, 1.0))
"""

from __future__ import annotations

import logging
import os
import re
import stat
from pathlib import Path

import numpy as np

from medfcn._monai import import_monai

import_monai()  # before any MONAI import below: without the optional packages it would drag in

from monai.data import ImageReader  # noqa: E402
from monai.transforms import LoadImage  # noqa: E402
from monai.utils import MetaKeys  # noqa: E402

from medfcn.data.dicom_series import group_series, list_series  # noqa: E402
from medfcn.data.filenames import SCAN_SUFFIXES, strip_suffix  # noqa: E402
from medfcn.data.limits import check_voxels  # noqa: E402
from medfcn.data.scan import LPS_TO_RAS, Scan  # noqa: E402
from medfcn.data.writer import nifti_forms  # noqa: E402
from medfcn.errors import DicomSeriesError, ScanReadError, UnsupportedScanError  # noqa: E402

__all__ = ["SimpleITKReader", "read_scan", "SCAN_SUFFIXES", "strip_suffix"]

log = logging.getLogger(__name__)


class _Volume:
    """What :meth:`SimpleITKReader.read` returns: voxels (X, Y, Z) and ITK geometry."""

    def __init__(self, array: np.ndarray, spacing, origin, direction, series_uid: str | None = None) -> None:
        self.array, self.spacing, self.origin, self.direction = array, spacing, origin, direction
        self.series_uid = series_uid
        self.warnings: list[str] = []


class SimpleITKReader(ImageReader):
    """A MONAI ``ImageReader`` for NIfTI, NRRD, MetaImage and DICOM series folders, backed by SimpleITK.

    Args:
        series_uid: for a folder holding several DICOM series, the SeriesInstanceUID to read.
        files: the DICOM files of that series (they may lie in sub-folders); default: those directly in the folder.

    Raises (from :meth:`read`): :class:`ScanReadError` for unreadable files, :class:`UnsupportedScanError`
    for images that are not 3-D, :class:`DicomSeriesError` for series that cannot form a volume.
    """

    def __init__(self, series_uid: str | None = None, files: tuple[Path, ...] = ()) -> None:
        super().__init__()
        self.series_uid = series_uid
        self.files = tuple(files)

    def verify_suffix(self, filename) -> bool:
        names = [filename] if isinstance(filename, str | Path) else list(filename)
        return all(Path(n).is_dir() or str(n).lower().endswith(SCAN_SUFFIXES) for n in names)

    def read(self, data, **kwargs) -> _Volume:
        names = [data] if isinstance(data, str | Path) else list(data)
        if len(names) != 1:
            raise ScanReadError(f"{names}: read one scan at a time")
        path = Path(names[0])
        if not path.exists():
            raise ScanReadError(f"{path}: no such file or folder")
        if path.is_dir():
            return self._read_series(path)
        try:
            open(path, "rb").close()
        except PermissionError:
            raise ScanReadError(f"{path}: permission denied (the file is not readable by this user)") from None
        if path.stat().st_size == 0:
            raise ScanReadError(f"{path}: empty file")
        if path.name.lower().endswith((".nii", ".nii.gz")):
            return self._read_nifti(path)
        return self._read_itk(path)

    def get_data(self, img: _Volume) -> tuple[np.ndarray, dict]:
        lps = np.eye(4)
        lps[:3, :3] = np.asarray(img.direction).reshape(3, 3) * np.asarray(img.spacing)[None, :]
        lps[:3, 3] = img.origin
        affine = LPS_TO_RAS @ lps
        meta = {
            "warnings": list(img.warnings),
            "affine": affine,
            "original_affine": affine.copy(),
            "spatial_shape": np.asarray(img.array.shape),
            MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan"),
            "spacing": np.asarray(img.spacing, dtype=float),
            "origin_lps": np.asarray(img.origin, dtype=float),
            "direction_lps": np.asarray(img.direction, dtype=float).reshape(3, 3),
        }
        if img.series_uid is not None:
            meta["series_uid"] = img.series_uid
        return img.array, meta

    # -- formats -----------------------------------------------------------------------------------------
    def _read_nifti(self, path: Path) -> _Volume:
        import nibabel as nib
        import SimpleITK as sitk

        try:
            nii = nib.load(str(path), mmap=False, keep_file_open=True)  # one gzip stream for all the slabs
            if nii.get_data_dtype().fields is not None:  # RGB / structured voxels
                raise UnsupportedScanError(
                    f"{path}: an RGB or multi-component image ({nii.get_data_dtype()}); "
                    "medfcn segments scalar 3-D scans"
                )
            if nii.get_data_dtype().kind == "c":
                raise UnsupportedScanError(f"{path}: complex voxels ({nii.get_data_dtype()}); {_COMPLEX}")
            _check_nifti_size(path, nii)  # first: "truncated" says more than "too many voxels" when both hold
            check_voxels(path, nii.header.get_data_shape())
            _check_raw_pixdim(path, nii)
            proxy = nii.dataobj
            scaled = getattr(proxy, "slope", 1.0) != 1.0 or getattr(proxy, "inter", 0.0) != 0.0
            # scl_slope/scl_inter applied in float32 (as SimpleITK does), not nibabel's default float64
            array = nii.get_fdata(dtype=np.float32) if scaled else _read_unscaled(proxy)
        except (UnsupportedScanError, ScanReadError):
            raise
        except Exception as e:  # nibabel raises many types for corrupt files
            raise ScanReadError(f"{path}: not a readable NIfTI file ({_first_line(e)})") from None
        if not array.dtype.isnative:  # big-endian files: torch and MONAI take native byte order only
            array = array.astype(array.dtype.newbyteorder("="))
        array = _squeeze_to_3d(array, path)
        _check_nifti_geometry(nii, path)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError as e:
            if isinstance(nii, nib.Nifti2Image):  # SimpleITK reads NIfTI-1 headers only: take nibabel's geometry
                return _Volume(array, *_geometry_from_affine(nii.affine))
            raise ScanReadError(f"{path}: SimpleITK cannot read its header ({_itk_message(e)})") from None
        spacing, origin, direction = _geometry_3d(reader, path)
        vol = _Volume(array, spacing, origin, direction)
        vol.warnings = _forms_disagree(nii, path)
        return vol

    def _read_itk(self, path: Path) -> _Volume:
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()  # the header only: bounded before any voxel is allocated
            notes = _check_itk_header(path, reader)
            image = reader.Execute()
        except RuntimeError as e:
            raise ScanReadError(f"{path}: not a readable image ({_itk_message(e)})") from None
        vol = _from_sitk(image, path)
        vol.warnings = notes
        return vol

    def _read_series(self, folder: Path) -> _Volume:
        import SimpleITK as sitk

        series = group_series(list(self.files)) if self.files else list_series(folder)
        if not series:
            raise ScanReadError(f"{folder}: no DICOM series in this folder")
        if self.series_uid is not None:
            chosen = [s for s in series if s.uid == self.series_uid]
            if not chosen:
                raise DicomSeriesError(f"{folder}: no DICOM series with SeriesInstanceUID {self.series_uid}")
            s = chosen[0]
        elif len(series) == 1:
            s = series[0]
        else:
            raise DicomSeriesError(f"{folder}: holds {len(series)} DICOM series; name one by its SeriesInstanceUID")
        if s.error is not None:
            raise DicomSeriesError(s.error)
        try:
            if len(s.files) == 1:  # a multi-frame file
                image = sitk.ReadImage(str(s.files[0]), imageIO="GDCMImageIO")
            else:
                reader = sitk.ImageSeriesReader()
                reader.SetImageIO("GDCMImageIO")  # named: ITK's guess misses DICOM files without the preamble
                reader.SetFileNames([str(f) for f in s.files])
                image = reader.Execute()
        except RuntimeError as e:
            raise ScanReadError(f"{folder}: DICOM series {s.uid} cannot be read ({_itk_message(e)})") from None
        vol = _from_sitk(image, folder)
        vol.series_uid = s.uid
        vol.warnings = list(s.warnings)
        return vol


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _itk_message(e: RuntimeError) -> str:
    """The useful part of an ITK exception: its description, without file and line of the C++ source."""
    text = str(e)
    if "Unable to determine ImageIO reader" in text:
        return "no image reader recognises its contents"
    if "MetaImageIO" in text and "File cannot be read" in text:
        # MetaIO adds a stale errno ("No such file or directory") even when the file is there but truncated.
        return "its header or voxel data cannot be read: truncated, or its data file is missing"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("Description:"):
            return ln.removeprefix("Description:").strip()
    for ln in lines:
        if "ITK ERROR:" in ln:  # "ITK ERROR: SomeImageIO(0x55...): what went wrong"
            return re.sub(r"^.*ITK ERROR:\s*\w+\(0x[0-9a-fA-F]+\):\s*", "", ln)
    last = lines[-1] if lines else "unknown error"
    return last.removeprefix("sitk::ERROR:").strip()


def _squeeze_to_3d(array: np.ndarray, path: Path) -> np.ndarray:
    shape = array.shape
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    dims = " x ".join(str(s) for s in shape)
    if array.ndim > 3:
        raise UnsupportedScanError(
            f"{path}: a {array.ndim}-D image ({dims}); medfcn segments 3-D scans, split it into 3-D volumes first"
        )
    if array.ndim < 3:
        raise UnsupportedScanError(f"{path}: a 2-D image ({dims}); medfcn segments 3-D scans")
    if sorted(array.shape)[1] < 2:
        raise UnsupportedScanError(f"{path}: a {dims} image, too small to be a volume; medfcn segments 3-D scans")
    if min(array.shape) < 2:
        raise UnsupportedScanError(f"{path}: a 2-D image ({dims}: a single slice); medfcn segments 3-D scans")
    return array


def _read_unscaled(proxy) -> np.ndarray:
    """The voxels of an unscaled NIfTI (nibabel's ``dataobj``) in native byte order, C-ordered (what ``LoadImage``
    keeps without a copy), read slab by slab along the third axis: read whole, a gzip stream holds its
    decompressed bytes twice (``GzipFile.readinto`` reads into a temporary and copies; 114 MB for a 0.5 mm int16
    head)."""
    array = np.empty(proxy.shape, dtype=proxy.dtype.newbyteorder("="), order="C")
    if array.ndim < 3 or array.size == 0:
        array[...] = np.asanyarray(proxy)
        return array
    step = max(1, (8 << 20) // array[:, :, :1].nbytes)  # slices per slab: ~8 MB
    for k in range(0, array.shape[2], step):
        array[:, :, k : k + step] = proxy[:, :, k : k + step]
    return array


_COMPLEX = "medfcn segments real-valued scans: save the magnitude (abs) as a real image first"


def _check_nifti_size(path: Path, nii) -> None:
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


def _check_raw_pixdim(path: Path, nii) -> None:
    """Refuse a zero voxel size as the file holds it: nibabel's checks replace it by 1 mm on load, and so does ITK,
    whose spacing comes from pixdim even beside an sform (a guess, never what the file says)."""
    import nibabel as nib

    with nib.openers.ImageOpener(str(path)) as f:
        raw = type(nii.header).from_fileobj(f, check=False)
    pixdim = [float(v) for v in raw["pixdim"][1 : 1 + max(1, min(3, int(raw["dim"][0])))]]
    if not all(np.isfinite(pixdim)) or min(pixdim) == 0:
        placed = "no sform or qform gives one" if not (raw["sform_code"] or raw["qform_code"]) else "ITK reads pixdim"
        raise ScanReadError(f"{path}: voxel size (pixdim) {pixdim} is not three non-zero numbers ({placed})")


def _check_nifti_geometry(nii, path: Path) -> None:
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


def _check_itk_header(path: Path, reader) -> list[str]:
    """Bound an ITK-read file (NRRD, MetaImage) by its header before its voxels are read; returns warnings.

    Refuses complex voxels, more voxels than :func:`~medfcn.data.limits.max_voxels`, a data file that is not a
    regular file (``/dev/urandom``, a pipe), and uncompressed voxels the data file is too short to hold. A data
    file outside the header's folder is read, with a warning.
    """
    import SimpleITK as sitk

    if reader.GetPixelID() in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        raise UnsupportedScanError(f"{path}: complex voxels; {_COMPLEX}")
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


def _forms_disagree(nii, path: Path) -> list[str]:
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


def _geometry_from_affine(affine: np.ndarray):
    """ITK spacing, origin and direction (LPS) of a RAS voxel-to-world ``affine``."""
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=float)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    return tuple(spacing.tolist()), tuple(lps[:3, 3].tolist()), lps[:3, :3] / spacing[None, :]


def _geometry_3d(reader, path: Path):
    """Spacing, origin and direction of the first three axes of an image (or its header)."""
    n = reader.GetDimension()
    if n < 3:
        raise UnsupportedScanError(f"{path}: a 2-D image; medfcn segments 3-D scans")
    spacing = tuple(reader.GetSpacing()[:3])
    origin = tuple(reader.GetOrigin()[:3])
    direction = np.asarray(reader.GetDirection()).reshape(n, n)[:3, :3]
    if not (np.all(np.isfinite(spacing)) and min(spacing) > 0):
        raise ScanReadError(f"{path}: voxel spacing {list(spacing)} is not three positive numbers")
    if not (np.all(np.isfinite(origin)) and np.all(np.isfinite(direction))):
        raise ScanReadError(f"{path}: its origin or direction holds NaN or infinite numbers")
    return spacing, origin, direction


def _from_sitk(image, path: Path) -> _Volume:
    import SimpleITK as sitk

    if image.GetNumberOfComponentsPerPixel() > 1:
        raise UnsupportedScanError(
            f"{path}: a vector image ({image.GetNumberOfComponentsPerPixel()} components "
            "per voxel); medfcn segments scalar 3-D scans"
        )
    array = np.transpose(sitk.GetArrayFromImage(image))  # (Z, Y, X) -> (X, Y, Z); 4-D: (T, Z, Y, X) -> (X, Y, Z, T)
    array = _squeeze_to_3d(array, path)
    spacing, origin, direction = _geometry_3d(image, path)
    return _Volume(array, spacing, origin, direction)


def _clean_non_finite(array: np.ndarray, path) -> tuple[np.ndarray, list[str]]:
    if not np.issubdtype(array.dtype, np.floating):
        return array, []
    finite = np.isfinite(array)
    if finite.all():
        return array, []
    if not finite.any():
        raise UnsupportedScanError(f"{path}: no finite voxel (all NaN or infinite)")
    n = int(array.size - np.count_nonzero(finite))
    low = float(array[finite].min())
    array = np.where(finite, array, low).astype(array.dtype, copy=False)
    msg = f"{path}: {n} non-finite voxels (NaN or infinite) replaced by the scan's minimum {low:g}"
    log.warning(msg)
    return array, [msg]


def read_scan(
    path: str | Path, *, series_uid: str | None = None, case: str | None = None, files: tuple[Path, ...] = ()
) -> Scan:
    """Read a 3-D scan with its geometry through MONAI's ``LoadImage`` and :class:`SimpleITKReader`.

    Args:
        path: a NIfTI, NRRD or MetaImage file, or a folder holding a DICOM series.
        series_uid: which series to read from a folder holding several.
        files: the files of that series, when they lie in sub-folders of ``path`` (from discovery).
        case: the case name (default: the file name without its extension, or the folder's name).

    Returns:
        A :class:`Scan` with the file's voxel type (label maps stay integer), voxels ``(X, Y, Z)``.

    Raises:
        ScanReadError, UnsupportedScanError, DicomSeriesError: with a one-line message naming the file.
    """
    path = Path(path)
    loader = LoadImage(image_only=True, dtype=None)
    image = loader(str(path), reader=SimpleITKReader(series_uid=series_uid, files=files))
    meta = image.meta
    array = np.asarray(image.numpy())  # shares the tensor's memory: a C-ordered reader array is never copied
    array, warnings = _clean_non_finite(array, path)
    warnings = [*meta.get("warnings", []), *warnings]
    return Scan(
        array=array,
        spacing=tuple(meta["spacing"].tolist()),
        origin=tuple(meta["origin_lps"].tolist()),
        direction=np.asarray(meta["direction_lps"]),
        source=path,
        case=case if case is not None else strip_suffix(path.name),
        series_uid=meta.get("series_uid"),
        warnings=warnings,
    )
