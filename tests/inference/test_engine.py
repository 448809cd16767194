"""The slice engine: stacking, tiling and Gaussian stitching, TTA, memory bound, devices, progress, cancel."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from torch import nn

from medfcn.errors import CancelledError, MedfcnError, ModelError, UnsupportedScanError
from medfcn.inference.engine import SliceEngine, gaussian_weights, select_device, slice_stack, tile_starts
from medfcn.inference.settings import InferenceSettings
from medfcn.model.network import FCN, pad_to_stride


class ProbabilityEcho(nn.Module):
    """A model whose softmax is its input: logits (log p, log(1 - p)) of the centre input channel p in (0, 1).

    It says it has stride 8, so the engine pads tiled slices to multiples of 8 and aligns its tiles to them.
    """

    in_channels = 3
    stride = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = x[:, x.shape[1] // 2 : x.shape[1] // 2 + 1]
        return torch.cat([p.log(), (1 - p).log()], dim=1)


class BlockMean(nn.Module):
    """A network of stride 8 whose output is exact on its pooling grid: each 8 x 8 block of the (padded) input's
    centre channel is averaged, logits (m, -m). It pads with :func:`pad_to_stride`, like the real networks, so a
    tile placed anywhere but on that grid would give other numbers."""

    in_channels = 3
    stride = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, crop = pad_to_stride(x, self.stride)
        m = F.avg_pool2d(x[:, 1:2], self.stride).repeat_interleave(self.stride, 2).repeat_interleave(self.stride, 3)
        return torch.cat([m, -m], dim=1)[:, :, crop[0], crop[1]]


def _blobs(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy float32 image and its int64 labels: a smooth random field thresholded at 0."""
    rng = np.random.default_rng(seed)
    labels = (gaussian_filter(rng.standard_normal(shape), 3) > 0).astype(np.int64)
    return (labels + 0.3 * rng.standard_normal(shape)).astype(np.float32), labels


@pytest.fixture(scope="module")
def trained_fcn() -> FCN:
    """A small FCN (stride 4) trained for a few seconds to find the bright regions of a noisy image."""
    torch.manual_seed(0)
    net = FCN(in_channels=1, num_classes=2, width=8, max_width=16, depth=3, stem_stride=1)
    image, labels = _blobs((8, 32, 32), seed=0)
    x, y = torch.from_numpy(image)[:, None], torch.from_numpy(labels)
    opt = torch.optim.Adam(net.parameters(), lr=2e-2)
    for _ in range(30):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


def _all_probabilities(engine: SliceEngine, volume: np.ndarray, **kwargs) -> torch.Tensor:
    """(D, C, H, W) probabilities of every slice, concatenated (small test volumes only)."""
    return torch.cat([p for _, p in engine.iter_probabilities(volume, **kwargs)])


# -- stacking and tiling, by hand ---------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("context", [0, 1, 2])
def test_slice_stack_context_and_replicate_padding(axis: int, context: int) -> None:
    volume = np.arange(4 * 5 * 6, dtype=np.float64).reshape(4, 5, 6)
    depth = volume.shape[axis]
    start, stop = 0, depth  # the first and last slices need padding on both ends
    got = slice_stack(torch.from_numpy(volume), start, stop, axis=axis, context=context)
    other = [n for a, n in enumerate(volume.shape) if a != axis]
    assert got.dtype == torch.float32 and tuple(got.shape) == (stop - start, 2 * context + 1, *other)
    for b in range(stop - start):
        for k in range(2 * context + 1):
            source = min(max(start + b - context + k, 0), depth - 1)
            np.testing.assert_array_equal(got[b, k].numpy(), np.take(volume, source, axis=axis))
    assert got.is_contiguous()
    for lo, hi in [(1, depth - 1), (0, 1), (depth - 1, depth)]:  # interior (a view) and end batches (padded)
        cl = slice_stack(
            torch.from_numpy(volume), lo, hi, axis=axis, context=context, memory_format=torch.channels_last
        )
        assert cl.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(cl, got[lo:hi], rtol=0, atol=0)


def test_slice_stack_hand_worked() -> None:
    """Slices 1..2 of a 3-slice volume along Z with one neighbour: channels (0, 1, 2) and (1, 2, 2)."""
    volume = torch.stack([torch.full((2, 2), float(i)) for i in range(3)], dim=2)  # volume[:, :, i] == i
    got = slice_stack(volume, 1, 3, axis=2, context=1)
    assert got[:, :, 0, 0].tolist() == [[0.0, 1.0, 2.0], [1.0, 2.0, 2.0]]


