"""medfcn.inference.runtime: the backends give torch's labels on the real sample heads; ``auto`` takes the one it
measured fastest and remembers it; a damaged cache, a missing package and a GPU device are handled."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from medfcn.data.reader import read_scan
from medfcn.errors import UsageError
from medfcn.inference import runtime
from medfcn.inference.pipeline import Segmenter
from medfcn.inference.runtime import cache_dir, choose_backend, installed_backends, make_runner
from medfcn.inference.settings import Backend, InferenceSettings
from medfcn.model.checkpoint import load_model

ROOT = Path(__file__).resolve().parents[2]
HEADS = ("colin27", "robex_head")
ONNX_BACKENDS = [b for b in (Backend.ONNXRUNTIME, Backend.OPENVINO) if b in installed_backends()]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    """Exports and probes go to a folder of this test run, not the user's cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg_cache"))


@pytest.fixture(scope="module")
def torch_labels() -> dict[tuple[str, bool], np.ndarray]:
    """torch's labels of the two sample heads, in its default arithmetic (``amp=None``) and in float32."""
    out = {}
    for amp in (None, False):
        segmenter = Segmenter(None, InferenceSettings(device="cpu", amp=amp))
        for head in HEADS:
            out[head, amp is None] = segmenter.segment(read_scan(ROOT / "sample_data" / "images" / f"{head}.nii.gz"))
    return out


@pytest.mark.parametrize("backend", ONNX_BACKENDS)
@pytest.mark.parametrize("amp", [None, False], ids=["default-precision", "float32"])
def test_each_backend_gives_torchs_labels_on_the_sample_heads(backend, amp, torch_labels):
    """Dice >= 0.9995 against torch in the same arithmetic, on both real heads: OpenVINO follows ``amp`` as torch
    does (bfloat16 where the CPU has it); ONNX Runtime computes in float32, so torch's float32 is its reference."""
    segmenter = Segmenter(None, InferenceSettings(device="cpu", amp=amp, backend=backend))
    assert segmenter.engine.backend == backend
    for head in HEADS:
        labels = segmenter.segment(read_scan(ROOT / "sample_data" / "images" / f"{head}.nii.gz"))
        reference = torch_labels[head, amp is None and backend == Backend.OPENVINO]
        assert dice(labels, reference) >= 0.9995, (backend, head, segmenter.engine.precision)


def test_onnxruntime_computes_in_float32_and_openvino_follows_amp():
    model = load_model(None)
    common = {"device": torch.device("cpu"), "amp_dtype": torch.bfloat16, "threads": 1, "model": model}
    if Backend.ONNXRUNTIME in ONNX_BACKENDS:
        assert make_runner(Backend.ONNXRUNTIME, model.network, amp=True, **common).precision == "float32"
    if Backend.OPENVINO in ONNX_BACKENDS:
        assert make_runner(Backend.OPENVINO, model.network, amp=False, **common).precision == "float32"
        assert make_runner(Backend.OPENVINO, model.network, amp=True, **common).precision == "bfloat16"


class _Slowed:
    """A real runner made slower by ``delay`` seconds a call: a backend that auto must not take."""

    def __init__(self, runner, delay: float) -> None:
        self.runner, self.delay = runner, delay
        self.backend, self.precision = runner.backend, runner.precision

    def __call__(self, x):
        time.sleep(self.delay)
        return self.runner(x)


@pytest.mark.skipif(not ONNX_BACKENDS, reason="only torch is installed: auto has nothing to choose")
def test_auto_never_takes_a_slower_backend_and_remembers_what_it_measured(model_file):
    model = load_model(model_file)  # the tiny model: milliseconds a batch on any backend
    (cache_dir() / "backends.json").unlink(missing_ok=True)  # another test's choice for this model, in this cache
    built: list[str] = []
    slow = {b.value for b in installed_backends() if b != Backend.TORCH}  # every other backend 0.1 s a batch slower

    def build(backend, network, **kw):
        built.append(Backend(backend).value)
        runner = make_runner(backend, network, **kw)
        return _Slowed(runner, 0.1) if runner.backend in slow else runner

    common = {"device": torch.device("cpu"), "amp": False, "amp_dtype": torch.bfloat16, "threads": 1}
    chosen = choose_backend(model.network, batch=2, model=model, build=build, **common)
    assert chosen.backend == Backend.TORCH
    assert sorted(built) == sorted(b.value for b in installed_backends())  # each one measured
    (record,) = json.loads((cache_dir() / "backends.json").read_text(encoding="utf-8")).values()
    seconds = record["seconds"]
    assert record["backend"] == min(seconds, key=seconds.get) == "torch"
    assert all(seconds[b] > 0.1 * len(runtime.PROBE_SHAPES) for b in slow)  # one batch of each probe shape a round
    # Measured once: the next choice reads the record (made to name another backend here) and builds only that one.
    store = cache_dir() / "backends.json"
    known = json.loads(store.read_text(encoding="utf-8"))
    other = sorted(slow)[0]
    for entry in known.values():
        entry["backend"] = other
    store.write_text(json.dumps(known), encoding="utf-8")
    built.clear()
    assert choose_backend(model.network, batch=2, model=model, build=build, **common).backend == other
    assert built == [other]


