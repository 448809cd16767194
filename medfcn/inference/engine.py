"""Slice-wise inference: a 2-D network run over a 3-D volume, batch of slices by batch of slices.

Each slice ``i`` along ``axis`` is stacked with its ``context`` neighbours on each side as input channels
(:func:`slice_stack`; the ends are replicate-padded). Slices larger than the window are covered by overlapping
tiles whose softmax probabilities are blended with Gaussian weights; smaller ones go through the network whole
(the network pads to its stride). Only the slices in flight are ever held as probabilities: a full
C x D x H x W float tensor is never allocated. Labels are streamed into a uint8 volume; probabilities can be
streamed to a ``sink`` or iterated (:meth:`SliceEngine.iter_probabilities`).

>>> from medfcn.model.network import FCN
>>> from medfcn.inference.settings import InferenceSettings
>>> engine = SliceEngine(FCN(in_channels=3, num_classes=2), InferenceSettings(device="cpu", batch_size=4))
>>> engine.predict(np.zeros((20, 24, 5), np.float32)).shape
(20, 24, 5)
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from medfcn.choices import parse_choice
from medfcn.errors import CancelledError, MedfcnError, ModelError, UnsupportedScanError, UsageError
from medfcn.inference.runtime import Runner, choose_backend, make_runner
from medfcn.inference.settings import DEFAULT_SETTINGS, Backend, InferenceSettings
from medfcn.model.network import pad_to_stride

if TYPE_CHECKING:
    from medfcn.model.checkpoint import Model

__all__ = [
    "DeviceName",
    "select_device",
    "cpu_computes_bfloat16",
    "slice_stack",
    "tile_starts",
    "gaussian_weights",
    "SliceEngine",
]

log = logging.getLogger(__name__)

Progress = Callable[[float], None]
Cancel = Callable[[], bool]
Sink = Callable[[int, torch.Tensor], None]

# In-plane flips averaged by test-time augmentation: identity, flip W, flip H, flip both (dims of (B, C, H, W)).
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (3,), (2,), (2, 3))


class DeviceName(StrEnum):
    """Device choices; ``cuda:N`` names one GPU."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def select_device(name: str | torch.device = "auto") -> torch.device:
    """The torch device for ``name``: ``auto`` (CUDA, then Apple MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N``, ``mps``.

    A device that is named but not available falls back to the CPU (``cuda:N`` beyond the GPU count to ``cuda:0``)
    with a logged warning, so the same command runs everywhere. Raises :class:`UsageError` for an unknown name,
    naming the choices.
    """
    text = str(name).strip().lower()
    base, _, index = text.partition(":")
    if index and (base != DeviceName.CUDA or not index.isdigit()):
        raise UsageError(f"device {str(name)!r} is not one of: auto, cpu, cuda, cuda:N, mps")
    kind = parse_choice(DeviceName, base, "device", UsageError)
    if kind == DeviceName.AUTO:
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if kind == DeviceName.CUDA:
        if not torch.cuda.is_available():
            log.warning("device %r requested but CUDA is not available; running on the CPU", text)
            return torch.device("cpu")
        if index and int(index) >= torch.cuda.device_count():
            log.warning("device %r requested but only %d GPU(s) exist; using cuda:0", text, torch.cuda.device_count())
            return torch.device("cuda", 0)
        return torch.device(text)
    if kind == DeviceName.MPS and not _mps_available():
        log.warning("device 'mps' requested but Apple MPS is not available; running on the CPU")
        return torch.device("cpu")
    return torch.device(kind.value)


@functools.cache
def cpu_computes_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has bfloat16 instructions (x86 AMX or AVX-512 BF16, read from ``/proc/cpuinfo``): there
    mixed precision runs the network ~1.5x faster than float32 (measured on a 2-core AMX machine); elsewhere
    bfloat16 is emulated and slower, so the CPU default stays float32. Linux only; ``False`` where unknown."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return bool({"amx_bf16", "avx512_bf16"} & set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return False


