"""Small synthetic head-like volumes, written as real files in every format medfcn reads, and grid checks.

- ``head_volume(shape, seed)``: float32 (X, Y, Z) "head": a bright brain ellipsoid inside a skull shell, noise,
  and an off-centre blob so that a flipped axis shows.
- ``head_labels(shape)``: the matching label map (0 background, 1 brain, 2 the blob), uint8 (X, Y, Z).
- ``write_scan_file(path, array, affine, ...)``: NIfTI (nibabel), NRRD / MetaImage (SimpleITK) or a DICOM series
  folder (pydicom or SimpleITK), chosen by the path's suffix.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

ODD_SHAPE = (33, 37, 34)
_AXES = {"R": (1, 0, 0), "L": (-1, 0, 0), "A": (0, 1, 0), "P": (0, -1, 0), "S": (0, 0, 1), "I": (0, 0, -1)}
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def affine_from_codes(codes: str, spacing=(1.0, 1.2, 1.5), origin=(-20.0, 15.0, 30.0)) -> np.ndarray:
    """RAS affine whose index axes point along ``codes`` (e.g. ``"LSA"``: i to the left, j up, k forward)."""
    a = np.eye(4)
    a[:3, :3] = np.stack([_AXES[c] for c in codes], axis=1) * np.asarray(spacing, float)[None, :]
    a[:3, 3] = origin
    return a


def oblique_affine(spacing=(1.1, 0.9, 1.4), origin=(-25.0, 18.0, 12.0), degrees=(20.0, -12.0, 7.0)) -> np.ndarray:
    """RAS affine of a grid rotated about all three axes (an oblique acquisition)."""
    from scipy.spatial.transform import Rotation

    a = np.eye(4)
    a[:3, :3] = Rotation.from_euler("xyz", degrees, degrees=True).as_matrix() * np.asarray(spacing, float)[None, :]
    a[:3, 3] = origin
    return a


def lps_geometry(affine: np.ndarray) -> tuple[tuple, tuple, np.ndarray]:
    """(spacing, origin, direction 3 x 3) in LPS, ITK's terms, of a RAS affine."""
    lps = LPS_TO_RAS @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    return tuple(spacing.tolist()), tuple(lps[:3, 3].tolist()), lps[:3, :3] / spacing[None, :]


def head_volume(shape=ODD_SHAPE, seed: int = 0) -> np.ndarray:
    """A float32 head-like volume (X, Y, Z) in [0, ~1000]."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(x**2 / 0.8**2 + y**2 / 0.85**2 + z**2 / 0.75**2)
    vol = np.where(r < 0.75, 700.0, 0.0) + np.where((r >= 0.8) & (r < 0.95), 300.0, 0.0)
    vol += np.where((x - 0.35) ** 2 + (y + 0.3) ** 2 + (z - 0.2) ** 2 < 0.2**2, 250.0, 0.0)
    vol += rng.normal(0.0, 20.0, shape)
    return np.clip(vol, 0, None).astype(np.float32)


def head_labels(shape=ODD_SHAPE) -> np.ndarray:
    """uint8 label map of :func:`head_volume`: 1 brain, 2 the off-centre blob, 0 elsewhere."""
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(x**2 / 0.8**2 + y**2 / 0.85**2 + z**2 / 0.75**2)
    labels = (r < 0.75).astype(np.uint8)
    labels[(x - 0.35) ** 2 + (y + 0.3) ** 2 + (z - 0.2) ** 2 < 0.2**2] = 2
    return labels


# -- writers -----------------------------------------------------------------------------------------------------
def _write_nifti(path: Path, array: np.ndarray, affine: np.ndarray, slope: float | None, intercept: float) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    if slope is not None:
        img.header.set_slope_inter(slope, intercept)  # kept on save for integer data: stored * slope + inter
    nib.save(img, str(path))


def _sitk_image(array: np.ndarray, affine: np.ndarray):
    import SimpleITK as sitk

    spacing, origin, direction = lps_geometry(affine)
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(tuple(direction.flatten().tolist()))
    return img


def _dicom_slices(array, affine, slope, intercept):
    """Stored int16 slices, IPP and IOP (LPS) of a series; voxels = stored * slope + intercept."""
    spacing, origin, direction = lps_geometry(affine)
    stored = np.round((np.asarray(array, float) - intercept) / slope).astype(np.int16)
    iop = [*direction[:, 0], *direction[:, 1]]
    ipps = [np.asarray(origin) + k * spacing[2] * direction[:, 2] for k in range(array.shape[2])]
    return stored, spacing, iop, ipps


def write_dicom_pydicom(
    folder: Path,
    array,
    affine,
    *,
    slope=1.0,
    intercept=0.0,
    series_uid=None,
    series_number=1,
    names: list[str] | None = None,
    study_uid=None,
) -> list[Path]:
    """A DICOM MR series, one file per k-slice, written with pydicom. Rows run along j, columns along i."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    stored, spacing, iop, ipps = _dicom_slices(array, affine, slope, intercept)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = generate_uid()
    names = names or [f"slice{k:03d}.dcm" for k in range(array.shape[2])]
    paths = []
    for k, ipp in enumerate(ipps):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.Modality, ds.PatientName, ds.PatientID = "MR", "TEST^HEAD", "TEST"
        ds.SeriesNumber, ds.InstanceNumber = series_number, k + 1
        ds.ImagePositionPatient = [f"{v:.6f}" for v in ipp]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in iop]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
        ds.SliceThickness = f"{spacing[2]:.6f}"
        ds.Rows, ds.Columns = array.shape[1], array.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()  # (rows=j, cols=i)
        path = folder / names[k]
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


