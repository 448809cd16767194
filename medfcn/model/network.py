"""The fully convolutional network (after Long, Shelhamer and Darrell, FCN, 2015).

Layout, from input to output (``s`` = stride relative to the input)::

    x (B, in_channels, H, W), padded to a multiple of the stride
    stem      log2(stem_stride) x [conv3x3 stride 2 - BN - ReLU]            s = stem_stride
    level 0   [conv3x3 - BN - ReLU] x 2, width channels                        s = stem_stride
    level i   maxpool 2, [conv3x3 - BN - ReLU] x 2, min(width * 2**i, max_width)  s = stem_stride * 2**i
    score     1x1 conv (the classifier) on the deepest level
    fuse      for each skip level, deepest first: upsample x2, add the 1x1 "score" of that level
    head      upsample to the input size (and classify to num_classes), crop the padding
    logits (B, num_classes, H, W)

The variant says how many skip levels are fused: ``fcn32s`` none, ``fcn16s`` one, ``fcn8s`` two, ``fcn4s`` three.
With the default geometry (``stem_stride=2``, ``depth=5``: levels at strides 2, 4, 8, 16, 32) the names mean what
they meant in the paper: fcn8s fuses the stride-16 and stride-8 levels and upsamples x8 at the end.

``transpose`` upsampling is a transposed convolution initialised to bilinear interpolation; ``resize_conv`` is a
bilinear resize followed by a 3x3 convolution initialised to the identity (no checkerboard artefacts). Skip score
layers start at zero, as in the paper, so an untrained fcn8s starts out as an fcn32s.

>>> net = FCN(in_channels=3, num_classes=2, variant="fcn8s")
>>> net.stride, tuple(net(torch.zeros(1, 3, 33, 37)).shape)
(32, (1, 2, 33, 37))
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medfcn.errors import ModelError
from medfcn.model.config import FCNConfig, Upsampling, Variant

__all__ = [
    "Variant",
    "Upsampling",
    "FCNConfig",
    "FCN",
    "fold_batchnorm",
    "load_coarser_weights",
    "pad_to_stride",
    "recompute_batchnorm",
]


def pad_to_stride(x: torch.Tensor, stride: int) -> tuple[torch.Tensor, tuple[slice, slice]]:
    """``x`` (..., H, W) replicate-padded to multiples of ``stride`` (split evenly, the odd pixel after), and the
    (H, W) slices that crop a result of the padded size back: ``y[..., crop[0], crop[1]]``.

    The one place a slice is fitted to a network's pooling grid: the networks pad whole slices with it and the
    slice engine pads the slices it tiles with it, so every tile sees the grid of the untiled pass.

    >>> padded, crop = pad_to_stride(torch.zeros(1, 1, 33, 37), 8)
    >>> tuple(padded.shape), crop
    ((1, 1, 40, 40), (slice(3, 36, None), slice(1, 38, None)))
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % stride, (-w) % stride
    crop = (slice(ph // 2, ph // 2 + h), slice(pw // 2, pw // 2 + w))
    if ph or pw:
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="replicate")
    return x, crop


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def _bilinear_kernel(size: int) -> torch.Tensor:
    """2-D bilinear interpolation kernel (size x size) as in the FCN reference code (``upsample_filt``)."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = torch.arange(size, dtype=torch.float64)
    k = 1 - (og - center).abs() / factor
    return (k[:, None] * k[None, :]).float()


class _Resize(nn.Module):
    """Bilinear resize by an integer factor (no parameters)."""

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=float(self.factor), mode="bilinear", align_corners=False)


def _upsample(mode: Upsampling, c_in: int, c_out: int, factor: int) -> nn.Module:
    """(B, c_in, h, w) -> (B, c_out, h * factor, w * factor), initialised to bilinear interpolation."""
    if factor == 1:
        return nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)
    if mode == Upsampling.TRANSPOSE:
        if c_in != c_out:  # classify first, then upsample each class map with its own bilinear kernel
            return nn.Sequential(nn.Conv2d(c_in, c_out, 1), _upsample(mode, c_out, c_out, factor))
        up = nn.ConvTranspose2d(c_in, c_out, 2 * factor, stride=factor, padding=factor // 2, bias=False)
        with torch.no_grad():
            up.weight.zero_()
            kernel = _bilinear_kernel(2 * factor)
            for c in range(c_in):
                up.weight[c, c] = kernel
        return up
    conv = nn.Conv2d(c_in, c_out, 3, padding=1)
    if c_in == c_out:
        with torch.no_grad():
            nn.init.dirac_(conv.weight)
            conv.bias.zero_()
    return nn.Sequential(_Resize(factor), conv)


class FCN(nn.Module):
    """Fully convolutional network: (B, in_channels, H, W) float -> logits (B, num_classes, H, W), any H, W.

    Build from an :class:`FCNConfig`, a dict, or keyword arguments (which override ``config``'s fields).
    Raises :class:`ModelError` for an invalid configuration or an input of the wrong shape.
    """

    def __init__(self, config: FCNConfig | dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__()
        if isinstance(config, dict):
            config = FCNConfig.from_dict({**config, **kwargs})
        elif config is None:
            config = FCNConfig.from_dict(kwargs)
        elif kwargs:
            config = replace(config, **kwargs)
        self.config = config
        widths = config.widths
        score = config.score_channels or config.num_classes
        up = Upsampling(config.upsampling)
        n_skips = Variant(config.variant).skips

        stem: list[nn.Module] = []
        c = config.in_channels
        for _ in range(int(math.log2(config.stem_stride))):
            stem.append(_conv_bn_relu(c, widths[0], stride=2))
            c = widths[0]
        self.stem = nn.Sequential(*stem)
        self.levels = nn.ModuleList()
        for i, w in enumerate(widths):
            pool = [nn.MaxPool2d(2)] if i > 0 else []
            self.levels.append(nn.Sequential(*pool, _conv_bn_relu(c, w), _conv_bn_relu(w, w)))
            c = w

        self.score = nn.Sequential(nn.Dropout2d(config.dropout), nn.Conv2d(widths[-1], score, 1))
        # Skip levels, deepest first: depth-2, depth-3, ...
        self.skip_levels = [config.depth - 2 - k for k in range(n_skips)]
        self.skip_scores = nn.ModuleList(nn.Conv2d(widths[j], score, 1) for j in self.skip_levels)
        for s in self.skip_scores:
            nn.init.zeros_(s.weight)
            nn.init.zeros_(s.bias)
        self.ups = nn.ModuleList(_upsample(up, score, score, 2) for _ in self.skip_levels)
        finest = config.stem_stride * 2 ** (config.depth - 1 - n_skips)
        self.head = _upsample(up, score, config.num_classes, finest)

    @property
    def stride(self) -> int:
        """Input sizes are padded internally to a multiple of this."""
        return self.config.stride

    @property
    def in_channels(self) -> int:
        return self.config.in_channels

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> logits (B, num_classes, H, W). Pads (replicate) to the stride, crops back."""
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ModelError(f"the network expects input (B, {self.config.in_channels}, H, W), got {tuple(x.shape)}")
        x, crop = pad_to_stride(x, self.stride)
        y = self.stem(x)
        features = []
        for level in self.levels:
            y = level(y)
            features.append(y)
        score = self.score(features[-1])
        for j, up, skip_score in zip(self.skip_levels, self.ups, self.skip_scores, strict=True):
            score = up(score) + skip_score(features[j])
        return self.head(score)[:, :, crop[0], crop[1]]


def load_coarser_weights(network: FCN, state: dict[str, torch.Tensor]) -> list[str]:
    """Load into ``network`` the weights ``state`` of a coarser variant of the same FCN (an fcn8s into an fcn4s,
    say: the paper's way of growing FCN-32s into FCN-16s and FCN-8s). Every tensor of ``state`` must exist in
    ``network`` with the same shape; the finer variant's extra skip layers keep their initialisation (a zero score,
    an identity upsampling), so the grown network starts out close to the coarser one. Returns the names of the
    tensors left at their initialisation; raises :class:`ModelError` when ``state`` does not fit."""
    own = network.state_dict()
    misfit = sorted(k for k, v in state.items() if k not in own or tuple(own[k].shape) != tuple(v.shape))
    if misfit:
        k = misfit[0]
        raise ModelError(
            f"the weights do not fit this network ({len(misfit)} tensors; first {k}: "
            f"{tuple(state[k].shape)} vs {tuple(own[k].shape) if k in own else 'missing'})"
        )
    new = sorted(set(own) - set(state))
    lacking = [k for k in new if not k.startswith(("skip_scores.", "ups."))]
    if lacking:
        raise ModelError(f"the weights lack {len(lacking)} tensors that are not skip layers; first {lacking[0]}")
    network.load_state_dict(state, strict=False)
    return new


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Set every BatchNorm layer's running mean and variance of ``model`` to the plain average of its batch
    statistics over ``batches`` (inputs (B, K, H, W) on the model's device), forward passes in training mode with no
    gradient ("precise BN"). Returns the number of batches seen; the model's mode and momenta are restored, and with
    no batches nothing changes.

    Training's running statistics are an exponential average of the last few dozen batches (momentum 0.1): after an
    epoch they describe whichever volumes came last (a synthesised contrast, a heavy augmentation), and a network
    whose weights hardly move still validates and segments differently from epoch to epoch. Averaged over a fixed
    set of batches they describe the training distribution, the same at every epoch.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not layers:
        return 0
    momenta = [m.momentum for m in layers]
    was_training = model.training
    n = 0
    try:
        for x in batches:  # consumed one at a time: a generator keeps a single batch on the device
            if n == 0:  # the statistics are reset only once a batch has come: no batches, nothing changes
                for m in layers:
                    m.reset_running_stats()
                    m.momentum = None  # a cumulative average: each batch weighs the same
                model.train()
            model(x)
            n += 1
    finally:
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    return n


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every Conv2d directly followed by BatchNorm2d fused into one conv.

    The copy's output equals the original's in eval mode (within float rounding, ~1e-6); the original is untouched.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for a, b in zip(names, names[1:], strict=False):
            conv, bn = module._modules[a], module._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                module._modules[a] = fuse_conv_bn_eval(conv, bn)
                module._modules[b] = nn.Identity()
    return model
