"""A post-contrast head with a lesion and the lesion's own label: a stand-in for a tumour annotation when no real one
is at hand (issue 34's "new structure" benchmark).

The lesion is drawn on Colin27 by the generator the bundled model's training renderings come from
(:meth:`medfcn.training.clinical.Clinical.anatomy_and_lesion`: tissue pushed aside, a dark core, a rim bright after
contrast, oedema around it, contrast in the dura, sinus and vessels); its label is the core and the rim (not the
oedema), on the scan's own 1 mm grid. It is synthetic: the bundled model saw lesions like it, as brain, in training;
a real tumour is not measured by it.

    python benchmarks/support/lesion_head.py OUT [--seed 3]    # OUT/images/colin27_lesion.nii.gz, OUT/labels/...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from medfcn.training.clinical import Clinical  # noqa: E402

LESION_MM = (16.0, 22.0)  # radius: a lesion a person would annotate on a few slices


def lesion_head(out: Path, seed: int = 3) -> tuple[Path, Path, np.ndarray]:
    """(image path, label path, label array) of Colin27 with one enhancing lesion (``seed`` chooses it)."""
    head = nib.load(str(ROOT / "sample_data" / "images" / "colin27.nii.gz"))
    brain = np.asanyarray(nib.load(str(ROOT / "sample_data" / "labels" / "colin27.nii.gz")).dataobj) > 0
    image = np.asanyarray(head.dataobj).astype(np.float32)
    spacing = float(np.linalg.norm(head.affine[:3, 0]))
    scale = float(np.percentile(image[image > 0], 99.5))
    clinical = Clinical(spacing=spacing, p_lesion=1.0, p_enhance=1.0, lesion_mm=LESION_MM)
    img, lesion = clinical.anatomy_and_lesion(
        torch.from_numpy(image / scale), torch.from_numpy(brain.astype(np.uint8)), np.random.default_rng(seed)
    )
    label = lesion.numpy().astype(np.uint8)
    if not label.any():
        raise SystemExit(f"seed {seed}: no lesion drawn; choose another")
    paths = []
    scan = (1000 * img.numpy().clip(0, None)).clip(0, 32767).astype(np.int16)
    for folder, data in (("images", scan), ("labels", label)):
        path = out / folder / "colin27_lesion.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(data, head.affine), str(path))
        paths.append(path)
    return paths[0], paths[1], label


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=3)
    a = p.parse_args()
    image, label, lab = lesion_head(a.out, a.seed)
    print(image, label, f"lesion {int(lab.sum())} voxels ({lab.sum() / 1000:.1f} mL)")