def test_tile_starts_hand_worked_and_as_monai() -> None:
    from monai.data.utils import dense_patch_slices

    assert tile_starts(70, 32, 0.5) == [0, 16, 32, 38]
    assert tile_starts(72, 32, 0.5, align=8) == [0, 16, 32, 40]
    assert tile_starts(72, 40, 0.25, align=8) == [0, 24, 32]  # step 30 rounded down to 24
    assert tile_starts(20, 32, 0.5) == [0] and tile_starts(32, 32, 0.5) == [0]
    for size, window, overlap in [(70, 32, 0.5), (100, 24, 0.25), (57, 20, 0.0), (64, 16, 0.75)]:
        step = int(window * (1 - overlap))
        monai = sorted({s[0].start for s in dense_patch_slices((size,), (window,), (step,))})
        assert tile_starts(size, window, overlap) == monai


def test_gaussian_weights_hand_worked() -> None:
    g = gaussian_weights((5, 7))
    assert g.shape == (5, 7) and float(g[2, 3]) == 1.0
    torch.testing.assert_close(g, g.flip(0).flip(1))
    sigma = 0.125 * 5
    assert float(g[0, 3]) == pytest.approx(np.exp(-0.5 * (2 / sigma) ** 2), rel=1e-5, abs=1e-4)
    assert float(g.min()) == pytest.approx(1e-4)  # every pixel keeps a weight


# -- stitching ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tta", [False, True])
@pytest.mark.parametrize("window", [None, 16, (24, 16), 40])
def test_gaussian_stitching_of_an_identity_model_reproduces_its_input(window, tta: bool) -> None:
    volume = np.random.default_rng(3).uniform(0.02, 0.98, (45, 53, 7)).astype(np.float32)
    engine = SliceEngine(
        ProbabilityEcho(), InferenceSettings(device="cpu", batch_size=3, tta=tta), window=window, overlap=0.3
    )
    probs = _all_probabilities(engine, volume)  # (Z, 2, X, Y)
    assert tuple(probs.shape) == (7, 2, 45, 53)
    np.testing.assert_allclose(probs[:, 0].numpy(), volume.transpose(2, 0, 1), rtol=0, atol=2e-6)
    np.testing.assert_allclose(probs.sum(1).numpy(), 1.0, atol=2e-6)
    labels = engine.predict(volume)
    np.testing.assert_array_equal(labels, (volume < 0.5).astype(np.uint8))


@pytest.mark.parametrize("window", [8, 16, (24, 16), 33])
def test_tiles_meet_the_networks_own_padding_and_grid(window) -> None:
    """Odd slices (33 x 37): the engine pads tiled slices as the network pads whole ones (:func:`pad_to_stride`)
    and places tiles on its grid, so tiling a block-exact network changes nothing."""
    volume = np.random.default_rng(5).uniform(0, 1, (33, 37, 3)).astype(np.float32)
    whole = _all_probabilities(SliceEngine(BlockMean(), InferenceSettings(device="cpu"), window=None), volume)
    tiled = _all_probabilities(
        SliceEngine(BlockMean(), InferenceSettings(device="cpu"), window=window, overlap=0.4), volume
    )
    assert tuple(whole.shape) == (3, 2, 33, 37)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", [(70, 75, 4), (72, 80, 4)])
def test_tiling_does_not_change_a_real_fcn_beyond_tolerance(trained_fcn: FCN, shape) -> None:
    image, labels = _blobs(shape, seed=1)
    whole = _all_probabilities(SliceEngine(trained_fcn, InferenceSettings(device="cpu"), window=None), image)
    tiled = _all_probabilities(SliceEngine(trained_fcn, InferenceSettings(device="cpu"), window=40, overlap=0.5), image)
    reference = torch.from_numpy(labels).movedim(2, 0)
    assert (whole.argmax(1) == reference).float().mean() > 0.95  # the network does its job
    diff = (whole - tiled).abs()
    assert float(diff.mean()) < 2e-3
    assert float(diff.flatten().quantile(0.99)) < 0.03
    assert float((whole.argmax(1) == tiled.argmax(1)).float().mean()) > 0.998


def test_tiled_blending_agrees_with_monai_sliding_window(trained_fcn: FCN) -> None:
    """Same tiles (72 x 80, window 40, overlap 0.5): with our Gaussian map MONAI blends to the same numbers."""
    from monai.inferers import sliding_window_inference

    image, _ = _blobs((72, 80, 3), seed=2)
    engine = SliceEngine(
        trained_fcn, InferenceSettings(device="cpu", amp=False), window=40, overlap=0.5
    )  # MONAI's float32
    ours = _all_probabilities(engine, image)
    x = slice_stack(torch.from_numpy(image), 0, 3, axis=2, context=0)

    def monai(**kwargs) -> torch.Tensor:
        with torch.inference_mode():
            return sliding_window_inference(
                x, (40, 40), 4, lambda t: torch.softmax(trained_fcn(t), 1), overlap=0.5, mode="gaussian", **kwargs
            )

    torch.testing.assert_close(ours, monai(roi_weight_map=gaussian_weights((40, 40))), atol=2e-5, rtol=1e-4)
    # MONAI's own map is a slightly different discrete Gaussian (clamped at 1e-3, ours at 1e-4): close on average.
    assert float((ours - monai()).abs().mean()) < 1e-3


