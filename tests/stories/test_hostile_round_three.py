"""Hostile inputs, round three (issue 32): each test writes a real file the way an attack did and checks it no longer
loses data, hangs, exhausts memory or is scored as if it were whole.

Memory bombs run in a child process under an address-space limit (:func:`tests.stories.test_bombs.read_bounded`'s
way); the rest in this process.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medfcn.batch.manifest import MANIFEST_NAME, Status
from medfcn.batch.run import run_batch
from medfcn.inference.settings import InferenceSettings
from tests.support.batch import write_cases

CPU = InferenceSettings(device="cpu")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _edit_manifest(out: Path, case: str) -> None:
    """Give the manifest's first entry the case name ``case``, as a person editing the file would."""
    path = out / MANIFEST_NAME
    data = json.loads(path.read_text())
    data["cases"][0]["case"] = case
    path.write_text(json.dumps(data, indent=2))


def _segment(inputs: Path, out: Path, model: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "medfcn.cli", "segment", str(inputs), "-o", str(out), "--model", str(model)]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


# -- 1. a case name kept from a manifest is checked like a new one ----------------------------------------------
def test_a_manifest_case_naming_the_input_never_replaces_the_scan(tmp_path, model_file):
    inputs, out = tmp_path / "in", tmp_path / "out"
    [scan] = write_cases(inputs, 1)
    first = _segment(inputs, out, model_file)
    assert first.returncode == 0, first.stderr[-2000:]
    before = _sha(scan)
    _edit_manifest(out, "../in/case00")

    again = _segment(inputs, out, model_file)

    assert again.returncode == 0, again.stderr[-2000:]
    assert _sha(scan) == before  # the scan is still the scan
    assert sorted(p.name for p in inputs.iterdir()) == ["case00.nii.gz"]
    assert "../in/case00" in again.stderr and "not used" in again.stderr  # said, in one line
    [entry] = json.loads((out / MANIFEST_NAME).read_text())["cases"]
    assert entry["case"] == "case00" and Path(entry["output"]) == out / "case00.nii.gz"


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_absolute_case_name_in_a_manifest_writes_nothing_outside_out(tmp_path, model_file, overwrite):
    inputs, out, elsewhere = tmp_path / "in", tmp_path / "out", tmp_path / "elsewhere"
    write_cases(inputs, 2)
    run_batch([inputs], out, model=model_file, settings=CPU, progress=False)
    _edit_manifest(out, str(elsewhere / "deep" / "case00"))

    again = run_batch([inputs], out, model=model_file, settings=CPU, progress=False, overwrite=overwrite)

    assert not elsewhere.exists()
    assert {c.case: c.status for c in again.cases} == {
        "case00": Status.OK,  # its ordinary name, segmented again (the manifest no longer vouches for it)
        "case01": Status.OK if overwrite else Status.SKIPPED,
    }
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "case00.nii.gz",
        "case01.nii.gz",
        MANIFEST_NAME,
    ]


@pytest.mark.parametrize("case", ["../x", "/abs/x", "..", ".", "", "a\x1b[2Jb"])
def test_output_files_are_only_ever_inside_out(tmp_path, case):
    from medfcn.batch.outputs import OutputFormat, output_files
    from medfcn.errors import OutputError

    with pytest.raises(OutputError, match="cannot be a case name"):
        output_files(tmp_path, case, [OutputFormat.NIFTI, OutputFormat.DICOM_SEG])
    assert output_files(tmp_path, "a\\b..c", [OutputFormat.NIFTI])[OutputFormat.NIFTI].parent == tmp_path
