"""Clinical-acquisition augmentation (medfcn.training.clinical): slabs worked by hand, image and label kept aligned."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medfcn.training.augment import Augmenter
from medfcn.training.clinical import Clinical, coverage, ghost, slab_matrix, slab_weights, thick_slices


def test_slabs_by_hand_contiguous():
    # voxels 1.5 mm (centres 0, 1.5, 3, 4.5 mm; voxel i covers [1.5 i - 0.75, 1.5 i + 0.75]); 3 mm slabs at 0.75 and
    # 3.75 mm cover voxels {0, 1} and {2, 3} exactly
    w, centres = slab_weights(4, 1.5, 3.0, 3.0, 0.75)
    assert centres.tolist() == [0.75, 3.75]
    assert np.allclose(w, [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    v = np.array([2.0, 4.0, 10.0, 20.0])  # slabs 3 and 15
    # back on the voxels: clamped before 0.75 mm and after 3.75 mm; at 1.5 mm a quarter of the way, at 3 mm 3/4
    assert np.allclose(slab_matrix(4, 1.5, 3.0, 3.0, 0.75) @ v, [3.0, 6.0, 12.0, 15.0])


def test_slabs_by_hand_with_gaps_and_partial_overlap():
    # 1 mm voxels, 1 mm slabs every 2 mm from 0: voxels 1, 3, 5 lie in the gaps and are never seen
    w, centres = slab_weights(6, 1.0, 1.0, 2.0, 0.0)
    assert centres.tolist() == [0.0, 2.0, 4.0]
    assert np.allclose(w, [[1, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 1, 0]])
    v = np.array([1.0, 100.0, 3.0, 100.0, 5.0, 100.0])
    assert np.allclose(slab_matrix(6, 1.0, 1.0, 2.0, 0.0) @ v, [1, 2, 3, 4, 5, 5])
    # a 2 mm slab centred on voxel 1 (1 mm): half of voxel 0, all of voxel 1, half of voxel 2
    w, _ = slab_weights(3, 1.0, 2.0, 5.0, 1.0)
    assert np.allclose(w, [[0.25, 0.5, 0.25]])
    # the frame's edge: a slab at 0 mm, 2 mm thick, sees only the half inside (voxel 0 and half of voxel 1)
    w, _ = slab_weights(3, 1.0, 2.0, 5.0, 0.0)
    assert np.allclose(w, [[2 / 3, 1 / 3, 0]])


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_thick_slices_act_along_their_axis_only(axis):
    rng = np.random.default_rng(axis)
    img = torch.from_numpy(rng.random((7, 9, 11)).astype(np.float32))
    m = slab_matrix(img.shape[axis], 1.5, 5.0, 6.0, 1.0)
    out = thick_slices(img, axis, m)
    expected = np.moveaxis(np.tensordot(m, np.moveaxis(img.numpy(), axis, 0), axes=([1], [0])), 0, axis)
    assert out.shape == img.shape and np.allclose(out.numpy(), expected, atol=1e-5)
    assert np.allclose(m.sum(1), 1)  # a constant volume stays constant
    const = thick_slices(torch.full((7, 9, 11), 0.25), axis, m)
    assert torch.allclose(const, torch.tensor(0.25))


def test_ghost_by_hand():
    img = torch.zeros(8, 1, 1)
    img[1] = 1.0
    out = ghost(img, 0, 0.1)
    assert out[:, 0, 0].tolist() == pytest.approx([0, 1, 0, 0, 0, 0.1, 0, 0])


def test_coverage_cuts_one_end_and_stays_inside():
    rng = np.random.default_rng(0)
    for _ in range(200):
        window = coverage(100, (20, 80), 45, rng)
        assert 0 <= window.start and window.stop <= 100 and window.stop - window.start == 45
        assert window.start > 20 or window.stop - 1 < 80  # part of the object is left out
    assert coverage(10, (2, 7), 50, rng) == slice(0, 10)  # more than the volume: all of it


def _head(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = np.indices((n, n, n)) - (n - 1) / 2
    r = np.sqrt((g**2).sum(0))
    brain = r <= 13
    img = np.where(brain, 0.6 + 0.2 * (g[0] > 0), np.where(r <= 17, 0.9, 0.0)).astype(np.float32)
    return torch.from_numpy(img), torch.from_numpy(brain.astype(np.uint8))


def test_lesion_and_enhancement_change_the_image_only_where_they_may():
    img, lab = _head()
    brain = lab > 0
    c = Clinical(spacing=1.5, p_lesion=1.0, p_enhance=0.0)
    out = c.anatomy(img.clone(), lab, np.random.default_rng(3))
    assert out.shape == img.shape and not torch.equal(out, img)
    assert torch.allclose(out[~brain], img[~brain], atol=1e-5)  # mass effect tapers to nothing at the outline
    enhanced = Clinical(spacing=1.5, p_lesion=0.0, p_enhance=1.0).anatomy(img.clone(), lab, np.random.default_rng(4))
    assert (enhanced >= img - 1e-6).all()  # contrast agent only brightens
    assert (enhanced > img + 1e-3).any()


def test_acquire_crops_image_and_label_alike():
    # image and label carry the same coordinate code, so any misaligned crop would show as a difference
    code = torch.arange(30 * 32 * 34, dtype=torch.float32).reshape(30, 32, 34)
    lab = torch.zeros(30, 32, 34, dtype=torch.uint8)
    lab[5:25, 6:26, 7:27] = 1
    c = Clinical(spacing=1.5, p_slab=0.0, p_ghost=0.0, p_partial=1.0)
    for seed in range(10):
        img_out, lab_out = c.acquire(code.clone(), lab, np.random.default_rng(seed))
        assert img_out.shape == lab_out.shape
        flat = img_out.long().flatten()
        assert torch.equal(lab.flatten()[flat], lab_out.flatten())  # each voxel's label travels with it


def test_augmenter_with_clinical_keeps_geometry():
    """Through the whole Augmenter (spatial, clinical, intensity, crop): the image of a labelled sphere still
    agrees with its label (the only differences are the blur of slabs along one axis and the lesion's edge)."""
    img, lab = _head(48)
    aug = Augmenter(spacing=1.5, p_clinical=1.0, p_bias=0, p_gamma=0, p_histogram=0, p_noise=0, p_smooth=0)
    for seed in range(4):
        a, b = aug(img.numpy(), lab.numpy(), np.random.default_rng(seed))
        assert a.shape == b.shape and a.dtype == np.float32 and b.dtype == np.uint8
        assert b.any()


def test_p_clinical_zero_leaves_the_random_stream_alone():
    img, lab = _head(24)
    a1, b1 = Augmenter()(img.numpy(), lab.numpy(), np.random.default_rng(5))
    a2, b2 = Augmenter(p_clinical=0.0)(img.numpy(), lab.numpy(), np.random.default_rng(5))
    assert np.array_equal(a1, a2) and np.array_equal(b1, b2)
