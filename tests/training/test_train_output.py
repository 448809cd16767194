"""Where ``medfcn train`` writes its model never loses data: not over a training scan or label map, not over the
``--init`` model, not over a file that is not a model, and an existing model at OUTPUT is replaced only when a run
ends (a run killed after its first epoch leaves it as it was)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from medfcn.cli import main
from medfcn.model.checkpoint import load_model
from tests.support.scans import affine_from_codes, head_labels, head_volume, write_scan_file

SHAPE = (24, 28, 22)


@pytest.fixture
def dataset(tmp_path):
    aff = affine_from_codes("LPS", spacing=(3.0, 3.0, 3.0))
    write_scan_file(tmp_path / "images" / "case0.nii.gz", head_volume(SHAPE), aff)
    write_scan_file(tmp_path / "labels" / "case0.nii.gz", (head_labels(SHAPE) > 0).astype(np.uint8), aff)
    return tmp_path


def _args(root, output, *extra) -> list[str]:
    return [
        "train", "--images", str(root / "images"), "--labels", str(root / "labels"), "-o", str(output),
        "--width", "4", "--spacing", "3", "--steps-per-epoch", "4", "--batch-size", "4", "--no-augment",
        "--device", "cpu", "--quiet", "--val-cases", "0", *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("which", ["images", "labels"])
def test_output_on_a_training_scan_or_label_map_is_refused_and_the_file_kept(dataset, capsys, which):
    target = dataset / which / "case0.nii.gz"
    before = target.read_bytes()
    assert main(_args(dataset, target, "--epochs", "1")) == 2
    err = capsys.readouterr().err
    assert "one of the training scans or label maps" in err and str(target) in err and err.count("\n") == 1
    assert target.read_bytes() == before


def test_output_on_a_file_that_is_not_a_model_is_refused(dataset, capsys):
    notes = dataset / "notes.safetensors"
    notes.write_text("my notes")
    assert main(_args(dataset, notes, "--epochs", "1")) == 2
    assert "is not a medfcn model" in capsys.readouterr().err and notes.read_text() == "my notes"


def test_output_equal_to_init_is_refused(dataset, capsys):
    first = dataset / "first.safetensors"
    assert main(_args(dataset, first, "--epochs", "1")) == 0
    before = first.read_bytes()
    assert main(_args(dataset, first, "--epochs", "1", "--init", str(first))) == 2
    assert "is the --init model" in capsys.readouterr().err and first.read_bytes() == before


@pytest.mark.slow
def test_an_existing_model_survives_a_run_killed_after_its_first_epoch_and_is_replaced_when_a_run_ends(dataset):
    model = dataset / "model.safetensors"
    assert main(_args(dataset, model, "--epochs", "1")) == 0
    before = model.read_bytes()
    sibling = dataset / ".model.safetensors.training.safetensors"
    code = f"import sys; from medfcn.cli import main; sys.exit(main({_args(dataset, model, '--epochs', '500')!r}))"
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, encoding="utf-8", errors="replace")
    try:
        deadline = time.monotonic() + 60
        while not sibling.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert sibling.exists(), proc.stderr.read() if proc.poll() is not None else "no epoch finished in 60 s"
        assert model.read_bytes() == before  # the epoch's best went beside it, not over it
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert model.read_bytes() == before and load_model(model).card.training["epochs"] == 1
    # a run that ends replaces it with its best, and leaves no sibling behind
    assert main(_args(dataset, model, "--epochs", "2")) == 0
    assert model.read_bytes() != before and not sibling.exists()
    assert load_model(model).card.training["epochs"] >= 1


def test_a_pair_holds_its_files_and_what_lies_inside_its_folders(tmp_path):
    from medfcn.data.pairs import LabelledPair

    series = tmp_path / "series"
    series.mkdir()
    (tmp_path / "lab.nii.gz").write_bytes(b"x")
    pair = LabelledPair("a", series, tmp_path / "lab.nii.gz")
    assert pair.holds(tmp_path / "lab.nii.gz") and pair.holds(tmp_path / "." / "lab.nii.gz")
    assert pair.holds(series / "model.safetensors")  # a new file inside a DICOM series folder
    assert not pair.holds(tmp_path / "model.safetensors") and not pair.holds(tmp_path / "lab.nii")
