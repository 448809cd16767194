"""medfcn export: the ONNX file holds the network and its card, computes PyTorch's logits on real slices, and runs
with plain onnxruntime (the README's script, no medfcn import) to medfcn's labels on the sample heads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medfcn.cli import main
from medfcn.model.checkpoint import load_model
from medfcn.model.export import OPSET, TOLERANCE, read_card
from medfcn.model.network import pad_to_stride

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

ROOT = Path(__file__).resolve().parents[2]
HEADS = ("colin27", "robex_head")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("export") / "model.onnx"
    assert main(["export", "-o", str(path)]) == 0
    return path


def test_the_file_holds_the_card_the_opset_and_the_contract(exported, capsys):
    model = load_model(None)
    assert read_card(exported).to_json() == model.card.to_json()
    proto = onnx.load(str(exported))
    onnx.checker.check_model(proto)
    assert {o.domain: o.version for o in proto.opset_import}[""] == OPSET
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["medfcn_stride"] == "32" and meta["medfcn_source_sha256"] == model.sha256
    assert "multiples of 32" in meta["medfcn_input"] and "percentile" in meta["medfcn_normalisation"]
    (x,) = proto.graph.input
    assert [d.dim_param or d.dim_value for d in x.type.tensor_type.shape.dim] == ["batch", 3, "height", "width"]


def test_onnx_runtime_gives_pytorchs_logits_on_real_slices_of_both_heads(exported):
    """Checked here without medfcn's own check: slices along every axis through the middle of each head on the
    model's frame, padded to the stride; the unfolded network (batch norm as stored) as the reference."""
    import onnxruntime as ort

    from medfcn.inference.pipeline import real_slices

    model = load_model(None)
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    worst = 0.0
    for head in HEADS:
        for batch in real_slices(model, ROOT / "sample_data" / "images" / f"{head}.nii.gz", n=4):
            x, crop = pad_to_stride(batch, 32)
            with torch.inference_mode():
                expected = model.network.eval()(x).numpy()
            got = session.run(None, {"slices": x.numpy()})[0]
            worst = max(worst, float(np.abs(got - expected).max()))
    assert worst <= TOLERANCE


def test_the_readme_script_with_plain_onnxruntime_gives_medfcns_labels(exported, tmp_path, monkeypatch):
    """docs/onnx_segment.py imports no medfcn (checked in its process) and its labels agree with
    ``medfcn segment --backend onnxruntime`` on both sample heads; the manifest records the backend."""
    import nibabel as nib

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    images = [str(ROOT / "sample_data" / "images" / f"{h}.nii.gz") for h in HEADS]
    out = tmp_path / "medfcn"
    assert main(["segment", *images, "-o", str(out), "--device", "cpu", "--backend", "onnxruntime", "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["backend"] == "onnxruntime" and {c["backend"] for c in manifest["cases"]} == {"onnxruntime"}
    script = ROOT / "docs" / "onnx_segment.py"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for head, image in zip(HEADS, images, strict=True):
        mask = tmp_path / f"{head}_onnx.nii.gz"
        code = (
            "import runpy, sys\n"
            f"sys.argv = ['onnx_segment.py', {str(exported)!r}, {image!r}, {str(mask)!r}]\n"
            f"runpy.run_path({str(script)!r}, run_name='__main__')\n"
            "assert not [m for m in sys.modules if m.split('.')[0] in ('medfcn', 'torch', 'monai')], 'imported'\n"
        )
        run = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, encoding="utf-8", errors="replace"
        )
        assert run.returncode == 0, run.stderr[-2000:]
        theirs = np.asarray(nib.load(str(mask)).dataobj) > 0
        ours = np.asarray(nib.load(str(out / f"{head}.nii.gz")).dataobj) > 0
        assert theirs.shape == ours.shape
        assert np.allclose(nib.load(str(mask)).affine, nib.load(image).affine)
        dice = 2.0 * (theirs & ours).sum() / (theirs.sum() + ours.sum())
        assert dice >= 0.9999, (head, dice)


def test_export_of_a_file_that_is_not_a_model_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    assert main(["export", str(bad), "-o", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a medfcn model" in err
    assert not (tmp_path / "m.onnx").exists()
