"""The FCN: shapes for any H x W, every variant trains, bilinear initialisation, batch-norm folding, options."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medfcn.errors import ModelError
from medfcn.model.network import (
    FCN,
    FCNConfig,
    Upsampling,
    Variant,
    fold_batchnorm,
    load_coarser_weights,
    pad_to_stride,
    recompute_batchnorm,
)

VARIANTS = [v.value for v in Variant]
UPSAMPLINGS = [u.value for u in Upsampling]
SMALL = {"width": 4, "max_width": 16, "depth": 5}


def _disc_batch(n: int = 4, h: int = 33, w: int = 37, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3, h, w) noisy images of bright discs and (n, h, w) long targets (1 inside the disc)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    images, targets = [], []
    for _ in range(n):
        cy, cx, r = torch.rand(3, generator=g) * torch.tensor([h / 2, w / 2, 6.0]) + torch.tensor([h / 4, w / 4, 6])
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r**2).float()
        img = mask + 0.2 * torch.randn(3, h, w, generator=g)
        images.append(img)
        targets.append(mask.long())
    return torch.stack(images), torch.stack(targets)


@pytest.mark.parametrize("upsampling", UPSAMPLINGS)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("size", [(33, 37), (1, 5), (64, 65)])
def test_output_shape_equals_input_for_odd_sizes(variant: str, upsampling: str, size: tuple[int, int]) -> None:
    net = FCN(in_channels=3, num_classes=3, variant=variant, upsampling=upsampling, **SMALL).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, *size))
    assert tuple(out.shape) == (2, 3, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("upsampling", UPSAMPLINGS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_trains_a_step(variant: str, upsampling: str) -> None:
    torch.manual_seed(0)
    net = FCN(in_channels=3, num_classes=2, variant=variant, upsampling=upsampling, **SMALL)
    x, y = _disc_batch()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    # Every parameter takes part in the loss (the skip score layers start at zero but get gradients).
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("factor", [2, 4, 8, 16, 32])
def test_transposed_conv_starts_as_bilinear_interpolation(factor: int) -> None:
    """The transposed-convolution upsampler equals F.interpolate (bilinear, half-pixel centres) on interior pixels."""
    depth = factor.bit_length() - 1  # fcn32s with stem_stride 2: the head upsamples by 2 * 2 ** (depth - 1)
    net = FCN(in_channels=1, num_classes=3, variant="fcn32s", upsampling="transpose", width=4, depth=depth)
    head = net.head
    assert isinstance(head, nn.ConvTranspose2d) and head.stride == (factor, factor)
    x = torch.randn(2, 3, 7, 9)
    with torch.no_grad():
        got = head(x)
    expected = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert got.shape == expected.shape == (2, 3, 7 * factor, 9 * factor)
    # Pixels within half an input pixel of the border differ: there bilinear interpolation clamps, the
    # transposed convolution sees zeros.
    b = factor // 2
    torch.testing.assert_close(got[..., b:-b, b:-b], expected[..., b:-b, b:-b], atol=1e-5, rtol=1e-5)


def test_skip_upsamplers_start_as_bilinear() -> None:
    for upsampling in UPSAMPLINGS:
        net = FCN(in_channels=1, num_classes=2, variant="fcn8s", upsampling=upsampling, **SMALL)
        assert len(net.ups) == 2
        x = torch.randn(1, 2, 5, 6)
        with torch.no_grad():
            got = net.ups[0](x)
        expected = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        if upsampling == "resize_conv":  # resize then identity 3x3 conv: equal everywhere
            torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
        else:
            torch.testing.assert_close(got[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], atol=1e-6, rtol=1e-6)
        # Skip score layers start at zero, as in the paper.
        assert all(float(s.weight.detach().abs().sum()) == 0.0 for s in net.skip_scores)


def test_a_coarser_variant_grows_into_a_finer_one_as_in_the_paper() -> None:
    torch.manual_seed(0)
    coarse = FCN(in_channels=3, num_classes=2, variant="fcn8s", **SMALL).eval()
    with torch.no_grad():  # non-zero skip scores, so that the fused score is not the deepest level's alone
        for s in coarse.skip_scores:
            s.weight.normal_()
            s.bias.normal_()
    fine = FCN(in_channels=3, num_classes=2, variant="fcn4s", **SMALL).eval()
    assert fine.config.grows_from(coarse.config) and not coarse.config.grows_from(fine.config)
    assert not fine.config.grows_from(fine.config)
    for other in ({"width": 8}, {"upsampling": "transpose"}, {"depth": 4}):  # anything but the variant: no
        assert not fine.config.grows_from(replace(coarse.config, **other))
    fresh = load_coarser_weights(fine, coarse.state_dict())
    assert fresh == ["skip_scores.2.bias", "skip_scores.2.weight", "ups.2.1.bias", "ups.2.1.weight"]
    for k, v in coarse.state_dict().items():
        assert torch.equal(fine.state_dict()[k], v), k
    # Worked out from the coarse network's own parts: its stride-8 fused score, bilinear x2 (the new skip adds
    # zero, its upsampler is the identity after the resize), bilinear x4, then its head's 3x3 convolution.
    x = torch.randn(2, 3, 64, 64)  # a multiple of the stride: no padding
    with torch.no_grad():
        y = coarse.stem(x)
        feats = []
        for level in coarse.levels:
            y = level(y)
            feats.append(y)
        score = coarse.score(feats[-1])
        for j, up, skip in zip(coarse.skip_levels, coarse.ups, coarse.skip_scores, strict=True):
            score = up(score) + skip(feats[j])
        score = F.interpolate(score, scale_factor=2.0, mode="bilinear", align_corners=False)
        score = F.interpolate(score, scale_factor=4.0, mode="bilinear", align_corners=False)
        expected = coarse.head[1](score)
        torch.testing.assert_close(fine(x), expected, atol=1e-5, rtol=1e-5)
    # Transposed upsampling's last layer depends on the factor: its weights do not fit, and it is said.
    with pytest.raises(ModelError, match="do not fit this network"):
        load_coarser_weights(
            FCN(in_channels=3, num_classes=2, variant="fcn4s", upsampling="transpose", **SMALL),
            FCN(in_channels=3, num_classes=2, variant="fcn8s", upsampling="transpose", **SMALL).state_dict(),
        )
    # A finer file into a coarser network: tensors the network lacks.
    with pytest.raises(ModelError, match="do not fit this network"):
        load_coarser_weights(FCN(in_channels=3, num_classes=2, variant="fcn8s", **SMALL), fine.state_dict())


@pytest.mark.parametrize("upsampling", UPSAMPLINGS)
def test_fold_batchnorm_equals_unfolded_eval_output(upsampling: str) -> None:
    torch.manual_seed(1)
    net = FCN(in_channels=3, num_classes=2, variant="fcn8s", upsampling=upsampling, **SMALL)
    x, _ = _disc_batch(n=3, seed=2)
    net.train()
    with torch.no_grad():  # a few training-mode passes give the batch norms non-trivial running statistics
        for _ in range(3):
            net(x * 3.0 + 1.0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    folded = fold_batchnorm(net)
    assert net.training, "the original keeps its mode"
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules()), "the original is untouched"
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert not folded.training
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), atol=1e-4, rtol=1e-4)


def test_recompute_batchnorm_averages_the_batch_statistics_worked_by_hand() -> None:
    """A 1x1 conv (weights 2 and -1, no bias) then batch norm: the statistics of its output are those of the input
    scaled, so each batch's mean and unbiased variance are worked out from the inputs alone, and the running ones
    must be their plain average whatever the running statistics held before."""
    conv = nn.Conv2d(1, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([2.0, -1.0]).view(2, 1, 1, 1))
    bn = nn.BatchNorm2d(2)
    net = nn.Sequential(conv, bn).eval()
    bn.running_mean.fill_(5.0)  # stale statistics: must not survive
    g = torch.Generator().manual_seed(3)
    batches = [torch.randn(4, 1, 3, 5, generator=g) * s + o for s, o in ((1.0, 0.0), (3.0, 2.0), (0.5, -1.0))]
    assert recompute_batchnorm(net, batches) == 3
    means = [b.mean().item() for b in batches]
    variances = [b.var(unbiased=True).item() for b in batches]  # over all 4 x 3 x 5 values of the one channel
    for channel, w in enumerate((2.0, -1.0)):
        assert bn.running_mean[channel].item() == pytest.approx(w * sum(means) / 3, rel=1e-5)
        assert bn.running_var[channel].item() == pytest.approx(w * w * sum(variances) / 3, rel=1e-5)
    assert not net.training and bn.momentum == 0.1, "mode and momentum are restored"
    before = bn.running_mean.clone()
    assert recompute_batchnorm(net, []) == 0
    assert torch.equal(bn.running_mean, before), "no batches: nothing changes"


def test_option_errors_name_the_choices() -> None:
    with pytest.raises(ModelError) as err:
        FCN(variant="fcn2s")
    assert all(v in str(err.value) for v in VARIANTS) and "fcn2s" in str(err.value)
    with pytest.raises(ModelError) as err:
        FCN(upsampling="nearest")
    assert all(u in str(err.value) for u in UPSAMPLINGS)
    with pytest.raises(ModelError, match="1, 2, 4"):
        FCN(stem_stride=3)
    with pytest.raises(ModelError, match="depth >= 4"):
        FCN(variant="fcn4s", depth=3)
    with pytest.raises(ModelError, match="known:"):
        FCNConfig.from_dict({"widht": 8})
    with pytest.raises(ModelError, match=r"\(B, 3, H, W\)"):
        FCN(in_channels=3)(torch.zeros(1, 1, 8, 8))
    assert FCNConfig(variant="FCN16S").variant == Variant.FCN16S  # case-insensitive


def test_config_round_trips_through_its_dict() -> None:
    config = FCNConfig(in_channels=5, num_classes=4, variant="fcn4s", upsampling="transpose", width=8, depth=5)
    data = config.to_dict()
    assert data["variant"] == "fcn4s" and isinstance(data["variant"], str)
    rebuilt = FCN(data)
    assert rebuilt.config == config
    original = FCN(config)
    rebuilt.load_state_dict(original.state_dict())  # same parameter names and shapes
    assert rebuilt.stride == 32 and rebuilt.in_channels == 5 and rebuilt.num_classes == 4


def test_stride_follows_stem_and_depth() -> None:
    """A hand-worked case: stem stride 4 and 3 levels give 4 * 2**2 = 16; an input of 16 needs no padding."""
    net = FCN(in_channels=1, num_classes=2, variant="fcn16s", stem_stride=4, depth=3, width=4).eval()
    assert net.stride == 16
    with torch.no_grad():
        assert tuple(net(torch.zeros(1, 1, 16, 17)).shape) == (1, 2, 16, 17)


# -- padding to the stride: one rule for the networks and the engine's tiles --------------------------------------


@pytest.mark.parametrize("stride", [1, 4, 8, 16, 32])
@pytest.mark.parametrize(("h", "w"), [(33, 37), (32, 32), (1, 63), (17, 16)])
def test_pad_to_stride_round_trips(h: int, w: int, stride: int) -> None:
    x = torch.randn(2, 3, h, w)
    padded, crop = pad_to_stride(x, stride)
    hp, wp = padded.shape[-2:]
    assert hp % stride == 0 and wp % stride == 0 and 0 <= hp - h < stride and 0 <= wp - w < stride
    torch.testing.assert_close(padded[..., crop[0], crop[1]], x, rtol=0, atol=0)
    # replicate padding, split evenly with the odd pixel after: the border rows and columns repeat the edge
    top, left = crop[0].start, crop[1].start
    assert top == (hp - h) // 2 and left == (wp - w) // 2
    torch.testing.assert_close(padded[..., :top, left : left + w], x[..., :1, :].expand(-1, -1, top, -1))
    torch.testing.assert_close(padded[..., top : top + h, wp - 1], x[..., :, w - 1])
    assert pad_to_stride(x, stride)[0].shape == padded.shape  # deterministic


def test_every_network_the_engine_runs_says_its_stride() -> None:
    """The FCN and the BasicUNet baseline expose ``stride`` as an attribute (no default is guessed), and each
    network's own padding is :func:`pad_to_stride`: its output on a padded input, cropped, is its output on the
    input itself."""
    from medfcn.model.baselines import BasicUNet2D

    torch.manual_seed(0)
    nets = [
        FCN(in_channels=3, num_classes=2, width=4, max_width=8, depth=3, stem_stride=2).eval(),
        BasicUNet2D(in_channels=3, num_classes=2, features=(4, 4, 4, 4, 4, 4)).eval(),
    ]
    x = torch.randn(1, 3, 33, 37)
    for net in nets:
        assert isinstance(net.stride, int) and net.stride in (8, 16)
        padded, crop = pad_to_stride(x, net.stride)
        with torch.no_grad():
            whole, of_padded = net(x), net(padded)
        assert tuple(whole.shape) == (1, 2, 33, 37)
        torch.testing.assert_close(of_padded[..., crop[0], crop[1]], whole, rtol=1e-5, atol=1e-5)
