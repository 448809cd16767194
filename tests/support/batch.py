"""Helpers shared by the batch tests: a tiny trained model file and folders of small real scans.

The model is a 1,230-parameter FCN trained for 40 Adam steps on slices of :func:`conftest.head_volume`, so its
label maps are neither empty nor full (a test comparing two runs' outputs compares real segmentations).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.support.scans import affine_from_codes, head_labels, head_volume, write_scan_file

SHAPE = (24, 28, 20)


def train_tiny_model(path: Path, shape: tuple[int, int, int] = SHAPE) -> Path:
    """Train a tiny FCN to find the head's brain and save it with :func:`medfcn.model.checkpoint.save_model`."""
    import torch

    from medfcn.inference.frame import normalise_intensity
    from medfcn.model.checkpoint import ModelCard, save_model
    from medfcn.model.network import FCN

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest, and robust to a busy machine
    torch.manual_seed(0)
    net = FCN(in_channels=3, num_classes=2, width=4, max_width=8, depth=2, variant="fcn16s", stem_stride=1)
    vol = normalise_intensity(head_volume(shape))
    brain = head_labels(shape) > 0
    x = torch.from_numpy(np.stack([vol[:, :, k - 1 : k + 2].transpose(2, 0, 1) for k in range(1, shape[2] - 1)]))
    y = torch.from_numpy(np.stack([brain[:, :, k] for k in range(1, shape[2] - 1)])).long()
    opt = torch.optim.Adam(net.parameters(), lr=0.03)
    try:
        for _ in range(40):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x.float()), y).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    card = ModelCard(network=net.config.to_dict(), name="tiny-test-model", spacing=(1.5, 1.5, 1.5))
    return save_model(path, net.eval(), card)


def write_cases(folder: Path, n: int, shape: tuple[int, int, int] = SHAPE, first_seed: int = 0) -> list[Path]:
    """``n`` NIfTI head scans ``case00.nii.gz``, ... (different noise, LPS-stored 1 x 1.2 x 1.5 mm grid)."""
    return [
        write_scan_file(
            folder / f"case{i:02d}.nii.gz", head_volume(shape, seed=first_seed + i), affine_from_codes("LPS")
        )
        for i in range(n)
    ]


def read_labels(path: str | Path) -> np.ndarray:
    """A label map's voxels (X, Y, Z), read with nibabel (not medfcn's reader)."""
    import nibabel as nib

    return np.asarray(nib.load(str(path)).dataobj)


def partial_files(folder: Path) -> list[Path]:
    """Hidden temporaries (``.NAME.HOST.PID.part...``) left in ``folder``."""
    return sorted(p for p in folder.iterdir() if p.name.startswith(".") and ".part" in p.name)
