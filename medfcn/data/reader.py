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
import re
from pathlib import Path

import numpy as np

from medfcn._monai import import_monai, load_image

import_monai()  # before any MONAI import below: without the optional packages it would drag in

from monai.data import ImageReader  # noqa: E402
from monai.utils import MetaKeys  # noqa: E402

import medfcn.data.headers as headers  # noqa: E402
from medfcn.data.dicom_series import group_series, list_series  # noqa: E402
from medfcn.data.filenames import SCAN_SUFFIXES, strip_suffix  # noqa: E402
from medfcn.data.limits import check_voxels  # noqa: E402
from medfcn.data.scan import LPS_TO_RAS, Scan  # noqa: E402
from medfcn.errors import DicomSeriesError, ScanReadError, UnsupportedScanError  # noqa: E402

__all__ = ["SimpleITKReader", "read_scan", "read_label_map", "SCAN_SUFFIXES", "strip_suffix"]

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
                raise UnsupportedScanError(
                    f"{path}: complex voxels ({nii.get_data_dtype()}); {headers.COMPLEX_REFUSAL}"
                )
            headers.check_nifti_size(path, nii)  # first: "truncated" says more than "too many voxels" when both hold
            check_voxels(path, nii.header.get_data_shape())
            headers.check_raw_pixdim(path, nii)
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
        headers.check_nifti_geometry(nii, path)
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
        vol.warnings = headers.forms_disagree(nii, path)
        return vol

    def _read_itk(self, path: Path) -> _Volume:
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()  # the header only: bounded before any voxel is allocated
            notes = headers.check_itk_header(path, reader)
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


def _clean_non_finite(array: np.ndarray, path, label_map: bool = False) -> tuple[np.ndarray, list[str]]:
    if not np.issubdtype(array.dtype, np.floating):
        return array, []
    finite = np.isfinite(array)
    if finite.all():
        return array, []
    if label_map:  # a label id cannot be guessed: NaN for "not annotated" would become the map's lowest label
        n = int(array.size - np.count_nonzero(finite))
        raise UnsupportedScanError(
            f"{path}: a label map with {n} non-finite values (NaN or infinite); label maps hold label ids only"
        )
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
    return _read(Path(path), series_uid, case, files, label_map=False)


def read_label_map(
    path: str | Path, *, series_uid: str | None = None, case: str | None = None, files: tuple[Path, ...] = ()
) -> Scan:
    """A label map, read as :func:`read_scan` reads a scan, except that non-finite values are refused
    (:class:`UnsupportedScanError` naming the file), never replaced: a scan's NaN voxels become its minimum, but
    a label map's NaN ("not annotated", a broken export) would become a label. Evaluation and training read their
    label maps through here."""
    return _read(Path(path), series_uid, case, files, label_map=True)


def _read(path: Path, series_uid: str | None, case: str | None, files: tuple[Path, ...], label_map: bool) -> Scan:
    loader = load_image(image_only=True, dtype=None)  # without the fallback readers' packages (itk)
    image = loader(str(path), reader=SimpleITKReader(series_uid=series_uid, files=files))
    meta = image.meta
    array = np.asarray(image.numpy())  # shares the tensor's memory: a C-ordered reader array is never copied
    array, warnings = _clean_non_finite(array, path, label_map)
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
