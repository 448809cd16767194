"""The options of ``medfcn train``: :class:`TrainConfig` and its command-line parser, without importing torch.

``medfcn --help`` and a usage error answer before any heavy import; :mod:`medfcn.training.train` does the training.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass, field, fields
from typing import Any

from medfcn.dicom.codes import parse_label_codes
from medfcn.errors import UsageError
from medfcn.model.config import FCNConfig

FINETUNE_LR = 3e-4  # the learning rate with --init when --lr is not given (2e-3 trains from scratch)
MAX_BN_BATCHES = 512  # the batches are kept (float16) for the run: ~1 GB at the default frame and batch size

__all__ = ["TrainConfig", "add_pair_options", "add_train_parser", "check_pair_options", "config_from_args"]


@dataclass
class TrainConfig:
    """Everything a training run depends on (recorded in the model file)."""

    images: str = ""
    labels: str = ""
    pairs: str = ""
    output: str = "model.safetensors"
    architecture: str = "fcn"
    variant: str = FCNConfig.variant
    upsampling: str = FCNConfig.upsampling
    width: int = FCNConfig.width
    context: int = 1
    spacing: float = 1.5
    axes: tuple[int, ...] = (0, 1, 2)
    label_names: tuple[str, ...] = ("background", "brain")
    label_codes: dict[str, Any] = field(default_factory=dict)  # see medfcn.dicom.codes
    postprocess: tuple[str, ...] = ("largest_component", "fill_holes")
    epochs: int = 40
    steps_per_epoch: int = 100
    batch_size: int = 16
    steps_per_volume: int = 4
    foreground_fraction: float = 0.7
    lr: float = 2e-3
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
    ignore_label: int = 255  # label value of voxels that are not annotated
    distill: float = 1.0  # with --init: weight of the start model's own predictions on unannotated voxels
    replay: float = 0.0  # with --init: fraction of training volumes drawn from the data its card records
    clinical: float = 0.0


def add_train_parser(sub: argparse._SubParsersAction, run) -> None:
    """Add ``train`` to ``sub``; ``run(args)`` (the CLI's) trains with :func:`config_from_args`'s settings."""
    d = TrainConfig()
    p = sub.add_parser(
        "train",
        help="train a model on labelled scans",
        description="Train a slice-wise model on images and label maps paired by case name and write a model file "
        "(weights + model card). Augments heavily so that few subjects generalise to other scanners, orientations "
        "and resolutions.",
    )
    add_pair_options(p, "training images")
    p.add_argument("-o", "--output", required=True, help="model file to write (.safetensors)")
    p.add_argument("--architecture", default=d.architecture, choices=["fcn", "basicunet"])
    p.add_argument("--variant", default=d.variant, help="fcn32s, fcn16s, fcn8s (default) or fcn4s")
    p.add_argument("--upsampling", default=d.upsampling, help="resize_conv (default) or transpose")
    p.add_argument("--width", type=int, default=d.width, help="channels of the first level (default 16)")
    p.add_argument("--context", type=int, default=d.context, help="neighbouring slices each side (default 1)")
    p.add_argument("--spacing", type=float, default=d.spacing, help="model spacing in mm (default 1.5)")
    p.add_argument("--axes", default="0,1,2", help="slice axes of the RAS frame (default 0,1,2)")
    p.add_argument(
        "--label-names", default="", help="class names, id order (default background,brain; with --init its labels)"
    )
    p.add_argument(
        "--label-codes",
        default="",
        metavar="JSON",
        help='DICOM codes of the labels, JSON or a JSON file: {"NAME": {"category": [VALUE, SCHEME, MEANING], '
        '"type": [...]}} (default: medfcn\'s table, e.g. brain = SNOMED CT 12738006)',
    )
    p.add_argument(
        "--postprocess",
        default=",".join(d.postprocess),
        help="per-label clean-up at inference: largest_component, fill_holes, or 'none'",
    )
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--steps-per-epoch", type=int, default=d.steps_per_epoch)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=None, help=f"learning rate (default {d.lr}; with --init {FINETUNE_LR})")
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this much training time")
    p.add_argument("--val-cases", type=int, default=d.val_cases, help="cases held out for validation (default 1)")
    p.add_argument("--no-augment", action="store_true", help="train without augmentation")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--name", default=d.name, help="model name recorded in its card")
    p.add_argument("--description", default="", help="one line recorded in the model card")
    p.add_argument("--modality", default=d.modality)
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT.state.pt")
    p.add_argument(
        "--synth",
        type=float,
        default=d.synth,
        metavar="FRACTION",
        help="fraction (0-1) of training volumes synthesised from tissue maps of the labelled scans: deformed, "
        "each tissue class given a random intensity (other contrasts), blurred, biased, noisy (default 0)",
    )
    p.add_argument(
        "--clinical",
        type=float,
        default=d.clinical,
        metavar="FRACTION",
        help="fraction (0-1) of augmented training volumes rendered as clinical acquisitions: thick slices with or "
        "without gaps along any axis, partial coverage, contrast enhancement, a lesion with mass effect and oedema, "
        "ghosting (medfcn.training.clinical; default 0)",
    )
    p.add_argument(
        "--bn-batches",
        type=int,
        default=d.bn_batches,
        metavar="N",
        help="before each validation, set batch norm's statistics to the average over N fixed training batches, "
        f"so that they do not depend on the last volumes drawn (default {d.bn_batches}, at most {MAX_BN_BATCHES}; "
        "0: keep the running ones)",
    )
    p.add_argument(
        "--init",
        default="",
        metavar="MODEL",
        help="start from this model file's weights (fine-tune); the network settings must match, but --variant may "
        "be finer than the file's (fcn8s -> fcn4s): the new skip layers start at zero",
    )
    p.add_argument(
        "--ignore-label",
        type=int,
        default=d.ignore_label,
        metavar="N",
        help=f"label value of voxels that are not annotated (default {d.ignore_label}): training and validation use "
        "only the other voxels, along every slice axis; recorded in the model card",
    )
    p.add_argument(
        "--distill",
        type=float,
        default=d.distill,
        metavar="WEIGHT",
        help="with --init: weight of the start model's own predictions as the target of the voxels that are not "
        f"annotated, so that it keeps what it knew (default {d.distill}; 0: plain fine-tuning)",
    )
    p.add_argument(
        "--replay",
        type=float,
        default=d.replay,
        metavar="FRACTION",
        help="with --init: fraction (0-1) of training volumes drawn from the data the start model's card records, "
        f"when it is found unchanged (default {d.replay})",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def add_pair_options(p: argparse.ArgumentParser, images: str = "images") -> None:
    """``--images``, ``--labels`` and ``--pairs``, the labelled scans of ``medfcn train`` and ``medfcn calibrate``
    (checked by :func:`check_pair_options`); ``images`` names what the images are in the help."""
    p.add_argument("--images", default="", help=f"folder (or file) of {images}")
    p.add_argument("--labels", default="", help="folder (or file) of label maps, same case names as the images")
    p.add_argument("--pairs", default="", help="CSV or JSON list of {case, image, label} instead of two folders")


def check_pair_options(images: str, labels: str, pairs: str) -> None:
    """Labelled scans are given as two folders (or files) or as a list of pairs; raises UsageError otherwise.
    ``medfcn train`` and ``medfcn calibrate`` ask it before anything heavy is imported."""
    if not pairs and not (images and labels):
        raise UsageError("give --images and --labels (two folders or files), or --pairs LIST.csv/json")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of ``medfcn train``'s options, checked (no heavy import). Raises UsageError."""
    check_pair_options(args.images, args.labels, args.pairs)
    try:
        axes = tuple(int(a) for a in args.axes.split(","))
    except ValueError:
        raise UsageError(f"--axes must be comma-separated axis numbers, got {args.axes!r}") from None
    post = () if args.postprocess in ("", "none") else tuple(args.postprocess.split(","))
    d_names = TrainConfig().label_names
    for name, value in (
        ("--epochs", args.epochs),
        ("--steps-per-epoch", args.steps_per_epoch),
        ("--batch-size", args.batch_size),
    ):
        if value < 1:
            raise UsageError(f"{name} must be >= 1, got {value}")
    if not 0 <= args.bn_batches <= MAX_BN_BATCHES:
        raise UsageError(
            f"--bn-batches must be between 0 and {MAX_BN_BATCHES} (they are kept in memory for the run), "
            f"got {args.bn_batches}"
        )
    if not 0 <= args.synth <= 1:
        raise UsageError(f"--synth must be a fraction between 0 and 1, got {args.synth}")
    if not 0 <= args.clinical <= 1:
        raise UsageError(f"--clinical must be a fraction between 0 and 1, got {args.clinical}")
    if not 0 <= args.replay <= 1:
        raise UsageError(f"--replay must be a fraction between 0 and 1, got {args.replay}")
    if args.distill < 0:
        raise UsageError(f"--distill must be a weight >= 0, got {args.distill}")
    if not 0 <= args.ignore_label <= 255:
        raise UsageError(
            f"--ignore-label must be from 0 to 255 (training reads label maps as uint8), got {args.ignore_label}"
        )
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise UsageError(f"--max-minutes must be a positive number of minutes, got {args.max_minutes}")
    parsed = {
        "axes": axes,
        "label_names": tuple(args.label_names.split(",")) if args.label_names else () if args.init else d_names,
        "lr": args.lr if args.lr is not None else FINETUNE_LR if args.init else TrainConfig.lr,
        "label_codes": parse_label_codes(args.label_codes) if args.label_codes else {},
        "postprocess": post,
        "augment": not args.no_augment,
        "command": shlex.join(["medfcn", *sys.argv[1:]]) if sys.argv and sys.argv[0] else "",
    }
    # every other setting is the option of the same name; settings without an option keep their defaults
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    return TrainConfig(**(given | parsed))
