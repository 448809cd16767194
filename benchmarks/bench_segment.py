"""Segment a real-size head: ``medfcn segment`` end to end against a plain MONAI pipeline; the engine against the
bare network forward pass on the same slices.

The scan is the sample T1 (Colin27) resampled to 0.5 mm (362 x 434 x 362, int16) with its brain mask, written to
a working folder. Each pipeline runs in its own process, so its peak resident memory (including the Python, torch
and MONAI imports every pipeline pays) is its own, measured through ``peak.py``'s launcher (a child's
``ru_maxrss`` would include this benchmark's own 900 MB):

    medfcn-cli     ``medfcn segment IMAGE -o OUT --device D`` (a real process of the CLI; ``--device``, default cpu)
    medfcn-stages  the same function path (read_scan -> Segmenter.segment -> write_labels), timed stage by stage:
                   read, into the model's frame, normalise, inference, post-processing, back onto the scan's
                   grid, write (the stages mirror ``Segmenter.segment``; the labels are checked against the CLI's)
    monai          LoadImage, ScaleIntensity, SliceInferer over axial slices (the whole slice as the ROI) with
                   MONAI's default 2-D BasicUNet, argmax, nibabel save
    engine         ``SliceEngine.iter_probabilities`` against the network's forward pass on prebuilt batches
                   (batch-norm folded and channels-last, as the engine runs it; and as stored), on the model
                   frame's slices along the model's slice axes, and on the 0.5 mm axial slices; best of 3

Dice against the resampled reference mask is printed for every output. The default BasicUNet is untrained: its
Dice means nothing until ``--monai-weights`` gives trained weights: a state dict of
``BasicUNet(spatial_dims=2, in_channels=1, out_channels=2)``; a medfcn model file of architecture ``basicunet``
with context 0 (the MONAI pipeline then works in its frame: orientation and spacing); or one with context > 0
(``medfcn train --architecture basicunet``), which single slices cannot feed: it then runs through medfcn's
pipeline (row ``basicunet-in-medfcn``, for Dice) and the plain pipeline is timed untrained.

Run: ``python benchmarks/bench_segment.py [--model M] [--monai-weights W] [--workdir DIR] [--skip-monai]
[--skip-engine] [--backends torch,onnxruntime,openvino] [--json OUT.json]``.
Targets (issue 3, 2-core CPU): medfcn >= 5x faster than MONAI at <= 0.5x its peak memory; engine within 15% of
the forward pass.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from support.peak import launched, peak_mb  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_IMAGE = ROOT / "sample_data" / "images" / "colin27.nii.gz"
SAMPLE_LABEL = ROOT / "sample_data" / "labels" / "colin27.nii.gz"
SPACING = 0.5


def prepare(workdir: Path) -> tuple[Path, Path]:
    """The sample T1 and its mask resampled to 0.5 mm over the same field of view (cached in ``workdir``)."""
    import SimpleITK as sitk

    image_path, ref_path = workdir / "colin27_05mm.nii.gz", workdir / "colin27_05mm_ref.nii.gz"
    if image_path.exists() and ref_path.exists():
        return image_path, ref_path
    image = sitk.ReadImage(str(SAMPLE_IMAGE), sitk.sitkFloat32)
    size = [round(n * s / SPACING) for n, s in zip(image.GetSize(), image.GetSpacing(), strict=True)]
    # Keep the outer voxel edges where they were: the first new centre is half a new voxel inside the old edge.
    shift = np.array(image.GetDirection()).reshape(3, 3) @ ((SPACING - np.array(image.GetSpacing())) / 2)
    ref = sitk.Image(size, sitk.sitkFloat32)
    ref.SetSpacing((SPACING,) * 3)
    ref.SetOrigin(tuple(np.array(image.GetOrigin()) + shift))
    ref.SetDirection(image.GetDirection())
    fine = sitk.Resample(image, ref, sitk.Transform(), sitk.sitkLinear, 0.0)
    sitk.WriteImage(sitk.Cast(sitk.Round(fine), sitk.sitkInt16), str(image_path), True)
    mask = sitk.Resample(sitk.ReadImage(str(SAMPLE_LABEL), sitk.sitkFloat32), ref, sitk.Transform(), sitk.sitkLinear)
    sitk.WriteImage(sitk.Cast(mask >= 0.5, sitk.sitkUInt8), str(ref_path), True)
    return image_path, ref_path


# -- children: each runs in its own process and writes a JSON result ----------------------------------------------


def _child_medfcn_stages(
    image: str, output: str, model: str | None, compare: str | None = None, device: str = "cpu"
) -> dict:
    import torch

    from medfcn.data.reader import read_scan
    from medfcn.data.writer import write_labels
    from medfcn.inference.pipeline import Segmenter
    from medfcn.inference.settings import InferenceSettings

    times: dict[str, float] = {}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        times[name] = now - t
        t = now

    segmenter = Segmenter(model, InferenceSettings(device=device))
    lap("load model")
    scan = read_scan(image)
    lap("read")
    card = segmenter.model.card
    frame = segmenter.to_frame(scan)  # the stages Segmenter.segment calls, in its order
    lap("into model frame")
    volume = segmenter.normalise(frame)
    lap("normalise")
    probs = segmenter.probabilities(volume)
    lap("inference (all slice axes)")
    del volume
    segmenter.postprocess(probs)
    lap("post-process")
    labels = segmenter.to_scan(probs, frame)
    lap("back onto scan grid")
    write_labels(labels, scan, output)
    lap("write")
    same = None
    if compare:  # the CLI's output: the stages must give what `medfcn segment` gave
        import nibabel as nib

        same = bool(np.array_equal(np.asarray(nib.load(compare).dataobj), labels))
    slices = sum(frame.volume.shape[a] for a in card.slice_axes)
    return {
        "stages": times,
        "same_labels": same,
        "frame_shape": list(frame.volume.shape),
        "scan_shape": list(scan.shape),
        "slices": slices,
        "threads": torch.get_num_threads(),
    }


def medfcn_card(path: str | None):
    """The model card of ``path`` if it is a medfcn model file, else ``None``."""
    if not path or not path.endswith(".safetensors"):
        return None
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        if (f.metadata() or {}).get("format") != "medfcn":
            return None
    from medfcn.model.checkpoint import load_model

    return load_model(path).card


def _monai_network(weights: str | None):
    """MONAI's default 2-D BasicUNet and the medfcn card whose frame it expects (None: the scan's own grid)."""
    import torch
    from monai.networks.nets import BasicUNet

    net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=2)
    card = medfcn_card(weights)
    if card is not None:
        from medfcn.model.checkpoint import load_model

        if card.architecture != "basicunet" or card.context != 0:
            raise SystemExit(f"{weights}: the plain MONAI pipeline feeds single slices: needs basicunet, context 0")
        net = load_model(weights).network.unet
    elif weights:
        if weights.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(weights)
        else:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        net.load_state_dict({k.removeprefix("unet."): v for k, v in state.items()})
    return net.eval(), card


def _child_monai(image: str, output: str, weights: str | None, batch: int) -> dict:
    import nibabel as nib
    import torch
    from monai.inferers import SliceInferer
    from monai.transforms import LoadImage, Orientation, ScaleIntensity, Spacing, SpatialResample

    net, card = _monai_network(weights)
    t0 = time.perf_counter()
    img = LoadImage(image_only=True, ensure_channel_first=True)(image)  # (1, X, Y, Z), RAS affine
    original_affine, original_shape = img.affine.clone(), tuple(img.shape[1:])
    if card is not None:  # a trained baseline from medfcn's trainer: bring the scan into its frame
        img = Spacing(pixdim=card.spacing, mode="bilinear")(Orientation(axcodes=card.orientation)(img))
    img = ScaleIntensity()(img)
    inferer = SliceInferer(roi_size=(-1, -1), sw_batch_size=batch, spatial_dim=2, progress=False)
    with torch.inference_mode():
        logits = inferer(img[None], net)  # (1, 2, X, Y, Z)
    labels = logits.argmax(1).to(torch.uint8)  # (1, X, Y, Z)
    if card is not None:
        labels.affine = img.affine
        labels = SpatialResample(mode="nearest")(labels, dst_affine=original_affine, spatial_size=original_shape)
    array = np.asarray(labels[0].numpy(), dtype=np.uint8)
    nib.save(nib.Nifti1Image(array, original_affine.numpy()), output)
    return {"seconds": time.perf_counter() - t0, "slices": int(img.shape[-1]), "slice_hw": list(img.shape[1:3])}


def _engine_vs_forward(engine, raw, volume: np.ndarray, axes: tuple[int, ...], context: int, repeat: int) -> dict:
    """Best-of-``repeat`` seconds of the engine and of bare forward passes over the same batches of slices."""
    import torch

    from medfcn.inference.engine import slice_stack

    t = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))
    bs, device = engine.batch_size, engine.device
    channels_last = [
        slice_stack(t, s, min(s + bs, t.shape[a]), axis=a, context=context, memory_format=torch.channels_last).to(
            device
        )
        for a in axes
        for s in range(0, t.shape[a], bs)
    ]
    batches = [b.contiguous() for b in channels_last]
    raw = raw.to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def run_engine() -> None:
        for a in axes:
            for _ in engine.iter_probabilities(t, axis=a, context=context):
                pass

    def forward(net, xs) -> None:  # with the engine's mixed precision, if any
        with torch.inference_mode(), torch.autocast(device.type, dtype=engine.amp_dtype, enabled=engine.amp):
            for x in xs:
                net(x)
        sync()

    runs = {
        "engine": run_engine,
        "forward (folded, channels-last)": lambda: forward(engine.runner.model, channels_last),
        "forward (as stored)": lambda: forward(raw, batches),
    }
    run_engine()  # warm-up
    best = dict.fromkeys(runs, float("inf"))
    cpu = dict.fromkeys(runs, float("inf"))
    for _ in range(repeat):  # interleaved, so a busy neighbour slows all three alike
        for name, fn in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
            cpu[name] = min(cpu[name], time.process_time() - c0)
    return {"slices": sum(b.shape[0] for b in batches), **best, "cpu": cpu}


def _child_engine(image: str, model: str | None, repeat: int, threads: int = 0, device: str = "cpu") -> dict:
    import torch

    if threads:
        torch.set_num_threads(threads)

    from medfcn.data.reader import read_scan
    from medfcn.inference.frame import normalise_intensity
    from medfcn.inference.pipeline import Segmenter
    from medfcn.inference.settings import InferenceSettings

    segmenter = Segmenter(model, InferenceSettings(device=device, batch_size=16))
    card, engine = segmenter.model.card, segmenter.engine
    raw = segmenter.model.network.eval()
    scan = read_scan(image)
    frame_vol = segmenter.normalise(segmenter.to_frame(scan))
    native = normalise_intensity(scan.array, card.normalisation)
    cases = {
        f"model frame {tuple(frame_vol.shape)}, axes {list(card.slice_axes)}": (frame_vol, tuple(card.slice_axes)),
        f"native 0.5 mm, axial {tuple(native.shape[:2])}": (native, (2,)),
    }
    out = {name: _engine_vs_forward(engine, raw, v, axes, card.context, repeat) for name, (v, axes) in cases.items()}
    return {"cases": out, "threads": torch.get_num_threads(), "device": str(engine.device), "amp": engine.amp}


# -- the parent: run each child, measure it, compare ---------------------------------------------------------------


def run_child(argv: list[str], result_path: Path | None) -> dict:
    """Run ``argv`` as a process: its wall and CPU seconds, peak RSS (MB), the 1-minute load average when it
    ended (other work on the machine inflates wall time, much less CPU time) and, if it wrote one, its result."""
    t0 = time.perf_counter()
    peak_file = Path(tempfile.mkstemp(prefix="bench_peak_")[1])
    proc = subprocess.Popen(launched(argv, peak_file), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    log = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed:\n{log[-3000:]}")
    result = json.loads(result_path.read_text()) if result_path is not None and result_path.exists() else {}
    cpu = usage.ru_utime + usage.ru_stime
    return {"wall": wall, "cpu": cpu, "peak_mb": peak_mb(peak_file), "load": os.getloadavg()[0], **result}


def dice(pred_path: Path, ref_path: Path) -> float:
    import nibabel as nib

    pred, ref = nib.load(str(pred_path)), nib.load(str(ref_path))
    if pred.shape != ref.shape or not np.allclose(pred.affine, ref.affine, atol=1e-3):
        raise SystemExit(f"{pred_path} is not on the reference grid: {pred.shape} {pred.affine} vs {ref.shape}")
    a, b = np.asarray(pred.dataobj) == 1, np.asarray(ref.dataobj) == 1
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def write_json(path: Path, rows: dict, engine: dict | None, args: argparse.Namespace) -> None:
    """The rows (wall and CPU s, peak MB, Dice, load), medfcn's stages, the engine's figures and, when the MONAI
    pipeline ran, medfcn-cli's speed-up and memory share against it, through ``support/record.py``."""
    from support.record import write_result

    from medfcn.model.checkpoint import DEFAULT_MODEL_PATH

    keep = ("wall", "cpu", "peak_mb", "load", "dice", "stages", "slices", "same_labels", "scan_shape", "threads")
    result: dict = {"rows": {name: {k: row[k] for k in keep if k in row} for name, row in rows.items()}}
    if "monai" in rows:
        m, c = rows["monai"], rows["medfcn-cli"]
        result["medfcn_vs_monai"] = {
            "speedup": round(m["wall"] / c["wall"], 2),
            "memory": round(c["peak_mb"] / m["peak_mb"], 3),
        }
    if engine is not None:
        result["engine"] = engine
    write_result(path, result, {"medfcn model": args.model or DEFAULT_MODEL_PATH})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="medfcn model file (default: the bundled model)")
    parser.add_argument("--monai-weights", help="trained weights for the MONAI BasicUNet (see the module docstring)")
    parser.add_argument("--monai-batch", type=int, default=8, help="SliceInferer sw_batch_size (default 8)")
    parser.add_argument("--workdir", help="folder for the scan and outputs (default: a new temporary folder)")
    parser.add_argument(
        "--device", default="cpu", help="device for medfcn and the engine: cpu, cuda, auto (AMP on GPU)"
    )
    parser.add_argument("--skip-monai", action="store_true", help="skip the MONAI pipeline (minutes on a CPU)")
    parser.add_argument(
        "--backends",
        default="",
        help="comma-separated medfcn backends to time as CLI processes too (medfcn-cli itself is --backend auto)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="engine/forward repeats, best taken (default 3)")
    parser.add_argument(
        "--engine-threads",
        type=int,
        default=0,
        help="torch threads for engine vs forward "
        "(default: torch's; 1 makes the CPU-time ratio robust to other work on the machine)",
    )
    parser.add_argument("--skip-engine", action="store_true", help="skip the engine against the bare forward pass")
    parser.add_argument("--json", help="write the rows and the ratios here (through support/record.py)")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, result, *rest = args.child
        fn = {"stages": _child_medfcn_stages, "monai": _child_monai, "engine": _child_engine}[kind]
        params = json.loads(rest[0])
        Path(result).write_text(json.dumps(fn(**params)))
        return

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_segment_"))
    workdir.mkdir(parents=True, exist_ok=True)
    image, ref = prepare(workdir)
    me = [sys.executable, str(Path(__file__).resolve()), "--child"]
    print(f"scan {image} ({os.path.getsize(image) / 1e6:.1f} MB); load average {os.getloadavg()[0]:.1f}")

    cli_out = workdir / "medfcn_cli"
    cli = [
        sys.executable,
        "-c",
        "import sys; from medfcn.cli import main; sys.exit(main())",
        "segment",
        str(image),
        "-o",
        str(cli_out),
        "--device",
        args.device,
        "--overwrite",
        "--quiet",
    ]
    if args.model:
        cli += ["--model", args.model]
    rows = {"medfcn-cli": run_child(cli, None)}
    cli_labels = cli_out / f"{image.name.removesuffix('.nii.gz')}.nii.gz"
    rows["medfcn-cli"]["dice"] = dice(cli_labels, ref)
    for backend in [b for b in args.backends.split(",") if b]:
        out = workdir / f"medfcn_cli_{backend}"
        argv = [*cli, "--backend", backend]
        rows[f"medfcn-cli-{backend}"] = run_child(
            [*argv[: argv.index("-o") + 1], str(out), *argv[argv.index("-o") + 2 :]], None
        )
        rows[f"medfcn-cli-{backend}"]["dice"] = dice(out / cli_labels.name, ref)

    stages_json = workdir / "stages.json"
    params = {"image": str(image), "output": str(workdir / "medfcn_stages.nii.gz"), "model": args.model}
    params["compare"], params["device"] = str(cli_labels), args.device
    rows["medfcn-stages"] = run_child([*me, "stages", str(stages_json), json.dumps(params)], stages_json)
    slices = rows["medfcn-stages"]["slices"]

    baseline = medfcn_card(args.monai_weights)
    plain_weights = args.monai_weights
    if baseline is not None and baseline.context != 0:
        # A BasicUNet trained by `medfcn train --architecture basicunet` on stacked neighbours: the plain pipeline
        # cannot feed it, so its Dice comes from medfcn's pipeline and the plain pipeline is timed untrained.
        out_json = workdir / "basicunet.json"
        params = {"image": str(image), "output": str(workdir / "basicunet_labels.nii.gz"), "model": args.monai_weights}
        params["device"] = args.device
        rows["basicunet-in-medfcn"] = run_child([*me, "stages", str(out_json), json.dumps(params)], out_json)
        rows["basicunet-in-medfcn"]["dice"] = dice(workdir / "basicunet_labels.nii.gz", ref)
        plain_weights = None

    if not args.skip_monai:
        monai_json, monai_out = workdir / "monai.json", workdir / "monai_labels.nii.gz"
        params = {"image": str(image), "output": str(monai_out), "weights": plain_weights, "batch": args.monai_batch}
        rows["monai"] = run_child([*me, "monai", str(monai_json), json.dumps(params)], monai_json)
        rows["monai"]["dice"] = dice(monai_out, ref)

    engine = None
    if not args.skip_engine:
        engine_json = workdir / "engine.json"
        params = {"image": str(image), "model": args.model, "repeat": args.repeat, "threads": args.engine_threads}
        params["device"] = args.device
        engine = run_child([*me, "engine", str(engine_json), json.dumps(params)], engine_json)

    print(
        f"\n== end to end on {rows['medfcn-stages']['scan_shape']} at {SPACING} mm (CPU, "
        f"{rows['medfcn-stages']['threads']} threads; load average now {os.getloadavg()[0]:.1f})"
    )
    print(
        f"{'pipeline':<20} {'seconds':>8} {'CPU s':>7} {'slices':>7} {'slices/s':>9} {'peak RSS MB':>12} "
        f"{'Dice':>7} {'load':>5}"
    )
    counts = {"medfcn-cli": slices, "medfcn-stages": slices, **{k: slices for k in rows if k.startswith("medfcn-cli-")}}
    if "basicunet-in-medfcn" in rows:
        counts["basicunet-in-medfcn"] = rows["basicunet-in-medfcn"]["slices"]
    if "monai" in rows:
        counts["monai"] = rows["monai"]["slices"]
    for name, row in rows.items():
        d = f"{row['dice']:.4f}" if "dice" in row else "-"
        print(
            f"{name:<20} {row['wall']:>8.1f} {row['cpu']:>7.1f} {counts[name]:>7} {counts[name] / row['wall']:>9.1f} "
            f"{row['peak_mb']:>12.0f} {d:>7} {row['load']:>5.1f}"
        )
    st = rows["medfcn-stages"]
    print("\nmedfcn stages (s): " + ", ".join(f"{k} {v:.2f}" for k, v in st["stages"].items()))
    print(
        f"  labels equal to the CLI's: {st['same_labels']}; model frame {st['frame_shape']}, {slices} slices over "
        "the model's axes"
    )
    if "monai" in rows:
        m, c = rows["monai"], rows["medfcn-cli"]
        print(
            f"\nmedfcn vs MONAI: {m['wall'] / c['wall']:.1f}x faster (CPU {m['cpu'] / c['cpu']:.1f}x; target >= 5),"
            f" {c['peak_mb'] / m['peak_mb']:.2f}x the peak memory (target <= 0.5); MONAI inference alone "
            f"{m['seconds']:.1f} s for {m['slices']} slices of {m['slice_hw']}"
        )
        if not plain_weights:
            print(
                "  (MONAI's BasicUNet is untrained here: its Dice is meaningless; the trained baseline's Dice is "
                "the basicunet-in-medfcn row when --monai-weights gives one)"
            )

    if args.json:
        write_json(Path(args.json), rows, engine, args)
    if engine is None:
        print(f"\noutputs in {workdir}")
        return
    print(
        f"\n== engine vs bare forward pass (best of {args.repeat}, batch 16, {engine['device']}, "
        f"AMP {engine['amp']}, {engine['threads']} threads)"
    )
    folded, stored = "forward (folded, channels-last)", "forward (as stored)"
    for name, case in engine["cases"].items():
        n, cpu = case["slices"], case["cpu"]
        print(f"{name}: {n} slices")
        for key in ("engine", folded, stored):
            print(f"  {key:<34} {case[key]:>7.2f} s {n / case[key]:>8.1f} slices/s   CPU {cpu[key]:>7.2f} s")
        print(
            f"  engine / forward (folded) = {case['engine'] / case[folded]:.3f} wall, "
            f"{cpu['engine'] / cpu[folded]:.3f} CPU (target <= 1.15); engine / forward (as stored) = "
            f"{case['engine'] / case[stored]:.3f} wall"
        )
    print(f"\noutputs in {workdir}")


if __name__ == "__main__":
    main()
