"""What runs the network: PyTorch, ONNX Runtime or OpenVINO, behind one call, ``runner(x) -> logits``.

A runner takes (B, K, H, W) float32 slices (a torch tensor on its device) and returns (B, C, H, W) logits; the slice
engine (:class:`~medfcn.inference.engine.SliceEngine`) does everything around it (stacking, tiling, flips, softmax).
The ONNX runners get the graph :func:`medfcn.model.export.network_to_onnx` makes, exported once per model file and
kept in the user's cache folder (``$XDG_CACHE_HOME/medfcn``, else ``~/.cache/medfcn``; a model without a file is
exported in memory each time); OpenVINO also caches its compiled form there.

``auto`` (:func:`choose_backend`): PyTorch on a GPU; on the CPU each installed backend runs the same batches of
slices (the settings' batch size, in the three sizes of a 1 mm head's slices on the model's frame), interleaved,
best of :data:`PROBE_ROUNDS` after a warm-up, and the fastest is taken. The choice is cached per model file and machine
(CPU model, cores, threads, arithmetic, library versions), so the probe (about a second) runs once. A choice
measured on a busy machine can be wrong; naming the backend always wins.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from medfcn.errors import UsageError
from medfcn.inference.settings import Backend
from medfcn.model.network import fold_batchnorm, pad_to_stride

if TYPE_CHECKING:
    from medfcn.model.checkpoint import Model

__all__ = [
    "Runner",
    "installed_backends",
    "make_runner",
    "choose_backend",
    "cache_dir",
    "PROBE_SHAPES",
    "PROBE_ROUNDS",
]

log = logging.getLogger(__name__)

PROBE_SHAPES = ((160, 128), (128, 128), (128, 160))  # (H, W) of a 1 mm head's slices along each axis, padded
PROBE_ROUNDS = 5
_PACKAGES = {Backend.ONNXRUNTIME: "onnxruntime", Backend.OPENVINO: "openvino"}
_EXTRAS = {Backend.ONNXRUNTIME: "onnx", Backend.OPENVINO: "openvino"}


class Runner:
    """``runner(x)``: (B, K, H, W) float32 -> (B, C, H, W) logits. ``backend`` and ``precision`` (the arithmetic:
    ``float32``, ``bfloat16`` or ``float16``) say what ran them."""

    backend: str
    precision: str

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - an interface
        raise NotImplementedError


class TorchRunner(Runner):
    """The network itself: batch norm folded, channels-last, on ``device``, under ``torch.inference_mode``, in mixed
    precision (``amp_dtype``) when ``amp``. The caller's network is not modified."""

    backend = Backend.TORCH.value

    def __init__(self, network: nn.Module, device: torch.device, amp: bool, amp_dtype: torch.dtype) -> None:
        self.device, self.amp, self.amp_dtype = device, amp, amp_dtype
        self.model = fold_batchnorm(network).to(device).to(memory_format=torch.channels_last)
        self.precision = str(amp_dtype).removeprefix("torch.") if amp else "float32"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            return self.model(x.contiguous(memory_format=torch.channels_last))


class _OnnxRunner(Runner):
    """Common to the ONNX runtimes: pad to the stride, run the graph on a contiguous float32 array, crop back."""

    def __init__(self, stride: int) -> None:
        self.stride = stride

    def _run(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - an interface
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x, crop = pad_to_stride(x.to(torch.float32), self.stride)
        out = torch.from_numpy(self._run(np.ascontiguousarray(x.numpy())))
        return out[:, :, crop[0], crop[1]]


class OnnxRuntimeRunner(_OnnxRunner):
    """ONNX Runtime's CPU provider, ``threads`` intra-op threads that sleep when idle (no spinning: on a shared
    machine, spinning threads take cores from other work, as ``OMP_WAIT_POLICY=PASSIVE`` prevents for torch)."""

    backend = Backend.ONNXRUNTIME.value
    precision = "float32"

    def __init__(self, graph: bytes, stride: int, threads: int) -> None:
        import onnxruntime as ort

        super().__init__(stride)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"slices": x})[0]


