"""Scans for the quality verdict: the model's own training data (to record its expectations) and a test set.

**Calibration** (:func:`calibration_cases`; the training data of the bundled model and renderings of it, as
``medfcn train`` draws them): the two training heads as they are (``sample_data``'s colin27 and robex_head), their
clinical validation renderings (``clinical_heads.VALIDATION``) with three seeds, and ROBEX's head re-rendered in
T2-, PD- and FLAIR-like contrast (training synthesises other contrasts). Nothing else sets a threshold.

**Test** (:func:`test_cases`), never used to set anything:

- ``clinical``: the issue-22 test renderings of both heads (``clinical_heads.TEST``, seed 0);
- ``degraded``: copies of Colin27 (``copies.py``: reoriented, oblique, thick, remapped, bias, noise, cropped,
  combined) and of ROBEX's head with Rician noise of 4-32 % of its white matter, ghosts of 10-40 %, a strong bias,
  20-60 mm cut off the top, and wrong headers (voxel size said to be twice or half what it is; two axes swapped);
- ``contrast``: Colin27 re-rendered T2-, PD- and FLAIR-like;
- ``foreign`` (not a head MRI; no reference): uniform noise, a 3-D ellipsoid phantom, a microscopy stack built
  from scikit-image's ``cell`` image (a real light-microscopy frame, stacked with drift), pydicom's CT slice
  ``CT_small.dcm`` stacked into a 5 mm series, a CT-like rendering of Colin27's tissue classes (Hounsfield units),
  and nibabel's EPI test volume ``example4d.nii.gz`` (a real fMRI head, 2 x 2 x 2.2 mm, 24 slices).

Each case: ``{"image", "label" (or None), "group"}``; written once under ``out``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np

from support import clinical_heads
from support.copies import make_copies
from support.heads import CONTRASTS, head_classes, render

HEADS = clinical_heads.HEADS


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nii = nib.Nifti1Image(array, affine)
    nii.set_qform(affine, code=1)
    nii.set_sform(affine, code=1)
    nib.save(nii, path)
    return str(path)


def _head(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image, label = (nib.as_closest_canonical(nib.load(p)) for p in HEADS[name])
    return np.asanyarray(image.dataobj).astype(np.float32), np.asanyarray(label.dataobj) > 0, image.affine


def _contrasts(out: Path, head: str, seed: int) -> dict:
    t1, label, affine = _head(head)
    classes = head_classes(t1, label)
    rng = np.random.default_rng(seed)
    lab = _save(label.astype(np.uint8), affine, out / "labels" / f"{head}.nii.gz")
    return {
        f"{head}_{c}": {
            "image": _save(render(t1, classes, levels, rng), affine, out / "images" / f"{head}_{c}.nii.gz"),
            "label": lab,
            "group": "contrast",
        }
        for c, levels in CONTRASTS.items()
    }


def _renderings(out: Path, recipes: dict, seed: int, group: str) -> dict:
    cases = clinical_heads.build(out, HEADS, recipes, seed)
    return {
        f"{k}_s{seed}" if seed else k: {"image": c["image"], "label": c["label"], "group": group}
        for k, c in cases.items()
        if c["rendering"] != "original"
    }


def calibration_cases(out: Path) -> dict:
    stamp = out / "cases.json"
    if stamp.exists():
        return json.loads(stamp.read_text())
    cases = {h: {"image": str(i), "label": str(lab), "group": "training head"} for h, (i, lab) in HEADS.items()}
    for seed in (1000, 1001, 1002):
        cases.update(_renderings(out / f"val{seed}", clinical_heads.VALIDATION, seed, "validation rendering"))
    cases.update(_contrasts(out / "contrast", "robex_head", 31))
    stamp.write_text(json.dumps(cases, indent=1) + "\n")
    return cases


def _rician(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return np.sqrt((image + rng.normal(0, sigma, image.shape)) ** 2 + rng.normal(0, sigma, image.shape) ** 2)


def _degraded_robex(out: Path) -> dict:
    t1, label, affine = _head("robex_head")
    rng = np.random.default_rng(7)
    wm = float(np.percentile(t1[label], 90))
    lab = _save(label.astype(np.uint8), affine, out / "labels" / "robex_head.nii.gz")
    cases: dict = {}

    def add(name: str, image: np.ndarray, aff: np.ndarray = affine, ref: np.ndarray | None = None) -> None:
        path = _save(image.astype(np.float32), aff, out / "images" / f"robex_{name}.nii.gz")
        lp = (
            lab
            if ref is None and aff is affine
            else _save((label if ref is None else ref).astype(np.uint8), aff, out / "labels" / f"robex_{name}.nii.gz")
        )
        cases[f"robex_{name}"] = {"image": path, "label": lp, "group": "degraded"}

    for pct in (4, 8, 16, 32):
        add(f"noise{pct}", _rician(t1, pct / 100 * wm, rng))
    import torch

    from medfcn.training.clinical import ghost

    for g in (0.1, 0.2, 0.4):
        add(f"ghost{int(100 * g)}", ghost(torch.from_numpy(t1.copy()), 1, g).numpy())
    add("bias_strong", t1 * clinical_heads._bias(t1.shape, 1.5, rng))
    spacing = float(np.linalg.norm(affine[:3, 2]))
    for mm in (20, 40, 60):
        keep = t1.shape[2] - int(round(mm / spacing))
        top = np.flatnonzero(label.any(axis=(0, 1)))[-1]
        cut = min(keep, top + 1 - int(round(mm / spacing)))
        add(f"cut_top{mm}mm", t1[:, :, :cut], affine, label[:, :, :cut])
    for factor in (2.0, 0.5):
        wrong = affine.copy()
        wrong[:3, :3] *= factor
        add(f"header_voxels_x{factor:g}", t1, wrong, label)
    swapped = affine.copy()
    swapped[:3, [0, 2]] = affine[:3, [2, 0]]
    add("header_axes_swapped", t1, swapped, label)
    return cases


def _foreign(out: Path) -> dict:
    rng = np.random.default_rng(3)
    eye = np.diag([1.0, 1.0, 1.0, 1.0])
    cases = {}

    def add(name: str, image: np.ndarray, affine: np.ndarray) -> None:
        cases[name] = {
            "image": _save(image, affine, out / "images" / f"{name}.nii.gz"),
            "label": None,
            "group": "foreign",
        }

    add("noise_uniform", rng.uniform(0, 1000, (128, 128, 96)).astype(np.float32), eye)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in (128, 128, 128)], indexing="ij"))
    phantom = np.zeros(grid.shape[1:], np.float32)
    for centre, radii, value in (
        ((0, 0, 0), (0.69, 0.92, 0.81), 1.0),
        ((0, -0.02, 0), (0.66, 0.87, 0.78), -0.8),
        ((0.22, 0, 0), (0.11, 0.31, 0.22), -0.2),
        ((-0.22, 0, 0), (0.16, 0.41, 0.28), -0.2),
        ((0, 0.35, -0.15), (0.21, 0.25, 0.41), 0.1),
        ((0, 0.1, 0.25), (0.05, 0.05, 0.05), 0.1),
    ):
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1
        phantom[inside] += value
    add("phantom_shepp_logan_3d", (1000 * phantom.clip(0, None)).astype(np.float32), np.diag([1.5, 1.5, 1.5, 1]))
    from skimage import data

    cell = data.cell().astype(np.float32)
    stack = np.stack([np.roll(cell, (2 * k, k), axis=(0, 1)) for k in range(40)], axis=-1)
    add("microscopy_cell_stack", stack, np.diag([0.1, 0.1, 0.5, 1]))
    import pydicom
    from pydicom.data import get_testdata_file

    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = ct.pixel_array.astype(np.float32) * float(ct.RescaleSlope) + float(ct.RescaleIntercept)
    px = [float(v) for v in ct.PixelSpacing]
    add("ct_small_stacked", np.repeat(hu.T[:, :, None], 30, axis=2), np.diag([px[1], px[0], 5.0, 1]))
    t1, label, affine = _head("colin27")
    classes = head_classes(t1, label)
    levels = {0: -1000.0, 1: 8.0, 2: 40.0, 3: 28.0, 4: 900.0, 5: 50.0, 6: -90.0}
    ctlike = np.vectorize(levels.get, otypes=[np.float32])(classes) + rng.normal(0, 8, t1.shape).astype(np.float32)
    add("ct_like_head", ctlike, affine)
    spec = importlib.util.find_spec("nibabel")
    epi = nib.load(Path(spec.origin).parent / "tests" / "data" / "example4d.nii.gz")
    add("epi_example4d", np.asanyarray(epi.dataobj)[..., 0].astype(np.float32), epi.affine)
    return cases


def test_cases(out: Path) -> dict:
    stamp = out / "cases.json"
    if stamp.exists():
        return json.loads(stamp.read_text())
    cases = _renderings(out / "clinical", clinical_heads.TEST, 0, "clinical")
    for name, (image, label) in make_copies(
        out / "copies", ["lsa", "oblique", "thick_2x2x3", "remapped", "bias", "noise", "cropped", "combined"]
    ).items():
        cases[f"colin_{name}"] = {"image": str(image), "label": str(label), "group": "degraded"}
    cases.update(_degraded_robex(out / "robex"))
    cases.update(_contrasts(out / "contrast", "colin27", 32))
    cases.update(_foreign(out / "foreign"))
    stamp.write_text(json.dumps(cases, indent=1) + "\n")
    return cases