# -- TTA, labels, options -----------------------------------------------------------------------------------------


def test_tta_is_the_mean_over_flipped_inputs(trained_fcn: FCN) -> None:
    image, _ = _blobs((33, 37, 5), seed=4)
    tta = _all_probabilities(SliceEngine(trained_fcn, InferenceSettings(device="cpu", tta=True)), image)
    assert tuple(tta.shape) == (5, 2, 33, 37)
    np.testing.assert_allclose(tta.sum(1).numpy(), 1.0, atol=1e-5)
    plain = SliceEngine(trained_fcn, InferenceSettings(device="cpu"))
    expected = torch.zeros_like(tta)
    for flip_axes in [(), (0,), (1,), (0, 1)]:  # X and Y are the slices' H and W when slicing along Z
        flipped = np.ascontiguousarray(np.flip(image, flip_axes)) if flip_axes else image
        p = _all_probabilities(plain, flipped)
        expected += p.flip([a + 2 for a in flip_axes]) if flip_axes else p
    torch.testing.assert_close(tta, expected / 4, atol=1e-5, rtol=1e-5)
    assert float((tta - _all_probabilities(plain, image)).abs().max()) > 1e-3  # TTA did something


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_predict_is_the_argmax_of_the_probabilities_along_any_axis(axis: int) -> None:
    torch.manual_seed(0)
    net = FCN(in_channels=3, num_classes=3, width=4, max_width=8, depth=3).eval()
    volume = np.random.default_rng(0).standard_normal((9, 10, 11)).astype(np.float32)
    engine = SliceEngine(net, InferenceSettings(device="cpu", batch_size=4))
    seen: list[tuple[int, int]] = []
    labels = engine.predict(volume, axis=axis, sink=lambda start, p: seen.append((start, p.shape[0])))
    assert labels.dtype == np.uint8 and labels.shape == volume.shape
    probs = _all_probabilities(engine, volume, axis=axis)
    np.testing.assert_array_equal(labels, probs.argmax(1).movedim(0, axis).numpy())
    depth = volume.shape[axis]
    assert seen == [(s, min(4, depth - s)) for s in range(0, depth, 4)]


def test_bfloat16_autocast_on_cpu_agrees(trained_fcn: FCN) -> None:
    image, _ = _blobs((40, 44, 4), seed=5)
    full = SliceEngine(trained_fcn, InferenceSettings(device="cpu", amp=False)).predict(image)
    half = SliceEngine(trained_fcn, InferenceSettings(device="cpu", amp=True)).predict(image)
    assert (full == half).mean() > 0.99


def test_mixed_precision_by_default_only_on_a_cpu_with_bfloat16_instructions(tmp_path, trained_fcn: FCN) -> None:
    from medfcn.inference.engine import cpu_computes_bfloat16

    def cpuinfo(flags: str) -> str:
        path = tmp_path / f"cpuinfo-{len(list(tmp_path.iterdir()))}"
        path.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\n")
        return str(path)

    assert cpu_computes_bfloat16(cpuinfo("fpu sse2 avx2 avx512f amx_bf16 amx_tile"))
    assert cpu_computes_bfloat16(cpuinfo("fpu avx512f avx512_bf16"))
    assert not cpu_computes_bfloat16(cpuinfo("fpu sse2 avx2 avx512f avx512bw avx512_fp16"))  # emulated: slower
    assert not cpu_computes_bfloat16(str(tmp_path / "missing"))
    engine = SliceEngine(trained_fcn, InferenceSettings(device="cpu"))
    assert engine.amp == cpu_computes_bfloat16()
    assert engine.precision == ("bfloat16" if engine.amp else "float32")
    assert SliceEngine(trained_fcn, InferenceSettings(device="cpu", amp=False)).precision == "float32"


def test_engine_leaves_the_callers_network_alone() -> None:
    net = FCN(in_channels=1, num_classes=2, width=4, depth=3)
    SliceEngine(net, InferenceSettings(device="cpu"))
    assert net.training and any(isinstance(m, nn.BatchNorm2d) for m in net.modules())


