"""The command-line options of ``medfcn train`` (and the labelled-scan options ``medfcn calibrate`` shares), without
importing torch: ``medfcn --help`` and a usage error answer before any heavy import. The options become a
:class:`~medfcn.training.options.TrainConfig` through :meth:`~medfcn.training.options.TrainConfig.from_args`, which
checks them."""

from __future__ import annotations

import argparse

from medfcn.model.config import FCNConfig
from medfcn.training.options import (
    DEFAULT_CONTEXT,
    DEFAULT_LABELS,
    FINETUNE_LR,
    MAX_BN_BATCHES,
    SCRATCH_LR,
    TrainConfig,
)

__all__ = ["add_pair_options", "add_train_parser"]


def add_train_parser(sub: argparse._SubParsersAction, run) -> None:
    """Add ``train`` to ``sub``; ``run(args)`` (the CLI's) trains with :meth:`TrainConfig.from_args`'s settings."""
    d = TrainConfig(images="-", labels="-")
    fcn = FCNConfig()
    p = sub.add_parser(
        "train",
        help="train a model on labelled scans",
        description="Train a slice-wise model on images and label maps paired by case name and write a model file "
        "(weights + model card). Augments heavily so that few subjects generalise to other scanners, orientations "
        "and resolutions.",
    )
    add_pair_options(p, "training images")
    p.add_argument("-o", "--output", required=True, help="model file to write (.safetensors)")
    p.add_argument(
        "--architecture", default=None, choices=["fcn", "basicunet"], help="fcn (default; with --init its own)"
    )
    p.add_argument(
        "--variant", default=None, help=f"fcn32s, fcn16s, fcn8s or fcn4s (default {fcn.variant}; with --init its own)"
    )
    p.add_argument(
        "--upsampling", default=None, help=f"resize_conv or transpose (default {fcn.upsampling}; with --init its own)"
    )
    p.add_argument(
        "--width",
        type=int,
        default=None,
        help=f"channels of the first level (default {fcn.width}; with --init its own)",
    )
    p.add_argument(
        "--context",
        type=int,
        default=None,
        help=f"neighbouring slices each side (default {DEFAULT_CONTEXT}; with --init its own)",
    )
    p.add_argument("--spacing", type=float, default=d.spacing, help="model spacing in mm (default 1.5)")
    p.add_argument("--axes", default="0,1,2", help="slice axes of the RAS frame (default 0,1,2)")
    p.add_argument(
        "--label-names",
        default="",
        help=f"class names, id order (default {','.join(DEFAULT_LABELS)}; with --init its labels)",
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
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help=f"learning rate (default {SCRATCH_LR}; with --init {FINETUNE_LR})",
    )
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
