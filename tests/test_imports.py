"""medfcn._monai: MONAI imported without its heavy optional packages, and nothing else disturbed."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from medfcn import _monai


def test_a_fresh_process_reads_and_reframes_a_scan_through_monai_without_the_deferred_packages(tmp_path: Path) -> None:
    # A real interpreter: in this test process MONAI may already be imported whole by other tests.
    code = textwrap.dedent(
        f"""
        import sys
        import numpy as np, nibabel as nib  # nibabel itself imports requests
        before = set(sys.modules)
        import medfcn.data.reader
        from medfcn._monai import DEFERRED
        loaded = [m for m in DEFERRED if m in sys.modules and m not in before]
        assert not loaded, loaded
        import monai, monai.transforms.utils as tu, monai.metrics.utils as mu
        assert tu.has_measure and mu.has_scipy_kdtree  # what MONAI's post-processing and metrics use
        assert all(m in sys.modules for m in ("monai.transforms", "monai.data", "monai.networks"))
        affine = np.diag([2.0, 2.0, 3.0, 1.0])
        nib.save(nib.Nifti1Image(np.arange(8 * 9 * 5, dtype=np.int16).reshape(8, 9, 5), affine), "{tmp_path}/s.nii.gz")
        scan = medfcn.data.reader.read_scan("{tmp_path}/s.nii.gz")  # through MONAI's LoadImage
        assert scan.shape == (8, 9, 5) and scan.spacing == (2.0, 2.0, 3.0)
        from medfcn.inference.frame import to_model_frame
        from monai.transforms import Spacing
        from monai.data import MetaTensor
        import torch
        frame = to_model_frame(scan, (1.5, 1.5, 1.5), mode="nearest")  # MONAI Orientation + Spacing
        ref = Spacing(pixdim=(1.5, 1.5, 1.5), mode="nearest", padding_mode="border")(
            MetaTensor(torch.from_numpy(scan.array.astype(np.float32))[None], affine=torch.as_tensor(scan.affine))
        )
        assert np.array_equal(frame.volume, ref[0].numpy())
        import pandas, matplotlib.pyplot, scipy.signal, scipy.optimize  # later imports: the real packages
        assert pandas.DataFrame({{"a": [1]}}).shape == (1, 1)
        print("OK")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, encoding="utf-8", errors="replace", timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("OK")


@pytest.fixture
def fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A real, importable module that the finder is told to defer."""
    name = "medfcn_deferred_probe"
    (tmp_path / f"{name}.py").write_text("VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(_monai, "DEFERRED", (name,))
    yield name
    sys.modules.pop(name, None)


def test_the_finder_refuses_only_in_the_importing_thread(fake_package: str) -> None:
    finder = _monai._Refuse(threading.get_ident())
    sys.meta_path.insert(0, finder)
    try:
        with pytest.raises(ModuleNotFoundError, match="deferred while MONAI imports"):
            importlib.import_module(fake_package)
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(fake_package + ".sub")  # submodules too
        got: list = []
        other = threading.Thread(target=lambda: got.append(importlib.import_module(fake_package).VALUE))
        other.start()
        other.join()
        assert got == [42]  # another thread imports the real module meanwhile
    finally:
        sys.meta_path.remove(finder)
    sys.modules.pop(fake_package, None)
    assert importlib.import_module(fake_package).VALUE == 42  # and after, so does this one
    assert finder not in sys.meta_path


def test_import_monai_returns_the_module_already_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    sentinel = type(sys)("monai")
    monkeypatch.setitem(sys.modules, "monai", sentinel)
    before = list(sys.meta_path)
    assert _monai.import_monai() is sentinel
    assert sys.meta_path == before
