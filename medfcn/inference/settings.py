"""How inference runs, as one frozen record: the device, the arithmetic, test-time augmentation, batch and threads.

Built once (by the CLI from its options, by the napari widget from its controls, by a test or a benchmark) and
passed down unchanged through the batch runner (:func:`medfcn.batch.run.run_batch`), the Dask workers
(:mod:`medfcn.batch.cluster`), :class:`~medfcn.inference.pipeline.Segmenter` and
:class:`~medfcn.inference.engine.SliceEngine`. It imports no torch, so the CLI can build it before torch loads.

>>> InferenceSettings(device="cpu", amp=False)
InferenceSettings(device='cpu', tta=False, amp=False, batch_size=16, threads=None, backend='torch')
>>> InferenceSettings(batch_size=0)
Traceback (most recent call last):
...
medfcn.errors.UsageError: batch size must be a positive integer, got 0
>>> InferenceSettings(backend="tensorrt")
Traceback (most recent call last):
...
medfcn.errors.UsageError: backend 'tensorrt' is not one of: auto, torch, onnxruntime, openvino
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from medfcn.choices import parse_choice
from medfcn.errors import UsageError

__all__ = ["Backend", "InferenceSettings", "DEFAULT_SETTINGS"]


class Backend(StrEnum):
    """What runs the network (:mod:`medfcn.inference.runtime`): PyTorch, or an exported ONNX graph on ONNX Runtime
    or OpenVINO (CPU only; installed with ``medfcn[onnx]`` / ``medfcn[openvino]``). ``auto``: PyTorch on a GPU; on
    the CPU the installed one measured fastest on this machine for the model."""

    AUTO = "auto"
    TORCH = "torch"
    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"


@dataclass(frozen=True)
class InferenceSettings:
    """Settings that travel together from the command line to the slice engine (hashable: a worker's cache key).

    ``device``: ``auto`` (CUDA, then Apple MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; checked where
    the engine selects it (:func:`medfcn.inference.engine.select_device`), on each worker for a distributed run.
    ``tta``: average over in-plane flips (4x the inference cost).
    ``amp``: mixed precision; ``None``: where the device computes it natively (float16 on a GPU, bfloat16 on a
    CPU with AMX / AVX-512 BF16), ``False``: float32 throughout, ``True``: always.
    ``batch_size``: slices per forward pass.
    ``threads``: torch threads per Dask worker process; ``None``: each host's cores shared by the tasks the cluster
    runs there at once (a local cluster of N workers gives each ``cores // N``). A local run leaves torch's own.
    ``backend``: a :class:`Backend` value (the library's default is ``torch``; the command line and the Segment dock
    default to ``auto``); ONNX Runtime and OpenVINO run on the CPU, and follow ``amp`` as torch
    does (OpenVINO computes in bfloat16 where the CPU has it; ONNX Runtime in float32 always).

    Raises :class:`UsageError` for a batch size or thread count that is not a positive integer, or an unknown backend.
    """

    device: str = "auto"
    tta: bool = False
    amp: bool | None = None
    batch_size: int = 16
    threads: int | None = None
    backend: str = "torch"

    def __post_init__(self) -> None:
        object.__setattr__(self, "backend", parse_choice(Backend, self.backend, "backend", UsageError).value)
        object.__setattr__(self, "device", str(self.device))  # a torch.device is kept as its name
        object.__setattr__(self, "tta", bool(self.tta))
        if self.amp is not None:
            object.__setattr__(self, "amp", bool(self.amp))
        if not _positive_int(self.batch_size):
            raise UsageError(f"batch size must be a positive integer, got {self.batch_size!r}")
        if self.threads is not None and not _positive_int(self.threads):
            raise UsageError(f"threads must be a positive integer or None, got {self.threads!r}")


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


DEFAULT_SETTINGS = InferenceSettings()  # the default argument of the functions that take settings
