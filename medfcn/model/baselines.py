"""MONAI's 2-D ``BasicUNet``, wrapped to take any H x W: the honest baseline the FCN is compared against.

>>> net = BasicUNet2D(in_channels=3, num_classes=2)
>>> tuple(net(torch.zeros(1, 3, 33, 37)).shape)
(1, 2, 33, 37)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medfcn.model.network import pad_to_stride

__all__ = ["BasicUNet2D"]


class BasicUNet2D(nn.Module):
    """MONAI ``BasicUNet(spatial_dims=2)`` with its default features; pads inputs to a multiple of 16, crops back."""

    stride: int = 16  # four 2x poolings: what :class:`medfcn.inference.engine.SliceEngine` pads and aligns tiles to

    def __init__(self, in_channels: int = 3, num_classes: int = 2, **kwargs: Any) -> None:
        super().__init__()
        from medfcn._monai import import_monai

        import_monai()  # the one way medfcn imports MONAI
        from monai.networks.nets import BasicUNet

        self.in_channels = in_channels
        self.num_classes = num_classes
        self.unet = BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=num_classes, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> logits (B, num_classes, H, W), through :func:`pad_to_stride` and back."""
        x, crop = pad_to_stride(x, self.stride)
        return self.unet(x)[:, :, crop[0], crop[1]]
