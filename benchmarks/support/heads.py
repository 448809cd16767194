"""Test heads for the generalisation and peers benchmarks, each with its reference masks and what it measures.

Only one real head is available (Colin27, the training subject). The cases are built from it and from the
MNI152 2009c templates that nilearn's wheel ships (a brain-only T1 and grey/white-matter probability maps, the
average of 152 adults: anatomy the model never saw):

    copies (``copies.py``)  transformed copies of the training subject (orientation, resolution, intensity, field
                            of view): they share the training label, so they measure robustness, not anatomy
    mni_t1 .. mni_flair     held-out anatomy: the MNI152 brain (tissue probabilities, affine-registered with
                            SimpleITK) placed inside Colin27's skull and scalp, rendered T1-, T2-, PD- and
                            FLAIR-like from its tissue classes; the intracranial space is the union of the MNI
                            brain mask and Colin27's, its CSF filled in; reference: that union (brain + CSF)
    colin_t2 .. colin_flair the training subject's own tissue classes rendered in contrasts it was not trained on
    widened_csf             the training subject with the CSF spaces widened (cortex pulled 3 mm in from the skull,
                            sulci opened by 1 mm, ventricles grown by 2 mm), as in an older or atrophic brain;
                            the reference (brain + CSF inside the skull) does not move

References: ``field`` is the brain + CSF inside the skull's inner surface (the definition of deepbet, HD-BET and
SynthStrip): the mask of Colin27 given as ``field_ref`` carried through each case's construction. ``bet`` is
BET's ``ch2bet`` mask of Colin27 (cortex-tight), where a case's construction defines it (copies and renderings
of Colin27).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_IMAGE = ROOT / "sample_data" / "images" / "colin27.nii.gz"
SAMPLE_LABEL = ROOT / "sample_data" / "labels" / "colin27.nii.gz"
MNI_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
# Tissue classes: 0 air, 1 CSF, 2 grey matter, 3 white matter, 4 bone/dark, 5 muscle, 6 fat/bright.
CSF, GM, WM, BONE, MUSCLE, FAT = 1, 2, 3, 4, 5, 6
# Relative class intensities (0-1) of each rendered contrast: typical spin-echo / inversion-recovery orderings.
CONTRASTS: dict[str, dict[int, float]] = {
    "t2": {CSF: 0.95, GM: 0.55, WM: 0.40, BONE: 0.05, MUSCLE: 0.20, FAT: 0.70},
    "pd": {CSF: 0.80, GM: 0.70, WM: 0.55, BONE: 0.08, MUSCLE: 0.40, FAT: 0.85},
    "flair": {CSF: 0.08, GM: 0.60, WM: 0.45, BONE: 0.05, MUSCLE: 0.30, FAT: 0.70},
}


@dataclass
class Case:
    """One test scan: image file, reference masks on its grid ({definition: file}) and what it measures."""

    image: Path
    references: dict[str, Path] = field(default_factory=dict)
    group: str = ""


def nilearn_data_dir(python: str | Path) -> Path:
    """The folder of nilearn's bundled data (MNI152 2009 templates), asked of the interpreter ``python``."""
    code = "import nilearn, os; print(os.path.join(os.path.dirname(nilearn.__file__), 'datasets', 'data'))"
    out = subprocess.run([str(python), "-c", code], capture_output=True, encoding="utf-8", errors="replace", check=True)
    return Path(out.stdout.strip())


