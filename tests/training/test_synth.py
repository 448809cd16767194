"""Each step of the synthesis generator against a hand-worked case (medfcn.training.synth)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medfcn.inference.frame import normalise_intensity
from medfcn.training.augment import Augmenter
from medfcn.training.synth import Synthesiser, TissueMap, blur, draw_contrast, kmeans_1d, paint, render, tissue_map


def toy_head(n: int = 24) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concentric shells: air (r > 10), scalp 0.8 (8 < r <= 10), skull 0.1 (6.5 < r <= 8), brain (r <= 6.5):
    0.3 on its left half, 0.7 on its right half. Returns image, brain label and the expected tissue classes."""
    g = np.indices((n, n, n)) - (n - 1) / 2
    r = np.sqrt((g**2).sum(0))
    image = np.zeros((n, n, n), np.float32)
    expected = np.zeros((n, n, n), np.uint8)
    brain = r <= 6.5
    left = brain & (g[0] < 0)
    right = brain & (g[0] >= 0)
    skull = (r > 6.5) & (r <= 8)
    scalp = (r > 8) & (r <= 10)
    for region, value, cls in ((left, 0.3, 1), (right, 0.7, 2), (skull, 0.1, 3), (scalp, 0.8, 4)):
        image[region] = value
        expected[region] = cls
    return image, brain.astype(np.uint8), expected


def test_kmeans_1d_hand_worked():
    assert kmeans_1d(np.array([0.0, 0.1, 0.9, 1.0]), 2) == pytest.approx([0.05, 0.95])
    assert kmeans_1d(np.array([0, 0, 1, 1, 5, 5.0]), 3) == pytest.approx([0, 1, 5])
    # Unequal clusters (a large one of equal values) must still give three distinct centres.
    values = np.r_[np.zeros(10), np.full(2, 4.0), np.full(2, 10.0)]
    assert kmeans_1d(values, 3) == pytest.approx([0, 4, 10])


def test_tissue_map_of_toy_head():
    image, label, expected = toy_head()
    tissue = tissue_map(image, label, per_label=2, outside=2)
    np.testing.assert_array_equal(tissue.classes, expected)
    assert tissue.to_label.tolist() == [0, 1, 1, 0, 0]
    assert tissue.mean == pytest.approx([0.0, 0.3, 0.7, 0.1, 0.8], abs=1e-6)
    assert tissue.std == pytest.approx([0, 0, 0, 0, 0], abs=1e-3)
    # Brain classes are exactly the label: the label map is recoverable from the classes.
    np.testing.assert_array_equal(tissue.to_label[tissue.classes], label)


def test_tissue_map_of_several_labels():
    image, label, _ = toy_head()
    two = label.copy()
    two[label.astype(bool) & (image > 0.5)] = 2  # right half of the brain: label 2
    tissue = tissue_map(image, two, per_label=1, outside=2)
    assert tissue.to_label.tolist() == [0, 1, 2, 0, 0]
    np.testing.assert_array_equal(tissue.to_label[tissue.classes], two)


def test_draw_contrast_ranges():
    rng = np.random.default_rng(0)
    for _ in range(50):
        means, gains = draw_contrast(8, rng, p_dark_air=1.0)
        assert means.shape == gains.shape == (8,)
        assert 0 <= means[0] < 0.1 and means.min() >= 0 and means.max() <= 1
        assert gains.min() >= 0.25 and gains.max() <= 2.0
    air = [draw_contrast(8, rng, p_dark_air=0.0)[0][0] for _ in range(50)]
    assert max(air) > 0.5  # without the dark-air rule the air takes any intensity
    # Orders of class means vary: inverted contrasts (class 1 brighter than class 2 and the reverse) both occur.
    orders = {bool(m[1] > m[2]) for m, _ in (draw_contrast(8, rng) for _ in range(50))}
    assert orders == {True, False}


def test_paint_hand_worked():
    classes = np.array([0, 1, 1], np.uint8)
    image = np.array([0.0, 0.2, 0.4], np.float32)
    tissue = TissueMap(classes, np.array([0, 1], np.uint8), np.array([0.0, 0.3], np.float32), np.zeros(2, np.float32))
    out = paint(classes, image, tissue, np.array([0.1, 0.9], np.float32), np.array([1.0, 2.0], np.float32))
    assert out == pytest.approx([0.1, 0.9 + 2 * (0.2 - 0.3), 0.9 + 2 * (0.4 - 0.3)])
    assert out.dtype == np.float32