def slice_stack(
    volume: torch.Tensor,
    start: int,
    stop: int,
    *,
    axis: int = 2,
    context: int = 1,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """Slices ``start..stop-1`` along ``axis`` of a 3-D ``volume``, each with its neighbours, as a float32 batch.

    Returns (B, 2 * context + 1, H, W) with B = stop - start, where (H, W) are the two other axes in order;
    channel ``k`` of item ``b`` is slice ``start + b - context + k`` clamped to the volume (replicate padding).
    The same stacking must be used in training and inference. ``memory_format``: the layout of the result
    (``torch.channels_last`` for a channels-last network); the voxels are copied once, into it.
    """
    depth, k = volume.shape[axis], 2 * context + 1
    lo, hi = start - context, stop + context
    if lo >= 0 and hi <= depth:
        slab = volume.narrow(axis, lo, hi - lo)  # the B + 2 * context slices, a view
    else:  # at the ends, replicate-padded (a small copy)
        slab = torch.index_select(volume, axis, torch.arange(lo, hi).clamp_(0, depth - 1))
    # Overlapping windows of k slices (a view): ``axis`` holds B, the window is last -> (B, K, H, W).
    view = slab.unfold(axis, k, 1).movedim(axis, 0).movedim(-1, 1)
    out = torch.empty(view.shape, dtype=torch.float32, device=volume.device, memory_format=memory_format)
    return out.copy_(view)


def tile_starts(size: int, window: int, overlap: float, align: int = 1) -> list[int]:
    """Start offsets of windows of ``window`` along an axis of ``size`` with fractional ``overlap``.

    One window at 0 when ``window >= size``; otherwise evenly stepped windows, the last one flush with the end.
    Steps are multiples of ``align`` (at least one ``align``), so with ``size`` and ``window`` multiples of it too,
    every start is: each tile then meets the network's pooling grid exactly as the whole slice does.
    """
    if window >= size:
        return [0]
    step = max(align, int(window * (1.0 - overlap)) // align * align)
    starts = list(range(0, size - window + 1, step))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def gaussian_weights(shape: tuple[int, int], sigma_scale: float = 0.125) -> torch.Tensor:
    """(h, w) Gaussian importance map, 1 at the centre, sigma = ``sigma_scale`` x size (as MONAI and nnU-Net)."""
    axes = []
    for n in shape:
        sigma = max(sigma_scale * n, 1e-3)
        r = torch.arange(n, dtype=torch.float64) - (n - 1) / 2.0
        axes.append(torch.exp(-0.5 * (r / sigma) ** 2))
    g = axes[0][:, None] * axes[1][None, :]
    return (g / g.max()).clamp_min(1e-4).float()  # no zero weights: every pixel stays covered


def _argmax_classes(probs: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W) index of the largest class of ``probs`` (B, C, H, W), the first on ties: a running maximum,
    ~10x faster on the CPU than ``argmax(dim=1)``, which reduces over a strided axis."""
    best, labels = probs[:, 0], torch.zeros((probs.shape[0], *probs.shape[2:]), dtype=torch.uint8, device=probs.device)
    for c in range(1, probs.shape[1]):
        labels.masked_fill_(probs[:, c] > best, c)
        best = torch.maximum(best, probs[:, c])
    return labels


def _window_pair(window: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if window is None:
        return None
    pair = (window, window) if isinstance(window, int) else tuple(window)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair):
        raise MedfcnError(f"window must be a positive integer, a pair of them, or None; got {window!r}")
    return pair  # type: ignore[return-value]


class SliceEngine:
    """A 2-D network prepared once for inference over volumes by a runner (:mod:`medfcn.inference.runtime`): on
    PyTorch in eval mode, batch norm folded, channels-last (inputs are stacked straight into that layout), on the
    chosen device, mixed precision on a GPU, under ``torch.inference_mode``; or as an exported ONNX graph on ONNX
    Runtime or OpenVINO (CPU).

    ``settings`` (:class:`~medfcn.inference.settings.InferenceSettings`): the device and the backend; ``batch_size``
    slices go through the network together; ``amp``: ``None`` means on for CUDA/MPS (float16) and for a CPU with
    bfloat16 instructions (:func:`cpu_computes_bfloat16`; labels agree with float32's at Dice 0.9999 on the benchmark
    heads), off on other CPUs; ``False``: float32 throughout; ``True`` on any CPU uses bfloat16 (ONNX Runtime always
    computes in float32). ``tta`` averages the softmax over the four in-plane flips (4x the cost). Slices larger than
    ``window`` (pixels, int or (h, w); ``None``: never tile) are tiled with fractional ``overlap`` and Gaussian
    blending. ``model``: the :class:`~medfcn.model.checkpoint.Model` whose network ``network`` is, so that its ONNX
    export and the ``auto`` backend's measurement are cached by its file. The caller's network is not modified.
    Raises :class:`MedfcnError` for invalid options, :class:`UsageError` for a backend that is not installed.
    """

    def __init__(
        self,
        network: nn.Module,
        settings: InferenceSettings = DEFAULT_SETTINGS,
        *,
        window: int | tuple[int, int] | None = 512,
        overlap: float = 0.25,
        model: Model | None = None,
    ) -> None:
        if not 0.0 <= float(overlap) < 1.0:
            raise MedfcnError(f"overlap must be in [0, 1), got {overlap!r}")
        self.settings = settings
        self.window = _window_pair(window)
        self.batch_size = settings.batch_size
        self.overlap = float(overlap)
        self.tta = settings.tta
        self.device = select_device(settings.device)
        native = self.device.type in ("cuda", "mps") or (self.device.type == "cpu" and cpu_computes_bfloat16())
        self.amp = native if settings.amp is None else settings.amp
        self.amp_dtype = torch.bfloat16 if self.device.type == "cpu" else torch.float16
        self.in_channels: int | None = getattr(network, "in_channels", None)
        self.stride = int(network.stride)
        self.threads = settings.threads or torch.get_num_threads()
        common = {"device": self.device, "amp": self.amp, "amp_dtype": self.amp_dtype, "threads": self.threads}
        if settings.backend == Backend.AUTO:
            self.runner: Runner = choose_backend(network, batch=self.batch_size, model=model, **common)
        else:
            self.runner = make_runner(settings.backend, network, model=model, **common)
        log.debug(
            "slice engine: %s on %s (%s, batch %d, window %s, tta=%s)",
            self.backend,
            self.device,
            self.precision,
            self.batch_size,
            self.window,
            self.tta,
        )

    @property
    def backend(self) -> str:
        """What runs the network: ``torch``, ``onnxruntime`` or ``openvino`` (``auto`` resolved)."""
        return self.runner.backend

    @property
    def precision(self) -> str:
        """The network's arithmetic: ``float32``, or the mixed precision's ``bfloat16`` / ``float16``."""
        return self.runner.precision

    # -- one batch -------------------------------------------------------------------------------------------

    @torch.no_grad()
    def _softmax(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K, h, w) input on the device -> (B, C, h, w) float32 probabilities, flip-averaged with TTA.

        The network runs in inference mode; its softmax is a plain tensor that callers may modify in place.
        """
        flips = TTA_FLIPS if self.tta else ((),)
        total = None
        for dims in flips:
            logits = self.runner(x.flip(dims) if dims else x)
            p = torch.softmax(logits.float(), dim=1)
            p = p.flip(dims) if dims else p
            total = p if total is None else total.add_(p)
        return total if len(flips) == 1 else total.mul_(1.0 / len(flips))

    @torch.no_grad()
    def _blend(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K, H, W) -> (B, C, H, W) probabilities; Gaussian-blended over tiles where a slice exceeds the window.

        Tiled slices are first padded to the network's stride exactly as the network pads a whole slice, and tiles
        are multiples of the stride placed at multiples of it, so every tile sees the pooling grid of the untiled
        pass: tiling changes a result only through the context a tile lacks at its (down-weighted) borders.
        """
        h, w = x.shape[-2:]
        if self.window is None or (h <= self.window[0] and w <= self.window[1]):
            return self._softmax(x)
        s = self.stride
        x, crop = pad_to_stride(x, s)
        hp, wp = x.shape[-2:]
        th, tw = (min(max(s, win // s * s), n) for win, n in zip(self.window, (hp, wp), strict=True))
        g = gaussian_weights((th, tw)).to(self.device)
        ys, zs = tile_starts(hp, th, self.overlap, s), tile_starts(wp, tw, self.overlap, s)
        acc = weight = None
        for y in ys:
            for z in zs:
                p = self._softmax(x[:, :, y : y + th, z : z + tw])
                if acc is None:
                    acc = torch.zeros((*p.shape[:2], hp, wp), device=self.device)
                    weight = torch.zeros((hp, wp), device=self.device)
                acc[:, :, y : y + th, z : z + tw].addcmul_(p, g)
                weight[y : y + th, z : z + tw] += g
        acc.div_(weight)
        return acc[:, :, crop[0], crop[1]]

    # -- volumes ---------------------------------------------------------------------------------------------

    def _check(self, volume: np.ndarray | torch.Tensor, axis: int, context: int | None) -> tuple[torch.Tensor, int]:
        vol = torch.as_tensor(volume)
        if vol.ndim != 3 or min(vol.shape) < 1:
            raise UnsupportedScanError(
                f"the engine needs a non-empty 3-D volume (X, Y, Z), got shape {tuple(vol.shape)}"
            )
        if axis not in (0, 1, 2):
            raise MedfcnError(f"slice axis must be 0, 1 or 2, got {axis!r}")
        if context is None:
            if self.in_channels is None:
                raise ModelError("the network does not say its in_channels; pass context explicitly")
            context = (self.in_channels - 1) // 2
        if context < 0 or (self.in_channels is not None and 2 * context + 1 != self.in_channels):
            raise ModelError(
                f"context {context} gives {2 * context + 1} input channels but the network takes {self.in_channels}; "
                f"use context={(self.in_channels or 1) // 2}"
            )
        return vol, context

    def _batches(
        self, vol: torch.Tensor, axis: int, context: int, progress: Progress | None, cancel: Cancel | None
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (start, probs (B, C, H, W) on the device) for a checked volume."""
        depth = vol.shape[axis]
        if progress is not None:
            progress(0.0)
        for start in range(0, depth, self.batch_size):
            if cancel is not None and cancel():
                raise CancelledError(f"inference cancelled after {start} of {depth} slices")
            stop = min(start + self.batch_size, depth)
            with torch.no_grad():
                x = slice_stack(vol, start, stop, axis=axis, context=context, memory_format=torch.channels_last)
            yield start, self._blend(x.to(self.device, non_blocking=True))
            if progress is not None:
                progress(stop / depth)

    def iter_probabilities(
        self,
        volume: np.ndarray | torch.Tensor,
        *,
        axis: int = 2,
        context: int | None = None,
        progress: Progress | None = None,
        cancel: Cancel | None = None,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(start, probs)`` per batch: probs (B, C, H, W) float32 on the CPU for slices start..start+B-1,
        a fresh tensor per batch that the caller may modify in place (the network runs in inference mode, the
        softmax outside it).

        ``volume`` (X, Y, Z) float, normalised as in training; slices along ``axis``; ``context`` neighbours
        each side (default: from the network's ``in_channels``). ``progress(fraction)`` after each batch;
        ``cancel()`` polled before each batch, raising :class:`CancelledError` when it returns true.
        """
        vol, context = self._check(volume, axis, context)
        for start, probs in self._batches(vol, axis, context, progress, cancel):
            yield start, probs.to("cpu")

    def predict(
        self,
        volume: np.ndarray | torch.Tensor,
        *,
        axis: int = 2,
        context: int | None = None,
        progress: Progress | None = None,
        cancel: Cancel | None = None,
        sink: Sink | None = None,
    ) -> np.ndarray:
        """uint8 labels (X, Y, Z): the argmax of the probabilities, streamed batch by batch.

        Arguments as :meth:`iter_probabilities`; ``sink(start, probs)`` (probs (B, C, H, W) float32, CPU) also
        receives every batch's probabilities, e.g. to store them quantised or resample them slab by slab.
        Raises :class:`ModelError` for more than 256 classes.
        """
        vol, context = self._check(volume, axis, context)
        labels = np.empty(tuple(vol.shape), dtype=np.uint8)
        out = torch.from_numpy(labels).movedim(axis, 0)  # a view: slices written in place
        for start, probs in self._batches(vol, axis, context, progress, cancel):
            if probs.shape[1] > 256:
                raise ModelError(f"the network has {probs.shape[1]} classes; uint8 labels hold at most 256")
            out[start : start + probs.shape[0]] = _argmax_classes(probs).cpu()
            if sink is not None:  # after the argmax: the sink may modify the probabilities in place
                sink(start, probs.to("cpu"))
        return labels