def kmeans_1d(values: np.ndarray, k: int, iterations: int = 30) -> np.ndarray:
    """Sorted centres of a 1-D k-means of ``values`` (started at evenly spaced percentiles)."""
    v = values.astype(np.float64)
    centres = np.percentile(v, np.linspace(10, 90, k))
    for _ in range(iterations):
        nearest = np.abs(v[:, None] - centres[None, :]).argmin(1)
        new = np.array([v[nearest == c].mean() if (nearest == c).any() else centres[c] for c in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    return np.sort(centres)


def _nearest(values: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return np.abs(values[..., None] - centres).argmin(-1)


def head_classes(t1: np.ndarray, intracranial: np.ndarray) -> np.ndarray:
    """uint8 tissue classes of a T1 head: CSF/GM/WM (k-means inside ``intracranial``) and air/bone/muscle/fat
    (air below a tenth of the head's median, the rest k-means outside)."""
    classes = np.zeros(t1.shape, np.uint8)
    inside = intracranial > 0
    classes[inside] = 1 + _nearest(t1[inside], kmeans_1d(t1[inside], 3))
    head = ~inside & (t1 > 0.1 * np.median(t1[inside]))
    classes[head] = 4 + _nearest(t1[head], kmeans_1d(t1[head], 3))
    return classes


def render_levels(t1: np.ndarray, classes: np.ndarray, contrast: dict[int, float]) -> np.ndarray:
    """Float intensities (about 0-1) of a T1 head re-rendered in another contrast: each class moved to its new
    level, keeping half of its T1 texture (the relative deviation from the class mean)."""
    out = np.zeros(t1.shape, np.float32)
    for c, level in contrast.items():
        sel = classes == c
        if sel.any():
            mean = max(float(t1[sel].mean()), 1e-6)
            out[sel] = level * (1.0 + 0.5 * (t1[sel] - mean) / mean)
    return out


def render(t1: np.ndarray, classes: np.ndarray, contrast: dict[int, float], rng: np.random.Generator) -> np.ndarray:
    """:func:`render_levels`, softened by a 0.6-voxel blur, with Rician noise of 2 %: int16 in 0..1000."""
    return _finish(render_levels(t1, classes, contrast), rng)


def _finish(image: np.ndarray, rng: np.random.Generator, noise: float = 0.02) -> np.ndarray:
    image = ndimage.gaussian_filter(np.clip(image, 0, None), 0.6)
    real = image + rng.normal(0, noise, image.shape)
    imag = rng.normal(0, noise, image.shape)
    return np.clip(1000 * np.sqrt(real**2 + imag**2), 0, 32767).astype(np.int16)


def register_mni(mni_dir: Path, t1: sitk.Image, intracranial: sitk.Image) -> dict[str, np.ndarray]:
    """The MNI152 brain's T1, GM, WM (0-1) and brain mask resampled onto ``t1``'s grid after an affine
    registration (Mattes mutual information, MNI brain T1 onto the brain-masked head). Arrays in (x, y, z)."""
    mni = {k: sitk.ReadImage(str(mni_dir / f), sitk.sitkFloat32) for k, f in MNI_FILES.items()}
    fixed = sitk.Mask(sitk.Cast(t1, sitk.sitkFloat32), intracranial > 0)
    moving = mni["t1"]
    init = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.1, seed=3)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-4, 200, relaxationFactor=0.7)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2])
    reg.SetSmoothingSigmasPerLevel([2, 1])
    reg.SetInitialTransform(init, inPlace=False)
    transform = reg.Execute(fixed, moving)
    out = {}
    for k, img in mni.items():
        moved = sitk.Resample(img, t1, transform, sitk.sitkLinear, 0.0)
        out[k] = sitk.GetArrayFromImage(moved).transpose(2, 1, 0) / 255.0
    out["mask"] = (out["t1"] > 0.02).astype(np.float32)  # the template is zero outside its brain mask
    out["mask"] = ndimage.binary_fill_holes(out["mask"] > 0.5).astype(np.float32)
    return out


