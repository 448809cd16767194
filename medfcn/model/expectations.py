"""What a model expects of the scans it segments, recorded in its card from its training data.

The card's ``expectations`` (JSON) hold, for the model's labels and training inputs:

- ``volume_ml``: each foreground label's volume range (mL) on the training labels, widened by
  :data:`VOLUME_MARGIN` (two or three training subjects do not span a population);
- ``centre``: where the mask's centre lay in the object's box (fractions along R, A, S), widened by
  :data:`CENTRE_MARGIN`; ``pieces``: most pieces larger than 1 % of the mask in a raw prediction;
- ``object_quantiles`` / ``mask_quantiles``: the intensity profile of the training inputs (normalised as the model
  sees them: :data:`medfcn.inference.quality.QUANTILES` of the object's and of the label's voxels, the median
  over the training cases) and ``profile_distance``, the largest distance of a training input from that median;
- ``mask_spread``: the least spread of the label's normalised intensities (95th minus 5th percentile) on a training
  input: the contrast inside the structure that the model learnt from (a CT's brain spans a few hundredths);
- ``disagreement``, ``uncertain``, ``outside_largest``: the largest values the model itself showed on its training
  inputs (see :mod:`medfcn.inference.quality`), so that its verdict thresholds are its own;
- ``source``: how they were recorded.

A card without expectations loads as before and gets the model-independent checks only
(:mod:`medfcn.inference.verdict`).

>>> e = Expectations.from_dict({"volume_ml": {"brain": [900, 2100]}})
>>> e.volume_ml["brain"], e.disagreement is None
((900.0, 2100.0), True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from medfcn.errors import ModelError

__all__ = ["VOLUME_MARGIN", "CENTRE_MARGIN", "Expectations"]

VOLUME_MARGIN = (0.6, 1.4)  # the training range [lo, hi] becomes [0.6 lo, 1.4 hi]
CENTRE_MARGIN = 0.15  # of the object's box, on each side of the training range


def _number(value: Any, what: str, lo: float = 0.0, hi: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= float(value) <= hi:
        raise ModelError(f"model card expectations: {what} must be a number from {lo} to {hi}, got {value!r}")
    return float(value)


def _pair(value: Any, what: str, lo: float = 0.0, hi: float = math.inf) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ModelError(f"model card expectations: {what} must be a pair [low, high], got {value!r}")
    a, b = (_number(v, what, lo, hi) for v in value)
    if a > b:
        raise ModelError(f"model card expectations: {what} has low {a} above high {b}")
    return a, b


def _quantiles(value: Any, what: str) -> tuple[float, ...]:
    if value in (None, []):
        return ()
    if not isinstance(value, list | tuple) or len(value) != 19:
        raise ModelError(f"model card expectations: {what} must be 19 quantiles, got {value!r}")
    return tuple(_number(v, what, -1e6, 1e6) for v in value)


@dataclass(frozen=True)
class Expectations:
    """A model's expectations (see the module docstring); every field may be absent (``None`` or empty)."""

    volume_ml: dict[str, tuple[float, float]] = field(default_factory=dict)
    centre: tuple[tuple[float, float], ...] = ()
    pieces: int | None = None
    object_quantiles: tuple[float, ...] = ()
    mask_quantiles: tuple[float, ...] = ()
    profile_distance: float | None = None
    mask_spread: float | None = None
    disagreement: float | None = None
    uncertain: float | None = None
    outside_largest: float | None = None
    source: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, labels: dict[str, int] | None = None) -> Expectations:
        """Validated expectations from a card's JSON (``{}`` or ``None``: none). Raises :class:`ModelError` naming
        the field at fault; ``labels`` (name -> id), when given, must name every label in ``volume_ml``."""
        data = data or {}
        if not isinstance(data, dict):
            raise ModelError(f"model card expectations must be a mapping, got {type(data).__name__}")
        unknown = set(data) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ModelError(f"model card expectations: unknown field(s) {', '.join(sorted(unknown))}")
        volumes = data.get("volume_ml") or {}
        if not isinstance(volumes, dict):
            raise ModelError("model card expectations: volume_ml must map label names to [low, high] mL")
        if labels is not None and set(volumes) - {n for n, i in labels.items() if i > 0}:
            raise ModelError(f"model card expectations: volume_ml names labels the model lacks: {sorted(volumes)}")
        centre = data.get("centre") or ()
        if centre and len(centre) != 3:
            raise ModelError(f"model card expectations: centre must be three [low, high] pairs, got {centre!r}")
        pieces = data.get("pieces")
        numbers = ("profile_distance", "mask_spread", "disagreement", "uncertain", "outside_largest")
        optional = {k: data.get(k) for k in numbers}
        return cls(
            volume_ml={str(k): _pair(v, f"volume_ml of {k}") for k, v in volumes.items()},
            centre=tuple(_pair(c, "centre", -10.0, 10.0) for c in centre),
            pieces=None if pieces is None else int(_number(pieces, "pieces", 1, 1e6)),
            object_quantiles=_quantiles(data.get("object_quantiles"), "object_quantiles"),
            mask_quantiles=_quantiles(data.get("mask_quantiles"), "mask_quantiles"),
            source=str(data.get("source", "")),
            **{k: None if v is None else _number(v, k, 0.0, 1e6) for k, v in optional.items()},
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, only the fields that are set."""
        out: dict[str, Any] = {
            "volume_ml": {k: list(v) for k, v in self.volume_ml.items()},
            "centre": [list(c) for c in self.centre],
            "pieces": self.pieces,
            "object_quantiles": list(self.object_quantiles),
            "mask_quantiles": list(self.mask_quantiles),
            "profile_distance": self.profile_distance,
            "mask_spread": self.mask_spread,
            "disagreement": self.disagreement,
            "uncertain": self.uncertain,
            "outside_largest": self.outside_largest,
            "source": self.source,
        }
        return {k: v for k, v in out.items() if v not in (None, [], {}, "")}

    @property
    def empty(self) -> bool:
        return not self.to_dict()