@pytest.mark.skipif(not ONNX_BACKENDS, reason="only torch is installed: auto has nothing to choose")
@pytest.mark.parametrize("fastest", ["torch", "onnxruntime", "openvino"])
def test_auto_takes_the_backend_with_the_least_measured_time(fastest, monkeypatch):
    """The rule itself, without timing: given the probe's seconds, auto builds every installed backend, takes the one
    with the fewest (never one measured slower), and records those seconds; a tie keeps torch."""
    names = [b.value for b in installed_backends()]
    if fastest not in names:
        pytest.skip(f"{fastest} is not installed")
    seconds = {name: (0.1 if name == fastest else round(0.2 + 0.1 * i, 2)) for i, name in enumerate(names)}
    seen = {}

    def measured(runners, batch, channels):
        seen.update({b.value: r.backend for b, r in runners.items()})
        return dict(seconds)

    monkeypatch.setattr(runtime, "probe", measured)
    (cache_dir() / "backends.json").unlink(missing_ok=True)  # another test's choice, in this session's cache
    model = load_model(None)
    common = {"device": torch.device("cpu"), "amp": False, "amp_dtype": torch.bfloat16, "threads": 1, "model": model}
    assert choose_backend(model.network, batch=2, **common).backend == fastest
    assert seen == {name: name for name in names}  # each one built and measured
    (record,) = json.loads((cache_dir() / "backends.json").read_text(encoding="utf-8")).values()
    assert record == {"backend": fastest, "seconds": seconds}
    (cache_dir() / "backends.json").unlink()
    monkeypatch.setattr(runtime, "probe", lambda runners, batch, channels: dict.fromkeys(names, 0.1))
    assert choose_backend(model.network, batch=2, **common).backend == "torch"


def test_auto_leaves_out_a_runtime_that_cannot_be_built(monkeypatch, caplog):
    """An optional runtime that fails to build on this machine costs auto nothing but a warning: torch remains."""
    model = load_model(None)

    def build(backend, network, **kw):
        if Backend(backend) is not Backend.TORCH:
            raise RuntimeError("this CPU lacks the instructions the runtime was built for")
        return make_runner(backend, network, **kw)

    monkeypatch.setattr(runtime, "installed_backends", lambda: [Backend.TORCH, Backend.OPENVINO])
    common = {"device": torch.device("cpu"), "amp": False, "amp_dtype": torch.bfloat16, "threads": 1, "model": model}
    assert choose_backend(model.network, batch=2, build=build, **common).backend == "torch"
    assert "backend openvino left out of auto: this CPU lacks" in caplog.text


def test_auto_on_a_gpu_or_with_torch_alone_is_torch(monkeypatch):
    model = load_model(None)
    common = {"amp": False, "amp_dtype": torch.bfloat16, "threads": 1, "batch": 2, "model": model}
    monkeypatch.setattr(runtime, "installed_backends", lambda: [Backend.TORCH])
    assert choose_backend(model.network, device=torch.device("cpu"), **common).backend == "torch"
    store = cache_dir() / "backends.json"
    assert not store.exists() or "torch" in store.read_text(encoding="utf-8")


@pytest.mark.skipif(Backend.ONNXRUNTIME not in ONNX_BACKENDS, reason="onnxruntime is not installed")
def test_a_damaged_cached_export_is_exported_again(caplog):
    model = load_model(None)
    common = {"device": torch.device("cpu"), "amp": False, "amp_dtype": torch.bfloat16, "threads": 1, "model": model}
    runner = make_runner(Backend.ONNXRUNTIME, model.network, **common)
    (cached,) = (cache_dir() / "onnx").glob(f"{model.sha256}-*.onnx")
    cached.write_bytes(cached.read_bytes()[:1000])  # a short file, as a full disk or a kill leaves
    x = torch.rand(2, 3, 40, 50)
    again = make_runner(Backend.ONNXRUNTIME, model.network, **common)
    np.testing.assert_array_equal(again(x).numpy(), runner(x).numpy())
    assert "exported again" in caplog.text
    assert cached.stat().st_size > 100_000


def test_a_backend_that_is_not_installed_or_a_gpu_device_is_refused_in_one_line(monkeypatch):
    model = load_model(None)
    common = {"amp": False, "amp_dtype": torch.bfloat16, "threads": 1, "model": model}
    real = runtime.importlib.util.find_spec
    monkeypatch.setattr(runtime.importlib.util, "find_spec", lambda n: None if n == "openvino" else real(n))
    with pytest.raises(UsageError, match=r"needs the openvino package: pip install 'medfcn\[openvino\]'"):
        make_runner(Backend.OPENVINO, model.network, device=torch.device("cpu"), **common)
    monkeypatch.setattr(runtime.importlib.util, "find_spec", real)
    if ONNX_BACKENDS:
        with pytest.raises(UsageError, match="runs on the CPU"):
            make_runner(ONNX_BACKENDS[0], model.network, device=torch.device("cuda"), **common)
