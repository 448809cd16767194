"""The FCN's constructor arguments, validated, with no torch: what a model card records and the CLI's defaults.

:class:`FCNConfig` rebuilds an :class:`medfcn.model.network.FCN` exactly (its ``to_dict`` is stored in the card);
``medfcn train``'s options take their network defaults from it, so they are stated once.

>>> cfg = FCNConfig(in_channels=3, variant="fcn8s")
>>> cfg.stride, cfg.widths
(32, [16, 32, 64, 128, 256])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from enum import StrEnum
from typing import Any

from medfcn.choices import parse_choice
from medfcn.errors import ModelError

__all__ = ["Variant", "Upsampling", "FCNConfig"]


class Variant(StrEnum):
    """Which skip levels the network fuses (the finest stride its score map reaches before the last upsample)."""

    FCN32S = "fcn32s"
    FCN16S = "fcn16s"
    FCN8S = "fcn8s"
    FCN4S = "fcn4s"

    @property
    def skips(self) -> int:
        """Number of skip levels fused above the deepest one."""
        return {"fcn32s": 0, "fcn16s": 1, "fcn8s": 2, "fcn4s": 3}[self.value]


class Upsampling(StrEnum):
    """How score maps are upsampled: transposed convolution, or bilinear resize then 3x3 convolution."""

    TRANSPOSE = "transpose"
    RESIZE_CONV = "resize_conv"


@dataclass
class FCNConfig:
    """Everything needed to rebuild an :class:`FCN`; :meth:`to_dict` / :meth:`from_dict` round-trip through JSON.

    ``in_channels``: input channels (a slice and its neighbours: ``2 * context + 1``).
    ``width``: channels of level 0, doubling per level up to ``max_width``.
    ``depth``: number of encoder levels; the network's stride is ``stem_stride * 2 ** (depth - 1)``.
    ``stem_stride``: 1, 2 or 4; a strided stem keeps the costly full-resolution layers cheap on the CPU.
    ``score_channels``: channels of the fused score maps; ``None`` means ``num_classes`` (the paper's FCN).
    ``dropout``: dropout probability before the deepest classifier (training only).
    Raises :class:`ModelError` for values out of range, naming the valid ones.
    """

    in_channels: int = 3
    num_classes: int = 2
    variant: str = "fcn8s"
    upsampling: str = "resize_conv"
    width: int = 16
    max_width: int = 256
    depth: int = 5
    stem_stride: int = 2
    score_channels: int | None = None
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.variant = parse_choice(Variant, self.variant, "variant")
        self.upsampling = parse_choice(Upsampling, self.upsampling, "upsampling")
        for name, low in (("in_channels", 1), ("num_classes", 2), ("width", 1), ("depth", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ModelError(f"network {name} must be an integer >= {low}, got {value!r}")
        if not isinstance(self.max_width, int) or self.max_width < self.width:
            raise ModelError(f"network max_width must be an integer >= width ({self.width}), got {self.max_width!r}")
        if self.stem_stride not in (1, 2, 4):
            raise ModelError(f"network stem_stride {self.stem_stride!r} is not one of: 1, 2, 4")
        if self.score_channels is not None and (not isinstance(self.score_channels, int) or self.score_channels < 1):
            raise ModelError(f"network score_channels must be None or an integer >= 1, got {self.score_channels!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ModelError(f"network dropout must be in [0, 1), got {self.dropout!r}")
        if Variant(self.variant).skips > self.depth - 1:
            raise ModelError(
                f"variant {self.variant} fuses {Variant(self.variant).skips} skip levels but depth {self.depth} has "
                f"only {self.depth - 1}; use depth >= {Variant(self.variant).skips + 1} or a coarser variant"
            )

    @property
    def stride(self) -> int:
        """Total downsampling factor: input sizes are padded to a multiple of it."""
        return self.stem_stride * 2 ** (self.depth - 1)

    @property
    def widths(self) -> list[int]:
        """Channels of each encoder level, shallowest first."""
        return [min(self.width * 2**i, self.max_width) for i in range(self.depth)]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (enums as their string values)."""
        out = asdict(self)
        out["variant"] = str(self.variant)
        out["upsampling"] = str(self.upsampling)
        return out

    def grows_from(self, coarser: FCNConfig) -> bool:
        """This network is ``coarser``'s with more skip levels fused (fcn8s -> fcn4s) and nothing else changed, so
        :func:`load_coarser_weights` can start it from ``coarser``'s weights."""
        try:
            same_otherwise = replace(coarser, variant=self.variant) == self
        except ModelError:  # coarser's depth cannot hold this variant: it differs in more than the variant
            return False
        return same_otherwise and Variant(coarser.variant).skips < Variant(self.variant).skips

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FCNConfig:
        """Rebuild from :meth:`to_dict`'s output; raises :class:`ModelError` on unknown keys or bad values."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelError(f"unknown network settings {unknown}; known: {', '.join(sorted(known))}")
        return cls(**data)
