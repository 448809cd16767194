"""Transformed copies of the sample head: the ways another person's scan differs from the training subject.

Each copy is an image and its reference mask on the copy's own grid, written as NIfTI with SimpleITK:

    lsa            reoriented (x left, y superior, z anterior), 1 mm
    oblique        rotated 15 degrees about two axes, 1.2 x 1.2 x 1.5 mm
    thick_2x2x3    resampled to 2 x 2 x 3 mm (a clinical thick-slice scan)
    fine_0.5mm     resampled to 0.5 mm isotropic (362 x 434 x 362)
    remapped       intensities through a non-linear curve into a 12-bit range (another scanner's scale)
    bias           a strong smooth multiplicative bias field (x0.6 .. x1.5 across the head)
    noise          Rician noise, sigma 4% of the white-matter intensity
    cropped        the top 40 mm of the volume (into the brain) outside the field of view
    combined       LSA, 1.2 x 1.2 x 2 mm, remapped, bias field and noise together

Usage: ``python benchmarks/support/copies.py OUT_DIR`` (writes OUT_DIR/images/<name>.nii.gz and
OUT_DIR/labels/sample/...).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_IMAGE = ROOT / "sample_data" / "images" / "colin27.nii.gz"
SAMPLE_LABEL = ROOT / "sample_data" / "labels" / "colin27.nii.gz"
LSA = (-1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0)


def regrid(img: sitk.Image, spacing, direction, interp) -> sitk.Image:
    """``img`` resampled onto a grid of this spacing and direction covering the same physical box."""
    d = np.array(direction, dtype=float).reshape(3, 3)
    corners = [
        img.TransformContinuousIndexToPhysicalPoint([c * (s - 1) for c, s in zip(k, img.GetSize(), strict=True)])
        for k in np.ndindex(2, 2, 2)
    ]
    local = np.array(corners) @ d
    lo, hi = local.min(0), local.max(0)
    n = [int(np.ceil((h - low) / s)) + 1 for low, h, s in zip(lo, hi, spacing, strict=True)]
    grid = sitk.Image(n, img.GetPixelID())
    grid.SetSpacing(tuple(float(s) for s in spacing))
    grid.SetDirection(tuple(float(v) for v in d.flatten()))
    grid.SetOrigin(tuple(d @ lo))
    return sitk.Resample(img, grid, sitk.Transform(), interp, 0)


def _with_array(img: sitk.Image, array: np.ndarray) -> sitk.Image:
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(img)
    return out


def _bias(img: sitk.Image, rng: np.random.Generator) -> sitk.Image:
    a = sitk.GetArrayFromImage(img).astype(np.float32)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in a.shape], indexing="ij")
    field = np.exp(0.45 * x - 0.3 * y * z + 0.25 * z**2 - 0.2 * y)
    return _with_array(img, (a * field.astype(np.float32)).astype(np.float32))


def _noise(img: sitk.Image, rng: np.random.Generator, fraction: float = 0.04) -> sitk.Image:
    a = sitk.GetArrayFromImage(img).astype(np.float32)
    sigma = fraction * np.percentile(a, 99)
    real = a + rng.normal(0, sigma, a.shape)
    imag = rng.normal(0, sigma, a.shape)
    return _with_array(img, np.sqrt(real**2 + imag**2).astype(np.float32))


def _remap(img: sitk.Image) -> sitk.Image:
    a = sitk.GetArrayFromImage(img).astype(np.float32) / 255.0
    return _with_array(img, (3000 * a**0.7 + 150).astype(np.int16))


def _crop_top(img: sitk.Image, mm: float = 40.0) -> sitk.Image:
    n = int(round(mm / img.GetSpacing()[2]))
    size = list(img.GetSize())
    size[2] -= n
    return sitk.RegionOfInterest(img, size, [0, 0, 0])  # sample is RAS-like: the top of the head is at high z


def _recipes() -> dict[str, tuple]:
    """{name: (geometry(img, interp) applied to the image and its masks, intensity(img) for the image only)}."""
    rng = np.random.default_rng(7)
    rot = sitk.Euler3DTransform((0, 0, 0), np.deg2rad(15), 0, np.deg2rad(15)).GetMatrix()
    same = None
    return {
        "lsa": (lambda x, i: regrid(x, (1, 1, 1), LSA, i), same),
        "oblique": (lambda x, i: regrid(x, (1.2, 1.2, 1.5), rot, i), same),
        "thick_2x2x3": (lambda x, i: regrid(x, (2, 2, 3), x.GetDirection(), i), same),
        "fine_0.5mm": (lambda x, i: regrid(x, (0.5,) * 3, x.GetDirection(), i), same),
        "remapped": (same, _remap),
        "bias": (same, lambda x: _bias(x, rng)),
        "noise": (same, lambda x: _noise(x, rng)),
        "cropped": (lambda x, i: _crop_top(x), same),
        "combined": (
            lambda x, i: regrid(x, (1.2, 1.2, 2.0), LSA, i),
            lambda x: _noise(_bias(_remap(x), rng), rng, 0.03),
        ),
    }


def make_copy_cases(
    out: Path, references: dict[str, Path], names: list[str] | None = None, image: Path = SAMPLE_IMAGE
) -> dict[str, tuple[Path, dict[str, Path]]]:
    """Write the copies of ``image`` and of each reference mask ({definition: mask file}, same grid as the image):
    OUT/images/<name>.nii.gz and OUT/labels/<definition>/<name>.nii.gz. Returns {name: (image, {definition: mask})}.
    """
    t1 = sitk.ReadImage(str(image), sitk.sitkFloat32)
    masks = {ref: sitk.ReadImage(str(path), sitk.sitkUInt8) for ref, path in references.items()}
    written = {}
    for name, (geometry, intensity) in _recipes().items():
        if names and name not in names:
            continue
        img = t1 if geometry is None else geometry(t1, sitk.sitkLinear)
        if intensity is not None:
            img = intensity(img)
        elif img.GetPixelID() == sitk.sitkFloat32:  # geometry only: stored as integers, as scanners do
            img = sitk.Cast(sitk.Round(img), sitk.sitkInt16)
        ip = out / "images" / f"{name}.nii.gz"
        ip.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(img, str(ip))
        labels = {}
        for ref, mask in masks.items():
            lp = out / "labels" / ref / f"{name}.nii.gz"
            lp.parent.mkdir(parents=True, exist_ok=True)
            m = mask if geometry is None else geometry(mask, sitk.sitkNearestNeighbor)
            sitk.WriteImage(sitk.Cast(m, sitk.sitkUInt8), str(lp))
            labels[ref] = lp
        written[name] = (ip, labels)
    return written


def make_copies(out: Path, names: list[str] | None = None) -> dict[str, tuple[Path, Path]]:
    """Write the copies with the sample's own mask; returns {name: (image path, label path)}."""
    cases = make_copy_cases(out, {"sample": SAMPLE_LABEL}, names)
    return {name: (image, labels["sample"]) for name, (image, labels) in cases.items()}


if __name__ == "__main__":
    for name, (ip, _) in make_copies(Path(sys.argv[1])).items():
        print(name, ip)