def widen_csf(t1: np.ndarray, classes: np.ndarray, intracranial: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``t1`` with the CSF spaces widened: tissue within 3 mm of the intracranial edge, a 1-voxel rim of all tissue
    next to CSF, and 2 voxels around deep CSF (> 15 mm in: the ventricles) turned to CSF intensity (1 mm grid)."""
    inside = intracranial > 0
    depth = ndimage.distance_transform_edt(inside)
    tissue = (classes == GM) | (classes == WM)
    csf = classes == CSF
    to_csf = tissue & (depth <= 3.0)
    to_csf |= tissue & ndimage.binary_dilation(csf | to_csf, iterations=1)
    to_csf |= tissue & ndimage.binary_dilation(csf & (depth > 15.0), iterations=2)
    values = t1[csf]
    out = t1.astype(np.float32).copy()
    out[to_csf] = rng.choice(values, int(to_csf.sum()))
    out = np.where(to_csf, ndimage.gaussian_filter(out, 0.6), out)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _write(array: np.ndarray, like: sitk.Image, path: Path) -> Path:
    img = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    img.CopyInformation(like)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), True)
    return path


def make_heads(
    out: Path, t1_path: Path, field_ref: Path, bet_ref: Path, mni_dir: Path, names: list[str] | None = None
) -> dict[str, Case]:
    """Write the non-copy cases (MNI renderings, Colin27 renderings, widened CSF) under ``out``."""
    t1_img = sitk.ReadImage(str(t1_path))
    t1 = sitk.GetArrayFromImage(t1_img).transpose(2, 1, 0).astype(np.float32)
    field_img = sitk.ReadImage(str(field_ref), sitk.sitkUInt8)
    intracranial = sitk.GetArrayFromImage(field_img).transpose(2, 1, 0) > 0
    classes = head_classes(t1, intracranial)
    rng = np.random.default_rng(11)
    wanted = lambda n: names is None or n in names  # noqa: E731
    cases: dict[str, Case] = {}
    refs = {"field": field_ref, "bet": bet_ref}
    for name, contrast in CONTRASTS.items():
        if wanted(f"colin_{name}"):
            image = _write(render(t1, classes, contrast, rng), t1_img, out / "images" / f"colin_{name}.nii.gz")
            cases[f"colin_{name}"] = Case(image, dict(refs), "training subject, other contrast")
    if wanted("widened_csf"):
        image = _write(widen_csf(t1, classes, intracranial, rng), t1_img, out / "images" / "widened_csf.nii.gz")
        cases["widened_csf"] = Case(image, {"field": field_ref}, "training subject, widened CSF")
    mni_names = [f"mni_{c}" for c in ("t1", *CONTRASTS)]
    if any(wanted(n) for n in mni_names):
        mni = register_mni(mni_dir, t1_img, field_img)
        union = (mni["mask"] > 0.5) | intracranial
        ref = _write(union.astype(np.uint8), t1_img, out / "labels" / "field" / "mni.nii.gz")
        # Tissue probabilities of the hybrid head: MNI grey and white matter, CSF filling the rest of the union.
        gm = np.where(union, mni["gm"], 0.0)
        wm = np.where(union, mni["wm"], 0.0)
        csf = np.where(union, np.clip(1.0 - gm - wm, 0.0, 1.0), 0.0)
        outside = np.where(union, 0, classes)  # Colin27's skull and scalp
        t1_levels = {c: float(t1[classes == c].mean()) / 255.0 for c in (CSF, GM, WM)}
        for name in mni_names:
            if not wanted(name):
                continue
            contrast = CONTRASTS.get(name[4:], {**t1_levels, **{c: 0.0 for c in (BONE, MUSCLE, FAT)}})
            if name == "mni_t1":  # Colin27's own scalp voxels
                scalp = np.where(outside > 0, t1 / 255.0, 0.0)
            else:
                scalp = render_levels(t1, outside, contrast)
            brain = csf * contrast[CSF] + gm * contrast[GM] + wm * contrast[WM]
            image = _finish(np.where(union, brain, scalp).astype(np.float32), rng)
            cases[name] = Case(
                _write(image, t1_img, out / "images" / f"{name}.nii.gz"), {"field": ref}, "held-out anatomy"
            )
    return cases


def colin_references(work: Path, peers_python: str | Path, field_ref: str | Path | None = None) -> dict[str, Path]:
    """Colin27's reference masks: {"field": brain + CSF, "bet": BET's ch2bet}.

    ``field``: ``field_ref`` if given; else the sample's label when it is no longer BET's mask (the retrained
    model's label); else deepbet's mask of the sample as a stand-in (made once with the peers' interpreter, kept
    in ``work``; it favours deepbet on the copies, whose references are carried from it).
    """
    bet = ROOT.parent / "shared" / "data" / "colin27" / "brain_mask.nii.gz"
    if not bet.exists():
        bet = SAMPLE_LABEL
    if field_ref is not None:
        return {"field": Path(field_ref), "bet": bet}
    sample = sitk.GetArrayFromImage(sitk.ReadImage(str(SAMPLE_LABEL))) > 0
    if bet != SAMPLE_LABEL and (sample != (sitk.GetArrayFromImage(sitk.ReadImage(str(bet))) > 0)).any():
        return {"field": SAMPLE_LABEL, "bet": bet}
    stand_in = work / "colin27_deepbet.nii.gz"
    if not stand_in.exists():
        work.mkdir(parents=True, exist_ok=True)
        code = "import sys; from deepbet import run_bet; run_bet([sys.argv[1]], mask_paths=[sys.argv[2]], no_gpu=True)"
        subprocess.run([str(peers_python), "-c", code, str(SAMPLE_IMAGE), str(stand_in)], check=True)
    return {"field": stand_in, "bet": bet}


def build_cases(out: Path, references: dict[str, Path], peers_python: str | Path, names: list[str]) -> dict[str, Case]:
    """The named cases (copies and the heads above) with their references, written under ``out`` once and then
    reused while the references they were made from are the same (``out/cases.json``)."""
    from support.copies import make_copy_cases

    stamp = out / "cases.json"
    key = {k: str(v) for k, v in sorted(references.items())}
    known: dict = json.loads(stamp.read_text()) if stamp.exists() else {}
    if known.get("references") != key:
        known = {"references": key, "cases": {}}
    cases = {
        n: Case(Path(c["image"]), {k: Path(v) for k, v in c["references"].items()}, c["group"])
        for n, c in known["cases"].items()
        if n in names and Path(c["image"]).exists()
    }
    missing = [n for n in names if n not in cases]
    copy_names = [n for n in missing if not n.startswith(("mni_", "colin_", "widened"))]
    if copy_names:
        for n, (image, labels) in make_copy_cases(out, references, copy_names).items():
            cases[n] = Case(image, labels, "copy of the training subject")
    head_names = [n for n in missing if n not in copy_names]
    if head_names:
        mni_dir = nilearn_data_dir(peers_python)
        cases.update(make_heads(out, SAMPLE_IMAGE, references["field"], references["bet"], mni_dir, head_names))
    known["cases"].update(
        {
            n: {"image": str(c.image), "references": {k: str(v) for k, v in c.references.items()}, "group": c.group}
            for n, c in cases.items()
        }
    )
    stamp.write_text(json.dumps(known, indent=1))
    return {n: cases[n] for n in names}