class OpenVinoRunner(_OnnxRunner):
    """OpenVINO on the CPU, ``threads`` inference threads, in bfloat16 when ``bf16`` (else float32); its compiled
    model is cached under ``cache`` (loading it again is faster than compiling)."""

    backend = Backend.OPENVINO.value

    def __init__(self, graph: bytes, stride: int, threads: int, bf16: bool, cache: Path | None) -> None:
        import openvino as ov

        super().__init__(stride)
        core = ov.Core()
        if cache is not None:
            core.set_property({"CACHE_DIR": str(cache)})
        self.precision = "bfloat16" if bf16 else "float32"
        config = {
            "INFERENCE_NUM_THREADS": threads,
            "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32",
            "PERFORMANCE_HINT": "LATENCY",
        }
        self.compiled = core.compile_model(core.read_model(graph), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def _run(self, x: np.ndarray) -> np.ndarray:
        self.request.infer({0: x})
        return self.request.get_output_tensor(0).data.copy()


def installed_backends() -> list[Backend]:
    """PyTorch and the ONNX runtimes importable here (ONNX Runtime, OpenVINO), in that order."""
    return [Backend.TORCH] + [b for b, pkg in _PACKAGES.items() if importlib.util.find_spec(pkg) is not None]


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/medfcn`` (``~/.cache/medfcn`` without it): exported graphs and the ``auto`` probes."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "medfcn"


def _check_installed(backend: Backend) -> None:
    if backend in _PACKAGES and importlib.util.find_spec(_PACKAGES[backend]) is None:
        raise UsageError(
            f"backend {backend.value!r} needs the {_PACKAGES[backend]} package: "
            f"pip install 'medfcn[{_EXTRAS[backend]}]'"
        )


def _graph(network: nn.Module, model: Model | None, *, fresh: bool = False) -> tuple[bytes, Path | None]:
    """The ONNX graph of ``network`` and the cache file it came from or went to: from the cache when ``model`` (whose
    network it is) has a file and ``fresh`` is false, else exported (and cached)."""
    from medfcn.model.export import OPSET, network_to_onnx, onnx_bytes

    if model is None or not model.sha256:
        return network_to_onnx(network), None
    path = cache_dir() / "onnx" / f"{model.sha256}-opset{OPSET}-torch{torch.__version__}.onnx"
    if not fresh:
        try:
            return path.read_bytes(), path
        except OSError:
            pass
    data = onnx_bytes(model)
    try:  # a cache that cannot be written costs the export again next time, nothing else
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as e:
        log.info("cannot cache the exported model in %s (%s)", path.parent, e)
    return data, path


def make_runner(
    backend: Backend | str,
    network: nn.Module,
    *,
    device: torch.device,
    amp: bool,
    amp_dtype: torch.dtype,
    threads: int,
    model: Model | None = None,
) -> Runner:
    """A :class:`Runner` of ``network`` on ``backend`` (not ``auto``: see :func:`choose_backend`). ``model``: the
    :class:`~medfcn.model.checkpoint.Model` whose network it is, so that its export is cached by its file's SHA-256.

    Raises :class:`UsageError` for a backend that is not installed, or an ONNX runtime with a device that is not
    the CPU.
    """
    backend = Backend(backend)
    _check_installed(backend)
    if backend is Backend.TORCH:
        return TorchRunner(network, device, amp, amp_dtype)
    if device.type != "cpu":
        raise UsageError(
            f"backend {backend.value!r} runs on the CPU; use --device cpu, or --backend torch for {device}"
        )
    stride = int(network.stride)

    def build(graph: bytes) -> Runner:
        if backend is Backend.ONNXRUNTIME:
            return OnnxRuntimeRunner(graph, stride, threads)
        return OpenVinoRunner(graph, stride, threads, bf16=amp, cache=cache_dir() / "openvino")

    graph, cached = _graph(network, model)
    try:
        return build(graph)
    except Exception as exc:  # the runtimes raise their own types; a damaged cache file is exported again
        if cached is None:
            raise
        log.warning("%s: cannot be loaded (%s); exported again", cached, str(exc).splitlines()[0][:200])
        return build(_graph(network, model, fresh=True)[0])


def _machine_key(threads: int, amp: bool, batch: int, backends: list[Backend]) -> str:
    from importlib.metadata import PackageNotFoundError, version

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for b in backends:
        try:
            versions.append(f"{b.value}={version(_PACKAGES.get(b, 'torch'))}")
        except PackageNotFoundError:
            versions.append(f"{b.value}=?")
    return f"{cpu}|cores={os.cpu_count()}|threads={threads}|amp={amp}|batch={batch}|{','.join(versions)}"


def probe(runners: dict[Backend, Runner], batch: int, channels: int, rounds: int = PROBE_ROUNDS) -> dict[str, float]:
    """Best seconds of each runner on a round of batches of ``batch`` slices of noise (``channels``, one batch of
    each of :data:`PROBE_SHAPES`: a runtime that recompiles for a new size pays for it), after one warm-up round,
    the runners interleaved round by round (so a busy moment slows them alike)."""
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn((batch, channels, *shape), generator=g) for shape in PROBE_SHAPES]
    for run in runners.values():
        for x in xs:
            run(x)
    best = {b.value: float("inf") for b in runners}
    for _ in range(rounds):
        for b, run in runners.items():
            t = time.perf_counter()
            for x in xs:
                run(x)
            best[b.value] = min(best[b.value], time.perf_counter() - t)
    return best


