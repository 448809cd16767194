"""The options of ``medfcn train``: :class:`TrainConfig`, frozen and self-checking, and its command-line parser, without
importing torch.

A configuration is checked when it is made, whoever makes it: :meth:`TrainConfig.from_args` (the CLI),
:meth:`TrainConfig.for_corrections` (the napari Train dock) or a script calling ``TrainConfig(...)``; an invalid one
raises :class:`~medfcn.errors.UsageError` with the same one-line message in each case. Three settings may be left
``None``, "resolved later": the learning rate, the label names and the network options, which come from the start
model with ``--init`` (or the defaults for a new model); :meth:`TrainConfig.resolve` settles them, once, where the
model card is made (:func:`medfcn.training.record.build_card`).

>>> TrainConfig(images="img", labels="lab").resolve(None).label_names
('background', 'brain')
>>> TrainConfig(images="img", labels="lab", epochs=0)
Traceback (most recent call last):
...
medfcn.errors.UsageError: --epochs must be >= 1, got 0
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from medfcn.dicom.codes import parse_label_codes
from medfcn.errors import UsageError
from medfcn.model.config import FCNConfig

if TYPE_CHECKING:
    import argparse

    from medfcn.model.card import ModelCard

IGNORE = 255  # the label value of voxels that are not annotated, by default (the one definition)
LABEL_VALUES = range(256)  # training reads label maps as uint8
SCRATCH_LR = 2e-3  # the learning rate of a new model when --lr is not given
FINETUNE_LR = 3e-4  # the learning rate with --init when --lr is not given
MAX_BN_BATCHES = 512  # the batches are kept (float16) for the run: ~1 GB at the default frame and batch size
DEFAULT_LABELS = ("background", "brain")
DEFAULT_CONTEXT = 1

__all__ = [
    "DEFAULT_LABELS",
    "FINETUNE_LR",
    "IGNORE",
    "LABEL_VALUES",
    "NetworkOptions",
    "TrainConfig",
    "check_ignore",
    "check_pair_options",
]


def check_ignore(ignore: int, where: str = "--ignore-label", n_classes: int = 0) -> None:
    """The ignore value must fit a uint8 label map and not be a class id (``0 .. n_classes - 1``); raises
    :class:`UsageError` naming ``where``."""
    if ignore not in LABEL_VALUES:
        raise UsageError(
            f"{where}: the ignore label {ignore} must be from {LABEL_VALUES.start} to {LABEL_VALUES.stop - 1} "
            "(training reads label maps as uint8)"
        )
    if ignore < n_classes:
        raise UsageError(
            f"{where}: the ignore label {ignore} is also a class id of the model (0..{n_classes - 1}); "
            "choose another --ignore-label"
        )


def check_pair_options(images: str, labels: str, pairs: str) -> None:
    """Labelled scans are given as two folders (or files) or as a list of pairs; raises UsageError otherwise.
    ``medfcn train`` and ``medfcn calibrate`` ask it before anything heavy is imported."""
    if not pairs and not (images and labels):
        raise UsageError("give --images and --labels (two folders or files), or --pairs LIST.csv/json")


@dataclass(frozen=True)
class NetworkOptions:
    """The network a run builds. ``None``: the start model's with ``--init``, else :class:`FCNConfig`'s default
    (``context``: neighbouring slices each side, 1). With ``--init`` a given value must match the start model's,
    except that ``variant`` may be finer (fcn8s -> fcn4s: :func:`medfcn.training.finetune.load_init` checks)."""

    architecture: str | None = None
    variant: str | None = None
    upsampling: str | None = None
    width: int | None = None
    context: int | None = None

    def __post_init__(self) -> None:
        if self.architecture is not None and self.architecture not in ("fcn", "basicunet"):
            raise UsageError(f"--architecture must be fcn or basicunet, got {self.architecture!r}")
        if self.width is not None and self.width < 1:
            raise UsageError(f"--width must be >= 1, got {self.width}")
        if self.context is not None and self.context < 0:
            raise UsageError(f"--context must be >= 0, got {self.context}")

    def resolve(self, init: ModelCard | None) -> tuple[str, dict[str, Any]]:
        """(architecture, network constructor arguments without ``num_classes``): each option given here, else the
        start model's (``init``), else the default."""
        start = dict(init.network) if init is not None else {}
        architecture = self.architecture or (init.architecture if init is not None else "fcn")
        if init is not None and architecture != init.architecture:
            start = {}
        context = self.context if self.context is not None else (start.get("in_channels", 3) - 1) // 2
        network = {k: v for k, v in start.items() if k != "num_classes"} | {"in_channels": 2 * context + 1}
        if architecture == "fcn":
            default = FCNConfig()
            for name in ("variant", "upsampling", "width"):
                value = getattr(self, name)
                network[name] = value if value is not None else start.get(name, getattr(default, name))
        return architecture, network


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (recorded in the model file), checked when made (:class:`UsageError`).

    ``lr``, ``label_names`` and ``network`` may be ``None`` (resolved later, by :meth:`resolve`): the start model's
    labels and network with ``init``, :data:`FINETUNE_LR` or :data:`SCRATCH_LR`, :data:`DEFAULT_LABELS`."""

    images: str = ""
    labels: str = ""
    pairs: str = ""
    output: str = "model.safetensors"
    network: NetworkOptions = NetworkOptions()
    spacing: float = 1.5
    axes: tuple[int, ...] = (0, 1, 2)
    label_names: tuple[str, ...] | None = None
    label_codes: dict[str, Any] = field(default_factory=dict)  # see medfcn.dicom.codes
    postprocess: tuple[str, ...] = ("largest_component", "fill_holes")
    epochs: int = 40
    steps_per_epoch: int = 100
    batch_size: int = 16
    steps_per_volume: int = 4
    foreground_fraction: float = 0.7
    lr: float | None = None
    weight_decay: float = 1e-4
    bn_batches: int = 64  # batch-norm statistics recomputed over this many fixed training batches per epoch
    max_minutes: float | None = None
    val_cases: int = 1
    val_copies: int = 4
    augment: bool = True
    seed: int = 0
    device: str = "auto"
    name: str = "medfcn-model"
    description: str = ""
    modality: str = "MRI T1w"
    command: str = ""
    resume: bool = False
    synth: float = 0.0
    init: str = ""
    ignore_label: int = IGNORE  # label value of voxels that are not annotated
    distill: float = 1.0  # with --init: weight of the start model's own predictions on unannotated voxels
    replay: float = 0.0  # with --init: fraction of training volumes drawn from the data its card records
    clinical: float = 0.0

    def __post_init__(self) -> None:
        check_pair_options(self.images, self.labels, self.pairs)
        if not self.axes or any(a not in (0, 1, 2) for a in self.axes):
            raise UsageError(f"--axes must be comma-separated axis numbers 0, 1 or 2, got {self.axes}")
        for name, value in (
            ("--epochs", self.epochs),
            ("--steps-per-epoch", self.steps_per_epoch),
            ("--batch-size", self.batch_size),
            ("steps_per_volume", self.steps_per_volume),
        ):
            if value < 1:
                raise UsageError(f"{name} must be >= 1, got {value}")
        if not 0 <= self.bn_batches <= MAX_BN_BATCHES:
            raise UsageError(
                f"--bn-batches must be between 0 and {MAX_BN_BATCHES} (they are kept in memory for the run), "
                f"got {self.bn_batches}"
            )
        for name, value in (("--synth", self.synth), ("--clinical", self.clinical), ("--replay", self.replay)):
            if not 0 <= value <= 1:
                raise UsageError(f"{name} must be a fraction between 0 and 1, got {value}")
        if not 0 <= self.foreground_fraction <= 1:
            raise UsageError(f"foreground_fraction must be a fraction between 0 and 1, got {self.foreground_fraction}")
        if self.distill < 0:
            raise UsageError(f"--distill must be a weight >= 0, got {self.distill}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise UsageError(f"--max-minutes must be a positive number of minutes, got {self.max_minutes}")
        if self.lr is not None and not self.lr >= 0:  # 0 keeps the start weights (e.g. to grow a finer variant)
            raise UsageError(f"--lr must be a learning rate >= 0, got {self.lr}")
        if not self.spacing > 0:
            raise UsageError(f"--spacing must be a positive number of mm, got {self.spacing}")
        if self.val_cases < 0 or self.val_copies < 0:
            raise UsageError(f"--val-cases must be >= 0, got {self.val_cases}")
        if self.label_names is not None:
            from medfcn.model.card import MAX_CLASSES

            names = self.label_names
            if len(names) < 2 or len(set(names)) != len(names) or not all(names) or len(names) > MAX_CLASSES:
                raise UsageError(
                    f"--label-names: a model needs at least two distinct label names, background first; got "
                    f"{','.join(names)}"
                )
        # the class ids are known unless they come from the --init model (then checked when resolved)
        n_classes = len(self.label_names or (() if self.init else DEFAULT_LABELS))
        check_ignore(self.ignore_label, n_classes=n_classes)

    @property
    def finetune(self) -> bool:
        """Whether the run starts from a model file (``--init``)."""
        return bool(self.init)

    def new_task(self, init: ModelCard | None) -> bool:
        """Whether this run starts a new task from the ``--init`` model ``init``: other ``label_names`` than its
        labels (its encoder is kept, its classifier made anew: :func:`medfcn.training.finetune.load_init`)."""
        if init is None or self.label_names is None:
            return False
        return tuple(self.label_names) != tuple(sorted(init.labels, key=init.labels.get))

    def resolve(self, init: ModelCard | None) -> TrainConfig:
        """This configuration with the settings left ``None`` taken from the start model's card ``init`` (``None``
        for a new model) or the defaults; the network options all given. Fine-tuning keeps ``init``'s labels; other
        ``label_names`` start a new task from it (:meth:`new_task`): a new classifier learns at a new model's rate,
        and the start model's predictions (``--distill``) and data (``--replay``), which are of its own labels, are
        not used."""
        new_task = self.new_task(init)
        if init is not None and not new_task:
            labels = tuple(sorted(init.labels, key=init.labels.get))
        else:
            labels = self.label_names or DEFAULT_LABELS
        architecture, network = self.network.resolve(init)
        fixed = NetworkOptions(
            architecture=architecture,
            variant=network.get("variant"),
            upsampling=network.get("upsampling"),
            width=network.get("width"),
            context=(network["in_channels"] - 1) // 2,
        )
        lr = self.lr if self.lr is not None else FINETUNE_LR if init is not None and not new_task else SCRATCH_LR
        other = {"distill": 0.0, "replay": 0.0} if new_task else {}
        return replace(self, label_names=labels, network=fixed, lr=lr, **other)

    @classmethod
    def from_args(cls, args: argparse.Namespace, command: str = "") -> TrainConfig:
        """The configuration of ``medfcn train``'s parsed options; ``command``: the command line, recorded in the
        card. Raises :class:`UsageError` (no heavy import)."""
        check_pair_options(args.images, args.labels, args.pairs)
        try:
            axes = tuple(int(a) for a in args.axes.split(","))
        except ValueError:
            raise UsageError(f"--axes must be comma-separated axis numbers, got {args.axes!r}") from None
        parsed = {
            "axes": axes,
            "network": NetworkOptions(args.architecture, args.variant, args.upsampling, args.width, args.context),
            "label_names": tuple(args.label_names.split(",")) if args.label_names else None,
            "label_codes": parse_label_codes(args.label_codes) if args.label_codes else {},
            "postprocess": () if args.postprocess in ("", "none") else tuple(args.postprocess.split(",")),
            "augment": not args.no_augment,
            "command": command,
        }
        # every other setting is the option of the same name; settings without an option keep their defaults
        given = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        return cls(**(given | parsed))

    @classmethod
    def for_corrections(
        cls,
        image: str,
        label: str,
        output: str,
        *,
        minutes: float,
        init: str = "",
        label_names: tuple[str, ...] | None = None,
        steps_per_epoch: int,
        seed: int = 0,
        name: str = "",
        command: str = "",
        postprocess: tuple[str, ...] | None = None,
        pairs: str = "",
        lr: float | None = None,
        distill: float = 1.0,
    ) -> TrainConfig:
        """A run on one corrected scan (the napari Train dock's), or on the list ``pairs`` of corrected cases (``image``
        and ``label`` empty; the Review queue's): fine-tuning ``init`` (its labels, network and the
        fine-tuning learning rate resolved from it; its name too unless ``name`` is given), or a new model with
        ``label_names``; ``minutes`` of training
        (the time budget ends the run), no held-out case, the model written to ``output``; ``lr`` and ``distill``
        as an earlier round of the same run had them (the Train dock's live mode), else resolved as usual."""
        if init and not label_names:  # fine-tuning: the start model's name unless the run names the new model
            new = {"name": name} if name else {}
        else:
            new = {"name": name or "medfcn-model", "val_copies": 1}
        if postprocess is not None:
            new["postprocess"] = tuple(postprocess)
        return cls(
            images=image,
            labels=label,
            pairs=pairs,
            output=output,
            init=init,
            label_names=label_names,
            max_minutes=minutes,
            epochs=10_000,  # the time budget ends the run
            steps_per_epoch=steps_per_epoch,
            val_cases=0,
            seed=seed,
            command=command,
            lr=lr,
            distill=distill,
            **new,
        )
