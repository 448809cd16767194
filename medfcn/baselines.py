"""MONAI's 2-D ``BasicUNet``, wrapped to take any H x W: the honest baseline the FCN is compared against.

>>> net = BasicUNet2D(in_channels=3, num_classes=2)
>>> tuple(net(torch.zeros(1, 3, 33, 37)).shape)
(1, 2, 33, 37)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BasicUNet2D"]


class BasicUNet2D(nn.Module):
    """MONAI ``BasicUNet(spatial_dims=2)`` with its default features; pads inputs to a multiple of 16, crops back."""

    stride = 16

    def __init__(self, in_channels: int = 3, num_classes: int = 2, **kwargs: Any) -> None:
        super().__init__()
        from monai.networks.nets import BasicUNet

        self.in_channels = in_channels
        self.num_classes = num_classes
        self.unet = BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=num_classes, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.stride, (-w) % self.stride
        if ph or pw:
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="replicate")
        out = self.unet(x)
        return out[:, :, ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w] if (ph or pw) else out
