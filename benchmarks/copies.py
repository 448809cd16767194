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

Usage: ``python benchmarks/copies.py OUT_DIR`` (writes OUT_DIR/images/<name>.nii.gz and OUT_DIR/labels/...).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
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


def make_copies(out: Path, names: list[str] | None = None) -> dict[str, tuple[Path, Path]]:
    """Write the copies; returns {name: (image path, label path)}."""
    t1 = sitk.ReadImage(str(SAMPLE_IMAGE), sitk.sitkFloat32)
    mask = sitk.ReadImage(str(SAMPLE_LABEL), sitk.sitkUInt8)
    rng = np.random.default_rng(7)
    lin, nn = sitk.sitkLinear, sitk.sitkNearestNeighbor
    rot = sitk.Euler3DTransform((0, 0, 0), np.deg2rad(15), 0, np.deg2rad(15)).GetMatrix()
    recipes = {
        "lsa": lambda: (regrid(t1, (1, 1, 1), LSA, lin), regrid(mask, (1, 1, 1), LSA, nn)),
        "oblique": lambda: (regrid(t1, (1.2, 1.2, 1.5), rot, lin), regrid(mask, (1.2, 1.2, 1.5), rot, nn)),
        "thick_2x2x3": lambda: (
            regrid(t1, (2, 2, 3), t1.GetDirection(), lin),
            regrid(mask, (2, 2, 3), t1.GetDirection(), nn),
        ),
        "fine_0.5mm": lambda: (
            regrid(t1, (0.5,) * 3, t1.GetDirection(), lin),
            regrid(mask, (0.5,) * 3, t1.GetDirection(), nn),
        ),
        "remapped": lambda: (_remap(t1), mask),
        "bias": lambda: (_bias(t1, rng), mask),
        "noise": lambda: (_noise(t1, rng), mask),
        "cropped": lambda: (_crop_top(t1), _crop_top(mask)),
        "combined": lambda: (
            _noise(_bias(_remap(regrid(t1, (1.2, 1.2, 2.0), LSA, lin)), rng), rng, 0.03),
            regrid(mask, (1.2, 1.2, 2.0), LSA, nn),
        ),
    }
    written = {}
    for name, make in recipes.items():
        if names and name not in names:
            continue
        image, label = make()
        ip, lp = out / "images" / f"{name}.nii.gz", out / "labels" / f"{name}.nii.gz"
        ip.parent.mkdir(parents=True, exist_ok=True)
        lp.parent.mkdir(parents=True, exist_ok=True)
        if image.GetPixelID() == sitk.sitkFloat32 and name in (
            "lsa",
            "oblique",
            "thick_2x2x3",
            "fine_0.5mm",
            "cropped",
        ):
            image = sitk.Cast(sitk.Round(image), sitk.sitkInt16)
        sitk.WriteImage(image, str(ip))
        sitk.WriteImage(sitk.Cast(label, sitk.sitkUInt8), str(lp))
        written[name] = (ip, lp)
    return written


if __name__ == "__main__":
    for name, (ip, _) in make_copies(Path(sys.argv[1])).items():
        print(name, ip)