def test_engine_option_errors() -> None:
    net = FCN(in_channels=3, num_classes=2, width=4, depth=3)
    with pytest.raises(MedfcnError, match="batch size"):
        SliceEngine(net, InferenceSettings(device="cpu", batch_size=0))
    with pytest.raises(MedfcnError, match="overlap"):
        SliceEngine(net, InferenceSettings(device="cpu"), overlap=1.0)
    with pytest.raises(MedfcnError, match="window"):
        SliceEngine(net, InferenceSettings(device="cpu"), window=(0, 5))
    engine = SliceEngine(net, InferenceSettings(device="cpu"))
    with pytest.raises(ModelError, match="context=1"):
        engine.predict(np.zeros((8, 8, 8), np.float32), context=2)
    with pytest.raises(UnsupportedScanError, match=r"\(8, 8\)"):
        engine.predict(np.zeros((8, 8), np.float32))
    with pytest.raises(MedfcnError, match="0, 1 or 2"):
        engine.predict(np.zeros((8, 8, 8), np.float32), axis=3)


# -- progress and cancellation ------------------------------------------------------------------------------------


def test_progress_reaches_one() -> None:
    net = FCN(in_channels=3, num_classes=2, width=4, depth=3)
    seen: list[float] = []
    SliceEngine(net, InferenceSettings(device="cpu", batch_size=4)).predict(
        np.zeros((8, 9, 10), np.float32), progress=seen.append
    )
    assert seen == [0.0, 0.4, 0.8, 1.0]


def test_cancel_raises_between_batches() -> None:
    net = FCN(in_channels=3, num_classes=2, width=4, depth=3)
    engine = SliceEngine(net, InferenceSettings(device="cpu", batch_size=4))
    polls: list[int] = []

    def cancel() -> bool:
        polls.append(1)
        return len(polls) == 3  # after two batches

    seen: list[float] = []
    with pytest.raises(CancelledError, match="8 of 20"):
        engine.predict(np.zeros((8, 9, 20), np.float32), progress=seen.append, cancel=cancel)
    assert seen == [0.0, 0.2, 0.4]
    with pytest.raises(CancelledError):
        list(engine.iter_probabilities(np.zeros((8, 9, 20), np.float32), cancel=lambda: True))


# -- devices ------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback on a machine without CUDA")
def test_select_device_falls_back_to_the_cpu(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="medfcn.inference.engine"):
        assert select_device("cuda") == torch.device("cpu")
        assert select_device("cuda:1") == torch.device("cpu")
    assert sum("CUDA is not available" in r.getMessage() for r in caplog.records) == 2
    assert select_device("auto").type in ("cpu", "mps")
    if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        assert select_device("mps") == torch.device("cpu")


def test_select_device_names() -> None:
    assert select_device(" CPU ") == torch.device("cpu")
    assert select_device(torch.device("cpu")) == torch.device("cpu")
    for bad in ["tpu", "cuda:x", "cpu:0", ""]:
        with pytest.raises(MedfcnError) as err:
            select_device(bad)
        assert all(choice in str(err.value) for choice in ("auto", "cpu", "cuda", "mps")), str(err.value)


# -- memory -------------------------------------------------------------------------------------------------------

_TALL_SCAN = textwrap.dedent(
    """
    import json
    import numpy as np
    import torch
    from medfcn.inference.engine import SliceEngine
    from medfcn.inference.settings import InferenceSettings
    from medfcn.model.network import FCN, pad_to_stride

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024
        raise KeyError(key)

    torch.set_num_threads(1)
    net = FCN(in_channels=3, num_classes=2, width=4, max_width=16, depth=3, stem_stride=2)
    engine = SliceEngine(net, InferenceSettings(device="cpu", batch_size=16))
    volume = np.random.default_rng(0).random((64, 64, 2000), dtype=np.float32)
    engine.predict(volume[:, :, :64])  # warm up thread pools and the allocator
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    before = status("VmRSS:")
    largest = []
    labels = engine.predict(volume, sink=lambda start, p: largest.append(p.numel()))
    print(json.dumps({"before": before, "peak": status("VmHWM:"), "labels": labels.nbytes,
                      "largest_batch": max(largest), "shape": list(labels.shape)}))
    """
)


def test_a_tall_scan_stays_within_a_memory_bound() -> None:
    """64 x 64 x 2000: probabilities for the whole scan (C x D x H x W float32) would take 65.5 MB."""
    out = subprocess.run(
        [sys.executable, "-c", _TALL_SCAN],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    full = 2 * 2000 * 64 * 64 * 4
    assert result["shape"] == [64, 64, 2000]
    assert result["largest_batch"] == 16 * 2 * 64 * 64  # only the batch in flight is ever held as probabilities
    growth = result["peak"] - result["before"]
    # The uint8 labels (8.2 MB) must be allocated; everything else is per batch.
    assert growth < result["labels"] + full // 4, (growth, full)