def write_dicom_sitk(
    folder: Path,
    array,
    affine,
    *,
    slope=1.0,
    intercept=0.0,
    series_uid="1.2.826.0.1.3680043.10.9.1",
    names: list[str] | None = None,
) -> list[Path]:
    """A DICOM MR series written slice by slice with SimpleITK (GDCM).

    GDCM's writer takes real values and stores ``(value - intercept) / slope`` itself, so ``array`` must hold
    values of that form (integers for slope 1).
    """
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    spacing, _, direction = lps_geometry(affine)
    _, _, iop, ipps = _dicom_slices(array, affine, slope, intercept)
    real = np.round(np.asarray(array, float)).astype(np.int32 if slope != 1 or intercept != 0 else np.int16)
    names = names or [f"slice{k:03d}.dcm" for k in range(array.shape[2])]
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("GDCMImageIO")  # names need not end in .dcm
    writer.KeepOriginalImageUIDOn()
    paths = []
    for k, ipp in enumerate(ipps):
        sl = sitk.GetImageFromArray(np.ascontiguousarray(real[:, :, k].T)[None])  # (1, rows=j, cols=i)
        sl.SetSpacing(spacing)
        sl.SetOrigin(tuple(ipp.tolist()))
        sl.SetDirection(tuple(direction.flatten().tolist()))
        tags = {
            "0008|0060": "MR",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.4",
            "0008|0018": f"{series_uid}.{k + 1}",
            "0020|000d": series_uid + ".0",
            "0020|000e": series_uid,
            "0020|0011": "1",
            "0020|0013": str(k + 1),
            "0010|0010": "TEST^HEAD",
            "0010|0020": "TEST",
            "0020|0037": "\\".join(f"{v:.8f}" for v in iop),
            "0020|0032": "\\".join(f"{v:.6f}" for v in ipp),
            "0018|0050": f"{spacing[2]:.6f}",
            "0028|0030": f"{spacing[1]:.6f}\\{spacing[0]:.6f}",
            "0028|1053": f"{slope:g}",
            "0028|1052": f"{intercept:g}",
        }
        for key, value in tags.items():
            sl.SetMetaData(key, value)
        writer.SetFileName(str(folder / names[k]))
        writer.Execute(sl)
        paths.append(folder / names[k])
    return paths


def shuffled_names(n: int, seed: int = 1) -> list[str]:
    """``n`` distinct file names in no relation to slice order (some without a .dcm suffix)."""
    rnd = random.Random(seed)
    names = [f"IM{v:06d}" + (".dcm" if v % 2 else "") for v in rnd.sample(range(10**6), n)]
    rnd.shuffle(names)
    return names


