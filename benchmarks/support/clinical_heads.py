"""Clinical renderings of the real labelled heads: the test set of issue 22 (and, with other seeds, validation sets).

Each rendering is a scan written to disk as a clinic would store it: thick slices (3-7 mm, with or without gaps)
along one axis at the head's own in-plane resolution, on a grid of its own (affine with the slice pitch), maybe only
part of the head covered, maybe after contrast agent, with a lesion, bias field, noise or a ghost. The image and its
reference are made by the same functions that training draws from (:mod:`medfcn.training.clinical`): the lesion and
enhancement change the image only; the slabs average image and label alike (:func:`slab_weights`), and the
reference on the thick grid is the label's slab average > 0.5 (its partial-volume fraction), so that the reference
went through the same resampling as the image.

Heads: ``colin27`` and ``robex_head`` (``sample_data/``, both labelled by deepbet) and ``mni_t1`` (``heads.py``: the
MNI152 brain inside Colin27's skull, the held-out anatomy; reference: the union of the MNI brain mask and Colin27's).

    python benchmarks/support/clinical_heads.py --out runs/clinical [--seed 0] [--heads colin27,robex_head,mni_t1]

writes ``OUT/images``, ``OUT/labels`` and ``OUT/cases.json`` ({case: {image, label, head, rendering}}; each head
as it is, rendering ``original``, then its renderings).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
from medfcn.training.clinical import Clinical, ghost, slab_weights  # noqa: E402

HEADS = {
    "colin27": (ROOT / "sample_data/images/colin27.nii.gz", ROOT / "sample_data/labels/colin27.nii.gz"),
    "robex_head": (ROOT / "sample_data/images/robex_head.nii.gz", ROOT / "sample_data/labels/robex_head.nii.gz"),
}
WORLD = {"axial": 2, "coronal": 1, "sagittal": 0}  # RAS world axis each plane's slices are stacked along


@dataclass(frozen=True)
class Rendering:
    """One clinical acquisition: slices ``thickness`` mm thick every ``pitch`` mm along ``plane``; ``cover``:
    ``all`` slices over the head, ``brain``: ``slices`` centred on the brain, ``no_vertex`` / ``no_base``: the top
    or bottom ``cut`` of the brain's extent left out."""

    plane: str
    thickness: float
    pitch: float
    contrast: bool = False
    lesion: bool = False
    cover: str = "all"
    slices: int = 25
    cut: float = 0.2
    ghost: float = 0.0
    bias: float = 0.3
    noise: float = 0.02


TEST = {
    "t1c_ax6.5_lesion": Rendering("axial", 6.5, 6.5, contrast=True, lesion=True, cover="brain", slices=25),
    "t1c_ax6.5": Rendering("axial", 6.5, 6.5, contrast=True, cover="brain", slices=25),
    "t1_ax5_gap1": Rendering("axial", 5.0, 6.0, bias=0.4),
    "t1c_cor4_lesion": Rendering("coronal", 4.0, 4.0, contrast=True, lesion=True),
    "t1_sag5": Rendering("sagittal", 5.0, 5.0),
    "t1c_ax6_no_vertex": Rendering("axial", 6.0, 6.0, contrast=True, cover="no_vertex", cut=0.2),
    "t1_ax5_no_base": Rendering("axial", 5.0, 5.0, cover="no_base", cut=0.25),
    "t1_ax4_ghost_lesion": Rendering("axial", 4.0, 4.0, lesion=True, ghost=0.1),
    "t1_ax3": Rendering("axial", 3.0, 3.0),
}
VALIDATION = {
    "val_t1c_ax6_lesion": Rendering("axial", 6.0, 6.0, contrast=True, lesion=True, cover="brain", slices=24),
    "val_t1_cor5_gap1": Rendering("coronal", 5.0, 6.0, cover="no_vertex", cut=0.15),
}