def choose_backend(
    network: nn.Module,
    *,
    device: torch.device,
    amp: bool,
    amp_dtype: torch.dtype,
    threads: int,
    batch: int,
    model: Model | None = None,
    build: Callable[..., Runner] = make_runner,
) -> Runner:
    """The runner ``auto`` picks: PyTorch off the CPU or when it is the only backend installed; otherwise the
    installed backend measured fastest (:func:`probe`), the measurement cached per model file and machine in
    ``cache_dir()/backends.json``. Returns that runner (already built)."""
    backends = installed_backends()
    common = {"device": device, "amp": amp, "amp_dtype": amp_dtype, "threads": threads, "model": model}
    if device.type != "cpu" or len(backends) == 1:
        return build(Backend.TORCH, network, **common)
    key = hashlib.sha256(
        f"{model.sha256 if model else ''}|{_machine_key(threads, amp, batch, backends)}".encode()
    ).hexdigest()[:24]
    store = cache_dir() / "backends.json"
    try:
        known = json.loads(store.read_text())
    except (OSError, ValueError):
        known = {}
    chosen = known.get(key, {}).get("backend") if model is not None and model.sha256 else None
    if chosen in {b.value for b in backends}:
        log.debug("backend %s (measured before: %s)", chosen, known[key].get("seconds"))
        return build(Backend(chosen), network, **common)
    runners = {}
    for b in backends:
        try:
            runners[b] = build(b, network, **common)
        except Exception as exc:  # an optional runtime that cannot run here (an old CPU, a broken wheel) is left out
            if b is Backend.TORCH:
                raise
            log.warning("backend %s left out of auto: %s", b.value, str(exc).splitlines()[0][:200] if str(exc) else exc)
    seconds = probe(runners, batch, int(getattr(network, "in_channels", 3)))
    fastest = min(seconds, key=seconds.get)
    log.info("backend %s chosen (best seconds per batch: %s)", fastest, seconds)
    if model is not None and model.sha256:
        known[key] = {"backend": fastest, "seconds": {k: round(v, 5) for k, v in seconds.items()}}
        try:
            store.parent.mkdir(parents=True, exist_ok=True)
            tmp = store.with_name(f".{store.name}.{os.getpid()}.partial")
            tmp.write_text(json.dumps(known, indent=1))
            os.replace(tmp, store)
        except OSError as e:
            log.info("cannot cache the backend choice in %s (%s)", store, e)
    return runners[Backend(fastest)]