def test_blur_matches_a_hand_made_kernel():
    volume = np.zeros((21, 21, 21), np.float32)
    volume[10, 10, 10] = 1.0
    assert blur(volume, (0.0, 0.0, 0.0)) is volume
    out = blur(volume, (1.0, 0.0, 2.0))
    assert out.sum() == pytest.approx(1.0, abs=1e-5)

    def kernel(sigma: float) -> np.ndarray:
        radius = int(4 * sigma + 0.5)
        x = np.arange(-radius, radius + 1)
        k = np.exp(-(x**2) / (2 * sigma**2))
        return k / k.sum()

    k1, k2 = kernel(1.0), kernel(2.0)
    expected = np.zeros_like(volume)
    expected[10 - 4 : 10 + 5, 10, 10 - 8 : 10 + 9] = np.outer(k1, k2)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_render_t2_inverts_the_brain_classes():
    image, label, _ = toy_head()
    tissue = tissue_map(image, label, per_label=3, outside=4)
    t2 = render(tissue, image, "t2")
    flair = render(tissue, image, "flair")
    assert t2.shape == image.shape and 0 <= t2.min() and t2.max() <= 1
    brain = label.astype(bool)
    # T1: left (0.3) darker than right (0.7); the T2 rendering reverses the order, FLAIR keeps it.
    assert t2[brain & (image < 0.5)].mean() > t2[brain & (image > 0.5)].mean()
    assert flair[brain & (image < 0.5)].mean() < flair[brain & (image > 0.5)].mean()
    with pytest.raises(ValueError, match="8 tissue classes"):
        render(tissue_map(image, label, per_label=2, outside=2), image, "t2")


def quiet_augmenter(**kw) -> Augmenter:
    off = dict(p_spatial=0, p_flip=0, p_low_res=0, p_thick=0, p_bias=0, p_gamma=0, p_histogram=0, p_noise=0)
    off.update(p_smooth=0, p_crop=0)
    off.update(kw)
    return Augmenter(**off)


def test_synthesiser_without_deformation_paints_class_means():
    image, label, _ = toy_head()
    tissue = tissue_map(image, label, per_label=2, outside=2)
    synth = Synthesiser(blur_sigma=(0.0, 0.0), augmenter=quiet_augmenter())
    rng = np.random.default_rng(3)
    out, lab = synth(image, tissue, rng)
    np.testing.assert_array_equal(lab, label)
    # Each class is constant (the toy head has no texture) and the classes keep the drawn means' order.
    replay = np.random.default_rng(3)
    replay.random(2)  # the two draws before the contrast: deformation? flip?
    means, _ = draw_contrast(tissue.n_classes, replay)
    spread = np.array([np.ptp(out[tissue.classes == c]) for c in range(tissue.n_classes)])
    assert spread.max() < 1e-5
    # Later steps only scale and shift the whole volume, which the normalisation undoes.
    np.testing.assert_allclose(out, normalise_intensity(means[tissue.classes]), atol=1e-5)


def test_synthesiser_deforms_image_and_label_together():
    image, label, _ = toy_head(32)
    tissue = tissue_map(image, label, per_label=2, outside=2)
    synth = Synthesiser(augmenter=Augmenter(p_crop=0))
    rng = np.random.default_rng(1)
    for _ in range(3):
        out, lab = synth(image, tissue, rng)
        assert out.shape == lab.shape == image.shape and out.dtype == np.float32 and lab.dtype == np.uint8
        assert set(np.unique(lab)) <= {0, 1}
        assert 0.5 < lab.sum() / label.sum() < 2.0  # scaled 0.85-1.18 per axis, elastic: still one brain
        assert ndimage.label(lab)[1] == 1
        assert 0 <= out.min() and out.max() <= 1


def test_tissue_map_refuses_more_classes_than_fit():
    from medfcn.errors import MedfcnError

    label = np.arange(6 * 6 * 6, dtype=np.uint16).reshape(6, 6, 6) % 85  # 84 labels > 0: 1 + 84 * 3 + 4 = 257
    with pytest.raises(MedfcnError, match="do not fit 255 classes"):
        tissue_map(np.random.default_rng(0).random((6, 6, 6)).astype(np.float32), label)