def _bias(shape: tuple[int, ...], strength: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative field exp(strength * f), f a random linear + quadratic function over the volume."""
    axes = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    f = sum(rng.uniform(-1, 1) * a + rng.uniform(-0.5, 0.5) * a**2 for a in axes)
    return np.exp(strength * f / 3).astype(np.float32)


def render(image: np.ndarray, label: np.ndarray, affine: np.ndarray, r: Rendering, rng: np.random.Generator):
    """(image, reference, affine) of rendering ``r`` of a head ``image`` (X, Y, Z) with ``label`` on an isotropic
    grid ``affine``."""
    spacing = float(np.linalg.norm(affine[:3, 0]))
    axis = int(np.abs(affine[:3, :3])[WORLD[r.plane]].argmax())  # array axis along the plane's world axis
    img = torch.from_numpy(image.astype(np.float32) / np.percentile(image[image > 0], 99.5))
    lab = torch.from_numpy((label > 0).astype(np.uint8))
    clinical = Clinical(spacing=spacing, p_lesion=float(r.lesion), p_enhance=float(r.contrast))
    img = clinical.anatomy(img, lab, rng).numpy() * _bias(image.shape, r.bias, rng)
    img = img + rng.normal(0, r.noise, img.shape).astype(np.float32)
    w, centres = slab_weights(image.shape[axis], spacing, r.thickness, r.pitch, float(rng.uniform(0, r.pitch)))
    keep = _covered(centres / spacing, label, axis, affine, r)
    w, centres = w[keep], centres[keep]
    thick = np.moveaxis(np.tensordot(w, img.clip(0, None), axes=([1], [axis])), 0, axis)
    ref = np.moveaxis(np.tensordot(w, label > 0, axes=([1], [axis])), 0, axis) > 0.5
    if r.ghost:
        in_plane = [a for a in range(3) if a != axis]
        thick = ghost(torch.from_numpy(thick), in_plane[-1], r.ghost).numpy()
    out = affine.copy()
    out[:3, axis] *= r.pitch / spacing
    index = np.zeros(4)
    index[axis], index[3] = centres[0] / spacing, 1
    out[:3, 3] = (affine @ index)[:3]
    return (1000 * thick).clip(0, 32767).astype(np.int16), ref.astype(np.uint8), out


def _covered(position: np.ndarray, label: np.ndarray, axis: int, affine: np.ndarray, r: Rendering) -> np.ndarray:
    """Which slices (centres at voxel ``position`` along ``axis``) the rendering keeps."""
    present = np.flatnonzero(label.any(axis=tuple(a for a in range(3) if a != axis)))
    first, last = float(present[0]), float(present[-1])
    up = np.sign(affine[WORLD[r.plane], axis])  # +1 when the array axis runs towards S (A, R)
    extent = last - first
    if r.cover == "brain":
        order = np.argsort(np.abs(position - (first + last) / 2))
        keep = np.zeros(position.size, bool)
        keep[order[: r.slices]] = True
        return keep
    if r.cover in ("no_vertex", "no_base"):
        cut_top = (r.cover == "no_vertex") == (up > 0)  # the high-index end is cut
        return position <= last - r.cut * extent if cut_top else position >= first + r.cut * extent
    return np.ones(position.size, bool)


def mni_head(out: Path, peers_python: str) -> tuple[Path, Path]:
    """The MNI152 brain inside Colin27's skull (``heads.py``'s ``mni_t1``) and its reference, built under ``out``."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from support.heads import build_cases, colin_references

    case = build_cases(out / "mni", colin_references(out / "mni", peers_python), peers_python, ["mni_t1"])["mni_t1"]
    return case.image, case.references["field"]


def build(out: Path, heads: dict[str, tuple[Path, Path]], renderings: dict[str, Rendering], seed: int) -> dict:
    """Write every rendering of every head under ``out``; returns the cases ({case: {image, label, ...}})."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    cases = {}
    for h, (head, (image_path, label_path)) in enumerate(heads.items()):
        cases[head] = {"image": str(image_path), "label": str(label_path), "head": head, "rendering": "original"}
        src = nib.as_closest_canonical(nib.load(image_path))
        label = np.asanyarray(nib.as_closest_canonical(nib.load(label_path)).dataobj) > 0
        image = np.asanyarray(src.dataobj).astype(np.float32)
        for k, (name, r) in enumerate(renderings.items()):
            rng = np.random.default_rng([seed, h, k])
            img, ref, affine = render(image, label, src.affine, r, rng)
            case = f"{head}_{name}"
            for folder, arr in (("images", img), ("labels", ref)):
                nii = nib.Nifti1Image(arr, affine)
                nii.set_qform(affine, code=1)
                nii.set_sform(affine, code=1)
                nib.save(nii, out / folder / f"{case}.nii.gz")
            cases[case] = {
                "image": str(out / "images" / f"{case}.nii.gz"),
                "label": str(out / "labels" / f"{case}.nii.gz"),
                "head": head,
                "rendering": name,
                "shape": list(img.shape),
                "spacing_mm": [round(float(s), 3) for s in np.linalg.norm(affine[:3, :3], axis=0)],
            }
            print(case, img.shape, cases[case]["spacing_mm"], int(ref.sum()), flush=True)
    (out / "cases.json").write_text(json.dumps(cases, indent=1) + "\n")
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heads", default="colin27,robex_head,mni_t1")
    parser.add_argument("--set", choices=["test", "validation"], default="test")
    parser.add_argument("--peers-python", default="", help="python with nilearn (for mni_t1)")
    args = parser.parse_args()
    out = Path(args.out)
    heads = {}
    for name in args.heads.split(","):
        heads[name] = mni_head(out, args.peers_python) if name == "mni_t1" else HEADS[name]
    build(out, heads, TEST if args.set == "test" else VALIDATION, args.seed)


if __name__ == "__main__":
    main()
