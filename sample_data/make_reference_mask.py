"""How the sample's training label (brain + the CSF inside the skull's inner surface) was made.

    python sample_data/make_reference_mask.py --peers-python /path/to/peers/.venv/bin/python [--out sample_data]

Run with medfcn's environment (SimpleITK, scipy); ``--peers-python`` is a separate environment holding
``deepbet`` (MIT licence; its weights ship in its wheel) and ``nilearn`` (BSD-3; ships the MNI152 2009 template).
Neither is a medfcn dependency.

1. **The label** (``labels/colin27.nii.gz``): deepbet's brain mask of ``images/colin27.nii.gz`` (threshold 0.5,
   no dilation, CPU), then its largest connected component with holes filled. This is the field's definition
   of a brain mask (deepbet, HD-BET and SynthStrip all output brain + the CSF up to the skull's inner surface).
2. **The cross-check**: the MNI152 2009c (nonlinear symmetric) brain mask, the non-zero support of the
   brain-extracted template that nilearn's wheel ships, registered onto Colin27 with SimpleITK (affine, then a
   coarse B-spline, both at 4 and 2 mm; Mattes mutual information; fixed image: Colin27's T1 inside BET's mask
   dilated by 5 mm, so the registration never sees deepbet's output). Its Dice with the label is printed and written to
   ``labels_reference.json``; it is not used for training.
3. BET's mask (the former label, ``ch2bet > 0``) moves to ``labels_bet/`` beside it, for what it is, and both
   masks are resampled (nearest neighbour) onto the DICOM sample's grid.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

DEEPBET = """
import sys
from deepbet import run_bet
run_bet([sys.argv[1]], mask_paths=[sys.argv[2]], threshold=0.5, n_dilate=0, no_gpu=True)
"""
TEMPLATE = """
from pathlib import Path
import nilearn
print(Path(nilearn.__file__).parent / "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
"""


def clean(mask: np.ndarray) -> np.ndarray:
    """Largest 26-connected component, holes filled (per slice along each axis and in 3-D)."""
    lab, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    if n > 1:
        sizes = ndimage.sum_labels(mask, lab, index=np.arange(1, n + 1))
        mask = lab == 1 + int(np.argmax(sizes))
    return ndimage.binary_fill_holes(mask)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def register_mni(t1: sitk.Image, bet: sitk.Image, template: sitk.Image) -> sitk.Image:
    """The template's non-zero support (its brain mask), warped onto ``t1``'s grid (uint8)."""
    fixed_mask = sitk.BinaryDilate(bet, [5, 5, 5])
    fixed = sitk.Cast(t1, sitk.sitkFloat32) * sitk.Cast(fixed_mask, sitk.sitkFloat32)
    moving = sitk.Cast(template, sitk.sitkFloat32)
    init = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.05, seed=27)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-4, 200)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2])
    reg.SetSmoothingSigmasPerLevel([2, 1])
    reg.SetInitialTransform(init, inPlace=False)
    affine = reg.Execute(fixed, moving)
    bspline = sitk.BSplineTransformInitializer(fixed, [6, 6, 6])
    reg2 = sitk.ImageRegistrationMethod()
    reg2.SetMetricAsMattesMutualInformation(32)
    reg2.SetMetricSamplingStrategy(reg2.RANDOM)
    reg2.SetMetricSamplingPercentage(0.05, seed=27)
    reg2.SetInterpolator(sitk.sitkLinear)
    reg2.SetOptimizerAsLBFGSB(1e-5, 30)
    reg2.SetShrinkFactorsPerLevel([4, 2])
    reg2.SetSmoothingSigmasPerLevel([2, 1])
    reg2.SetMovingInitialTransform(affine)
    reg2.SetInitialTransform(bspline, inPlace=True)
    reg2.Execute(fixed, moving)
    composite = sitk.CompositeTransform([affine, bspline])
    support = sitk.Cast(template > 0, sitk.sitkUInt8)
    return sitk.Resample(support, t1, composite, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


def main(peers_python: str, out: Path) -> None:
    t1_path = out / "images" / "colin27.nii.gz"
    t1 = sitk.ReadImage(str(t1_path))
    bet_dir = out / "labels_bet"
    bet_dir.mkdir(exist_ok=True)
    if not (bet_dir / "colin27.nii.gz").exists():  # first run: the old label is BET's
        for name in ("colin27.nii.gz", "colin27_dicom.nii.gz"):
            (bet_dir / name).write_bytes((out / "labels" / name).read_bytes())
    bet = sitk.ReadImage(str(bet_dir / "colin27.nii.gz"))
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "deepbet_mask.nii.gz"
        subprocess.run([peers_python, "-c", DEEPBET, str(t1_path), str(raw)], check=True)
        deep = sitk.ReadImage(str(raw))
    label = clean(sitk.GetArrayFromImage(deep) > 0)
    img = sitk.GetImageFromArray(label.astype(np.uint8))
    img.CopyInformation(t1)
    sitk.WriteImage(img, str(out / "labels" / "colin27.nii.gz"), True)
    dicom_grid = sitk.ReadImage(str(bet_dir / "colin27_dicom.nii.gz"))  # the grid medfcn reads the series on
    small = sitk.Resample(img, dicom_grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    sitk.WriteImage(small, str(out / "labels" / "colin27_dicom.nii.gz"), True)

    template_path = subprocess.run([peers_python, "-c", TEMPLATE], check=True, capture_output=True, text=True)
    template = sitk.ReadImage(template_path.stdout.strip())
    mni = sitk.GetArrayFromImage(register_mni(t1, bet, template)) > 0
    bet_arr = sitk.GetArrayFromImage(bet) > 0
    report = {
        "label": "deepbet 1.0.2 (threshold 0.5, no dilation), largest component, holes filled",
        "voxels": {"label": int(label.sum()), "bet": int(bet_arr.sum()), "mni152_registered": int(mni.sum())},
        "dice": {
            "label_vs_mni152_registered": round(dice(label, mni), 4),
            "label_vs_bet": round(dice(label, bet_arr), 4),
            "bet_vs_mni152_registered": round(dice(bet_arr, mni), 4),
        },
        "voxels_changed_by_cleaning": int((label != (sitk.GetArrayFromImage(deep) > 0)).sum()),
    }
    (out / "labels_reference.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers-python", required=True, help="python of an environment with deepbet and nilearn")
    parser.add_argument("--out", default=str(Path(__file__).parent), help="the sample_data folder")
    args = parser.parse_args()
    main(args.peers_python, Path(args.out))
    sys.exit(0)