def write_scan_file(
    path: str | Path,
    array: np.ndarray,
    affine: np.ndarray,
    *,
    slope: float | None = None,
    intercept: float = 0.0,
    dicom_writer: str = "pydicom",
    **dicom_kwargs,
) -> Path:
    """Write ``array`` (X, Y, Z) on the RAS ``affine`` in the format named by ``path``'s suffix.

    ``.nii``/``.nii.gz``: nibabel (``slope`` sets scl_slope/scl_inter); ``.nrrd``/``.nhdr``/``.mha``/``.mhd``:
    SimpleITK;
    no suffix: a DICOM series folder (``dicom_writer`` ``"pydicom"`` or ``"sitk"``; ``slope``/``intercept`` become
    RescaleSlope/RescaleIntercept).
    """
    import SimpleITK as sitk

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        _write_nifti(path, array, affine, slope, intercept)
    elif name.endswith((".nrrd", ".nhdr", ".mha", ".mhd")):
        sitk.WriteImage(_sitk_image(array, affine), str(path), name.endswith(".nrrd"))
    elif "." not in name:
        write = {"pydicom": write_dicom_pydicom, "sitk": write_dicom_sitk}[dicom_writer]
        write(path, array, affine, slope=1.0 if slope is None else slope, intercept=intercept, **dicom_kwargs)
    else:
        raise ValueError(f"no writer for {path}")
    return path


# -- comparing grids ---------------------------------------------------------------------------------------------
def grid_of(image) -> dict:
    """Size, spacing, origin and direction of a SimpleITK image, as plain tuples."""
    return {
        "size": tuple(image.GetSize()),
        "spacing": tuple(image.GetSpacing()),
        "origin": tuple(image.GetOrigin()),
        "direction": tuple(image.GetDirection()),
    }


def assert_same_grid(image, scan_or_image, *, atol=1e-4) -> None:
    """Assert a SimpleITK image has exactly the grid of a Scan or another SimpleITK image."""
    other = scan_or_image
    if hasattr(other, "to_sitk"):
        other = other.to_sitk(np.zeros(other.shape, np.uint8))
    a, b = grid_of(image), grid_of(other)
    assert a["size"] == b["size"]
    for key in ("spacing", "origin", "direction"):
        np.testing.assert_allclose(a[key], b[key], atol=atol, err_msg=key)


def voxels_on(image, scan) -> np.ndarray:
    """The voxels of SimpleITK ``image`` laid out on ``scan``'s grid (X, Y, Z).

    The two grids must be the same physical grid up to an order of the index axes (e.g. a DICOM series read with
    its slice axis reversed): every voxel centre of one is a voxel centre of the other. Asserts that.
    """
    import SimpleITK as sitk

    def lps_affine(spacing, origin, direction):
        a = np.eye(4)
        a[:3, :3] = np.reshape(direction, (3, 3)) * np.asarray(spacing)[None, :]
        a[:3, 3] = origin
        return a

    m = np.linalg.inv(lps_affine(image.GetSpacing(), image.GetOrigin(), image.GetDirection())) @ lps_affine(
        scan.spacing, scan.origin, scan.direction
    )
    perm = np.round(m[:3, :3])
    np.testing.assert_allclose(m[:3, :3], perm, atol=1e-4, err_msg="not the same grid up to an axis order")
    np.testing.assert_allclose(m[:3, 3], np.round(m[:3, 3]), atol=1e-3, err_msg="voxel centres do not coincide")
    assert sorted(np.abs(perm).sum(0).tolist()) == [1, 1, 1]
    corners = np.array(
        [[i, j, k, 1] for i in (0, scan.shape[0] - 1) for j in (0, scan.shape[1] - 1) for k in (0, scan.shape[2] - 1)]
    ).T
    mapped = np.round(m @ corners)[:3]
    assert (mapped.min(1) == 0).all() and (mapped.max(1) == np.asarray(image.GetSize()) - 1).all(), "corners differ"
    arr = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))
    ii, jj, kk = np.meshgrid(*[np.arange(n) for n in scan.shape], indexing="ij")
    idx = np.round(m[:3, :3] @ np.stack([ii.ravel(), jj.ravel(), kk.ravel()]) + m[:3, 3:4]).astype(int)
    return arr[idx[0], idx[1], idx[2]].reshape(scan.shape)


def oblique_lsa_affine() -> np.ndarray:
    """RAS affine of an LSA-stored grid (i to the left, j up, k forward) tilted about all three axes."""
    from scipy.spatial.transform import Rotation

    aff = affine_from_codes("LSA", spacing=(0.8, 1.2, 2.5), origin=(31.0, -17.5, 44.0))
    aff[:3, :3] = Rotation.from_euler("xyz", (9.0, -6.0, 14.0), degrees=True).as_matrix() @ aff[:3, :3]
    return aff
