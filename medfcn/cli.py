"""The ``medfcn`` command: segment, bids, evaluate, train, calibrate, interpolate, export, info.

Heavy imports happen inside the commands, so ``medfcn --help`` is instant. User errors (:class:`MedfcnError`)
are caught here, once, and become a one-line message on stderr and an exit status: 0 all cases ok, 1 some case
failed, 2 usage error (bad arguments, nothing to do, unusable model or output folder). ``--debug`` shows
tracebacks.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from medfcn import __version__
from medfcn.errors import MedfcnError, UsageError, terminal_safe

__all__ = ["main", "build_parser"]

log = logging.getLogger("medfcn")


DEVICE_HELP = "auto (default), cpu, cuda, cuda:N or mps"
BACKEND_HELP = (
    "what runs the network: auto (default: torch on a GPU; on the CPU the fastest of those installed, measured once "
    "per model and machine and cached), torch, onnxruntime (pip install 'medfcn[onnx]') or openvino "
    "(pip install 'medfcn[openvino]'); the ONNX ones run on the CPU"
)


def _command(sub: argparse._SubParsersAction, name: str, run) -> argparse.ArgumentParser:
    """A subcommand ``name`` that ``main`` dispatches to ``run(args)``. ``run``'s docstring is its help: the first
    line (lower-cased, without the full stop) in ``medfcn --help``, the rest as its description."""
    summary, _, rest = (run.__doc__ or "").strip().partition("\n")
    description = " ".join(rest.split())
    p = sub.add_parser(name, help=summary[0].lower() + summary[1:].rstrip("."), description=description)
    p.set_defaults(run=run)
    return p


def _add_segment(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "segment", _segment)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="scan files and/or folders")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    p.add_argument("--model", metavar="MODEL", help="model file (default: the bundled T1 brain-extraction model)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--backend", default="auto", help=BACKEND_HELP)
    p.add_argument("--tta", action="store_true", help="test-time augmentation (in-plane flips, 4x slower)")
    p.add_argument(
        "--float32",
        action="store_true",
        help="compute in float32 throughout; by default the network runs in mixed precision where the device "
        "computes it natively (float16 on a GPU, bfloat16 on a CPU with AMX or AVX-512 BF16: ~1.5x faster there, "
        "labels agreeing at Dice 0.9999)",
    )
    p.add_argument("--overwrite", action="store_true", help="redo cases whose output already exists")
    p.add_argument("--workers", type=int, default=0, metavar="N", help="run on a local Dask cluster of N processes")
    p.add_argument("--scheduler", metavar="ADDRESS", help="run on an existing Dask cluster, e.g. tcp://host:8786")
    p.add_argument(
        "--format",
        default="nifti",
        metavar="FORMATS",
        help="comma-separated: nifti (default; OUT/<case>.nii.gz), dicom-seg (OUT/<case>.seg.dcm), rtstruct "
        "(OUT/<case>.rtstruct.dcm); the DICOM ones for cases read from a DICOM series",
    )
    _add_output_options(p)
    p.add_argument("--reference", metavar="REF", help="reference labels (file or folder): evaluate after segmenting")
    p.add_argument(
        "--skip-flagged",
        action="store_true",
        help="write no label map for cases the quality check flags for review (recorded as 'flagged' in the "
        "manifest); by default every mask is written and its verdict recorded",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_output_options(p: argparse.ArgumentParser) -> None:
    """--masked-image, --border, --statistics (medfcn.batch.outputs.OutputOptions), for segment and bids."""
    p.add_argument(
        "--masked-image",
        action="store_true",
        help="also write OUT/<case>.masked.nii.gz: the input with everything outside the labels set to zero (same "
        "grid, voxel type and scaling)",
    )
    p.add_argument(
        "--border",
        type=float,
        default=0.0,
        metavar="MM",
        help="move the labels' border out by MM mm (in, for a negative MM) before writing, as SynthStrip's -b",
    )
    p.add_argument(
        "--statistics",
        action="store_true",
        help="each label's volume (mL) and the input's intensity (mean, std, percentiles) inside it: in the manifest "
        "and OUT/statistics.csv",
    )


def _output_options(args: argparse.Namespace, **fixed):
    from medfcn.batch.outputs import OutputOptions

    values = {"masked_image": getattr(args, "masked_image", False), "border_mm": args.border}
    return OutputOptions(**{**values, "statistics": args.statistics, **fixed})


def _inference_settings(args: argparse.Namespace):
    """The :class:`~medfcn.inference.settings.InferenceSettings` of segment's and bids' options."""
    from medfcn.inference.settings import InferenceSettings

    return InferenceSettings(
        device=args.device, tta=args.tta, amp=False if args.float32 else None, backend=args.backend
    )


def _add_bids(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "bids", _bids)
    p.add_argument("bids_dir", metavar="BIDS_DIR", help="the BIDS dataset (raw data)")
    p.add_argument(
        "output_dir", metavar="OUTPUT_DIR", help="the derivatives dataset to write (e.g. BIDS_DIR/derivatives/medfcn)"
    )
    p.add_argument("analysis_level", metavar="participant", help="the BIDS App analysis level: participant")
    p.add_argument("--participant-label", nargs="+", metavar="L", help="participants to segment (default: all)")
    p.add_argument("--session-label", nargs="+", metavar="S", help="sessions to segment (default: all)")
    p.add_argument("--suffix", nargs="+", default=["T1w"], metavar="SUFFIX", help="image suffixes (default: T1w)")
    p.add_argument("--model", metavar="MODEL", help="model file (default: the bundled T1 brain-extraction model)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--backend", default="auto", help=BACKEND_HELP)
    p.add_argument("--tta", action="store_true", help="test-time augmentation (in-plane flips, 4x slower)")
    p.add_argument("--float32", action="store_true", help="compute in float32 throughout (see segment --help)")
    p.add_argument("--overwrite", action="store_true", help="redo images whose outputs already exist")
    p.add_argument("--workers", type=int, default=0, metavar="N", help="run on a local Dask cluster of N processes")
    p.add_argument("--scheduler", metavar="ADDRESS", help="run on an existing Dask cluster, e.g. tcp://host:8786")
    p.add_argument("--border", type=float, default=0.0, metavar="MM", help="move the mask's border out by MM mm")
    p.add_argument("--statistics", action="store_true", help="volumes and intensities: OUTPUT_DIR/statistics.csv")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _bids(args: argparse.Namespace) -> int:
    """Segment a BIDS dataset into a BIDS derivatives dataset (a BIDS App).

    The BIDS-App convention: medfcn bids BIDS_DIR OUTPUT_DIR participant. Finds the images with pybids and writes, per
    image, its mask (desc-brain_mask) and skull-stripped image (desc-brain_<suffix>) with their JSON sidecars, and
    dataset_description.json; resume, the manifest and the lock as in segment. Exit status 1 if any image failed.
    """
    from medfcn.batch.bids import check_output, find_images

    if args.analysis_level != "participant":
        raise UsageError(f"analysis level {args.analysis_level!r}: medfcn bids has the participant level only")
    check_output(args.bids_dir, args.output_dir)
    images = find_images(args.bids_dir, args.participant_label, args.session_label, args.suffix)
    options = _output_options(args, masked_image=True)  # before the model is loaded: a bad --border writes nothing
    from medfcn.batch.bids import run_bids
    from medfcn.batch.cluster import ClusterSettings
    from medfcn.model.checkpoint import load_model

    manifest = run_bids(
        args.bids_dir,
        args.output_dir,
        images=images,
        model=load_model(args.model),
        options=options,
        first_suffix=args.suffix[0],
        settings=_inference_settings(args),
        cluster=ClusterSettings(workers=args.workers, scheduler=args.scheduler),
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(f"{manifest.ok} segmented, {manifest.skipped} kept, {manifest.failed} failed: {args.output_dir}")
    print(manifest.flagged_line())
    return manifest.exit_code


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "evaluate", _evaluate)
    p.add_argument(
        "pred", metavar="PRED", help="predicted label map file or folder (NIfTI, NRRD, MHA, DICOM SEG/RTSTRUCT)"
    )
    p.add_argument("ref", metavar="REF", help="reference label map file or folder (same formats)")
    p.add_argument("-o", "--output", required=True, metavar="REPORT", help="report folder")
    p.add_argument("--tolerance", type=float, default=1.0, metavar="MM", help="surface Dice tolerance (default 1 mm)")
    p.add_argument(
        "--series",
        action="append",
        default=[],
        metavar="DIR",
        help="folder holding the DICOM series that SEG/RTSTRUCT files in PRED or REF reference (searched "
        "recursively; repeat for several): they are rebuilt on that series' grid",
    )


def _add_interpolate(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "interpolate", _interpolate)
    p.add_argument("labels", metavar="LABELS", help="label map with some slices annotated (NIfTI, NRRD, MetaImage)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="filled label map to write (.nii.gz)")
    p.add_argument(
        "--axis",
        default="auto",
        metavar="PLANE",
        help="the slices that were annotated: axial, coronal, sagittal (the index axis nearest to it) or auto "
        "(default: the axis along which the labels leave empty slices)",
    )
    p.add_argument(
        "--key-slices",
        metavar="LIST",
        help="slices that were checked and are complete, e.g. 40,44,48-50: 0-based indices along --axis as the file "
        "counts them (ITK, nibabel, 3D Slicer's IJK); a checked slice without a label ends that label there",
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def _interpolate(args: argparse.Namespace) -> int:
    """Fill the slices between annotated slices of a label map (ITK's morphological contour interpolation).

    Every label is interpolated between the slices that hold it, along one axis, on the map's own grid; nothing is
    filled beyond a label's first and last slice; painted voxels are kept; where two labels' fills meet, the higher
    label wins. ITK's first use takes 10-40 s (loading its modules).
    """
    from medfcn.annotation.interpolate import interpolate_file, parse_key_slices

    result = interpolate_file(
        args.labels,
        args.output,
        plane=args.axis,
        key_slices=parse_key_slices(args.key_slices),
        overwrite=args.overwrite,
    )
    print(f"{result.summary()}; written to {args.output}")
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "info", _info)
    p.add_argument("model", nargs="?", metavar="MODEL", help="model file (default: the bundled model)")


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "export", _export)
    p.add_argument("model", nargs="?", metavar="MODEL", help="model file (default: the bundled model)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="ONNX file to write (e.g. model.onnx)")
    p.add_argument(
        "--check-scan",
        metavar="SCAN",
        help="scan whose slices check the export against PyTorch (default: the sample T1 shipped with medfcn)",
    )


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    from medfcn.training.arguments import add_pair_options

    p = _command(sub, "calibrate", _calibrate)
    p.add_argument("model", nargs="?", metavar="MODEL", help="model file (default: the bundled model)")
    add_pair_options(p)
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="calibrated model file to write")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)


def build_parser() -> argparse.ArgumentParser:
    from medfcn.training.arguments import add_train_parser

    parser = argparse.ArgumentParser(
        prog="medfcn", description="Medical image segmentation with slice-wise fully convolutional networks."
    )
    parser.add_argument("--version", action="version", version=f"medfcn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show debug logging and tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_segment(sub)
    _add_bids(sub)
    _add_evaluate(sub)
    add_train_parser(sub, _train)
    _add_calibrate(sub)
    _add_interpolate(sub)
    _add_export(sub)
    _add_info(sub)
    return parser


def _segment(args: argparse.Namespace) -> int:
    """Segment scans (files and folders, any mix) into label maps.

    Segment scans: NIfTI, NRRD, MetaImage files and DICOM series folders (searched recursively). Writes
    OUT/<case>.nii.gz on each scan's own grid and OUT/manifest.json. Cases already done are skipped (resume); exit
    status 1 if any case failed.
    """
    from medfcn.batch.cluster import ClusterSettings
    from medfcn.batch.run import run_batch

    settings = _inference_settings(args)
    manifest = run_batch(
        args.inputs,
        args.output,
        model=args.model,
        settings=settings,
        cluster=ClusterSettings(workers=args.workers, scheduler=args.scheduler),
        overwrite=args.overwrite,
        progress=not args.quiet,
        formats=args.format,
        options=_output_options(args, skip_flagged=args.skip_flagged),
    )
    print(manifest.flagged_line())
    code = manifest.exit_code
    if args.reference:
        from medfcn.batch.manifest import read_verdicts, segmented_cases
        from medfcn.data.discovery import find_cases
        from medfcn.evaluation.evaluate import evaluate
        from medfcn.model.checkpoint import load_model

        names = {i: name for name, i in load_model(args.model).card.labels.items() if i > 0}
        scans = {c.case: c for c in find_cases(args.inputs) if c.error is None}  # drawn under the overlays
        report = Path(args.output) / "evaluation"
        series = [p for p in args.inputs if Path(p).is_dir()]  # what a DICOM output references
        stats = {c.case: c.statistics for c in manifest.cases if c.statistics}
        result = evaluate(
            args.output,
            args.reference,
            report,
            label_names=names,
            images=scans,
            series=series,
            predictions=segmented_cases(args.output),
            statistics=stats,
            quality=read_verdicts(args.output),
        )
        for line in result.summary_lines():
            print(line)
        print(f"report: {report / 'report.html'}")
        code = max(code, 1 if result.failed else 0)
    return code


def _evaluate(args: argparse.Namespace) -> int:
    """Score label maps against references (Dice, IoU, HD95, ASSD, surface Dice, volumes).

    Score predicted label maps against references, paired by case name. An output folder of medfcn segment is
    scored on the cases its manifest.json records as segmented (never its masked images or the review's corrected/
    label maps). Writes REPORT/metrics.csv, REPORT/metrics.json and REPORT/report.html. Exit status 1 if a case
    could not be scored.
    """
    from medfcn.batch.manifest import read_verdicts, segmented_cases
    from medfcn.evaluation.evaluate import evaluate

    predictions = segmented_cases(args.pred)  # a batch's output folder: the cases its manifest records
    quality = read_verdicts(args.pred)  # and their quality verdicts
    result = evaluate(
        args.pred,
        args.ref,
        args.output,
        tolerance_mm=args.tolerance,
        series=args.series,
        predictions=predictions,
        quality=quality,
    )
    for line in result.summary_lines():
        print(line)
    print(f"report: {Path(args.output) / 'report.html'}")
    return 1 if result.failed else 0


def _train(args: argparse.Namespace) -> int:
    import shlex

    from medfcn.training.options import TrainConfig

    command = shlex.join(["medfcn", *args.argv])
    config = TrainConfig.from_args(args, command)  # usage errors before torch and MONAI are imported
    from medfcn.training.train import EPOCH_LOG, train

    epochs = logging.StreamHandler(sys.stderr)  # one line per epoch, even with --quiet
    epochs.setFormatter(_SafeFormatter("%(message)s"))
    EPOCH_LOG.addHandler(epochs)
    EPOCH_LOG.setLevel(logging.INFO)
    EPOCH_LOG.propagate = False
    try:
        summary = train(config, progress=not args.quiet)
    finally:
        EPOCH_LOG.removeHandler(epochs)
    print(summary.describe())
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    """Tune a model's foreground threshold on labelled scans, into a new model file.

    Segment each labelled scan once, score every foreground threshold from 0.30 to 0.80 (mean Dice on the scans'
    own grids) and write MODEL with the best one to OUT (its card's class_weights). The weights of the network are
    not changed.
    """
    from medfcn.training.options import check_pair_options

    check_pair_options(args.images, args.labels, args.pairs)  # before torch is imported
    from medfcn.data.pairs import find_pairs
    from medfcn.training.calibrate import calibrate

    result = calibrate(args.model, find_pairs(args.images, args.labels, args.pairs), args.output, device=args.device)
    for line in result.lines():
        print(line)
    print(f"threshold {result.threshold:.3f} written to {result.output}")
    return 0


def _export(args: argparse.Namespace) -> int:
    """Export a model to ONNX, for ONNX Runtime, OpenVINO or any other runtime.

    Write the network (batch norm folded) as an ONNX file with the model card and what a runtime must do around the
    graph (input padding, output, normalisation) in its metadata; check it against PyTorch on real slices (to 1e-4
    in the logits) where onnxruntime is installed.
    """
    from medfcn.inference.pipeline import real_slices
    from medfcn.model.checkpoint import load_model
    from medfcn.model.export import export_onnx

    model = load_model(args.model)
    scan = args.check_scan or _sample_scan()
    check = real_slices(model, scan) if scan else None
    written = export_onnx(model, args.output, check=check)
    print(f"written {written['path']} ({written['bytes'] / 1e6:.1f} MB, ONNX opset {written['opset']})")
    print(f"input: {written['input']}")
    print(f"output: {written['output']}")
    print(f"normalisation: {written['normalisation']} (see the model card in the file's metadata, medfcn_card)")
    if written["max_abs_difference"] is None:
        print("not checked against PyTorch: " + ("install onnxruntime" if scan else "no scan to take slices from"))
    else:
        worst = written["max_abs_difference"]
        print(f"checked against PyTorch on slices of {Path(scan).name}: max |difference| of the logits {worst:.2e}")
    return 0


def _sample_scan() -> str | None:
    """The sample T1 shipped with the distribution (in the napari plugin's package, found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("napari_plugin")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "sample_data" / "colin27_t1.nii.gz"
    return str(path) if path.is_file() else None


def _info(args: argparse.Namespace) -> int:
    """Describe a model file.

    Print a model's card.
    """
    from medfcn.model.checkpoint import describe, load_model

    print(describe(load_model(args.model)))
    return 0


class _SafeFormatter(logging.Formatter):
    """Log lines with terminal control characters escaped (a file name may hold ANSI escape sequences)."""

    def format(self, record: logging.LogRecord) -> str:
        return terminal_safe(super().format(record)).replace("\\n", "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (also used by tests)."""
    # Before torch loads its OpenMP runtime: idle threads sleep instead of spinning. On a busy CPU, spinning threads
    # fight for the cores; a 1 mm head at load 13 on 2 cores took 61 s (17 CPU s) spinning, 27 s (7 CPU s) passive.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command line as given (recorded by train)
    level = logging.DEBUG if args.debug else logging.WARNING
    logging.basicConfig(level=level, format="medfcn: %(levelname)s: %(message)s")
    for handler in logging.getLogger().handlers:  # names from the input reach the terminal escaped
        handler.setFormatter(_SafeFormatter(handler.formatter._fmt if handler.formatter else None))
        # libraries that set their own loggers to INFO (Dask's distributed) must not reach the terminal either
        handler.setLevel(level)
    try:
        return int(args.run(args))
    except MedfcnError as exc:
        if args.debug:
            raise
        print(f"medfcn: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # the reader stopped reading (`medfcn info M | grep -q X`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes at exit
        return 0
    except KeyboardInterrupt:
        print("medfcn: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: still one line, with a way to see more
        if args.debug:
            raise
        text = terminal_safe(str(exc).splitlines()[0]) if str(exc) else ""
        print(f"medfcn: internal error: {type(exc).__name__}: {text} (rerun with --debug for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
