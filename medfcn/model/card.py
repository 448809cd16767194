"""The model card: what a model is and how to use it, validated when it is read.

The card travels as JSON inside the model file (:mod:`medfcn.model.checkpoint`). The enums it names
(architecture, intensity normalisation, post-processing steps) live here, with the card, so that the inference
code that acts on them imports the card and never the reverse.

>>> ModelCard(labels={"background": 0, "tumour": 1}, network={"num_classes": 2}).context
0
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

from medfcn import __version__
from medfcn.choices import parse_choice
from medfcn.dicom.codes import check_label_codes
from medfcn.errors import ModelError
from medfcn.model.expectations import Expectations

__all__ = ["FORMAT_VERSION", "MAX_CLASSES", "Architecture", "Normalisation", "PostStep", "ModelCard"]

FORMAT_VERSION = 1
MAX_CLASSES = 65536  # label maps are written as uint16 at most


class Normalisation(StrEnum):
    """How intensities are normalised before a model sees them."""

    PERCENTILE = "percentile"  # (x - p0.5) / (p99.5 - p0.5), clipped to [0, 1]
    ZSCORE = "zscore"  # (x - mean) / std over voxels above the volume's mean (the head, not the air)


class PostStep(StrEnum):
    """Post-processing steps a card may list, applied per foreground label in order."""

    LARGEST_COMPONENT = "largest_component"  # 6-connected components; the largest is kept
    FILL_HOLES = "fill_holes"  # background enclosed by the structure in 3-D becomes the structure
    FILL_SLICES = "fill_slices"  # ... and background enclosed in any 2-D slice along each axis of the model's frame


class Architecture(StrEnum):
    """Network families a model file may hold."""

    FCN = "fcn"
    BASICUNET = "basicunet"  # MONAI's 2-D BasicUNet, the baseline


@dataclass
class ModelCard:
    """What a model is and how to use it. Serialised as JSON inside the model file.

    ``spacing`` (mm) and ``orientation`` define the model's frame; ``slice_axes`` are axes of that frame along
    which 2-D slices are taken (probabilities averaged over them); ``normalisation`` is a
    :class:`Normalisation` value; ``postprocess`` lists steps applied per foreground label
    (``largest_component``, ``fill_holes``, ``fill_slices``). ``class_weights``, one positive number per label in id
    order (empty: all 1), multiply each class's probability before the argmax: a decision prior that
    ``medfcn calibrate`` sets on labelled scans (for two labels, a background weight ``w`` moves the threshold to
    ``w / (1 + w)``). ``expectations``: what the model's training data looked like (label volumes, position,
    intensity profile, the model's own agreement between slice directions), for quality verdicts
    (:mod:`medfcn.model.expectations`); empty in older cards, which get the model-independent checks only.
    """

    network: dict[str, Any] = field(default_factory=dict)
    architecture: str = Architecture.FCN.value
    name: str = "medfcn-model"
    description: str = ""
    labels: dict[str, int] = field(default_factory=lambda: {"background": 0, "brain": 1})
    label_codes: dict[str, Any] = field(default_factory=dict)  # {name: {"category", "type"}}: medfcn.dicom.codes
    modality: str = "MRI T1w"
    normalisation: str = "percentile"
    orientation: str = "RAS"
    spacing: tuple[float, float, float] = (1.5, 1.5, 1.5)
    slice_axes: tuple[int, ...] = (0, 1, 2)
    postprocess: tuple[str, ...] = ()
    class_weights: tuple[float, ...] = ()
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    expectations: dict[str, Any] = field(default_factory=dict)  # medfcn.model.expectations: for quality verdicts
    medfcn_version: str = __version__
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        """Validate the whole card, so that a model that cannot segment is refused when it is loaded."""
        self.architecture = parse_choice(Architecture, self.architecture, "architecture").value
        try:
            self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
            self.slice_axes = tuple(int(a) for a in self.slice_axes)
        except (TypeError, ValueError):
            raise ModelError(
                f"model spacing and slice_axes must be numbers, got {self.spacing}, {self.slice_axes}"
            ) from None
        self.postprocess = tuple(self.postprocess)
        if len(self.spacing) != 3 or not all(0 < s < 1e3 for s in self.spacing):  # also refuses NaN
            raise ModelError(f"model spacing must be three positive numbers (mm), got {self.spacing}")
        if not self.slice_axes or any(a not in (0, 1, 2) for a in self.slice_axes):
            raise ModelError(f"model slice_axes must be a non-empty subset of 0, 1, 2, got {self.slice_axes}")
        if not isinstance(self.labels, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in self.labels.items()
        ):
            raise ModelError(f"model labels must map names to integer ids, got {self.labels!r}")
        ids = sorted(self.labels.values())
        if ids != list(range(len(ids))) or len(ids) < 2 or len(ids) > MAX_CLASSES:
            raise ModelError(f"model label ids must be 0..N-1 with 2 <= N <= {MAX_CLASSES}, got {self.labels}")
        self.label_codes = check_label_codes(self.label_codes, self.labels)
        self._check_class_weights()
        self.expectations = Expectations.from_dict(self.expectations, self.labels).to_dict()
        self.normalisation = parse_choice(Normalisation, self.normalisation, "model normalisation").value
        self.postprocess = tuple(
            parse_choice(PostStep, s, "model post-processing step").value for s in self.postprocess
        )
        axes = {"L": 0, "R": 0, "A": 1, "P": 1, "S": 2, "I": 2}
        if not isinstance(self.orientation, str) or sorted(axes.get(c, 9) for c in self.orientation) != [0, 1, 2]:
            raise ModelError(f"model orientation {self.orientation!r} is not three axis codes such as RAS or LPS")
        self._check_network()

    def _check_class_weights(self) -> None:
        try:
            self.class_weights = tuple(float(w) for w in self.class_weights)
        except (TypeError, ValueError):
            raise ModelError(f"model class_weights must be numbers, got {self.class_weights!r}") from None
        if self.class_weights and (
            len(self.class_weights) != len(self.labels) or not all(0.01 <= w <= 100 for w in self.class_weights)
        ):
            raise ModelError(
                f"model class_weights must be {len(self.labels)} numbers from 0.01 to 100 (one per label), "
                f"got {list(self.class_weights)}"
            )

    def _check_network(self) -> None:
        """The network settings fit the labels, and the network's size is bounded before anything is built."""
        net = self.network
        if not isinstance(net, dict):
            raise ModelError(f"model network settings must be a mapping, got {type(net).__name__}")
        classes = net.get("num_classes", 2)
        if classes != len(self.labels):
            raise ModelError(f"model has {len(self.labels)} labels but its network outputs {classes!r} classes")
        in_channels = net.get("in_channels", 1)
        if not isinstance(in_channels, int) or in_channels < 1 or in_channels % 2 == 0 or in_channels > 63:
            raise ModelError(
                "model in_channels must be an odd number from 1 to 63 (a slice and its neighbours), "
                f"got {in_channels!r}"
            )
        bounds = {"width": 1024, "max_width": 4096, "depth": 8, "score_channels": 4096}
        if self.architecture == Architecture.BASICUNET.value:
            features = net.get("features", ())
            if not isinstance(features, list | tuple) or not all(
                isinstance(f, int) and 0 < f <= 4096 for f in features
            ):
                raise ModelError(f"model BasicUNet features must be integers from 1 to 4096, got {features!r}")
        for key, limit in bounds.items():
            value = net.get(key)
            if value is not None and (not isinstance(value, int | float) or not 0 < value <= limit):
                raise ModelError(f"model network {key} {value!r} is out of range (1 to {limit})")

    @property
    def context(self) -> int:
        """Neighbouring slices on each side given to the network as extra channels."""
        return (int(self.network.get("in_channels", 1)) - 1) // 2

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
